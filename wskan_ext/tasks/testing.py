"""Tiny zoos for tests and examples (seconds to build), cached by configuration.

``tiny_zoo(root, "digits")`` builds (or reuses) a zoo of 12 runs x 2 checkpoints under
``root/<name>``; ``"digits_inr"`` and ``"sine"`` give INR zoos for the ``inr_class`` and
``sine`` tasks. Every split is non-empty.
"""

from __future__ import annotations

import os

__all__ = ["TINY_ZOOS", "tiny_zoo", "trained_outputs_under_permutation", "assert_trained_symmetry"]

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


def trained_outputs_under_permutation(meta_model, net, split, seed: int = 3):
    """Outputs of a trained meta-model on ``split`` and on ``split`` with every KAN's hidden
    neurons randomly permuted (one permutation per model).

    Returns ``(a, b, perms)``: outputs on the original and on the permuted KANs and the
    permutations used.
    """
    import dataclasses

    import torch

    from ..kan.permute import permute_hidden, random_hidden_permutations

    perms = random_hidden_permutations(split.weights, torch.Generator().manual_seed(seed), per_model=True)
    moved = dataclasses.replace(split, weights=permute_hidden(split.weights, perms))
    idx = torch.arange(len(split))
    with torch.no_grad():
        a = net(meta_model.batch(meta_model.encode(split), idx)[0])
        b = net(meta_model.batch(meta_model.encode(moved), idx)[0])
    return a, b, perms


def assert_trained_symmetry(meta_model, net, split, task: str, rtol: float = 1e-4, atol: float = 1e-5):
    """Assert a trained meta-model is invariant (graph-level ``task``) or equivariant (edge-level
    ``"pruning"``) to hidden permutations of the KANs of ``split`` (float32 tolerances).

    Returns ``(a, b)`` (outputs before / after the permutation) for further checks.
    """
    import torch

    from ..nn.baselines import permute_edge_labels

    a, b, perms = trained_outputs_under_permutation(meta_model, net, split)
    if task == "pruning":
        torch.testing.assert_close(b[..., 0], permute_edge_labels(a[..., 0], split.weights.widths, perms),
                                   rtol=rtol, atol=atol)
    else:
        torch.testing.assert_close(b, a, rtol=rtol, atol=atol)
    return a, b
