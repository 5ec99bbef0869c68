"""The command ``python -m wskan_ext.equivariance_tests`` and the pytest plugin.

The factories below are what the CLI loads (``--model test_equivariance_cli:good_factory``
with ``PYTHONPATH`` pointing at this folder)."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from wskan_ext.equivariance_tests import examples as E
from wskan_ext.equivariance_tests import strategies as kst

HERE = os.path.dirname(os.path.abspath(__file__))
pytest_plugins = ["pytester"]


def good_factory():
    """An equivariant model on KANWeights (graph-level readout)."""
    return E.TinyKANNet(readout="graph")


def buggy_factory():
    """The classic bug: positional embeddings on hidden neurons."""
    return E.TinyKANNet(readout="node", positional_hidden=True)


def flat_factory():
    """An MLP on the flattened weights of a [2, 3, 1] KAN with G=3, k=2."""
    w = kst.random_kan({"widths": [2, 3, 1], "grid_sizes": [3, 3], "k": [2, 2], "base_fun": ["silu", "silu"]}, 0)
    return E.FlatMLP(E.FlatMLP.flatten(w).shape[-1])


def _cli(*args, timeout=240):
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "wskan_ext.equivariance_tests", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_cli_subprocess_exits_nonzero_on_a_failing_model():
    bad = _cli("--model", "test_equivariance_cli:buggy_factory", "--output", "node", "--max-examples", "10",
               "--no-sensitivity")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAIL" in bad.stdout and "0 passed, 2 failed" in bad.stdout
    assert "equivariance violated: output='node'" in bad.stdout and "[hidden]" in bad.stdout


def _main(capsys, monkeypatch, *args):
    from wskan_ext.equivariance_tests.__main__ import main

    monkeypatch.syspath_prepend(HERE)
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_main_passes_on_an_equivariant_model(capsys, monkeypatch):
    rc, out, _ = _main(capsys, monkeypatch, "--model", "test_equivariance_cli:good_factory", "--max-examples", "5")
    assert rc == 0, out
    assert "invariant / single KANs" in out and "sensitive to input-neuron permutation" in out
    assert "3 passed, 0 failed" in out and "FAIL" not in out


def test_cli_fixed_architecture_and_usage_errors(capsys, monkeypatch):
    rc, out, _ = _main(capsys, monkeypatch, "--model", "test_equivariance_cli:flat_factory", "--widths", "2,3,1",
                       "--grid", "3", "--k", "2", "--max-examples", "3")
    assert rc == 1, out
    assert "invariance violated: output='invariant' of FlatMLP" in out
    assert "sensitive to input-neuron permutation  PASS" in out  # a flat MLP does see input order
    rc, _, err = _main(capsys, monkeypatch, "--model", "test_equivariance_cli:no_such_factory")
    assert rc == 2 and "cannot load --model" in err
    rc, _, err = _main(capsys, monkeypatch, "--model", "no_colon_here")
    assert rc == 2 and "package.module:factory" in err


def test_cli_failure_prints_a_replay_command_not_reproduce_failure(capsys, monkeypatch):
    args = ("--model", "test_equivariance_cli:buggy_factory", "--output", "node", "--max-examples", "4",
            "--no-sensitivity", "--widths", "2,3,1", "--profile", "thorough")
    rc, out, err = _main(capsys, monkeypatch, *args)
    assert rc == 1, out + err
    assert "reproduce_failure" not in out + err and "@seed" not in out + err
    replay = [line for line in out.splitlines() if line.startswith("replay")]
    assert len(replay) == 1 and "--seed" in replay[0], out
    command = replay[0].split(": ", 1)[1]
    assert command.startswith("python -m wskan_ext.equivariance_tests --model test_equivariance_cli:buggy_factory "
                              "--output node --profile thorough")
    seed = int(replay[0].rsplit("--seed ", 1)[1])
    rc2, out2, _ = _main(capsys, monkeypatch, *args, "--seed", str(seed))  # the replay sees the same failure
    table = [line for line in out.splitlines() if "FAIL  " in line]
    assert rc2 == 1 and table == [line for line in out2.splitlines() if "FAIL  " in line], (out, out2)


def test_cli_derandomized_replay_is_the_same_command(capsys, monkeypatch):
    rc, out, _ = _main(capsys, monkeypatch, "--model", "test_equivariance_cli:buggy_factory", "--output", "node",
                       "--max-examples", "3", "--no-sensitivity", "--per-layer")
    assert rc == 1 and "reproduce_failure" not in out
    assert ("replay (derandomized profile: same examples): python -m wskan_ext.equivariance_tests --model "
            "test_equivariance_cli:buggy_factory --output node --per-layer --max-examples 3 --no-sensitivity") in out


def test_cli_bad_ranges_are_usage_errors(capsys, monkeypatch):
    for flag, value in [("--grid", "a-b"), ("--k", "x"), ("--widths", "2,x")]:
        rc, _, err = _main(capsys, monkeypatch, "--model", "test_equivariance_cli:good_factory", flag, value)
        assert rc == 2 and err.count("\n") == 1 and flag in err and "Traceback" not in err, err


def test_run_suite_casts_a_float32_module_on_a_copy():
    """The docs example `run_suite(MyGNN())` with a float32 module: tested as a float64 copy."""
    from wskan_ext.equivariance_tests.suite import run_suite

    model = E.DeepSetsOverEdges()  # float32 parameters
    rows = run_suite(model, max_examples=2, sensitivity=False)
    assert all(r.passed for r in rows), [r.report for r in rows]
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the user's module is untouched
    with pytest.raises(TypeError, match=r"float32 parameters but the suite draws torch.float64 KANs"):
        run_suite(model, max_examples=2, cast=False)
    rows = run_suite(model, dtype=torch.float32, max_examples=2, sensitivity=False)  # or run in its dtype
    assert all(r.passed for r in rows), [r.report for r in rows]


def test_run_suite_says_why_a_wrapped_model_in_the_wrong_dtype_crashes():
    from wskan_ext.equivariance_tests.suite import run_suite

    model = E.DeepSetsOverEdges()
    rows = run_suite(lambda w: model(w), max_examples=1, sensitivity=False)  # a callable: cannot be cast
    assert not rows[0].passed and "must have the same dtype" in rows[0].report
    assert "the suite draws KANs in torch.float64" in rows[0].report and "reproduce_failure" not in rows[0].report


def test_examples_scale_with_the_active_profile():
    from hypothesis import settings

    from wskan_ext.equivariance_tests.profiles import CI_EXAMPLES, examples, profile_settings

    with pytest.raises(ValueError):
        examples(0)
    current = settings._current_profile
    try:
        settings.load_profile("wskan-ci")
        assert examples(8) == round(8 * profile_settings("ci").max_examples / CI_EXAMPLES)
        settings.load_profile("wskan-thorough")
        assert examples(8) == round(8 * profile_settings("thorough").max_examples / CI_EXAMPLES) > 8
        assert examples(1) >= 1
    finally:
        settings.load_profile(current)


def test_one_profile_definition_for_tests_suite_and_plugin():
    from hypothesis import settings

    from wskan_ext.equivariance_tests.profiles import profile_settings

    for short in ("ci", "thorough"):  # the short names registered by conftest are the suite's profiles
        assert settings.get_profile(short).max_examples == profile_settings(short).max_examples
        assert settings.get_profile(short).derandomize == profile_settings(short).derandomize
    assert profile_settings("ci").derandomize and profile_settings("ci").database is None
    assert not profile_settings("thorough").derandomize


def test_run_suite_in_process(kan_equivariance):
    from wskan_ext.equivariance_tests.suite import format_table

    rows = kan_equivariance.run_suite(E.DeepSetsOverEdges().double(), max_examples=4)
    table = format_table(rows)
    assert [r.passed for r in rows] == [True, True, False], table  # invariant, but blind to input identity
    assert "insensitive to a non-symmetry" in rows[2].report and rows[2].measured == 0.0


# ------------------------------------------------------------------ pytest plugin
def test_fixture_defaults_and_no_side_effects(kan_equivariance, kan_dtype, pytestconfig):
    from hypothesis import settings

    from wskan_ext.equivariance_tests.profiles import PROFILES

    assert kan_dtype == torch.float64 and kan_equivariance.tolerance == 1e-9
    assert pytestconfig.getoption("--wskan-profile") is None
    # the plugin loads no profile unless asked: the one loaded is tests/conftest.py's choice
    wanted = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    assert settings._current_profile == PROFILES.get(wanted, wanted)


@given(st.data())
def test_fixture_strategies_compose(data):
    # function-scoped fixtures and @given do not mix; the plugin's class works directly
    from wskan_ext.equivariance_tests.plugin import KanEquivariance

    ke = KanEquivariance(torch.float32)
    w, perms = data.draw(ke.kans(min_depth=2, max_depth=3, min_hidden_width=2))
    assert w.dtype == torch.float32 and ke.tolerance == 1e-4
    ke.assert_equivariant(E.TinyKANNet(readout="edge"), w, perms, output="edge")


def test_plugin_options_in_a_pytest_run(pytester):
    from hypothesis import settings

    before = settings._current_profile
    pytester.makepyfile(test_user=textwrap.dedent("""
        import torch
        from hypothesis import given, settings
        from wskan_ext.equivariance_tests import examples as E

        def test_options(kan_equivariance, kan_dtype):
            assert kan_dtype == torch.float32
            assert kan_equivariance.tolerance == 1e-4
            assert settings._current_profile == "wskan-ci"
            assert settings.default.derandomize and settings.default.max_examples == 15

        def test_user_model(kan_equivariance):
            @kan_equivariance.settings(max_examples=3)
            @given(kan_equivariance.kans(min_depth=2, max_depth=2, min_hidden_width=2))
            def prop(wp):
                kan_equivariance.assert_invariant(E.TinyKANNet(), *wp)
            prop()
    """))
    res = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--wskan-profile", "ci", "--wskan-dtype", "float32")
    res.assert_outcomes(passed=2)
    res.stdout.fnmatch_lines(["wskan-equivariance: profile=wskan-ci, dtype=float32"])
    assert settings._current_profile == before  # the plugin restores the caller's profile
