r"""Probe features: statistics of a KAN's activations on a fixed set of unlabeled inputs.

Some labels (pykan's pruning attribution, test accuracy) depend on the weights *and* on the
input distribution, which the weights reveal only through the forward pass. A *probe set*
is a fixed matrix :math:`X \in \mathbb{R}^{P \times n_0}` of unlabeled inputs drawn from the
zoo's training data (:func:`probe_inputs`). Every KAN is evaluated exactly on it
(:meth:`~wskan_ext.KANWeights.forward` with ``return_hidden=True``), and

* every neuron :math:`(l, i)` gets statistics of its activations
  :math:`x_{l,i}(X_s)` over the probes (:data:`NODE_STATS`: mean, std, min, max, the
  quartiles and :math:`\log(\mathrm{std} + 10^{-4})`);
* every edge :math:`(l, i, j)` gets statistics of its edge function's values
  :math:`\phi^{(l)}_{ij}(x_{l,i}(X_s))` (spline + base part, times the mask, as in
  :func:`wskan_ext.zoo.edge_attribution`; :data:`EDGE_STATS`: std, mean of
  :math:`|\phi|`, mean and :math:`\log(\mathrm{std} + 10^{-4})`).

A hidden permutation permutes a layer's activations, hence the node statistics move with
their neurons and the edge statistics with their edges: appended to node/edge features of
the KAN-graph, they keep WS-KAN invariant (graph head) and equivariant (node/edge heads).
"""

from __future__ import annotations

from typing import Tuple

import torch

from ..kan.weights import KANWeights

__all__ = ["NODE_STATS", "EDGE_STATS", "probe_inputs", "probe_features"]

NODE_STATS = ("mean", "std", "min", "max", "q25", "q50", "q75", "log_std")
EDGE_STATS = ("std", "mean_abs", "mean", "log_std")
_EPS = 1e-4


def probe_inputs(zoo, num: int, seed: int = 0) -> torch.Tensor:
    """``num`` inputs drawn without replacement (seeded) from the training inputs of the
    dataset ``zoo`` was built on (classification zoos: ``x_train``; INR zoos: the shared
    coordinates). No labels are read.

    Shapes: returns ``(P, n_0)``, ``P = min(num, available)``.
    """
    from ..zoo.build import BuildConfig, load_dataset
    from ..zoo.store import Zoo, read_manifest

    root = zoo.root if isinstance(zoo, Zoo) else str(zoo)
    if int(num) < 2:
        raise ValueError(f"probe: need at least 2 probe inputs (a std over probes), got {num}")
    data = load_dataset(BuildConfig.from_dict(read_manifest(root)["config"]))
    x = data.x_train if hasattr(data, "x_train") else data.coords
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(x.shape[0], generator=g)[: int(num)]
    return x[idx.sort().values]


def _stats_nodes(a: torch.Tensor) -> torch.Tensor:
    """``(B, s, n)`` -> ``(B, n, len(NODE_STATS))``."""
    std = a.std(1, unbiased=False)
    q = torch.quantile(a, torch.tensor([0.25, 0.5, 0.75], dtype=a.dtype, device=a.device), dim=1)  # (3, B, n)
    return torch.stack([a.mean(1), std, a.amin(1), a.amax(1), q[0], q[1], q[2], (std + _EPS).log()], -1)


@torch.no_grad()
def probe_features(w: KANWeights, x: torch.Tensor, chunk: int = 128) -> Tuple[torch.Tensor, torch.Tensor]:
    """Node and edge probe statistics of batched ``w`` on probes ``x``, in KAN-graph node
    and edge order (layer by layer; edges source-major), computed in the dtype of ``w``.

    Shapes: ``x (P, n_0)``; returns ``(B, N, len(NODE_STATS))`` and
    ``(B, E, len(EDGE_STATS))`` with ``N = sum_l n_l``, ``E = sum_l n_l n_{l+1}``.
    """
    if not w.batched:
        w = w.unsqueeze()
    x = x.to(device=w.device, dtype=w.dtype)
    nodes, edges = [], []
    for a in range(0, w.num_models, chunk):
        wc = w[a:a + chunk]
        _, acts = wc.forward(x, return_hidden=True)
        nodes.append(torch.cat([_stats_nodes(t) for t in acts], 1))
        per_layer = []
        for l in range(wc.depth):
            phi = wc.edge_functions(l, acts[l])  # (b, s, n, m)
            std = phi.std(1, unbiased=False)
            st = torch.stack([std, phi.abs().mean(1), phi.mean(1), (std + _EPS).log()], -1)  # (b, n, m, F)
            per_layer.append(st.flatten(1, 2))
        edges.append(torch.cat(per_layer, 1))
    return torch.cat(nodes), torch.cat(edges)
