"""pytest plugin of the KAN equivariance suite (entry point ``pytest11: wskan_equivariance``).

It is loaded by every pytest run in an environment where ``wskan_ext`` is installed, so it
does nothing unless asked: it only adds options and fixtures; nothing is autouse, and no
Hypothesis profile is loaded unless ``--wskan-profile`` is given.

Options:
    ``--wskan-profile {ci,thorough}``: load the Hypothesis profile ``wskan-ci`` or
    ``wskan-thorough`` (see :mod:`.profiles`) for the whole run.
    ``--wskan-dtype {float64,float32}``: dtype of the ``kan_equivariance`` fixture (default
    ``float64``).
    ``--wskan-tolerance FLOAT``: override the dtype's default tolerance.

Fixtures:
    ``kan_equivariance``: a :class:`KanEquivariance` bound to those options.
    ``kan_dtype``: the configured ``torch.dtype``.
"""

from __future__ import annotations

import pytest

_DTYPES = ("float64", "float32")


def pytest_addoption(parser):
    group = parser.getgroup("wskan-equivariance", "KAN equivariance suite (wskan_ext)")
    group.addoption("--wskan-profile", choices=("ci", "thorough"), default=None,
                    help="load the Hypothesis profile wskan-ci / wskan-thorough")
    group.addoption("--wskan-dtype", choices=_DTYPES, default="float64",
                    help="dtype for the kan_equivariance fixture (default float64)")
    group.addoption("--wskan-tolerance", type=float, default=None,
                    help="override the dtype's default equivariance tolerance")


def pytest_configure(config):
    profile = config.getoption("--wskan-profile", default=None)
    if profile:
        from hypothesis import settings

        from .profiles import PROFILES, register_profiles

        register_profiles()
        previous = settings._current_profile
        settings.load_profile(PROFILES[profile])
        if previous is not None:  # restore on unconfigure (matters for in-process pytest runs)
            config.add_cleanup(lambda: settings.load_profile(previous))


def pytest_report_header(config):
    profile = config.getoption("--wskan-profile", default=None)
    if profile:
        return f"wskan-equivariance: profile=wskan-{profile}, dtype={config.getoption('--wskan-dtype')}"
    return None


class KanEquivariance:
    """The checks of :mod:`.checks` with the configured dtype and tolerance.

    Attributes:
        dtype: the ``torch.dtype`` to build KANs in (``--wskan-dtype``).
        tolerance: the equivariance tolerance (``--wskan-tolerance`` or the dtype default).
        strategies: the :mod:`.strategies` module.
    """

    def __init__(self, dtype, tolerance=None, profile=None):
        from . import checks, strategies

        self._checks = checks
        self.strategies = strategies
        self.dtype = dtype
        self.tolerance = checks.default_tolerance(dtype) if tolerance is None else float(tolerance)
        self.profile = profile or "ci"

    def settings(self, **overrides):
        """Hypothesis settings of the configured profile (``ci`` unless ``--wskan-profile``)."""
        from hypothesis import settings

        from .profiles import profile_settings

        return settings(profile_settings(self.profile), **overrides)

    def kans(self, **kwargs):
        """:func:`.strategies.kans_and_permutations` in the configured dtype."""
        kwargs.setdefault("dtype", self.dtype)
        return self.strategies.kans_and_permutations(**kwargs)

    def error(self, f, kans, perms=None, **kw):
        return self._checks.equivariance_error(f, kans, perms, **kw)

    def assert_equivariant(self, f, kans, perms=None, **kw):
        __tracebackhide__ = True
        kw.setdefault("tolerance", self.tolerance)
        return self._checks.assert_equivariant(f, kans, perms, **kw)

    def assert_invariant(self, f, kans, perms=None, **kw):
        __tracebackhide__ = True
        kw.setdefault("tolerance", self.tolerance)
        return self._checks.assert_invariant(f, kans, perms, **kw)

    def assert_sensitive(self, f, kans, perm=None, **kw):
        __tracebackhide__ = True
        return self._checks.assert_sensitive(f, kans, perm, **kw)

    def run_suite(self, model, **kw):
        """:func:`.suite.run_suite` with the configured dtype and profile."""
        from .suite import run_suite

        kw.setdefault("dtype", self.dtype)
        kw.setdefault("profile", self.profile)
        kw.setdefault("tolerance", self.tolerance)
        return run_suite(model, **kw)


@pytest.fixture
def kan_dtype(request):
    """The ``torch.dtype`` chosen with ``--wskan-dtype`` (default ``float64``)."""
    import torch

    return getattr(torch, request.config.getoption("--wskan-dtype"))


@pytest.fixture
def kan_equivariance(request, kan_dtype):
    """A :class:`KanEquivariance`: the suite's checks with the configured dtype/tolerance."""
    return KanEquivariance(kan_dtype, request.config.getoption("--wskan-tolerance"),
                           request.config.getoption("--wskan-profile"))
