"""Shared test configuration: Hypothesis profiles, torch threads, markers and devices.

Hypothesis profiles (select with ``HYPOTHESIS_PROFILE=ci|thorough`` or
``--hypothesis-profile``; default ``ci``) are the ones of
:mod:`wskan_ext.equivariance_tests.profiles` -- one definition for the tests, the suite's
pytest plugin and its command line:

* ``ci`` -- deterministic (derandomized), bounded (15 examples per property, or
  ``WSKAN_CI_EXAMPLES``), no deadline;
* ``thorough`` -- random, 200 examples per property (or ``WSKAN_THOROUGH_EXAMPLES``).

Tests that need a different size say so relative to the profile, with
``@settings(max_examples=examples(n))`` (``n`` under ``ci``, scaled up under ``thorough``).

Threads: one torch thread per process (so ``pytest -n N`` runs N single-threaded
workers instead of N oversubscribed ones); ``WSKAN_TEST_THREADS`` overrides.

Markers: ``slow`` (tests that take seconds; still run by default, deselect with
``-m "not slow"``), ``gpu``.
"""

import importlib.util
import os

import pytest
import torch
from hypothesis import settings

from wskan_ext.equivariance_tests.profiles import PROFILES, register_profiles

register_profiles(aliases=True)
_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILES.get(_PROFILE, _PROFILE))

torch.set_num_threads(int(os.environ.get("WSKAN_TEST_THREADS", "1")))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_configure(config):
    # also declared in pyproject.toml; repeated here so the tests run from any config
    config.addinivalue_line("markers", "slow: takes seconds; still run by default (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "gpu: needs CUDA; skipped when absent")


def pytest_report_header(config):
    s = settings.default
    return (f"wskan tests: hypothesis profile={_PROFILE} (max_examples={s.max_examples}, "
            f"derandomize={s.derandomize}), torch threads={torch.get_num_threads()}")


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """Parametrise a test over ``cpu`` and ``cuda`` (skipped without a GPU)."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    return torch.device(request.param)


class CLI:
    """``wskan`` run in-process: ``cli(*argv) -> (exit code, stdout, stderr)``, and
    ``cli.one_line(rc, err, cmd)``: the error policy (exit 2, one ``wskan CMD: error:`` line)."""

    def __init__(self, capsys):
        self.capsys = capsys

    def __call__(self, *argv):
        from wskan_ext.cli import main

        try:
            rc = main(list(argv))
        except SystemExit as e:
            rc = e.code
        out = self.capsys.readouterr()
        return rc, out.out, out.err

    @staticmethod
    def one_line(rc, err, cmd):
        assert rc == 2 and "Traceback" not in err, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"wskan {cmd}: error: "), err
        return lines[0]


@pytest.fixture
def cli(capsys):
    """See :class:`CLI`."""
    return CLI(capsys)


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_script(relpath: str, name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(_ROOT, relpath))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def load_script():
    """``load_script("benchmarks/results.py", "module_name")``: a script or test file of the
    repository (path relative to its root) imported as a module (``benchmarks/`` is no package)."""
    return _load_script
