r"""Labels computed for every zoo member: accuracy / loss, INR fit quality, pruning masks.

**Pruning masks** follow pykan 0.2.8 (``MultKAN.attribute`` then ``prune_edge``). With
activations :math:`x_l` on the data, edge outputs :math:`\phi^{(l)}_{ij}(x_{l,i})` and
pre-affine node sums :math:`z^{(l+1)}_j = \sum_i \phi^{(l)}_{ij}`,

.. math::
    A^{(l)}_{ij} = \operatorname{std}_s \phi^{(l)}_{ij}, \qquad
    \sigma^{(l+1)}_j = \operatorname{std}_s z^{(l+1)}_j

(unbiased standard deviations over the samples). Scores flow back from the outputs,
starting from :math:`S^{(L)} = I_{n_L}` (one row per output):

.. math::
    E^{(l)}_{kij} = A^{(l)}_{ij} \frac{S^{(l+1)}_{kj}}{\sigma^{(l+1)}_j + 10^{-4}},\qquad
    S^{(l)}_{ki} = \sum_j E^{(l)}_{kij},

and the edge score is :math:`e^{(l)}_{ij} = \operatorname{mean}_k E^{(l)}_{kij}`. Since
every step is linear in :math:`S`, we propagate :math:`\operatorname{mean}_k S` directly.
An edge is kept iff :math:`e^{(l)}_{ij} > \tau` (pykan's default :math:`\tau = 0.03`) and
its current mask is non-zero. pykan stores scores as ``(out, in)``; ours are ``(in, out)``
like every edge tensor of :class:`~wskan_ext.KANWeights`.
"""

from __future__ import annotations

from typing import Dict, List

import torch

from ..kan.weights import KANWeights
from .trainer import batched_loss

__all__ = ["evaluate", "edge_attribution", "pruning_masks", "psnr", "PYKAN_EDGE_THRESHOLD"]

#: pykan's default ``prune_edge`` threshold.
PYKAN_EDGE_THRESHOLD = 3e-2


def _chunks(B: int, chunk: int):
    for a in range(0, B, chunk):
        yield slice(a, min(B, a + chunk))


@torch.no_grad()
def evaluate(weights: KANWeights, x: torch.Tensor, y: torch.Tensor, task: str = "classification",
             chunk: int = 64) -> Dict[str, torch.Tensor]:
    """Per-model metrics of batched ``weights`` (evaluated with
    :meth:`~wskan_ext.KANWeights.forward`, in chunks of ``chunk`` models).

    Returns ``{"acc", "loss"}`` (classification; mean cross-entropy) or ``{"mse", "psnr"}``
    (regression; PSNR with peak 1, see :func:`~wskan_ext.zoo.psnr`), each ``(B,)``.

    Shapes: ``x (s, n_0)``; ``y (s,)`` class ids or ``(B, s, c)`` targets.
    """
    out: Dict[str, List[torch.Tensor]] = {}
    for sl in _chunks(weights.num_models, chunk):
        pred = weights[sl].forward(x)  # (b, s, c)
        if task == "classification":
            tgt = y.expand(pred.shape[0], -1)
            out.setdefault("loss", []).append(batched_loss(pred, tgt, task).mean(1))
            out.setdefault("acc", []).append((pred.argmax(-1) == tgt).to(pred.dtype).mean(1))
        else:
            mse = ((pred - y[sl]) ** 2).mean((1, 2))
            out.setdefault("mse", []).append(mse)
            out.setdefault("psnr", []).append(psnr(mse))
    return {k: torch.cat(v) for k, v in out.items()}


def psnr(mse: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    r""":math:`10 \log_{10}(\text{peak}^2 / \text{mse})` in dB (INR targets lie in ``[0, 1]``)."""
    return 10.0 * torch.log10(peak ** 2 / mse.clamp_min(1e-30))


@torch.no_grad()
def edge_attribution(weights: KANWeights, x: torch.Tensor) -> List[torch.Tensor]:
    """pykan's edge attribution scores (``MultKAN.attribute`` -> ``edge_scores``) of every
    edge, computed on inputs ``x`` (see the module docstring).

    Shapes: ``x (s, n_0)`` (shared) or ``(B, s, n_0)``; returns per layer ``(*, n_l, n_{l+1})``.
    """
    _, acts = weights.forward(x, return_hidden=True)
    stats = []
    for l in range(weights.depth):
        phi = weights.edge_functions(l, acts[l])  # (*, s, n, m)
        stats.append((phi.std(dim=-3), phi.sum(-2).std(dim=-2)))  # (*, n, m), (*, m)
    n_out = weights.widths[-1]
    score = torch.full_like(stats[-1][1], 1.0 / n_out)  # mean over rows of the identity
    edges = [None] * weights.depth
    for l in range(weights.depth - 1, -1, -1):
        A, sigma = stats[l]
        e = A * (score / (sigma + 1e-4)).unsqueeze(-2)
        edges[l] = e
        score = e.sum(-1)
    return edges


def pruning_masks(weights: KANWeights, x: torch.Tensor, threshold: float = PYKAN_EDGE_THRESHOLD
                  ) -> List[torch.Tensor]:
    """pykan's ``prune_edge`` masks: ``(score > threshold) * mask`` per layer.

    Shapes: per layer ``(*, n_l, n_{l+1})`` with the dtype of the weights.
    """
    scores = edge_attribution(weights, x)
    return [((s > threshold) & (m != 0)).to(m.dtype) for s, m in zip(scores, weights.mask)]

