"""Bad input fails with a clear error before any training starts."""

import os

import pytest

from wskan_ext.tasks import TrainConfig, build_meta_model, fit, load_split
from wskan_ext.tasks.testing import tiny_zoo


@pytest.fixture(scope="module")
def zoos(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("zoos"))
    return {"digits": tiny_zoo(root, "digits"), "sine": tiny_zoo(root, "sine"),
            "no_test": tiny_zoo(root, "digits", split_fractions=[0.6, 0.4, 0.0])}


def _no_output(tmp_path):
    return not os.path.exists(tmp_path / "out")


def test_missing_labels_name_the_label(zoos, tmp_path):
    with pytest.raises(ValueError, match=r"no label 'test_acc'.*task 'accuracy'"):
        fit(zoos["sine"], "accuracy", "wskan", TrainConfig(epochs=1, progress=False), out_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"no label 'class'"):
        fit(zoos["digits"], "inr_class", "mlp", TrainConfig(epochs=1, progress=False), out_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"no label 'a'"):
        load_split(zoos["digits"], "sine", "train")
    assert _no_output(tmp_path)
    # negative twin: the matching zoo has the labels
    assert len(load_split(zoos["sine"], "sine", "train")) > 0


def test_model_task_mismatch(zoos, tmp_path):
    with pytest.raises(ValueError, match=r"'statnn' has only graph-level heads.*'pruning' is edge-level"):
        fit(zoos["digits"], "pruning", "statnn", TrainConfig(epochs=1, progress=False), out_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"'magnitude' has only edge-level heads.*'accuracy' is graph-level"):
        fit(zoos["digits"], "accuracy", "magnitude", TrainConfig(epochs=1, progress=False))
    with pytest.raises(ValueError, match="unknown model 'gnn'"):
        fit(zoos["digits"], "accuracy", "gnn")
    with pytest.raises(ValueError, match="unknown task 'speed'"):
        fit(zoos["digits"], "speed", "wskan")
    assert _no_output(tmp_path)


def test_empty_split(zoos, tmp_path):
    with pytest.raises(ValueError, match=r"split 'test' is empty.*'test': 0"):
        fit(zoos["no_test"], "accuracy", "wskan", TrainConfig(epochs=1, progress=False), out_dir=str(tmp_path / "out"))
    assert _no_output(tmp_path)
    assert len(load_split(zoos["no_test"], "accuracy", "train")) > 0  # negative twin


def test_unknown_model_config_key(zoos):
    train = load_split(zoos["digits"], "accuracy", "train")
    with pytest.raises(ValueError, match=r"unknown config keys \['depth'\]"):
        build_meta_model("wskan", __import__("wskan_ext.tasks", fromlist=["TASKS"]).TASKS["accuracy"], train,
                         {"depth": 3})


def test_cli_reports_errors(zoos, capsys):
    from wskan_ext.cli import main

    assert main(["train", "--zoo", zoos["digits"], "--task", "pruning", "--model", "statnn", "--quiet"]) == 2
    assert "graph-level heads" in capsys.readouterr().err
