"""Tiny end-to-end runs (seconds) of every task x model, outputs, invariance, evaluate, CLI."""

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from wskan_ext.tasks import TASKS, TrainConfig, fit, load_split
from wskan_ext.tasks.models import LEVELS, MODELS
from wskan_ext.tasks.testing import assert_trained_symmetry, tiny_zoo, trained_outputs_under_permutation
from wskan_ext.tasks.train import evaluate_run

ZOO_OF_TASK = {"accuracy": "digits", "pruning": "digits", "inr_class": "digits_inr", "sine": "sine"}
CASES = [(t, m) for t in TASKS for m in MODELS
         if TASKS[t].level in LEVELS[m] and not (m == "magnitude" and TASKS[t].kind != "binary")]


@pytest.fixture(scope="module")
def zoos(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("zoos"))
    return {name: tiny_zoo(root, name) for name in ("digits", "digits_inr", "sine")}


@pytest.mark.parametrize("task,model", CASES)
def test_every_task_and_model_trains_end_to_end(zoos, tmp_path, task, model):
    res = fit(zoos[ZOO_OF_TASK[task]], task, model, TrainConfig(epochs=2, batch_size=4, progress=False),
              out_dir=str(tmp_path))
    spec = TASKS[task]
    for split in ("train", "val", "test"):
        assert set(res["metrics"][split]) == set(spec.metrics)
        assert all(v == v for v in res["metrics"][split].values())  # not NaN
    assert res["sizes"]["test"] == len(res["test_true"]) > 0
    info = json.load(open(tmp_path / "metrics.json"))
    assert info["task"] == task
    for split in ("train", "val", "test"):
        assert info["metrics"][split] == pytest.approx(res["metrics"][split], nan_ok=True)
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 1 + 3 * len(spec.metrics)
    fig = "pred_vs_true.png" if spec.kind == "regression" else ("pruning_mask.png" if spec.level == "edge" else None)
    if fig:
        assert (tmp_path / fig).stat().st_size > 1000
    trainable = res["meta_model"].trainable  # magnitude/attribution fit thresholds only
    assert trainable == (model not in ("magnitude", "attribution"))
    assert (tmp_path / "model.safetensors").exists() == trainable
    if trainable:
        assert res["epochs_run"] == 2 and len(res["history"]) == 2


@pytest.mark.parametrize("options", [{"norm": "global"}, {"norm": "layer"}, {"log_scale": True},
                                     {"shared": True, "context": True, "layernorm": False}])
def test_wskan_is_invariant_and_equivariant_after_training(zoos, options):
    for task in ("accuracy", "pruning"):
        res = fit(zoos["digits"], task, "wskan", TrainConfig(epochs=1, batch_size=4, progress=False,
                                                             model=dict(options)))
        test = load_split(zoos["digits"], task, "test")
        a, b = assert_trained_symmetry(res["meta_model"], res["net"].eval(), test, task)
        if task == "pruning":
            assert not torch.allclose(b, a)  # negative twin: edge outputs do move with the neurons
        # negative twin: the flat MLP is not invariant
        res2 = fit(zoos["digits"], task, "mlp", TrainConfig(epochs=1, batch_size=4, progress=False))
        c, d, _ = trained_outputs_under_permutation(res2["meta_model"], res2["net"].eval(), test)
        assert not torch.allclose(c, d, atol=1e-5)


def test_evaluate_run_reproduces_test_metrics(zoos, tmp_path):
    for task, model in (("accuracy", "wskan"), ("pruning", "mlp_aligned")):
        out = tmp_path / f"{task}_{model}"
        res = fit(zoos["digits"], task, model, TrainConfig(epochs=2, batch_size=4, progress=False), out_dir=str(out))
        ev = evaluate_run(str(out), split="test", out=str(out / "eval.json"))
        assert ev["metrics"] == pytest.approx(res["metrics"]["test"], rel=1e-5, abs=1e-7)
        assert json.load(open(out / "eval.json"))["metrics"] == ev["metrics"]


def test_seeds_are_reproducible_and_matter(zoos):
    run = lambda s: fit(zoos["digits"], "accuracy", "wskan", TrainConfig(epochs=2, batch_size=4, seed=s,  # noqa: E731
                                                                          progress=False))["metrics"]["test"]
    assert run(0) == run(0)
    assert run(0) != run(1)


def test_cli_train_and_evaluate(zoos, tmp_path, capsys):
    from wskan_ext.cli import main

    out = str(tmp_path / "run")
    assert main(["train", "--zoo", zoos["digits"], "--task", "pruning", "--model", "wskan", "--epochs", "1",
                 "--batch-size", "8", "--set", "hidden=16", "--set", "layers=2", "--ema", "0.9", "--out", out,
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "test " in text and "accuracy=" in text and os.path.exists(os.path.join(out, "pruning_mask.png"))
    info = json.load(open(os.path.join(out, "metrics.json")))
    assert info["config"]["model"]["hidden"] == 16 and info["config"]["ema"] == 0.9
    assert main(["evaluate", "--run", out, "--split", "val"]) == 0
    assert "[val]" in capsys.readouterr().out
    # the saved network is the one validation judged (here the weight average)
    assert evaluate_run(out, split="val")["metrics"] == pytest.approx(info["metrics"]["val"], abs=1e-6)


def test_bf16_precision_trains_and_bad_precision_is_refused(zoos):
    res = fit(zoos["digits"], "pruning", "wskan", TrainConfig(epochs=2, batch_size=4, progress=False, precision="bf16"))
    assert all(v == v for v in res["metrics"]["test"].values())  # not NaN
    assert res["config"]["precision"] == "bf16"
    assert next(res["net"].parameters()).dtype == torch.float32  # mixed precision: the weights stay float32
    # the bf16 run is a different computation from the float32 one (its predictions differ)
    res32 = fit(zoos["digits"], "pruning", "wskan", TrainConfig(epochs=2, batch_size=4, progress=False))
    assert not torch.equal(res["test_pred"], res32["test_pred"])
    with pytest.raises(ValueError, match=r"precision \(--precision\) must be 'float32' or 'bf16'"):
        TrainConfig(precision="fp16")


def test_log_scale_edge_features(zoos):
    """``log_scale`` appends exactly log(std + eps), log(mean |v| + eps), log(rms coef + eps)
    of each edge to the default features; a 10x larger edge function shifts them by log 10."""
    from wskan_ext.tasks.models import _edge_inputs

    w = load_split(zoos["digits"], "accuracy", "train").weights.map(lambda t: t.double())
    base, extra = _edge_inputs(w, 8), _edge_inputs(w, 8, log_scale=True)
    assert torch.equal(extra[..., :-3], base) and extra.shape[-1] == base.shape[-1] + 3
    P = 8
    vals = base[..., -(P + w.depth):-w.depth].double()
    assert torch.allclose(extra[..., -3].double(), (vals.std(-1) + 1e-6).log(), atol=1e-5)
    assert torch.allclose(extra[..., -2].double(), (vals.abs().mean(-1) + 1e-6).log(), atol=1e-5)
    big = w.map(lambda t: t.clone())
    for c, b in zip(big.coef, big.scale_base):  # every edge function x 10
        c.mul_(10)
        b.mul_(10)
    shifted = _edge_inputs(big, 8, log_scale=True)[..., -3:]
    keep = extra[..., -3:].exp() > 1e-3  # away from the eps floor
    assert torch.allclose((shifted - extra[..., -3:])[keep], torch.full_like(shifted[keep], 2.302585), atol=1e-3)


def test_edge_features_select_the_coefficient_or_value_columns(zoos):
    """``edge_features="coef"`` / ``"values"`` keep exactly the coefficient / value columns of
    the default ``"both"`` (plus the layer one-hot), WS-KAN trains on each, and a bad value or
    ``log_scale`` without both is refused."""
    from wskan_ext.tasks.models import _edge_inputs

    w = load_split(zoos["digits"], "accuracy", "train").weights.map(lambda t: t.double())
    P, L, nc = 8, w.depth, w.grid_sizes[0] + w.k[0] + 1
    both = _edge_inputs(w, P)
    coef, vals = _edge_inputs(w, P, features="coef"), _edge_inputs(w, P, features="values")
    assert both.shape[-1] == nc + P + L
    assert torch.equal(coef, torch.cat([both[..., :nc], both[..., -L:]], -1))
    assert torch.equal(vals, both[..., nc:])
    assert not torch.equal(coef[..., :-L], vals[..., :nc])  # negative twin: the two column sets differ
    for f in ("coef", "values"):
        res = fit(zoos["sine"], "sine", "wskan", TrainConfig(epochs=1, batch_size=8, progress=False,
                                                                model={"edge_features": f, "hidden": 8, "layers": 1}))
        assert torch.isfinite(torch.tensor(res["metrics"]["val"]["mse"]))
    with pytest.raises(ValueError, match="edge_features must be 'both', 'coef' or 'values'"):
        _edge_inputs(w, P, features="knots")
    with pytest.raises(ValueError, match="log_scale needs edge_features='both'"):
        _edge_inputs(w, P, log_scale=True, features="coef")
    with pytest.raises(ValueError, match=r"edge_features.*'both', 'coef' or 'values'"):
        fit(zoos["sine"], "sine", "wskan", TrainConfig(epochs=1, progress=False, model={"edge_features": "x"}))


def test_support_value_range_samples_each_edge_on_its_whole_knot_span(zoos):
    """``value_range="support"``: the value columns are each edge function at ``P`` equispaced
    points of ``[t_0, t_last]`` of its source neuron, in the KAN-graph edge order (checked edge
    by edge against ``KANWeights.edge_functions``); the coefficient and layer columns are the
    default's; the grid-range values differ (negative twin); a bad value is refused."""
    from wskan_ext.tasks.models import _edge_inputs

    w = load_split(zoos["digits"], "accuracy", "train").weights.map(lambda t: t.double())[:2]
    P, L = 5, w.depth
    grid_f, sup_f = _edge_inputs(w, P), _edge_inputs(w, P, value_range="support")
    ncoef = grid_f.shape[-1] - P - L
    assert torch.equal(sup_f[..., :ncoef], grid_f[..., :ncoef]) and torch.equal(sup_f[..., -L:], grid_f[..., -L:])
    row = 0
    for l in range(L):
        n, m = w.widths[l], w.widths[l + 1]
        for i in range(n):
            for j in range(m):
                g = w.grid[l][:, i]  # (B, K)
                pts = g[:, :1] + (g[:, -1:] - g[:, :1]) * torch.linspace(0, 1, P, dtype=w.dtype)  # (B, P)
                x = torch.zeros(w.num_models, P, n, dtype=w.dtype)
                x[:, :, i] = pts
                ref = w.edge_functions(l, x)[:, :, i, j]  # (B, P)
                assert torch.allclose(sup_f[:, row, ncoef:ncoef + P].double(), ref, rtol=1e-5, atol=1e-6)
                row += 1
    assert not torch.allclose(sup_f[..., ncoef:ncoef + P], grid_f[..., ncoef:ncoef + P])
    with pytest.raises(ValueError, match="value_range must be 'grid' or 'support'"):
        _edge_inputs(w, P, value_range="knots")
    from wskan_ext import kan_to_graph

    with pytest.raises(ValueError, match="kan_to_graph: value_range must be 'grid' or 'support'"):
        kan_to_graph(w, encoding="values", value_range="knots")


def test_odd_augmentation_doubles_the_sine_training_split_exactly(zoos):
    """``augment="odd"``: the training split gains, per INR, the weights of x -> -f(-x) with the
    same label (for a sine INR the same function on its domain); val/test are untouched; only
    the sine task accepts it; a bad value is refused."""
    from wskan_ext.tasks.train import _augmented
    from wskan_ext.tasks import get_task

    tr = load_split(zoos["sine"], "sine", "train")
    aug = _augmented(tr, get_task("sine"), "odd")
    B = len(tr)
    assert len(aug) == 2 * B and torch.equal(aug.targets[B:], tr.targets)
    x = torch.linspace(-1, 1, 33, dtype=torch.float64)[:, None]
    w, wa = tr.weights.map(lambda t: t.double()), aug.weights[B:].map(lambda t: t.double())
    assert torch.allclose(wa.forward(x), -w.forward(-x), rtol=1e-5, atol=1e-6)  # float32 zoo weights
    assert not torch.allclose(wa.forward(x), w.forward(x), atol=1e-3)  # new weights, not a copy
    plain = fit(zoos["sine"], "sine", "nfn", TrainConfig(epochs=1, batch_size=8, progress=False))
    res = fit(zoos["sine"], "sine", "nfn", TrainConfig(epochs=1, batch_size=8, progress=False, augment="odd"))
    assert res["sizes"]["train"] == 2 * plain["sizes"]["train"] and res["sizes"]["test"] == plain["sizes"]["test"]
    with pytest.raises(ValueError, match="task 'accuracy' would get wrong labels"):
        fit(zoos["digits"], "accuracy", "nfn", TrainConfig(epochs=1, progress=False, augment="odd"))
    with pytest.raises(ValueError, match=r"augment \(--augment\) must be null, 'odd' or 'logits'"):
        TrainConfig(augment="flip")


@settings(deadline=None)
@given(n=st.integers(2, 40), c=st.integers(1, 3), noise=st.floats(0.0, 2.0), seed=st.integers(0, 2 ** 16))
def test_rank_loss_is_the_discordant_fraction_at_low_temperature(n, c, noise, seed):
    """``rank_loss`` at T -> 0 equals, per column, scipy's ``(1 - tau) / 2`` (no ties: continuous
    draws), summed over the columns; negative twin: a perfectly ordered prediction scores 0
    and the reversed one c (every pair discordant)."""
    from scipy.stats import kendalltau

    from wskan_ext.tasks.train import rank_loss

    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n, c, generator=g, dtype=torch.float64)
    o = y + noise * torch.randn(n, c, generator=g, dtype=torch.float64)
    want = sum((1 - kendalltau(o[:, j].numpy(), y[:, j].numpy())[0]) / 2 for j in range(c))
    assert abs(float(rank_loss(o, y, 1e-9)) - want) < 1e-9
    assert float(rank_loss(3 * y + 1, y, 1e-9)) == 0.0
    assert float(rank_loss(-y, y, 1e-9)) == pytest.approx(c)


def test_rank_weight_trains_and_is_refused_where_it_does_not_apply(zoos):
    """``rank_weight > 0`` changes the training of a graph-level regression task (sine), a
    classification or edge task refuses it with one line naming the flag, and bad values are
    refused on construction; a column of tied targets gives no NaN."""
    from wskan_ext.tasks.train import rank_loss

    cfg = dict(epochs=2, batch_size=8, progress=False)
    plain = fit(zoos["sine"], "sine", "nfn", TrainConfig(**cfg))
    ranked = fit(zoos["sine"], "sine", "nfn", TrainConfig(rank_weight=1.0, **cfg))
    assert plain["history"][-1]["train_loss"] != ranked["history"][-1]["train_loss"]
    assert torch.isfinite(torch.tensor(ranked["metrics"]["val"]["mse"]))
    with pytest.raises(ValueError, match=r"rank_weight \(--rank-weight\) applies to graph-level regression"):
        fit(zoos["digits_inr"], "inr_class", "nfn", TrainConfig(rank_weight=1.0, **cfg))
    with pytest.raises(ValueError, match=r"rank_weight \(--rank-weight\) must be a finite number >= 0"):
        TrainConfig(rank_weight=-1.0)
    with pytest.raises(ValueError, match=r"rank_temperature \(--rank-temperature\) must be a finite number > 0"):
        TrainConfig(rank_temperature=0.0)
    with pytest.raises(ValueError, match=r"rank_loss: out and y must both be \(b, C\)"):
        rank_loss(torch.zeros(4), torch.zeros(4))
    o = torch.randn(5, 1, requires_grad=True)
    loss = rank_loss(o, torch.ones(5, 1))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(o.grad, torch.zeros(5, 1))


def test_ema_keeps_the_moving_average_of_the_trajectory(zoos, monkeypatch):
    """``ema=beta``: the returned network is the exponential moving average of the weights
    after every optimiser step (recorded here as they go into ``AveragedModel``), started
    at the first step's weights; negative twin: it is not the last step's raw weights. Bad
    decays are refused on construction, naming the flag."""
    from torch.optim.swa_utils import AveragedModel

    orig, steps = AveragedModel.update_parameters, []

    def record(self, model):
        steps.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return orig(self, model)

    monkeypatch.setattr(AveragedModel, "update_parameters", record)
    beta = 0.8
    res = fit(zoos["sine"], "sine", "nfn", TrainConfig(epochs=1, batch_size=2, schedule="constant", ema=beta,
                                                       progress=False))
    assert len(steps) > 3
    want = dict(steps[0])
    for st_ in steps[1:]:
        want = {k: beta * want[k] + (1 - beta) * v for k, v in st_.items()}
    got = res["net"].state_dict()
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(got[k], steps[-1][k], atol=1e-5) for k in want)
    # WS-KAN's averaged weights are WS-KAN weights: the trained model stays invariant
    res = fit(zoos["digits"], "accuracy", "wskan", TrainConfig(epochs=1, batch_size=4, ema=0.9, progress=False))
    assert_trained_symmetry(res["meta_model"], res["net"].eval(), load_split(zoos["digits"], "accuracy", "test"),
                            "accuracy")
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"ema \(--ema\) must be 0 \(off\) or a decay in \(0, 1\)"):
            TrainConfig(ema=bad)


@pytest.mark.parametrize("model", ["wskan", "nfn", "deepsets", "mlp"])
def test_attr_head_trains_reloads_and_stays_equivariant(zoos, tmp_path, model):
    """``attr_head`` wraps any edge-level model: it trains on pruning, ``evaluate_run``
    rebuilds and reloads it, and WS-KAN / NFN with the head stay equivariant (negative twin:
    the outputs do move with the neurons); a graph-level task refuses it with one line."""
    cfg = TrainConfig(epochs=1, batch_size=4, progress=False, model={"attr_head": True})
    res = fit(zoos["digits"], "pruning", model, cfg, out_dir=str(tmp_path))
    assert type(res["net"]).__name__ == "AttributionHead"
    ev = evaluate_run(str(tmp_path), split="test", out=str(tmp_path / "eval.json"))
    assert ev["metrics"]["accuracy"] == pytest.approx(res["metrics"]["test"]["accuracy"])
    if model in ("wskan", "nfn"):
        test = load_split(zoos["digits"], "pruning", "test")
        a, b = assert_trained_symmetry(res["meta_model"], res["net"].eval(), test, "pruning")
        assert not torch.allclose(b, a)
    with pytest.raises(ValueError, match=r"attr_head \(the pruning-attribution read-out\) needs an edge-level "
                                         r"binary task such as 'pruning'; task 'accuracy' is a graph-level"):
        fit(zoos["digits"], "accuracy", model, cfg)


def test_logit_augmentation_doubles_the_accuracy_training_split_with_the_same_predictions(zoos):
    """``augment="logits"``: every classifier KAN gains a copy with other last-layer weights and
    the same argmax on every input (so the same test accuracy, its label); only the accuracy
    task accepts it, and the draws follow the seed."""
    from wskan_ext.tasks.train import _augmented
    from wskan_ext.tasks import get_task

    tr = load_split(zoos["digits"], "accuracy", "train")
    aug = _augmented(tr, get_task("accuracy"), "logits", seed=3)
    B = len(tr)
    assert len(aug) == 2 * B and torch.equal(aug.targets[B:], tr.targets)
    x = torch.rand(64, tr.weights.widths[0], generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    w, wa = tr.weights.map(lambda t: t.double()), aug.weights[B:].map(lambda t: t.double())
    z, za = w.forward(x), wa.forward(x)
    assert torch.equal(z.argmax(-1), za.argmax(-1))
    assert not torch.allclose(z, za, atol=1e-2)  # other logits and other weights, not a copy
    assert not torch.equal(aug.weights.coef[-1][B:], tr.weights.coef[-1])
    again = _augmented(tr, get_task("accuracy"), "logits", seed=3)
    assert torch.equal(again.weights.coef[-1], aug.weights.coef[-1])
    assert not torch.equal(_augmented(tr, get_task("accuracy"), "logits", seed=4).weights.coef[-1], aug.weights.coef[-1])
    res = fit(zoos["digits"], "accuracy", "nfn", TrainConfig(epochs=1, batch_size=8, progress=False, augment="logits"))
    assert res["sizes"]["train"] == 2 * B
    with pytest.raises(ValueError, match="task 'pruning' would get wrong labels"):
        fit(zoos["digits"], "pruning", "nfn", TrainConfig(epochs=1, progress=False, augment="logits"))


def test_lr_factor_warms_up_linearly_then_follows_the_schedule():
    """``TrainConfig(warmup=f)``: a linear rise over the first ``int(f * total)`` steps, then
    the cosine (or constant) schedule over the rest; with no warm-up the cosine is the one
    every earlier run used, value for value."""
    import math

    from wskan_ext.tasks.train import lr_factor

    total = 100
    for s in range(0, 120, 7):
        assert lr_factor(s, total) == 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
        assert lr_factor(s, total, schedule="constant") == 1.0
    rise = [lr_factor(s, total, warmup=0.1) for s in range(10)]
    assert rise == pytest.approx([(s + 1) / 11 for s in range(10)]) and rise == sorted(rise)
    assert lr_factor(10, total, warmup=0.1) == 1.0  # the schedule starts at its top
    assert lr_factor(55, total, warmup=0.1) == pytest.approx(0.5)  # halfway through the remaining 90
    assert lr_factor(100, total, warmup=0.1) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(5, total, warmup=0.1, schedule="constant") < 1.0  # warm-up applies to both
    with pytest.raises(ValueError, match=r"warmup \(--warmup\) must be a fraction in \[0, 1\)"):
        TrainConfig(warmup=1.0)


def test_fit_with_warmup_trains_and_differs(zoos):
    kw = dict(epochs=2, batch_size=8, progress=False)
    a = fit(zoos["sine"], "sine", "nfn", TrainConfig(**kw))
    b = fit(zoos["sine"], "sine", "nfn", TrainConfig(warmup=0.5, **kw))
    assert a["metrics"]["val"] != b["metrics"]["val"]
