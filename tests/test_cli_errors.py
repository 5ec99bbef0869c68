"""The ``wskan`` error policy (issue 14): every subcommand turns a user's mistake into one line
``wskan <cmd>: error: <message>`` on stderr with exit status 2; ``--debug`` shows the traceback.

Run in-process through :func:`wskan_ext.cli.main` (fast); one subprocess test checks the
console-script wiring."""

import argparse
import os
import subprocess
import sys
import types

import pytest

from wskan_ext import __version__, cli


def run(capsys, *argv):
    """``(status, stdout, stderr)``: the returned status, or that of the ``SystemExit`` that
    argparse (``--help``, ``--version``, usage errors) or a subcommand's message raised."""
    try:
        rc = cli.main(list(argv))
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_one_line_error(rc, err, cmd):
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith(f"wskan {cmd}: error: "), lines[0]
    return lines[0]


# ------------------------------------------------------------------ one test per subcommand
def test_version(capsys):
    rc, out, _ = run(capsys, "--version")
    assert rc == 0 and out.strip() == f"wskan {__version__}"


def test_check_help_shows_defaults_and_choices(capsys):
    rc, out, _ = run(capsys, "check", "--help")
    assert rc == 0 and out.startswith("usage: wskan check")
    assert "(default: ci)" in out and "(default: float64)" in out and "{ci,thorough}" in out
    assert "--seed" in out and "example" in out


def test_check_bad_model(capsys):
    rc, out, err = run(capsys, "check", "--model", "no_colon_here")
    assert "package.module:factory" in assert_one_line_error(rc, err, "check")


def test_zoo_build_bad_flag_value(capsys, tmp_path):
    rc, _, err = run(capsys, "zoo", "build", "--out", str(tmp_path / "z"), "--size", "many")
    line = assert_one_line_error(rc, err, "zoo build")
    assert "--size" in line and "--help" in line


def test_zoo_build_missing_data_dir(capsys, tmp_path):
    rc, _, err = run(capsys, "zoo", "build", "--out", str(tmp_path / "z"), "--dataset", "idx",
                     "--data-dir", str(tmp_path / "no_such_dir"))
    assert "no_such_dir" in assert_one_line_error(rc, err, "zoo build")


def test_zoo_build_unknown_preset(capsys, tmp_path):  # a subcommand's own SystemExit("...") joins the policy
    with pytest.raises(SystemExit, match="no_such_preset") as e:  # str(): the message, as before
        cli.main(["zoo", "build", "--out", str(tmp_path / "z"), "--preset", "no_such_preset"])
    assert isinstance(e.value, cli.CommandExit)
    assert "no_such_preset" in assert_one_line_error(e.value.code, capsys.readouterr().err, "zoo build")


def test_zoo_info_missing_dir(capsys, tmp_path):
    rc, _, err = run(capsys, "zoo", "info", str(tmp_path / "missing_zoo"))
    assert "missing_zoo" in assert_one_line_error(rc, err, "zoo info")


def test_train_missing_zoo(capsys, tmp_path):
    rc, _, err = run(capsys, "train", "--zoo", str(tmp_path / "missing_zoo"), "--task", "accuracy",
                     "--model", "wskan", "--out", str(tmp_path / "run"))
    assert rc == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wskan train:") and "missing_zoo" in lines[0], err


def test_train_missing_zoo_uses_the_common_format(capsys, tmp_path):
    rc, _, err = run(capsys, "train", "--zoo", str(tmp_path / "missing_zoo"), "--task", "accuracy",
                     "--model", "wskan", "--out", str(tmp_path / "run"))
    assert_one_line_error(rc, err, "train")


def test_train_bad_ema_is_one_line(capsys, tmp_path):
    rc, _, err = run(capsys, "train", "--zoo", str(tmp_path / "missing_zoo"), "--task", "accuracy",
                     "--model", "wskan", "--ema", "1.5", "--out", str(tmp_path / "run"))
    assert "ema (--ema) must be 0 (off) or a decay in (0, 1)" in assert_one_line_error(rc, err, "train")
    assert not (tmp_path / "run").exists()


def test_evaluate_missing_run(capsys, tmp_path):
    rc, _, err = run(capsys, "evaluate", "--run", str(tmp_path / "missing"))
    assert "missing" in assert_one_line_error(rc, err, "evaluate")


def test_convert_mlp_to_kan_bad_file(capsys, tmp_path):
    bad = tmp_path / "mlp.safetensors"
    bad.write_bytes(b"this is not a safetensors file")
    rc, _, err = run(capsys, "convert", "mlp-to-kan", "--state-dict", str(bad), "--out", str(tmp_path / "k"))
    assert_one_line_error(rc, err, "convert mlp-to-kan")
    assert not (tmp_path / "k").exists()


def test_convert_mlp_to_kan_missing_file(capsys, tmp_path):
    rc, _, err = run(capsys, "convert", "mlp-to-kan", "--state-dict", str(tmp_path / "nope.safetensors"),
                     "--out", str(tmp_path / "k"))
    assert "nope.safetensors" in assert_one_line_error(rc, err, "convert mlp-to-kan")


def test_debug_flag_shows_the_traceback(capsys, tmp_path, monkeypatch):
    missing = str(tmp_path / "missing_zoo")
    for argv in (["--debug", "zoo", "info", missing], ["zoo", "info", missing, "--debug"]):
        with pytest.raises(cli.EXPECTED_ERRORS):
            cli.main(argv)
    monkeypatch.setenv("WSKAN_DEBUG", "1")
    with pytest.raises(cli.EXPECTED_ERRORS):
        cli.main(["zoo", "info", missing])


# ------------------------------------------------------------------ the policy itself
@pytest.fixture
def boom(monkeypatch):
    """A fake subcommand ``wskan boom`` raising whatever ``boom.error`` is set to."""
    mod = types.ModuleType("wskan_test_boom_cli")
    state = types.SimpleNamespace(error=None)

    def add_parser(sub):
        p = sub.add_parser("boom", help="raise", epilog="example:\n  wskan boom")
        p.add_argument("--n", type=int, default=3, help="a number")

        def func(args):
            raise state.error

        p.set_defaults(func=func)

    mod.add_parser = add_parser
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", [mod.__name__])
    return state


def _zoo_format_error():
    from wskan_ext.zoo.store import ZooFormatError

    return ZooFormatError("shard_0003.safetensors: field 'coef' has shape (2, 3), expected (2, 4)")


@pytest.mark.parametrize("error, shown", [
    (ValueError("lr must be > 0, got -1"), "lr must be > 0, got -1"),
    (TypeError("expected a KANWeights"), "expected a KANWeights"),
    (FileNotFoundError(2, "No such file or directory", "zoo/manifest.json"), "zoo/manifest.json"),
    (NotADirectoryError(20, "Not a directory", "zoo"), "Not a directory"),
    (KeyError(99999), "unknown key 99999"),
    (KeyError("member 99999 is not in the zoo (0..63)"), "member 99999 is not in the zoo (0..63)"),
    (ImportError("No module named 'nfn'"), "No module named 'nfn'"),
    (OSError(28, "No space left on device"), "No space left on device"),
    (ValueError("two\nlines"), "two; lines"),
    (SystemExit("wskan boom: preset 'x' unknown"), "preset 'x' unknown"),
    (None, "shard_0003.safetensors: field 'coef'"),  # ZooFormatError
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None)
def test_expected_errors_become_one_line(capsys, boom, error, shown):
    boom.error = error if error is not None else _zoo_format_error()
    rc, _, err = run(capsys, "boom")
    assert shown in assert_one_line_error(rc, err, "boom")


def test_bugs_keep_their_traceback(capsys, boom):
    boom.error = RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["boom"])


def test_usage_errors_are_one_line_and_help_shows_defaults(capsys, boom):
    rc, _, err = run(capsys, "boom", "--n", "x")
    assert "argument --n: invalid int value" in assert_one_line_error(rc, err, "boom")
    rc, out, _ = run(capsys, "boom", "--help")
    assert rc == 0 and "a number (default: 3)" in out and "example:\n  wskan boom" in out


def test_every_parser_shows_defaults_and_keeps_line_breaks():
    def walk(p):
        yield p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for s in a.choices.values():
                    yield from walk(s)

    for p in walk(cli.build_parser()):
        assert p.formatter_class is cli.HelpFormatter or issubclass(p.formatter_class, (
            argparse.ArgumentDefaultsHelpFormatter)), (p.prog, p.formatter_class)


def test_no_command_prints_help(capsys):
    rc, out, _ = run(capsys)
    assert rc == 2 and "COMMAND" in out and "--debug" in out


@pytest.mark.slow
def test_console_script_exit_status(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "wskan_ext.cli", "zoo", "info", str(tmp_path / "nope")], env=env,
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("wskan zoo info: error: ") and res.stderr.count("\n") == 1, res.stderr
