"""Issue 14: fuzz the zoo and single-KAN loaders. Hypothesis mutates bytes, keys, shapes,
dtypes, member ids and metadata of valid shards and single-KAN files; a loader may only
raise ``ZooFormatError`` -- never another exception, never a wrong result (a load that
succeeds returns exactly what the untouched files hold)."""

import hashlib
import json
import os
import shutil
import tempfile

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load as st_load

from wskan_ext import KAN, KANWeights
from wskan_ext.kan.weights import FIELDS
from wskan_ext.zoo.store import (FORMAT, FORMAT_VERSION, Zoo, ZooFormatError, _kan_digest, _st_save,
                                 clean_float, dumps, load_kan_weights, save_kan_weights, write_shard)

WIDTHS, G, K, M = [2, 3, 2], 3, 2, 3  # M members per shard, 2 shards
CONFIG = {"seed": 0, "dtype": "float32", "size": 2 * M, "shard_size": M, "grid": G, "k": K, "hidden": [3]}


def _make_zoo(root):
    """A small valid zoo written through the store (no training): 2 shards of 3 members,
    one diverged member (NaN weights, no labels) per shard."""
    gen = torch.Generator().manual_seed(0)
    arch = {"widths": WIDTHS, "grid_sizes": [G, G], "k": [K, K], "base_fun": ["silu", "silu"]}
    os.makedirs(root)
    with open(os.path.join(root, "manifest.json"), "wb") as f:
        f.write(dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "library_version": "test",
                       "config": CONFIG, "num_shards": 2, "checkpoints_per_run": 1, "num_members": 2 * M,
                       "architecture": arch, "task": "classification"}))
    rows_all = []
    for s in range(2):
        w = KANWeights.stack([KAN(WIDTHS, grid=G, k=K, generator=gen).weights(detach=True) for _ in range(M)])
        t = {k: v.clone() for k, v in w.tensors().items()}
        for l, (n, m) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:])):
            t[f"prune_mask.{l}"] = (torch.rand(M, n, m, generator=gen) > 0.5).float()
        t["layers.0.coef"][M - 1, 0, 0, 0] = float("nan")  # the diverged member
        acc = torch.rand(M, generator=gen, dtype=torch.float64)
        cls = torch.randint(0, 10, (M,), generator=gen)
        t["label.test_acc"], t["label.class"] = acc, cls
        ids = [s * M + j for j in range(M)]
        t["member_id"] = torch.tensor(ids)
        rows = []
        for j, i in enumerate(ids):
            ok = j < M - 1
            rows.append({"id": i, "run": i, "checkpoint": 0, "step": 1, "shard": s, "split": ("train", "test")[j % 2],
                         "status": "ok" if ok else "diverged", "hparams": {"lr": 0.01 * (i + 1)},
                         "labels": {"test_acc": clean_float(acc[j]) if ok else None, "class": float(cls[j])}})
        write_shard(root, s, t, rows, config=CONFIG)
        rows_all += rows
    with open(os.path.join(root, "metadata.jsonl"), "wb") as f:
        f.write(b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in rows_all))


def _load_all(root):
    zoo = Zoo(root)
    return zoo.load(include_diverged=True), zoo.load()


def _eq(x, y, dtype=True) -> bool:
    """Tensor equality with NaN equal to NaN (diverged members hold NaN weights)."""
    if x.shape != y.shape or (dtype and x.dtype != y.dtype):
        return False
    x, y = x.double(), y.double()
    return torch.equal(torch.isnan(x), torch.isnan(y)) and torch.equal(torch.nan_to_num(x), torch.nan_to_num(y))


def _same(a, b) -> bool:
    """Equal loads: weights bitwise (dtype included), labels and masks by value, rows."""
    (wa, la, ra), (wb, lb, rb) = a, b
    if wa.architecture != wb.architecture or ra != rb or sorted(la) != sorted(lb):
        return False
    if not all(_eq(x, y) for f in FIELDS for x, y in zip(getattr(wa, f), getattr(wb, f))):
        return False
    for k in la:
        xs, ys = (la[k], lb[k]) if k == "prune_mask" else ([la[k]], [lb[k]])
        if not all(_eq(x, y, dtype=False) for x, y in zip(xs, ys)):
            return False
    return True


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("fuzz") / "zoo")
    _make_zoo(root)
    return root, _load_all(root)


@pytest.fixture(scope="module")
def kan_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("fuzz") / "kan.safetensors")
    w = KAN([3, 4, 2], grid=4, k=3, generator=torch.Generator().manual_seed(1)).weights(detach=True)
    save_kan_weights(path, w)
    return path, w


def _check_zoo(root, ref, must_fail: bool):
    try:
        got = _load_all(root)
    except ZooFormatError:
        return
    assert not must_fail, "a structural mutation loaded without ZooFormatError"
    assert all(_same(g, r) for g, r in zip(got, ref)), "the loader returned a wrong result"


def _flip(data: bytes, flips) -> bytes:
    b = bytearray(data)
    for frac, x in flips:
        b[min(int(frac * len(b)), len(b) - 1)] ^= x
    return bytes(b)


FLIPS = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=3)
ZOO_FILES = ["shards/shard-00000.safetensors", "shards/shard-00001.safetensors", "shards/shard-00000.json",
             "metadata.jsonl", "manifest.json"]


def test_pristine_fuzz_zoo_loads(pristine):
    (w, labels, rows), (w_ok, _, rows_ok) = pristine[1]
    assert len(w) == 2 * M and len(w_ok) == 2 * M - 2 and [r["id"] for r in rows] == list(range(2 * M))
    # negative twin of the fuzz oracle: it sees a changed weight, label or row
    assert _same(pristine[1][0], _load_all(pristine[0])[0])
    w2 = w.clone()
    w2.coef[1][0, 0, 0, 0] += 1
    assert not _same((w2, labels, rows), pristine[1][0])
    assert not _same((w, {**labels, "class": labels["class"] + 1}, rows), pristine[1][0])
    assert not _same((w, labels, rows[::-1]), pristine[1][0])


@given(target=st.sampled_from(ZOO_FILES), flips=FLIPS)
def test_zoo_loader_fuzz_flipped_bytes(pristine, target, flips):
    """Bytes flipped anywhere (checksums left as they are): ZooFormatError or the same result."""
    with tempfile.TemporaryDirectory() as d:
        root = shutil.copytree(pristine[0], os.path.join(d, "z"))
        path = os.path.join(root, target)
        data = open(path, "rb").read()
        bad = _flip(data, flips)
        open(path, "wb").write(bad)
        _check_zoo(root, pristine[1], must_fail=target.endswith(".safetensors") and bad != data)


def _rehash(root, s, tensors, meta):
    base = os.path.join(root, "shards", f"shard-{s:05d}")
    data = _st_save(tensors, meta)
    open(base + ".safetensors", "wb").write(data)
    info = json.load(open(base + ".json"))
    info.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    json.dump(info, open(base + ".json", "w"))


STRUCT_OPS = ["drop", "rename", "add", "reshape", "member_id", "meta_format", "meta_fingerprint", "meta_drop",
              "cast", "row_id", "row_label", "row_shard"]


@given(s=st.integers(0, 1), op=st.sampled_from(STRUCT_OPS), pick=st.integers(0, 10**6), data=st.data())
def test_zoo_loader_fuzz_structure_with_valid_checksums(pristine, s, op, pick, data):
    """Keys, shapes, dtypes, member ids, metadata and rows mutated, checksums recomputed:
    every structural change raises ZooFormatError; a dtype cast raises or loads the same values."""
    with tempfile.TemporaryDirectory() as d:
        root = shutil.copytree(pristine[0], os.path.join(d, "z"))
        base = os.path.join(root, "shards", f"shard-{s:05d}")
        raw = open(base + ".safetensors", "rb").read()
        n = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8:8 + n])["__metadata__"]
        t = st_load(raw)
        keys = sorted(t)
        key = keys[pick % len(keys)]
        must_fail = True
        if op in ("row_id", "row_label", "row_shard"):  # the same change in the shard index and the table
            j = pick % M
            change = {"row_id": lambda r: r.update(id=r["id"] + 100),
                      "row_label": lambda r: r["labels"].update({"class": r["labels"]["class"] + 1}),
                      "row_shard": lambda r: r.update(shard=1 - s)}[op]
            info = json.load(open(base + ".json"))
            target_id = info["rows"][j]["id"]
            change(info["rows"][j])
            json.dump(info, open(base + ".json", "w"))
            mp = os.path.join(root, "metadata.jsonl")
            rows = [json.loads(line) for line in open(mp)]
            for r in rows:
                if r["id"] == target_id:
                    change(r)
            open(mp, "w").write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        else:
            if op == "drop":
                t.pop(key)
            elif op == "rename":
                t[data.draw(st.sampled_from([key + "x", "layers.9.coef", "label.other", "prune_mask.7"]))] = t.pop(key)
            elif op == "add":
                t[data.draw(st.sampled_from(["extra", "layers.2.grid", "label.new", "prune_mask.2"]))] = torch.zeros(M)
            elif op == "reshape":
                v = t[key]
                axis = pick % v.dim()
                t[key] = v.narrow(axis, 0, v.shape[axis] - 1).contiguous()
            elif op == "member_id":
                v = t["member_id"]
                t["member_id"] = data.draw(st.sampled_from([v + 1, v.flip(0), v * 0, v.roll(1)])).contiguous()
            elif op == "meta_format":
                meta["format"] = "wskan_ext.zoo2"
            elif op == "meta_fingerprint":
                meta["config_fingerprint"] = "0" * 64
            elif op == "meta_drop":
                dropped = data.draw(st.sampled_from(sorted(meta)))
                meta.pop(dropped)
                must_fail = dropped != "config"  # the stored config only serves error messages
            elif op == "cast":
                dt = data.draw(st.sampled_from([torch.float64, torch.float16, torch.int32, torch.int64, torch.bool]))
                if t[key].dtype == dt:
                    return
                t[key] = t[key].to(dt)
                must_fail = key.startswith("layers.") or key == "member_id" or dt == torch.bool
            _rehash(root, s, t, meta)
        _check_zoo(root, pristine[1], must_fail=must_fail)


@given(flips=FLIPS)
def test_kan_file_loader_fuzz_flipped_bytes(kan_file, flips):
    """Single-KAN files: any flipped bytes raise ZooFormatError or load the identical KAN."""
    path, w = kan_file
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "k.safetensors")
        open(p, "wb").write(_flip(open(path, "rb").read(), flips))
        try:
            got = load_kan_weights(p)
        except ZooFormatError:
            return
        assert got.equal(w), "a corrupted single-KAN file loaded as a different KAN"


@given(op=st.sampled_from(["drop", "rename", "add", "reshape", "cast", "nan", "k", "base_fun", "format"]),
       pick=st.integers(0, 10**6))
def test_kan_file_loader_fuzz_structure_with_valid_checksum(kan_file, op, pick):
    """Single-KAN files rewritten with a *recomputed* sha256 but invalid contents: ZooFormatError."""
    path, w = kan_file
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    meta = json.loads(raw[8:8 + n])["__metadata__"]
    t = st_load(raw)
    keys = sorted(t)
    key = keys[pick % len(keys)]
    k, bf = json.loads(meta["k"]), json.loads(meta["base_fun"])
    if op == "drop":
        t.pop(key)
    elif op == "rename":
        t[key.replace("layers.", "layer.")] = t.pop(key)
    elif op == "add":
        t[f"layers.{len(k)}.coef"] = torch.zeros(1)
    elif op == "reshape":
        v = t[key]
        axis = pick % v.dim()
        t[key] = v.narrow(axis, 0, v.shape[axis] - 1).contiguous()
    elif op == "cast":
        t[key] = t[key].double()
    elif op == "nan":
        t[key] = t[key].clone()
        t[key].view(-1)[pick % t[key].numel()] = float("nan")
    elif op == "k":
        k[pick % len(k)] += 1 if pick % 2 else -1
        k = [max(x, 1) if pick % 2 else x for x in k]
    elif op == "base_fun":
        bf[pick % len(bf)] = "swish"
    elif op == "format":
        meta["format"] = "something.else"
    meta.update(k=json.dumps(k), base_fun=json.dumps(bf), sha256=_kan_digest(t, k, bf))
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "k.safetensors")
        open(p, "wb").write(_st_save(t, meta))
        with pytest.raises(ZooFormatError):
            load_kan_weights(p)
