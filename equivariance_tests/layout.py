"""Index maths of the hidden-permutation group acting on KAN-graph layouts.

For one KAN with widths ``[n_0, ..., n_L]`` (the layout contract of
``wskan_ext.graph``): neuron ``(l, i)`` is node ``node_offset[l] + i`` and edge
``(l, i, j)`` is edge ``edge_offset[l] + i * n_{l+1} + j``. A permutation ``p_h`` of
hidden layer ``h`` (new neuron ``j`` = old neuron ``p_h[j]``) acts on node-ordered
rows as ``y'[off_h + j] = y[off_h + p_h[j]]`` and on edge-ordered rows of layer ``l`` as
``y'[(l, i, j)] = y[(l, p_l[i], p_{l+1}[j])]`` (``p_0`` and ``p_L`` are identities).

A *unit* is one single KAN: ``(widths, perms)`` with ``perms`` a list of ``L - 1``
one-dimensional ``LongTensor``\\ s. Batched :class:`~wskan_ext.KANWeights` expand to one
unit per model (see :func:`units_of`).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

__all__ = [
    "units_of",
    "node_index",
    "edge_index_perm",
    "num_nodes",
    "num_edges",
    "decode_node",
    "decode_edge",
]

Unit = Tuple[List[int], List[torch.Tensor]]


def units_of(widths: Sequence[int], perms: Sequence[torch.Tensor], num_models) -> List[Unit]:
    """Split one (possibly batched) KAN and its permutations into single-KAN units.

    Shapes: ``perms[h]``: ``(n_h,)`` (shared by all models) or ``(B, n_h)`` (one per model).
    """
    widths = [int(n) for n in widths]
    if num_models is None:
        return [(widths, [torch.as_tensor(p).long().reshape(-1) for p in perms])]
    out = []
    for b in range(num_models):
        ps = []
        for p in perms:
            p = torch.as_tensor(p).long()
            ps.append(p[b] if p.dim() == 2 else p)
        out.append((widths, ps))
    return out


def _layer_perms(widths: Sequence[int], perms: Sequence[torch.Tensor], device) -> List[torch.Tensor]:
    """Permutation of every layer of neurons, identities on the input and output layer."""
    L = len(widths) - 1
    if len(perms) != L - 1:
        raise ValueError(f"expected {L - 1} hidden permutations for widths {list(widths)}, got {len(perms)}")
    full = [torch.arange(widths[0], device=device)]
    for h, p in enumerate(perms, start=1):
        p = p.to(device)
        if p.shape != (widths[h],):
            raise ValueError(f"hidden layer {h}: permutation must have shape ({widths[h]},), got {tuple(p.shape)}")
        full.append(p)
    full.append(torch.arange(widths[L], device=device))
    return full


def num_nodes(widths: Sequence[int]) -> int:
    return int(sum(widths))


def num_edges(widths: Sequence[int]) -> int:
    return int(sum(a * b for a, b in zip(widths[:-1], widths[1:])))


def node_index(units: Sequence[Unit], device=None) -> torch.Tensor:
    """Gather index ``idx`` with ``(g . y) = y[idx]`` for node-ordered rows of all units,
    concatenated in unit order. Shapes: ``-> (sum_u N_u,)``."""
    parts, base = [], 0
    for widths, perms in units:
        full = _layer_perms(widths, perms, device)
        off = base
        for n, p in zip(widths, full):
            parts.append(off + p)
            off += n
        base = off
    if not parts:
        return torch.zeros(0, dtype=torch.long, device=device)
    return torch.cat(parts)


def edge_index_perm(units: Sequence[Unit], device=None) -> torch.Tensor:
    """Gather index ``idx`` with ``(g . y) = y[idx]`` for edge-ordered rows of all units.
    Shapes: ``-> (sum_u E_u,)``."""
    parts, base = [], 0
    for widths, perms in units:
        full = _layer_perms(widths, perms, device)
        for l in range(len(widths) - 1):
            m = widths[l + 1]
            parts.append((base + full[l].unsqueeze(1) * m + full[l + 1].unsqueeze(0)).reshape(-1))
            base += widths[l] * m
    if not parts:
        return torch.zeros(0, dtype=torch.long, device=device)
    return torch.cat(parts)


def _locate(units, index: int, sizes) -> Tuple[int, int, List[int]]:
    base = 0
    for u, (widths, _) in enumerate(units):
        total = sum(sizes(widths))
        if index < base + total:
            return u, index - base, widths
        base += total
    raise IndexError(f"row {index} is beyond the {base} rows of the layout")


def decode_node(units: Sequence[Unit], index: int) -> str:
    """Describe node row ``index``: KAN number, layer, neuron and role."""
    u, r, widths = _locate(units, index, lambda w: list(w))
    for l, n in enumerate(widths):
        if r < n:
            role = "input" if l == 0 else ("output" if l == len(widths) - 1 else "hidden")
            return f"model {u}, node (layer {l}, neuron {r}) [{role}]"
        r -= n
    raise AssertionError("unreachable")


def decode_edge(units: Sequence[Unit], index: int) -> str:
    """Describe edge row ``index``: KAN number, layer, source and target neuron."""
    u, r, widths = _locate(units, index, lambda w: [a * b for a, b in zip(w[:-1], w[1:])])
    for l in range(len(widths) - 1):
        n, m = widths[l], widths[l + 1]
        if r < n * m:
            return f"model {u}, edge (layer {l}, from neuron {r // m} to neuron {r % m})"
        r -= n * m
    raise AssertionError("unreachable")
