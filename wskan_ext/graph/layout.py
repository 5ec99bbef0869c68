"""The KAN-graph's layout: node roles, base-function codes, feature counts and the per-
architecture index template shared by :mod:`~wskan_ext.graph.build` and
:mod:`~wskan_ext.graph.inverse`."""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch

from ..kan.spline import BASE_FUNCTIONS
from ..kan.weights import KANWeights

#: Base function names in the order used by ``node_base_fun``.
BASE_FUNCTION_NAMES: Tuple[str, ...] = tuple(sorted(BASE_FUNCTIONS))
ROLE_INPUT, ROLE_HIDDEN, ROLE_OUTPUT = 0, 1, 2
#: Number of node feature columns after the knots (or grid range), namely node_scale,
#: node_bias and the three role flags.
NODE_EXTRA_FEATURES = 5
ENCODINGS = {"coef": 0, "values": 1}
_NODE_FIELDS = ("node_layer", "node_pos", "node_role", "node_k", "node_base_fun")


def _arch_key(w: KANWeights) -> tuple:
    return (tuple(w.widths), tuple(w.grid_sizes), tuple(w.k), tuple(w.base_fun))


def _template(widths: Sequence[int], device) -> Dict[str, torch.Tensor]:
    """Per-graph index tensors (node and edge order of the layout contract)."""
    n = torch.tensor(widths, device=device)
    node_off = [0]
    for v in widths:
        node_off.append(node_off[-1] + v)
    L = len(widths) - 1
    node_layer = torch.repeat_interleave(torch.arange(L + 1, device=device), n)
    node_pos = torch.cat([torch.arange(v, device=device) for v in widths])
    src, dst, elayer = [], [], []
    for l in range(L):
        a, b = widths[l], widths[l + 1]
        src.append(node_off[l] + torch.arange(a, device=device).repeat_interleave(b))
        dst.append(node_off[l + 1] + torch.arange(b, device=device).repeat(a))
        elayer.append(torch.full((a * b,), l, device=device, dtype=torch.long))
    role = torch.full_like(node_layer, ROLE_HIDDEN)
    role[node_layer == 0] = ROLE_INPUT
    role[node_layer == L] = ROLE_OUTPUT
    return dict(
        edge_index=torch.stack([torch.cat(src), torch.cat(dst)]),
        edge_layer=torch.cat(elayer),
        node_layer=node_layer,
        node_pos=node_pos,
        node_role=role,
    )


def _check(w: KANWeights, label: str) -> None:
    """Fast re-validation: full :meth:`KANWeights.validate` only when a cheap test (sums are
    finite, knots increase) fails, so that the error names the layer and tensor."""
    ok = all(bool(torch.isfinite(t.sum())) for f in ("coef", "scale_base", "scale_sp", "mask", "node_scale", "node_bias")
             for t in getattr(w, f))
    ok = ok and all(bool(torch.isfinite(g).all()) and bool((g[..., 1:] >= g[..., :-1]).all()) for g in w.grid)
    if not ok:
        try:
            w.validate()
        except (TypeError, ValueError) as err:
            raise type(err)(f"{label}: {err}") from None
