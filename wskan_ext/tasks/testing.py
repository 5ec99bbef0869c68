"""Tiny zoos for tests and examples (seconds to build), cached by configuration.

``tiny_zoo(root, "digits")`` builds (or reuses) a zoo of 12 runs x 2 checkpoints under
``root/<name>``; ``"digits_inr"`` and ``"sine"`` give INR zoos for the ``inr_class`` and
``sine`` tasks. Every split is non-empty.
"""

from __future__ import annotations

import os

__all__ = ["TINY_ZOOS", "tiny_zoo"]

_COMMON = dict(size=12, shard_size=12, steps=10, checkpoints=[5, 10], prune_samples=64,
               split_fractions=[0.5, 0.25, 0.25], lr=[5e-3, 5e-2])
TINY_ZOOS = {
    "digits": dict(dataset="digits", downsample=4, hidden=[3], label_noise=[0.0, 0.5], **_COMMON),
    "digits_inr": dict(dataset="digits_inr", hidden=[3], **_COMMON),
    "sine": dict(dataset="sine", hidden=[3], **_COMMON),
}


def tiny_zoo(root: str, name: str = "digits", **overrides) -> str:
    """Build (or resume) tiny zoo ``name`` in ``root/name``; returns its directory."""
    from ..zoo.build import BuildConfig, build_zoo

    if name not in TINY_ZOOS:
        raise ValueError(f"unknown tiny zoo {name!r}; choose from {sorted(TINY_ZOOS)}")
    out = os.path.join(root, name + ("-" + "-".join(f"{k}{v}" for k, v in sorted(overrides.items())) if overrides else ""))
    build_zoo(BuildConfig.from_dict({**TINY_ZOOS[name], **overrides}), out, progress=False)
    return out
