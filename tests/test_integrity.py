"""Issue 14: nothing lost, nothing mixed, nothing silent -- zoo identity, one writer, shard
fields, paths, single-KAN checksums, pykan base functions. Each test names the defect it covers."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load as st_load

from wskan_ext import KAN
from wskan_ext.zoo import BuildConfig, PRESETS, Zoo, ZooFormatError, build_zoo, load_kan_weights, save_kan_weights
from wskan_ext.zoo.store import (LOCK_NAME, MemberNotFoundError, ZooLockedError, _st_save, atomic_write,
                                 clean_stale_temp, config_fingerprint, resolve_dir, shard_done, verify_fingerprint,
                                 write_shard, zoo_lock)

SMALL = dict(PRESETS["tiny"], size=4, shard_size=2, steps=5, checkpoints=[5], hidden=[3], prune_samples=32)


def _build(cfg, root):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build_zoo(BuildConfig(**cfg), str(root), progress=False)
    finally:
        torch.set_num_threads(n)
    return str(root)


@pytest.fixture(scope="module")
def zoos(tmp_path_factory):
    base = tmp_path_factory.mktemp("zoos")
    return _build(SMALL, base / "seed0"), _build({**SMALL, "seed": 1}, base / "seed1")


def _copy(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ------------------------------------------------------------------ one identity per zoo
def test_manifest_deleted_then_rebuilt_with_other_seed_is_refused(zoos, tmp_path):
    """Issue 14.1: deleting manifest.json and re-running with --seed 1 exited 0 with a
    seed-1 manifest over seed-0 members."""
    root = _copy(zoos[0], tmp_path / "z")
    os.remove(os.path.join(root, "manifest.json"))
    with pytest.raises(ZooFormatError, match=r"shard-00000\.json: built from a different config .*seed: 0 .* vs 1"):
        _build({**SMALL, "seed": 1}, root)
    # negative twin: the same config resumes (nothing to do) and loads
    assert not os.path.exists(os.path.join(root, "manifest.json"))  # the refused build wrote nothing
    _build(SMALL, root)
    assert len(Zoo(root).weights()) == len(Zoo(zoos[0]).ids())


def test_zoo_load_refuses_a_foreign_shard_naming_shard_and_configs(zoos, tmp_path):
    """Issue 14.1: Zoo.load() accepted a zoo whose shards came from two builds."""
    root = _copy(zoos[0], tmp_path / "z")
    for ext in (".json", ".safetensors"):
        shutil.copy(os.path.join(zoos[1], "shards", "shard-00001" + ext), os.path.join(root, "shards"))
    with pytest.raises(ZooFormatError, match=r"shard-00001\.json: built from a different config than the manifest "
                                             r"\(config fingerprint \w+ vs \w+: seed: 1 \(shard-00001\.json\) vs 0"):
        Zoo(root)
    # the tensors alone (with the index's checksum fixed up) are caught by their own metadata
    root2 = _copy(zoos[0], tmp_path / "z2")
    foreign = open(os.path.join(zoos[1], "shards", "shard-00001.safetensors"), "rb").read()
    open(os.path.join(root2, "shards", "shard-00001.safetensors"), "wb").write(foreign)
    jp = os.path.join(root2, "shards", "shard-00001.json")
    info = json.load(open(jp))
    info.update(sha256=hashlib.sha256(foreign).hexdigest(), bytes=len(foreign))
    json.dump(info, open(jp, "w"))
    zoo = Zoo(root2)
    with pytest.raises(ZooFormatError, match=r"shard-00001\.safetensors: built from a different config.*seed"):
        zoo.weights()


def test_resume_refuses_to_keep_foreign_shards(zoos, tmp_path):
    """Issue 14.1: a later resume kept the foreign shards."""
    root = _copy(zoos[0], tmp_path / "z")
    for ext in (".json", ".safetensors"):
        shutil.copy(os.path.join(zoos[1], "shards", "shard-00001" + ext), os.path.join(root, "shards"))
    os.remove(os.path.join(root, "metadata.jsonl"))
    with pytest.raises(ZooFormatError, match=r"shard-00001\.json: built from a different config"):
        _build(SMALL, root)
    cfg = BuildConfig(**SMALL).to_dict()
    with pytest.raises(ZooFormatError, match=r"shard-00001\.json.*seed: 1 \(shard-00001\.json\) vs 0 \(build\)"):
        verify_fingerprint(root, cfg)
    with pytest.raises(ZooFormatError, match="shard-00001"):
        shard_done(root, 1, config=cfg)
    assert shard_done(root, 0, config=cfg)
    verify_fingerprint(zoos[0], cfg)  # negative twin


def test_fingerprint_is_canonical_and_in_every_shard(zoos):
    cfg = BuildConfig(**SMALL)
    fp = config_fingerprint(cfg)
    assert fp == config_fingerprint(json.loads(json.dumps(cfg.to_dict()))) == Zoo(zoos[0]).fingerprint
    assert fp != config_fingerprint({**cfg.to_dict(), "seed": 1})
    for s in range(2):
        base = os.path.join(zoos[0], "shards", f"shard-{s:05d}")
        assert json.load(open(base + ".json"))["config_fingerprint"] == fp
        data = open(base + ".safetensors", "rb").read()
        n = int.from_bytes(data[:8], "little")
        assert json.loads(data[8:8 + n])["__metadata__"]["config_fingerprint"] == fp


# ------------------------------------------------------------------ one writer per zoo
def test_second_writer_fails_at_once_with_clear_message(tmp_path):
    """Issue 14.1: two builds into one directory at the same time both exited 0."""
    root = str(tmp_path / "z")
    with zoo_lock(root) as path:
        info = json.load(open(path))
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        t0 = time.time()
        with pytest.raises(ZooLockedError, match=rf"another build is writing this zoo \(pid {os.getpid()} on host "):
            with zoo_lock(root):
                pass
        assert time.time() - t0 < 1.0
    assert not os.path.exists(os.path.join(root, LOCK_NAME))
    with zoo_lock(root):  # released: the next writer gets it
        pass


def test_lock_of_a_killed_writer_is_taken_over(tmp_path):
    root = str(tmp_path / "z")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom wskan_ext.zoo.store import zoo_lock\n"
                               "with zoo_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n", root],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ZooLockedError, match=rf"pid {holder.pid} on host"):
            with zoo_lock(root):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert json.load(open(os.path.join(root, LOCK_NAME)))["pid"] == holder.pid  # stale file left behind
    with zoo_lock(root) as path:
        assert json.load(open(path))["pid"] == os.getpid()


def test_stale_lock_file_of_a_dead_pid_is_taken_over(tmp_path):
    root = resolve_dir(str(tmp_path / "z"))
    with open(os.path.join(root, LOCK_NAME), "w") as f:
        json.dump({"pid": _dead_pid(), "host": socket.gethostname(), "started": 0}, f)
    with zoo_lock(root) as path:
        assert json.load(open(path))["pid"] == os.getpid()


def test_stale_temp_files_are_removed_when_the_next_writer_starts(tmp_path):
    """Issue 14.4: stale ``*.tmp<pid>`` files were never cleaned up."""
    root = resolve_dir(str(tmp_path / "z"))
    os.makedirs(os.path.join(root, "shards"))
    dead = _dead_pid()
    stale = [os.path.join(root, f".manifest.json.tmp{dead}"),
             os.path.join(root, "shards", f".shard-00000.safetensors.tmp{dead}")]
    live = os.path.join(root, "shards", f".shard-00001.json.tmp{os.getppid()}")  # a running process
    other = os.path.join(root, "notes.tmp1")  # not ours: never touched
    for p in stale + [live, other]:
        open(p, "w").write("x")
    with zoo_lock(root):
        assert not any(os.path.exists(p) for p in stale)
        assert os.path.exists(live) and os.path.exists(other)
    assert clean_stale_temp(root) == []


# ------------------------------------------------------------------ shard fields
def _rewrite_shard(root, s, mutate_tensors=None, mutate_meta=None, mutate_info=None):
    """Rewrite shard ``s`` with mutated contents and a *valid* checksum."""
    base = os.path.join(root, "shards", f"shard-{s:05d}")
    data = open(base + ".safetensors", "rb").read()
    n = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + n])["__metadata__"]
    tensors = st_load(data)
    if mutate_tensors:
        mutate_tensors(tensors)
    if mutate_meta:
        mutate_meta(meta)
    data = _st_save(tensors, meta)
    open(base + ".safetensors", "wb").write(data)
    info = json.load(open(base + ".json"))
    info.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    if mutate_info:
        mutate_info(info)
    json.dump(info, open(base + ".json", "w"))


def _set(key, fn):
    def mutate(t):
        t[key] = fn(t[key])
    return mutate


def _nan_first(t):
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


MUTATIONS = {
    "member_id_changed": (_set("member_id", lambda v: v + 1000), r"field 'member_id': position 0 holds id 1000"),
    "member_id_swapped": (_set("member_id", lambda v: v.flip(0)), r"field 'member_id'"),
    "member_id_dtype": (_set("member_id", lambda v: v.int()), r"field 'member_id': dtype torch.int32"),
    "tensor_missing": (lambda t: t.pop("layers.1.coef"), r"field 'layers.1.coef': missing"),
    "tensor_unknown": (lambda t: t.update(extra=torch.zeros(2)), r"field 'extra': unknown tensor"),
    "shape": (_set("layers.0.coef", lambda v: v[..., :-1].contiguous()), r"field 'layers.0.coef': shape"),
    "members_truncated": (_set("layers.0.grid", lambda v: v[:1].contiguous()), r"field 'layers.0.grid': shape"),
    "dtype": (_set("layers.0.mask", lambda v: v.double()), r"field 'layers.0.mask': dtype torch.float64"),
    "label_value": (_set("label.test_acc", lambda v: v + 0.5), r"field 'label.test_acc': member \d+ holds"),
    "label_missing": (lambda t: t.pop("label.test_acc"), r"field 'label.test_acc': missing"),
    "nan_weights": (_set("layers.0.coef", _nan_first), r"field 'layers.\*'.*coef contains NaN"),
    "nan_prune_mask": (_set("prune_mask.0", _nan_first), r"field 'prune_mask.0': values"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_valid_checksum_wrong_contents_names_file_and_field(zoos, tmp_path, name):
    """Issue 14.5: shards with valid checksums but wrong contents gave ``KeyError: 0`` or
    ``IndexError`` without the file name."""
    root = _copy(zoos[0], tmp_path / "z")
    mutate, match = MUTATIONS[name]
    _rewrite_shard(root, 0, mutate)
    zoo = Zoo(root)
    with pytest.raises(ZooFormatError, match=r"shard-00000\.safetensors: " + match):
        zoo.load(include_diverged=True)
    assert len(zoo.weights(ids=[r["id"] for r in zoo.metadata if r["shard"] == 1 and r["status"] == "ok"]))


def test_shard_metadata_and_rows_are_checked(zoos, tmp_path):
    root = _copy(zoos[0], tmp_path / "a")
    _rewrite_shard(root, 0, mutate_meta=lambda m: m.update(format="something.else"))
    with pytest.raises(ZooFormatError, match=r"shard-00000\.safetensors: field __metadata__\.format"):
        Zoo(root).weights()
    root = _copy(zoos[0], tmp_path / "b")
    _rewrite_shard(root, 0, mutate_info=lambda i: i["rows"][0].update(status="diverged"))
    with pytest.raises(ZooFormatError, match=r"shard-00000\.json: field 'rows.status': member 0 differs"):
        Zoo(root)
    root = _copy(zoos[0], tmp_path / "c")
    _rewrite_shard(root, 0, mutate_info=lambda i: i["rows"][0].pop("split"))
    zoo = Zoo(root)  # an unreadable shard index is reported when the shard is loaded (on_error="skip" may skip it)
    with pytest.raises(ZooFormatError, match=r"shard-00000\.json: rows\[0\]: field 'split'"):
        zoo.weights()
    with pytest.warns(UserWarning, match="shard-00000"):
        assert len(zoo.weights(on_error="skip")) == len([r for r in zoo.metadata if r["shard"] == 1])
    root = _copy(zoos[0], tmp_path / "d")
    mp = os.path.join(root, "metadata.jsonl")
    lines = open(mp).read().splitlines()
    row = json.loads(lines[1])
    row["id"] = "1"
    lines[1] = json.dumps(row)
    open(mp, "w").write("\n".join(lines) + "\n")
    with pytest.raises(ZooFormatError, match=r"metadata\.jsonl: line 2: field 'id': expected an int"):
        Zoo(root)
    root = _copy(zoos[0], tmp_path / "e")
    man = json.load(open(os.path.join(root, "manifest.json")))
    man["architecture"]["widths"] = [16, 3]
    json.dump(man, open(os.path.join(root, "manifest.json"), "w"))
    with pytest.raises(ZooFormatError, match=r"manifest\.json: field 'architecture\.widths'"):
        Zoo(root)


def test_unknown_member_id_is_a_clear_error(zoos):
    """Issue 14.5: ``zoo export`` / ``convert --id 99999`` gave a bare ``KeyError``."""
    zoo = Zoo(zoos[0])
    with pytest.raises(MemberNotFoundError, match=r"no member with id \[99999\] \(ids run from 0 to 3\)") as e:
        zoo.member(99999)
    assert isinstance(e.value, ValueError) and isinstance(e.value, KeyError)
    assert str(e.value).startswith("zoo ")  # no KeyError quoting


# ------------------------------------------------------------------ paths
def test_out_through_missing_dir_and_dotdot_builds_one_zoo(zoos, tmp_path):
    """Issue 14.4: ``--out a/sub/../z`` (sub missing) crashed and left a stray tmp file."""
    (tmp_path / "a").mkdir()
    out = str(tmp_path / "a" / "sub" / ".." / "z")
    _build(SMALL, out)
    z = tmp_path / "a" / "z"
    assert sorted(os.listdir(z)) == ["build_log.jsonl", "manifest.json", "metadata.jsonl", "shards"]
    assert not (tmp_path / "a" / "sub").exists()
    assert [n for n in os.listdir(z / "shards") if ".tmp" in n] == []
    assert len(Zoo(str(z)).weights()) == len(Zoo(zoos[0]).ids())
    assert Zoo(out).root == str(z.resolve())


def test_out_through_symlink_and_dotdot_builds_one_zoo(zoos, tmp_path):
    """Issue 14.4: ``--out a/link/../z`` split the zoo between two directories."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "inner").mkdir(parents=True)
    os.symlink(tmp_path / "b" / "inner", tmp_path / "a" / "link")
    out = str(tmp_path / "a" / "link" / ".." / "z")  # the OS resolves this to b/z
    _build(SMALL, out)
    assert not (tmp_path / "a" / "z").exists()
    assert sorted(os.listdir(tmp_path / "b" / "z")) == ["build_log.jsonl", "manifest.json", "metadata.jsonl", "shards"]
    assert len(Zoo(out).weights()) == len(Zoo(zoos[0]).ids())


def test_atomic_write_resolves_once_and_never_writes_outside(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    # parents are created, `..` through a missing directory is resolved once
    p = atomic_write(str(root / "x" / "missing" / ".." / "f.json"), b"1", root=str(root))
    assert p == str((root / "x" / "f.json").resolve()) and open(p, "rb").read() == b"1"
    with pytest.raises(ValueError, match="outside the output directory"):
        atomic_write(str(root / ".." / "outside" / "f"), b"1", root=str(root))
    os.symlink(tmp_path / "outside", root / "shards")
    with pytest.raises(ValueError, match="outside the output directory"):
        write_shard(str(root), 0, {"member_id": torch.zeros(1, dtype=torch.long)}, [])
    assert os.listdir(tmp_path / "outside") == []
    # a failing write leaves no temporary file
    (root / "adir").mkdir()
    with pytest.raises(OSError):
        atomic_write(str(root / "adir"), b"1")
    assert [n for n in os.listdir(root) if ".tmp" in n] == []


# ------------------------------------------------------------------ single-KAN files
def _kan(seed=0):
    return KAN([3, 4, 2], grid=4, k=3, generator=torch.Generator().manual_seed(seed)).weights(detach=True)


def test_single_kan_file_carries_a_verified_sha256(tmp_path):
    """Issue 14.6: single-KAN weight files carried no checksum; one flipped byte converted."""
    w, path = _kan(), str(tmp_path / "d" / "k.safetensors")
    save_kan_weights(path, w)  # parent created
    data = open(path, "rb").read()
    n = int.from_bytes(data[:8], "little")
    assert len(json.loads(data[8:8 + n])["__metadata__"]["sha256"]) == 64
    assert load_kan_weights(path).equal(w)
    for pos in (len(data) - 1, 8 + n + 3):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        open(path, "wb").write(bytes(bad))
        with pytest.raises(ZooFormatError, match=r"k\.safetensors: checksum mismatch"):
            load_kan_weights(path)
    # a file from before checksums needs an explicit opt-in
    from safetensors.torch import save as st_save

    old = st_save({k: v.contiguous() for k, v in w.tensors().items()},
                  metadata={"format": "wskan_ext.kan_weights", "k": json.dumps(w.k), "base_fun": json.dumps(w.base_fun)})
    open(path, "wb").write(old)
    with pytest.raises(ZooFormatError, match=r"field __metadata__\.sha256: missing"):
        load_kan_weights(path)
    assert load_kan_weights(path, require_checksum=False).equal(w)
    with pytest.raises(ZooFormatError, match="cannot read"):
        load_kan_weights(str(tmp_path / "nope.safetensors"))


# ------------------------------------------------------------------ pykan
kan_mod = pytest.importorskip("kan")


def _pykan(seed=0):
    return kan_mod.KAN(width=[2, 3, 1], grid=3, k=3, auto_save=False, seed=seed)


def test_from_pykan_reads_the_real_base_function_not_its_name():
    """Issue 14.6: ``from_pykan`` trusted the base-function name: a layer whose ``base_fun``
    was replaced converted silently (error 0.14)."""
    from wskan_ext.adapters.pykan import from_pykan

    model = _pykan()
    x = 2 * torch.rand(64, 2, generator=torch.Generator().manual_seed(0)) - 1
    model.act_fun[0].base_fun = torch.nn.Tanh()  # a known function: converted as what it is
    w = from_pykan(model)
    assert w.base_fun == ["tanh", "silu"]
    with torch.no_grad():
        assert (w(x) - model(x)).abs().max() < 1e-6
        # negative twin: the name alone ("silu") gives a different function
        assert (w.map(lambda t: t)._replace(base_fun=["silu", "silu"])(x) - model(x)).abs().max() > 1e-2
    model.act_fun[1].base_fun = torch.nn.Hardswish()  # unknown: refused
    with pytest.raises(ValueError, match=r"layer 1: base function Hardswish\(\) matches none of the known base "
                                         r"functions .*closest: 'silu'"):
        from_pykan(model)
    model.act_fun[1].base_fun = torch.nn.GELU(approximate="tanh")  # close to gelu, still not gelu
    with pytest.raises(ValueError, match=r"layer 1: .*closest: 'gelu'"):
        from_pykan(model)


def test_pykan_export_creates_missing_parents_and_writes_cache_data(tmp_path):
    """Issue 14.7: pykan export failed when the parent directory was missing; the
    ``*_cache_data`` file it writes was undocumented (see docs/convert.rst)."""
    from wskan_ext.adapters.pykan import from_pykan, save_pykan

    w = from_pykan(_pykan())
    paths = save_pykan(w, str(tmp_path / "x" / "y" / "m"))
    assert [os.path.basename(p) for p in paths] == ["m_config.yml", "m_state", "m_cache_data"]
    assert all(os.path.exists(p) for p in paths)
    back = kan_mod.KAN.loadckpt(str(tmp_path / "x" / "y" / "m"))
    assert from_pykan(back).equal(w)
