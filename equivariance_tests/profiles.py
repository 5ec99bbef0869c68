"""The project's Hypothesis profiles -- defined here once, used by the suite, its pytest
plugin, its command line and the project's own tests.

* ``wskan-ci`` -- deterministic (``derandomize=True``), :data:`CI_EXAMPLES` (15) examples
  per property, no deadline, no example database: the same examples on every run, bounded
  time (``WSKAN_CI_EXAMPLES`` overrides the count);
* ``wskan-thorough`` -- random, :data:`THOROUGH_EXAMPLES` (200) examples per property, no
  deadline (``WSKAN_THOROUGH_EXAMPLES`` overrides the count).

The short names ``"ci"`` and ``"thorough"`` select them everywhere (``--wskan-profile``,
``--profile``, ``HYPOTHESIS_PROFILE`` in this project's tests). A test that needs fewer (or
more) examples than the profile's default asks for a *relative* size with :func:`examples`,
so that the ``thorough`` profile deepens every test by the same factor::

    @settings(max_examples=examples(8))   # 8 under ci, ~107 under thorough
    @given(...)
    def test_expensive_property(...): ...
"""

from __future__ import annotations

import os

__all__ = ["PROFILES", "CI_EXAMPLES", "THOROUGH_EXAMPLES", "register_profiles", "profile_settings", "examples",
           "active_max_examples"]

#: short name -> registered Hypothesis profile name
PROFILES = {"ci": "wskan-ci", "thorough": "wskan-thorough"}

#: examples per property under ``ci`` (the unit of :func:`examples`)
CI_EXAMPLES = 15
#: examples per property under ``thorough``
THOROUGH_EXAMPLES = 200


def _count(env: str, default: int) -> int:
    value = os.environ.get(env)
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{env} must be a positive integer, got {value!r}") from None
    if n < 1:
        raise ValueError(f"{env} must be a positive integer, got {value!r}")
    return n


def register_profiles(aliases: bool = False) -> None:
    """Register ``wskan-ci`` and ``wskan-thorough`` with Hypothesis (idempotent; loads
    neither). With ``aliases``, also register them as ``ci`` and ``thorough`` (what this
    project's test suite does, so that ``--hypothesis-profile thorough`` works too; a library
    should not claim those short names in a user's process by default)."""
    from hypothesis import HealthCheck, Phase, settings

    phases = tuple(p for p in Phase if p.name != "explain")  # keep failure reports short
    quiet = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
    # an explicit parent: otherwise a profile inherits from whichever profile is loaded now
    base = settings.get_profile("default")
    ci = _count("WSKAN_CI_EXAMPLES", CI_EXAMPLES)
    thorough = _count("WSKAN_THOROUGH_EXAMPLES", THOROUGH_EXAMPLES)
    settings.register_profile("wskan-ci", parent=base, derandomize=True, max_examples=ci, deadline=None,
                              suppress_health_check=quiet, print_blob=True, database=None, phases=phases)
    settings.register_profile("wskan-thorough", parent=base, max_examples=thorough, deadline=None,
                              suppress_health_check=quiet, phases=phases)
    if aliases:
        for short, full in PROFILES.items():
            settings.register_profile(short, settings.get_profile(full))


def profile_settings(name: str):
    """The :class:`hypothesis.settings` of profile ``name`` (``"ci"``/``"thorough"`` or the
    full ``"wskan-..."`` name)."""
    from hypothesis import settings

    register_profiles()
    full = PROFILES.get(name, name)
    if full not in PROFILES.values():
        raise ValueError(f"unknown profile {name!r}; expected one of {sorted(PROFILES)}")
    return settings.get_profile(full)


def active_max_examples() -> int:
    """``max_examples`` of the Hypothesis profile loaded now."""
    from hypothesis import settings

    return int(settings.default.max_examples)


def examples(n: int) -> int:
    """A per-test example count *relative to the active profile*: ``n`` under ``ci`` (whose
    default is :data:`CI_EXAMPLES`), scaled by ``max_examples / CI_EXAMPLES`` of the profile
    loaded now (``thorough``: about 13x; ``WSKAN_CI_EXAMPLES=30``: 2x). Never below 1.

    It reads the profile when it is called -- at decoration time for
    ``@settings(max_examples=examples(n))`` -- so load the profile first (the project's
    ``tests/conftest.py`` and the plugin's ``--wskan-profile`` both do, before collection).
    """
    if n < 1:
        raise ValueError(f"examples(n) needs n >= 1, got {n}")
    return max(1, round(n * active_max_examples() / CI_EXAMPLES))
