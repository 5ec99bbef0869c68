r"""Probe-only baselines: models that see a KAN only through its forward pass on probes.

They belong to the *second* results table (see ``docs/tutorials/tasks.rst``), next to the weight-space
models given the same probe inputs, to show what the weights add beyond running the network.

=================  ========================================================  ==========
name               model                                                     levels
=================  ========================================================  ==========
``probe_mlp``      graph level: an MLP on the KAN's outputs at the ``P``      graph, edge
                   probe inputs (flattened, standardised); edge level: an
                   MLP applied to every edge's probe statistics
                   (:func:`~wskan_ext.tasks.probes.probe_features`) and its
                   layer one-hot (a DeepSets-style per-edge model)
``attribution``    pykan's edge attribution score
                   (:func:`~wskan_ext.zoo.edge_attribution`) on the probes,     edge
                   thresholded per layer on the training split (no training)
=================  ========================================================  ==========
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn import baselines as B
from .meta_base import MetaModel, _standardizer

__all__ = ["ProbeMLP", "Attribution"]


def _probe_x(mm: MetaModel, train) -> torch.Tensor:
    from .probes import probe_inputs

    if train.source is None:
        raise ValueError(f"model {mm.name!r} needs the zoo directory of the training split (SplitData.source) "
                         "to draw probe inputs from its dataset")
    return probe_inputs(train.source, int(mm.config["probe"]))


def _layer_onehot(widths, Bm: int) -> torch.Tensor:
    sizes = torch.tensor([a * b for a, b in zip(widths[:-1], widths[1:])])
    onehot = nn.functional.one_hot(torch.repeat_interleave(torch.arange(len(sizes)), sizes), len(sizes))
    return onehot.float().expand(Bm, -1, -1)


class ProbeMLP(MetaModel):
    """See the module table (``probe_mlp``)."""

    name = "probe_mlp"

    def _raw(self, w):
        w = w.map(lambda t: t.to(self.probe_x.dtype))
        if self.task.level == "graph":
            with torch.no_grad():
                return w.forward(self.probe_x).flatten(1).float()  # (B, P * n_out)
        from .probes import probe_features

        _, pe = probe_features(w, self.probe_x)
        return torch.cat([pe.float(), _layer_onehot(self.widths, pe.shape[0])], -1)  # (B, E, S + L)

    def fit(self, train):
        self.probe_x = _probe_x(self, train)
        f = self._raw(train.weights)
        self.mean, self.std = _standardizer(f, 0 if f.dim() == 2 else (0, 1))

    def _features(self, split):
        return {"x": (self._raw(split.weights) - self.mean) / self.std}

    def _net(self):
        c = self.config
        if self.task.level == "graph":
            return B.FlatMLP(self.mean.shape[-1], self.out_channels, c["hidden"], c["layers"])
        return B.DeepSetsEdges(self.mean.shape[-1], self.out_channels, c["hidden"], "edge")


class Attribution(MetaModel):
    """See the module table (``attribution``)."""

    name = "attribution"
    trainable = False

    def _scores(self, w) -> torch.Tensor:
        from ..zoo.labels import edge_attribution

        w = w.map(lambda t: t.to(self.probe_x.dtype))
        with torch.no_grad():
            return torch.cat([s.reshape(s.shape[0], -1) for s in edge_attribution(w, self.probe_x)], 1)

    def fit(self, train):
        self.probe_x = _probe_x(self, train)
        self.heuristic = B.MagnitudeHeuristic(self.widths).fit(self._scores(train.weights), train.targets)

    def _features(self, split):
        return {"x": self._scores(split.weights)}

    def predict(self, enc) -> torch.Tensor:
        """Logits ``(B, E, 1)`` (``> 0`` = keep)."""
        return self.heuristic.logits(enc["x"]).unsqueeze(-1)
