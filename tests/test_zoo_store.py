import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from wskan_ext import KAN
from wskan_ext.zoo import BuildConfig, PRESETS, Zoo, ZooFormatError, build_zoo, load_kan_weights, save_kan_weights
from wskan_ext.zoo.build import load_dataset, split_of

TINY = dict(PRESETS["tiny"])


def _files(root):
    from wskan_ext.zoo.store import content_files

    return content_files(root)


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("zoo") / "tiny")
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # builds are byte-reproducible at a fixed thread count
    try:
        build_zoo(BuildConfig(**TINY), root, progress=False)
    finally:
        torch.set_num_threads(n)
    return root


def test_layout_and_loader_alignment(tiny_zoo):
    zoo = Zoo(tiny_zoo)
    cfg = BuildConfig(**TINY)
    assert len(zoo) == cfg.size * len(cfg.checkpoints)
    assert sorted(os.listdir(os.path.join(tiny_zoo, "shards"))) == [
        "shard-00000.json", "shard-00000.safetensors", "shard-00001.json", "shard-00001.safetensors"]
    man = json.load(open(os.path.join(tiny_zoo, "manifest.json")))
    assert man["format_version"] == 2 and man["config"]["size"] == 8 and man["architecture"]["widths"] == [16, 4, 10]
    for split in ("train", "val", "test", None):
        ids = zoo.ids(split)
        if not ids:
            continue
        w, lab, rows = zoo.load(split=split)
        assert len(w) == len(ids) == len(rows) and [r["id"] for r in rows] == ids
        for j, r in enumerate(rows):
            assert r["labels"]["test_acc"] == pytest.approx(float(lab["test_acc"][j]), abs=0)
        assert lab["prune_mask"][0].shape == (len(ids), 16, 4)
    # the split is a function of the run id only (all checkpoints of a run share it)
    for r in zoo.metadata:
        assert r["split"] == split_of(cfg, r["run"])
    assert {r["split"] for r in zoo.metadata if r["run"] == 3} == {split_of(cfg, 3)}


def test_exported_members_reproduce_stored_accuracy(tiny_zoo, tmp_path):
    from wskan_ext.adapters.pykan import from_pykan
    from kan import KAN as PyKAN

    zoo = Zoo(tiny_zoo)
    data = load_dataset(BuildConfig(**TINY))
    x, y = data.x_test, data.y_test
    for row in zoo.rows()[:6]:
        stored = row["labels"]["test_acc"]
        native = KAN.from_weights(zoo.member(row["id"]))
        with torch.no_grad():
            correct = int((native(x).argmax(-1) == y).sum())
        assert correct == round(stored * len(y)) and abs(correct / len(y) - stored) < 1e-6
        path = str(tmp_path / f"m{row['id']}.safetensors")
        save_kan_weights(path, zoo.member(row["id"]))
        assert load_kan_weights(path).equal(zoo.member(row["id"]))
        pk = zoo.to_pykan(row["id"])
        with torch.no_grad():
            assert int((pk(x).argmax(-1) == y).sum()) == correct
            assert torch.allclose(pk(x), native(x), atol=1e-5)
        pk.saveckpt(str(tmp_path / "pk"))
        back = PyKAN.loadckpt(str(tmp_path / "pk"))
        assert from_pykan(back).allclose(zoo.member(row["id"]), atol=0, rtol=0)


def test_corrupted_and_truncated_shards(tiny_zoo, tmp_path):
    root = str(tmp_path / "z")
    shutil.copytree(tiny_zoo, root)
    p1 = os.path.join(root, "shards", "shard-00001.safetensors")
    data = bytearray(open(p1, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(p1, "wb").write(bytes(data))
    zoo = Zoo(root)
    with pytest.raises(ZooFormatError, match="shard-00001.safetensors.*corrupted"):
        zoo.weights()
    ok = [r["id"] for r in zoo.metadata if r["shard"] == 0 and r["status"] == "ok"]
    assert len(zoo.weights(ids=ok)) == len(ok)  # the other shard still loads
    with pytest.warns(UserWarning, match="shard-00001"):
        assert len(zoo.weights(on_error="skip")) == len(ok)
    open(p1, "wb").write(bytes(data[:100]))
    with pytest.raises(ZooFormatError, match="shard-00001.safetensors.*truncated"):
        Zoo(root).weights()
    os.remove(p1)
    with pytest.raises(ZooFormatError, match="shard-00001.safetensors.*missing"):
        Zoo(root).weights()
    # negative twin: the untouched copy loads
    assert len(Zoo(tiny_zoo).weights()) == len(Zoo(tiny_zoo).ids())


def test_newer_version_incomplete_and_config_mismatch(tiny_zoo, tmp_path):
    root = str(tmp_path / "z")
    shutil.copytree(tiny_zoo, root)
    mp = os.path.join(root, "manifest.json")
    man = json.load(open(mp))
    man["format_version"] = 99
    json.dump(man, open(mp, "w"))
    with pytest.raises(ZooFormatError, match="version 99 is newer"):
        Zoo(root)
    with pytest.raises(ZooFormatError, match="version 99 is newer"):
        build_zoo(BuildConfig(**TINY), root, progress=False)
    man["format_version"] = 2
    json.dump(man, open(mp, "w"))
    os.remove(os.path.join(root, "metadata.jsonl"))
    with pytest.raises(ZooFormatError, match="incomplete.*resume"):
        Zoo(root)
    with pytest.raises(ValueError, match="different config"):
        build_zoo(BuildConfig(**{**TINY, "seed": 1}), root, progress=False)
    with pytest.raises(ZooFormatError, match="not a zoo directory"):
        Zoo(str(tmp_path))


_BUILD = """
import sys, torch
torch.set_num_threads(1)
from wskan_ext.zoo import BuildConfig, PRESETS, build_zoo
build_zoo(BuildConfig(**{**PRESETS['tiny'], 'size': 12, 'shard_size': 2}), sys.argv[1], progress=False)
"""


def test_resume_after_sigkill_is_byte_identical(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
    full = subprocess.Popen([sys.executable, "-c", _BUILD, ref], env=env)
    proc = subprocess.Popen([sys.executable, "-c", _BUILD, killed], env=env)
    marker = os.path.join(killed, "shards", "shard-00001.json")
    t0 = time.time()
    while not os.path.exists(marker) and proc.poll() is None and time.time() - t0 < 120:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(killed, "metadata.jsonl")), "build finished before the kill"
    done = len([n for n in os.listdir(os.path.join(killed, "shards")) if n.endswith(".json")])
    assert 2 <= done < 6
    assert full.wait() == 0
    subprocess.run([sys.executable, "-c", _BUILD, killed], env=env, check=True)
    a, b = _files(ref), _files(killed)
    assert sorted(a) == sorted(b) and all(a[k] == b[k] for k in a)
    assert len(Zoo(killed)) == 24
