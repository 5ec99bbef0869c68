"""Hidden-neuron permutations of a KAN: the symmetry (:func:`permute_hidden`), random
draws, and the one indexing helper (:func:`take`) the library and the equivariance suite use."""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from .weights import FIELDS, KANWeights

__all__ = ["permute_hidden", "random_hidden_permutations", "check_perm", "take"]


def check_perm(p, n: int, where: str, batch) -> torch.Tensor:
    if not isinstance(p, torch.Tensor):
        p = torch.as_tensor(p)
    if p.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{where}: permutation must be an integer tensor, got {p.dtype}")
    p = p.long()
    if p.shape[-1:] != (n,) or p.dim() not in (1, 1 + len(batch)) or (p.dim() == 2 and tuple(p.shape[:1]) != batch):
        raise ValueError(
            f"{where}: permutation must have shape ({n},)" + (f" or {batch + (n,)}" if batch else "") + f", got {tuple(p.shape)}"
        )
    ref = torch.arange(n, device=p.device)
    if not torch.equal(p.sort(dim=-1).values, ref.expand_as(p)):
        raise ValueError(f"{where}: {p.tolist()} is not a permutation of range({n})")
    return p


def take(t: torch.Tensor, perm, axis: int) -> torch.Tensor:
    """Index ``t`` along ``axis`` (either sign) by ``perm``: ``(n,)``, or ``(B, n)`` for one
    permutation per entry of the leading (model) axis of ``t``.

    Shapes: ``t: (B, ..., n, ...)``; returns the same shape."""
    perm = torch.as_tensor(perm).long().to(t.device)
    axis = axis % t.dim()
    if perm.dim() == 1:
        return t.index_select(axis, perm)
    shape = [1] * t.dim()
    shape[0], shape[axis] = perm.shape[0], perm.shape[1]
    return torch.gather(t, axis, perm.view(shape).expand(*t.shape))


def permute_hidden(weights: KANWeights, perms: Sequence, *, permute_grid: bool = True) -> KANWeights:
    r"""Apply permutations to the hidden neurons of a KAN (a symmetry of its function).

    ``perms[h]`` permutes hidden layer ``h+1`` (the neurons between layer ``h`` and
    ``h+1``); the new neuron ``j`` is the old neuron ``perms[h][j]``. For hidden layer
    ``h+1``, this permutes the out-axis of layer ``h``'s edge tensors and node affine and
    the in-axis of layer ``h+1``'s edge tensors *and its grid rows*.

    Args:
        weights: a single or batched :class:`KANWeights`.
        perms: ``depth - 1`` permutations, each ``(n_h,)`` or, for batched weights,
            ``(B, n_h)`` (one permutation per model).
        permute_grid: leave ``True``; ``False`` exists only to demonstrate that the grid
            rows are part of the symmetry (the result is then a *different* function).

    Returns: a new :class:`KANWeights` (the input is not modified).
    """
    if not isinstance(weights, KANWeights):
        raise TypeError(f"permute_hidden expects KANWeights, got {type(weights).__name__}")
    perms = list(perms)
    if len(perms) != weights.depth - 1:
        raise ValueError(
            f"permute_hidden: expected {weights.depth - 1} permutations (one per hidden layer), got {len(perms)}"
        )
    batch = (weights.num_models,) if weights.batched else ()
    kw = {f: list(getattr(weights, f)) for f in FIELDS}
    for h, p in enumerate(perms):
        n = weights.widths[h + 1]
        p = check_perm(p, n, f"hidden layer {h + 1}", batch)
        # outgoing axis of layer h
        kw["coef"][h] = take(kw["coef"][h], p, -2)
        for f in ("scale_base", "scale_sp", "mask"):
            kw[f][h] = take(kw[f][h], p, -1)
        for f in ("node_scale", "node_bias"):
            kw[f][h] = take(kw[f][h], p, -1)
        # incoming axis of layer h+1
        kw["coef"][h + 1] = take(kw["coef"][h + 1], p, -3)
        for f in ("scale_base", "scale_sp", "mask"):
            kw[f][h + 1] = take(kw[f][h + 1], p, -2)
        if permute_grid:
            kw["grid"][h + 1] = take(kw["grid"][h + 1], p, -2)
    return weights._replace(**kw)


def random_hidden_permutations(
    weights: KANWeights, generator: Optional[torch.Generator] = None, per_model: bool = False
) -> List[torch.Tensor]:
    """Draw one uniformly random permutation per hidden layer (``(n_h,)`` each, or
    ``(B, n_h)`` with ``per_model=True`` for batched weights)."""
    out = []
    for n in weights.widths[1:-1]:
        if per_model and weights.batched:
            out.append(torch.stack([torch.randperm(n, generator=generator) for _ in range(weights.num_models)]))
        else:
            out.append(torch.randperm(n, generator=generator))
    return out

