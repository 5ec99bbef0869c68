"""Training on more than one zoo: ``fit(..., extra_train=[...])``, ``wskan train
--extra-train`` and ``benchmarks/results.py --extra-train``. Every member of an extra zoo
joins the training split; validation and test stay the main zoo's; a repeated build, an
overlap with the held-out KANs, another kind or architecture is refused by name."""

import json
import os

import pytest
import torch

from wskan_ext.tasks import TrainConfig, fit, load_split, load_training_split
from wskan_ext.tasks.testing import tiny_zoo
from wskan_ext.tasks.train import evaluate_run
from wskan_ext.zoo import Zoo


@pytest.fixture(scope="module")
def zoos(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("extra"))
    return {"main": tiny_zoo(root, "digits"), "other": tiny_zoo(root, "digits", seed=1),
            "bigger": tiny_zoo(root, "digits", size=16), "inr": tiny_zoo(root, "digits_inr")}


def test_extra_zoo_members_all_join_the_training_split(zoos):
    own = load_split(zoos["main"], "accuracy", "train")
    both = load_training_split(zoos["main"], "accuracy", [zoos["other"]])
    other = Zoo(zoos["other"])
    assert len(both) == len(own) + len(other.ids("train")) + len(other.ids("val")) + len(other.ids("test"))
    torch.testing.assert_close(both.targets[:len(own)], own.targets, rtol=0, atol=0)
    w_other, labels, _ = other.load(ids=other.ids("train"))
    torch.testing.assert_close(both.weights.coef[0][len(own):len(own) + len(other.ids("train"))], w_other.coef[0],
                               rtol=0, atol=0)
    assert both.source == own.source and both.split == "train"
    # without extras: exactly the train split
    plain = load_training_split(zoos["main"], "accuracy")
    assert plain.weights.equal(own.weights)


def test_fit_with_extra_train_keeps_val_and_test_and_evaluate_reloads(zoos, tmp_path):
    base = fit(zoos["main"], "accuracy", "wskan", TrainConfig(epochs=1, batch_size=4, progress=False))
    out = tmp_path / "run"
    res = fit(zoos["main"], "accuracy", "wskan", TrainConfig(epochs=1, batch_size=4, progress=False),
              out_dir=str(out), extra_train=[zoos["other"]])
    assert res["sizes"]["val"] == base["sizes"]["val"] and res["sizes"]["test"] == base["sizes"]["test"]
    assert res["sizes"]["train"] > base["sizes"]["train"]
    assert res["metrics"]["test"] != base["metrics"]["test"]  # negative twin: the extra KANs were trained on
    info = json.load(open(out / "metrics.json"))
    assert info["extra_train"] == [os.path.abspath(zoos["other"])]
    # the normalisation is re-fitted on the same (extended) training split: the metrics reproduce
    ev = evaluate_run(str(out), split="test")
    assert ev["metrics"] == pytest.approx(res["metrics"]["test"], rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("which,match", [
    ("main", "the same build"),
    ("bigger", "equal .* validation/test KANs"),
    ("inr", "zoo"),
])
def test_extra_train_refuses_leaks_and_other_kinds(zoos, which, match):
    with pytest.raises(ValueError, match=match):
        load_training_split(zoos["main"], "accuracy", [zoos[which]])


def test_cli_and_results_script_pass_extra_train(zoos, tmp_path, capsys, load_script):
    from wskan_ext.cli import main

    out = str(tmp_path / "run")
    assert main(["train", "--zoo", zoos["main"], "--task", "accuracy", "--model", "statnn", "--epochs", "1",
                 "--extra-train", zoos["other"], "--out", out, "--quiet"]) == 0
    info = json.load(open(tmp_path / "run" / "metrics.json"))
    assert len(info["extra_train"]) == 1 and info["sizes"]["train"] > len(Zoo(zoos["main"]).ids("train"))
    assert main(["train", "--zoo", zoos["main"], "--task", "accuracy", "--model", "statnn", "--epochs", "1",
                 "--extra-train", zoos["main"], "--out", str(tmp_path / "bad"), "--quiet"]) != 0
    assert "the same build" in capsys.readouterr().err
    rs = load_script("benchmarks/results.py", "wskan_results_script_extra")
    r, md = str(tmp_path / "r.json"), str(tmp_path / "r.inc")
    args = ["--zoo", f"tiny={zoos['main']}", "--models", "statnn", "--seeds", "0", "--tasks", "accuracy",
            "--epochs", "1", "--out", r, "--md", md, "--md-probes", str(tmp_path / "p.inc")]
    rs.main(args + ["--extra-train", zoos["other"]])
    data = json.load(open(r))
    assert data["extra_train"] == [zoos["other"]] and "extra training zoos" in open(md).read()
    assert data["runs"][0]["sizes"]["train"] == info["sizes"]["train"]
    with pytest.raises(SystemExit):  # one table, one training set
        rs.main(args + ["--resume"])
    assert "one table has one training set" in capsys.readouterr().err


class _RecordingLock:
    """A real ``threading.Lock`` that records when it was held."""

    def __init__(self):
        import threading

        self.lock, self.entered, self.exited = threading.Lock(), 0, 0

    def __enter__(self):
        self.lock.acquire()
        self.entered += 1

    def __exit__(self, *exc):
        self.exited += 1
        self.lock.release()


def test_fit_holds_the_load_lock_only_while_loading(zoos):
    cfg = TrainConfig(epochs=1, batch_size=4, progress=False)
    lock = _RecordingLock()
    with_lock = fit(zoos["main"], "accuracy", "wskan", cfg, extra_train=[zoos["other"]], load_lock=lock)
    assert lock.entered == lock.exited == 1 and not lock.lock.locked()
    plain = fit(zoos["main"], "accuracy", "wskan", cfg, extra_train=[zoos["other"]])
    assert with_lock["metrics"] == plain["metrics"]  # the lock changes nothing but when loading happens
    # a load that fails releases the lock, so parallel runs are not blocked for ever
    bad = _RecordingLock()
    with pytest.raises(ValueError, match="same build"):
        fit(zoos["main"], "accuracy", "wskan", cfg, extra_train=[zoos["main"]], load_lock=bad)
    assert bad.entered == bad.exited == 1 and not bad.lock.locked()
