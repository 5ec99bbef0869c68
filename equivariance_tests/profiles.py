"""Hypothesis profiles of the suite: ``wskan-ci`` and ``wskan-thorough``.

* ``wskan-ci`` -- deterministic (``derandomize=True``), 15 examples per property, no
  deadline: the same examples on every run, bounded time;
* ``wskan-thorough`` -- random, 200 examples per property, no deadline.
"""

from __future__ import annotations

PROFILES = {"ci": "wskan-ci", "thorough": "wskan-thorough"}


def register_profiles() -> None:
    """Register both profiles with Hypothesis (idempotent; loads neither)."""
    from hypothesis import HealthCheck, Phase, settings

    phases = tuple(p for p in Phase if p.name != "explain")  # keep failure reports short
    quiet = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
    settings.register_profile("wskan-ci", derandomize=True, max_examples=15, deadline=None,
                              suppress_health_check=quiet, print_blob=True, database=None, phases=phases)
    settings.register_profile("wskan-thorough", max_examples=200, deadline=None, suppress_health_check=quiet,
                              phases=phases)


def profile_settings(name: str):
    """The :class:`hypothesis.settings` of profile ``name`` (``"ci"``/``"thorough"`` or the
    full ``"wskan-..."`` name)."""
    from hypothesis import settings

    register_profiles()
    full = PROFILES.get(name, name)
    if full not in PROFILES.values():
        raise ValueError(f"unknown profile {name!r}; expected one of {sorted(PROFILES)}")
    return settings.get_profile(full)
