"""``wskan demo --quick``: builds its zoo, trains every model on both tasks, prints one table."""

import json
import os

from wskan_ext.tasks.demo import QUICK_ZOO, format_table
from wskan_ext.tasks.models import MODELS


def test_demo_quick_end_to_end(tmp_path, capsys):
    from wskan_ext.cli import main

    cache = str(tmp_path / "demo")
    assert main(["demo", "--cache", cache, "--quick", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| model |" in out and "acc. τ" in out and "pru. mask acc" in out
    for m in MODELS:
        assert f"| {m} |" in out
    res = json.load(open(os.path.join(cache, "results.json")))
    assert not res["zoo_cached"] and res["quick"]
    assert set(res["results"]["accuracy"]) == set(MODELS) - {"magnitude"}
    assert set(res["results"]["pruning"]) == set(MODELS) - {"statnn"}
    for task, models in res["results"].items():
        for m, r in models.items():
            assert r["metrics"]["test"], (task, m)  # measured numbers, per model
    assert res["table"] in out and open(os.path.join(cache, "results.md")).read().startswith("WS-KAN demo (quick)")
    for f in ("accuracy_tau.png", "pruning_accuracy.png", "runs/accuracy/wskan/pred_vs_true.png",
              "runs/pruning/wskan/pruning_mask.png", "runs/pruning/magnitude/metrics.json"):
        assert os.path.getsize(os.path.join(cache, f)) > 0, f
    # the zoo is cached: a second run reuses it (and still trains and measures)
    assert main(["demo", "--cache", cache, "--quick", "--quiet", "--models", "magnitude"]) == 0
    again = json.load(open(os.path.join(cache, "results.json")))
    assert again["zoo_cached"] and (again["results"]["pruning"]["magnitude"]["metrics"]
                                    == res["results"]["pruning"]["magnitude"]["metrics"])
    assert QUICK_ZOO["size"] * len(QUICK_ZOO["checkpoints"]) == sum(r["sizes"]["train"] + r["sizes"]["val"]
                                                                     + r["sizes"]["test"] for r in
                                                                     [res["results"]["accuracy"]["wskan"]])


def test_format_table_marks_best_per_column():
    mk = lambda **kw: {"metrics": {"test": kw}}  # noqa: E731
    results = {"accuracy": {"wskan": mk(mse=0.1, r2=0.9, kendall_tau=0.8), "mlp": mk(mse=0.2, r2=0.5, kendall_tau=0.85)},
               "pruning": {"wskan": mk(accuracy=0.97, f1=0.9), "magnitude": mk(accuracy=0.7, f1=0.95)}}
    t = format_table(results, {"wskan": 1.0})
    lines = {ln.split("|")[1].strip(): ln for ln in t.splitlines()[2:]}
    assert "**0.1000**" in lines["wskan"] and "**0.8500**" in lines["mlp"] and "**0.9500**" in lines["magnitude"]
    assert "**0.2000**" not in lines["mlp"]  # negative twin: the worse MSE is not bold
    assert "n/a" in lines["magnitude"] and "n/a" in lines["mlp"]
