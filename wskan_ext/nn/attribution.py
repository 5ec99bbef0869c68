r"""A structured edge read-out for pykan pruning masks: the attribution recursion itself.

pykan keeps an edge iff its attribution score exceeds a threshold (see
:func:`wskan_ext.zoo.edge_attribution`): with :math:`A^{(l)}_{ij}` the std of the edge's output and
:math:`\sigma^{(l+1)}_j` the std of node :math:`j`'s sum over the data,

.. math::
    e^{(l)}_{ij} = A^{(l)}_{ij}\,\frac{S^{(l+1)}_j}{\sigma^{(l+1)}_j + 10^{-4}},\qquad
    S^{(l)}_i = \sum_j e^{(l)}_{ij},\qquad S^{(L)} = \tfrac{1}{n_L}\mathbf{1}.

A plain edge head has to learn this division, the backward sum over every downstream
edge and the threshold. :class:`AttributionHead` instead lets any edge-level model predict
two numbers per edge, :math:`a_{ij} = \log \hat A_{ij}` and a correction :math:`c_{ij}`, sets

.. math::
    \log \hat\sigma_j = \tfrac12 \log \textstyle\sum_i e^{2 a_{ij}} + \operatorname{mean}_i c_{ij}

(the std of a sum of independent terms, times a learned correlation factor), runs the
recursion above exactly in log space, and returns the logit
:math:`\beta (\log \hat e_{ij} - \log \tau) + b` with a learned slope :math:`\beta > 0` and
offset :math:`b`. Everything is a function of the model's per-edge outputs, so the head is
equivariant whenever the model is (sums and means run over whole neuron sets), and it can
wrap WS-KAN, NFN, DeepSets or an MLP alike. It is trained by the task's ordinary binary
cross-entropy on the masks: no extra labels.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
from torch import nn

__all__ = ["AttributionHead", "attribution_log_scores"]


def attribution_log_scores(log_a: torch.Tensor, corr: torch.Tensor, widths: Sequence[int],
                           eps: float = 1e-4) -> torch.Tensor:
    r"""Log attribution scores :math:`\log \hat e_{ij}` from per-edge log stds and corrections
    (the recursion of the module docstring, in log space).

    Shapes: ``log_a (B, E)``, ``corr (B, E)`` in KAN-graph edge order (layer by layer,
    ``(n_l n_{l+1})`` in-major) -> ``(B, E)``.
    """
    widths = [int(n) for n in widths]
    sizes = [a * b for a, b in zip(widths[:-1], widths[1:])]
    if log_a.dim() != 2 or log_a.shape[1] != sum(sizes):
        raise ValueError(f"attribution_log_scores: log_a must have shape (B, {sum(sizes)}) for widths {widths}, "
                         f"got {tuple(log_a.shape)}")
    if corr.shape != log_a.shape:
        raise ValueError(f"attribution_log_scores: corr must have the shape of log_a {tuple(log_a.shape)}, "
                         f"got {tuple(corr.shape)}")
    B, L = log_a.shape[0], len(sizes)
    a = [t.reshape(B, n, m) for t, n, m in zip(log_a.split(sizes, 1), widths[:-1], widths[1:])]
    c = [t.reshape(B, n, m) for t, n, m in zip(corr.split(sizes, 1), widths[:-1], widths[1:])]
    log_eps = math.log(eps)
    log_s = log_a.new_full((B, widths[-1]), -math.log(widths[-1]))
    out: List[Optional[torch.Tensor]] = [None] * L  # filled from the last layer back
    for l in range(L - 1, -1, -1):
        log_sigma = 0.5 * torch.logsumexp(2 * a[l], 1) + c[l].mean(1)  # (B, n_{l+1})
        log_den = torch.logaddexp(log_sigma, torch.full_like(log_sigma, log_eps))
        le = a[l] + (log_s - log_den).unsqueeze(1)  # (B, n_l, n_{l+1})
        out[l] = le.reshape(B, -1)
        log_s = torch.logsumexp(le, 2)
    return torch.cat(out, 1)


class AttributionHead(nn.Module):
    r"""Wrap an edge-level model with two output channels into pruning-mask logits through
    the attribution recursion (see the module docstring).

    Args:
        net: any module whose output is ``(B, E, 2)`` (channel 0: :math:`\log \hat A`,
            channel 1: the correction :math:`c`), edges in KAN-graph order.
        widths: the KAN widths ``[n_0, ..., n_L]`` every input shares.
        threshold: pykan's ``prune_edge`` threshold :math:`\tau` (default ``0.03``).
        eps: the floor added to :math:`\sigma` (pykan's ``1e-4``).
        residual: the model returns a third channel :math:`r_{ij}`, added to the logit (so the
            head can also express anything a plain edge head can).

    Shapes: ``net(*args): (B, E, 2)`` (``(B, E, 3)`` with ``residual``) -> ``(B, E, 1)``
    logits (``> 0``: keep the edge).
    """

    def __init__(self, net: nn.Module, widths: Sequence[int], threshold: float = 3e-2, eps: float = 1e-4,
                 residual: bool = False):
        super().__init__()
        if not (threshold > 0 and eps > 0):
            raise ValueError(f"AttributionHead: threshold and eps must be > 0, got {threshold}, {eps}")
        self.net, self.widths, self.residual = net, [int(n) for n in widths], bool(residual)
        self.channels = 3 if self.residual else 2
        self.log_threshold, self.eps = math.log(threshold), float(eps)
        self.log_slope = nn.Parameter(torch.zeros(()))
        self.offset = nn.Parameter(torch.zeros(()))
        self.reset_parameters()

    def reset_parameters(self):
        """Slope 4 (a log-score one unit above the threshold gives logit 4), offset 0."""
        with torch.no_grad():
            self.log_slope.fill_(math.log(4.0))
            self.offset.zero_()

    def forward(self, *args, **kwargs) -> torch.Tensor:
        out = self.net(*args, **kwargs)
        if out.dim() != 3 or out.shape[-1] != self.channels:
            raise ValueError(f"AttributionHead: the wrapped model must return (B, E, {self.channels}), "
                             f"got {tuple(out.shape)}")
        le = attribution_log_scores(out[..., 0].float(), out[..., 1].float(), self.widths, self.eps)
        logit = self.log_slope.exp() * (le - self.log_threshold) + self.offset
        if self.residual:
            logit = logit + out[..., 2].float()
        return logit.unsqueeze(-1)
