"""Training-signal settings every model gets alike. Auxiliary function-value targets
(``TrainConfig(aux_points=P)``, ``wskan train --aux-points``, ``benchmarks/results.py
--aux-points``): the points lie in the input grid range, the values are the KANs' exact outputs,
the extra outputs never reach a metric, and bad settings are refused. ``loss_units="label"``:
one target is unchanged, several are reweighted to label units."""

import json

import pytest
import torch
from hypothesis import given, strategies as st

from wskan_ext.equivariance_tests.strategies import architectures, random_kan
from wskan_ext.tasks import TrainConfig, fit
from wskan_ext.tasks.auxiliary import function_points, function_values
from wskan_ext.tasks.testing import tiny_zoo
from wskan_ext.tasks.train import evaluate_run


@given(arch=architectures(max_depth=2, max_width=3), seed=st.integers(0, 2 ** 16), P=st.integers(1, 9),
       B=st.integers(1, 4))
def test_points_lie_in_the_union_of_input_grid_ranges_and_values_are_the_forward_pass(arch, seed, P, B):
    w = random_kan(arch, seed, num_models=B)
    pts = function_points(w, P)
    n0, k = w.widths[0], w.k[0]
    assert pts.shape == (P, n0) and pts.dtype == w.dtype
    lo, hi = w.grid[0][..., k].amin(0), w.grid[0][..., -1 - k].amax(0)
    assert bool(((pts >= lo - 1e-12) & (pts <= hi + 1e-12)).all())
    if n0 == 1 and P > 1:  # equispaced, both ends included
        torch.testing.assert_close(pts[:, 0], torch.linspace(float(lo), float(hi), P, dtype=w.dtype))
    vals = function_values(w, pts, chunk=2)  # chunking changes nothing
    ref = torch.stack([w[b].forward(pts) for b in range(B)]).reshape(B, -1)
    torch.testing.assert_close(vals, ref, rtol=1e-12, atol=1e-12)
    assert function_points(w, P).equal(pts)  # fixed points: the same for every call and split


def test_values_tell_kans_apart_negative_twin():
    w = random_kan({"widths": [1, 3, 1], "grid_sizes": 5, "k": 3}, 0, num_models=2)
    pts = function_points(w, 16)
    v = function_values(w, pts)
    assert not torch.allclose(v[0], v[1])  # different KANs, different targets
    twin = w._replace(node_bias=w.node_bias[:-1] + [w.node_bias[-1] + 1.0])
    torch.testing.assert_close(function_values(twin, pts), v + 1.0)


@pytest.mark.parametrize("call,match", [
    (lambda w: function_points(w, 0), "num_points must be an int >= 1"),
    (lambda w: function_points(w.coef[0], 4), "expected KANWeights"),
    (lambda w: function_values(w[0], function_points(w, 4)), "batched KANWeights"),
    (lambda w: function_values(w, torch.zeros(4, 3, dtype=w.dtype)), r"points must be \(P, 1\)"),
])
def test_bad_arguments_are_refused_by_name(call, match):
    w = random_kan({"widths": [1, 2, 1], "grid_sizes": 3, "k": 2}, 1, num_models=2)
    with pytest.raises((ValueError, TypeError), match=match):
        call(w)


@pytest.fixture(scope="module")
def sine_zoo(tmp_path_factory):
    return tiny_zoo(str(tmp_path_factory.mktemp("aux")), "sine")


@pytest.mark.parametrize("model", ["wskan", "nfn", "deepsets"])
def test_fit_with_aux_targets_reports_task_metrics_only_and_changes_training(sine_zoo, model, tmp_path):
    cfg = dict(epochs=2, batch_size=4, progress=False)
    out = tmp_path / model
    res = fit(sine_zoo, "sine", model, TrainConfig(aux_points=8, **cfg), out_dir=str(out))
    plain = fit(sine_zoo, "sine", model, TrainConfig(**cfg))
    assert set(res["metrics"]["test"]) == {"mse", "r2"}
    assert res["test_pred"].shape == plain["test_pred"].shape == res["test_true"].shape  # (B, 2): a and b only
    assert res["metrics"]["val"] != plain["metrics"]["val"]  # negative twin: the extra loss changed training
    assert json.load(open(out / "metrics.json"))["config"]["aux_points"] == 8
    assert set(res["aux_mse"]) == {"train", "val"} and "aux_mse" not in plain  # the diagnostic, never the test split
    ev = evaluate_run(str(out), split="test")  # the saved network has the extra outputs; they are dropped again
    assert ev["metrics"] == pytest.approx(res["metrics"]["test"], rel=1e-5, abs=1e-7)


def test_aux_targets_are_refused_for_tasks_other_than_graph_regression(tmp_path):
    zoo = tiny_zoo(str(tmp_path), "digits")
    with pytest.raises(ValueError, match=r"aux_points \(--aux-points\) applies to graph-level regression"):
        fit(zoo, "pruning", "wskan", TrainConfig(epochs=1, aux_points=4, progress=False))


@pytest.mark.parametrize("kw,match", [
    (dict(aux_points=-1), r"aux_points \(--aux-points\) must be an integer in \[0, 4096\]"),
    (dict(aux_points=2.5), r"aux_points \(--aux-points\)"),
    (dict(aux_weight=0.0), r"aux_weight \(--aux-weight\) must be a finite number > 0"),
])
def test_train_config_refuses_bad_aux_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_cli_train_takes_aux_points_and_refuses_a_bad_one(cli, sine_zoo, tmp_path):
    rc, out, err = cli("train", "--zoo", sine_zoo, "--task", "sine", "--model", "wskan", "--epochs", "1",
                       "--aux-points", "4", "--out", str(tmp_path / "run"), "--quiet")
    assert rc == 0, err
    assert json.load(open(tmp_path / "run" / "metrics.json"))["config"]["aux_points"] == 4
    rc, out, err = cli("train", "--zoo", sine_zoo, "--task", "sine", "--model", "wskan", "--aux-points", "-3")
    assert "--aux-points" in cli.one_line(rc, err, "train")


def test_loss_units_label_is_the_identity_for_one_target_and_reweights_several(sine_zoo, tmp_path):
    cfg = dict(epochs=2, batch_size=4, progress=False)
    zoo = tiny_zoo(str(tmp_path), "digits")
    one = [fit(zoo, "accuracy", "wskan", TrainConfig(loss_units=u, **cfg))["metrics"] for u in ("standardised", "label")]
    assert one[0] == one[1]  # one target: weight sigma^2 / mean sigma^2 = 1, the same steps bit for bit
    two = [fit(sine_zoo, "sine", "wskan", TrainConfig(loss_units=u, **cfg))["metrics"] for u in ("standardised", "label")]
    assert two[0]["val"] != two[1]["val"]  # negative twin: a and b have different spreads, the loss changed


def test_loss_units_are_checked():
    with pytest.raises(ValueError, match=r"loss_units \(--loss-units\) must be 'standardised' or 'label'"):
        TrainConfig(loss_units="raw")


def test_loss_units_label_is_refused_for_classification(tmp_path):
    zoo = tiny_zoo(str(tmp_path), "digits")
    with pytest.raises(ValueError, match=r"loss_units \(--loss-units\) applies to regression tasks"):
        fit(zoo, "pruning", "wskan", TrainConfig(epochs=1, loss_units="label", progress=False))


def test_results_script_gives_aux_targets_to_every_model_and_only_where_they_apply(sine_zoo, tmp_path, load_script,
                                                                                   capsys):
    rs = load_script("benchmarks/results.py", "wskan_results_script_aux")
    assert rs.task_budget({"epochs": 1, "aux_points": 8, "aux_weight": 2.0, "loss_units": "label"}, "pruning") \
        == {"epochs": 1}  # classification: neither applies, the runs train as without them
    assert rs.task_budget({"aux_points": 8, "aux_weight": 2.0, "loss_units": "label"}, "sine") \
        == {"aux_points": 8, "aux_weight": 2.0, "loss_units": "label"}
    r, md = str(tmp_path / "r.json"), str(tmp_path / "r.inc")
    args = ["--zoo", f"tiny={sine_zoo}", "--models", "nfn", "deepsets", "--seeds", "0", "--tasks", "sine",
            "--epochs", "1", "--out", r, "--md", md, "--md-probes", str(tmp_path / "p.inc")]
    rs.main(args + ["--aux-points", "4", "--aux-weight", "2"])
    data = json.load(open(r))
    assert data["budget"]["aux_points"] == 4 and data["budget"]["aux_weight"] == 2.0
    assert "'aux_points': 4" in open(md).read()  # the table states the setting every model had
    for bad in (["--aux-points", "-1"], ["--aux-weight", "0"]):
        with pytest.raises(SystemExit):
            rs.main(args + bad)
        assert "--aux-points must be in [0, 4096] and --aux-weight a finite number > 0" in capsys.readouterr().err


def test_results_script_per_task_budget_and_base_reach_every_run_of_that_task_only(sine_zoo, tmp_path, load_script,
                                                                                    capsys, monkeypatch):
    """``--task-budget sine=JSON`` sets the budget of every model's runs on sine (and only
    there); ``--base MODEL@sine=JSON`` replaces that model's design on sine only; both are
    recorded, and resuming under other per-task settings is refused."""
    rs = load_script("benchmarks/results.py", "wskan_results_script_task_budget")
    seen = []
    real_fit = rs.fit

    def spy(zoo, task, model, config, **kw):
        seen.append((task, model, config.batch_size, config.aux_points, dict(config.model), config.warmup))
        return real_fit(zoo, task, model, config, **kw)

    monkeypatch.setattr(rs, "fit", spy)
    r, md = str(tmp_path / "r.json"), str(tmp_path / "r.inc")
    args = ["--zoo", f"tiny={sine_zoo}", "--models", "nfn", "deepsets", "--seeds", "0", "--epochs", "1",
            "--out", r, "--md", md, "--md-probes", str(tmp_path / "p.inc"),
            "--task-budget", 'sine={"batch_size": 4, "aux_points": 3, "warmup": 0.1}', "--base", 'nfn@sine={"hidden": 8}',
            "--base", 'deepsets@pruning={"hidden": 8}']
    rs.main(args)
    sine_runs = [s for s in seen if s[0] == "sine"]
    assert {s[1] for s in sine_runs} == {"nfn", "deepsets"}
    assert all(s[2:4] == (4, 3) and s[5] == 0.1 for s in sine_runs)  # every model's sine runs got the task budget
    assert [s[4] for s in sine_runs if s[1] == "nfn"] == [{"hidden": 8}]
    assert [s[4] for s in sine_runs if s[1] == "deepsets"] == [{}]  # its base is for another task
    data = json.load(open(r))
    assert data["task_budgets"] == {"sine": {"batch_size": 4, "aux_points": 3, "warmup": 0.1}}
    assert data["budget"]["batch_size"] == 64 and "aux_points" not in data["budget"]
    assert "on sine: {" in open(md).read() and "'batch_size': 4" in open(md).read()
    with pytest.raises(SystemExit):  # one table has one budget, per task too
        rs.main([a if a != 'sine={"batch_size": 4, "aux_points": 3, "warmup": 0.1}' else 'sine={"batch_size": 8}'
                 for a in args]
                + ["--resume"])
    assert "per-task budgets" in capsys.readouterr().err
    for bad, msg in ((["--task-budget", 'pruning={"aux_points": 4}'], "do(es) not apply to task 'pruning'"),
                     (["--task-budget", 'sine={"lr": 1}'], "unknown setting(s) ['lr']"),
                     (["--task-budget", 'sinus={}'], "unknown task 'sinus'"),
                     (["--base", 'nfn@sinus={}'], "unknown task 'sinus'")):
        with pytest.raises(SystemExit):
            rs.main(args[:15] + bad)
        assert msg in capsys.readouterr().err


@pytest.mark.parametrize("model", ["wskan", "nfn"])
def test_aux_task_pruning_trains_an_edge_head_and_reports_the_task_only(tmp_path, model):
    """``aux_task="pruning"``: a graph-level task also learns the training KANs' pruning
    masks; the metrics are the task's own, training changes, and a saved run reloads (its
    edge head rebuilt) to the same test metrics."""
    zoo = tiny_zoo(str(tmp_path), "digits")
    kw = dict(epochs=3, batch_size=8, progress=False)
    plain = fit(zoo, "accuracy", model, TrainConfig(**kw))
    res = fit(zoo, "accuracy", model, TrainConfig(aux_task="pruning", aux_task_weight=2.0, **kw),
              out_dir=str(tmp_path / "run"))
    assert set(res["metrics"]["val"]) == set(plain["metrics"]["val"]) == {"mse", "r2", "kendall_tau"}
    assert res["metrics"]["val"] != plain["metrics"]["val"]  # the edge labels changed the training
    assert res["config"]["aux_task"] == "pruning" and res["test_pred"].shape == plain["test_pred"].shape
    again = evaluate_run(str(tmp_path / "run"), zoo, "test")
    assert again["metrics"] == pytest.approx(res["metrics"]["test"], rel=1e-6)


def test_aux_task_is_refused_where_it_cannot_apply(tmp_path):
    zoo = tiny_zoo(str(tmp_path), "digits")
    kw = dict(epochs=1, progress=False, aux_task="pruning")
    with pytest.raises(ValueError, match="model 'deepsets' has no edge head for auxiliary edge labels"):
        fit(zoo, "accuracy", "deepsets", TrainConfig(**kw))
    with pytest.raises(ValueError, match=r"aux_task \(--aux-task\) applies to graph-level tasks; task 'pruning'"):
        fit(zoo, "pruning", "wskan", TrainConfig(**kw))
    with pytest.raises(ValueError, match=r"aux_task \(--aux-task\) and augment='logits' do not combine"):
        fit(zoo, "accuracy", "wskan", TrainConfig(augment="logits", **kw))
    with pytest.raises(ValueError, match=r"aux_task \(--aux-task\) must be one of \[None, 'pruning'\]"):
        TrainConfig(aux_task="accuracy")
    with pytest.raises(ValueError, match=r"aux_task_weight \(--aux-task-weight\) must be a finite number > 0"):
        TrainConfig(aux_task="pruning", aux_task_weight=0.0)


def test_nfn_edge_head_is_equivariant_and_its_graph_output_invariant():
    """The NFN baseline's auxiliary edge head follows a hidden permutation edge for edge
    (KAN-graph edge order), its graph output does not move; permuting *input* neurons (not a
    symmetry) moves the graph output (negative twin)."""
    from wskan_ext.adapters.nfn import KANInvariantNFN, network_spec, to_wsfeat
    from wskan_ext.kan import permute_hidden
    from wskan_ext.tasks.models import _NFNWithEdges

    w = random_kan({"widths": [3, 5, 4, 2], "grid_sizes": 4, "k": 2}, 0, num_models=2).map(lambda t: t.float())
    torch.manual_seed(0)
    feats = to_wsfeat(w)
    spec = network_spec(w)
    net = _NFNWithEdges(KANInvariantNFN(spec, feats.weights[0].shape[1], 8, 2, 3), spec, 8, 2)
    perms = [torch.randperm(5), torch.randperm(4)]
    ids = w._replace(coef=[torch.arange(c.shape[-3] * c.shape[-2], dtype=torch.float32).reshape(c.shape[-3], c.shape[-2])
                           [..., None].expand(c.shape).contiguous() + 1000 * l for l, c in enumerate(w.coef)])
    order = torch.cat([c[0, ..., 0].reshape(-1) for c in permute_hidden(ids, perms).coef])  # old id per new edge
    old_id = torch.cat([c[0, ..., 0].reshape(-1) for c in ids.coef])
    src = torch.tensor([int((old_id == o).nonzero()) for o in order])
    g, e = net(feats, edges=True)
    gp, ep = net(to_wsfeat(permute_hidden(w, perms)), edges=True)
    assert e.shape == (2, 3 * 5 + 5 * 4 + 4 * 2, 2) and g.shape == (2, 3)
    torch.testing.assert_close(gp, g, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ep, e[:, src], rtol=1e-5, atol=1e-5)
    assert torch.equal(net(feats), g)
    moved = w._replace(coef=[w.coef[0].flip(-3)] + w.coef[1:], scale_base=[w.scale_base[0].flip(-2)] + w.scale_base[1:],
                       scale_sp=[w.scale_sp[0].flip(-2)] + w.scale_sp[1:], grid=[w.grid[0].flip(-2)] + w.grid[1:])
    assert not torch.allclose(net(to_wsfeat(moved)), g, atol=1e-4)


def test_cli_train_takes_aux_task(cli, tmp_path):
    zoo = tiny_zoo(str(tmp_path), "digits")
    out = str(tmp_path / "run")
    rc, _, err = cli("train", "--zoo", zoo, "--task", "accuracy", "--model", "nfn", "--epochs", "1", "--aux-task",
                     "pruning", "--out", out, "--quiet")
    assert rc == 0, err
    assert json.load(open(f"{out}/metrics.json"))["config"]["aux_task"] == "pruning"
    rc, _, err = cli("train", "--zoo", zoo, "--task", "accuracy", "--model", "deepsets", "--epochs", "1",
                     "--aux-task", "pruning")
    assert "has no edge head" in cli.one_line(rc, err, "train")
