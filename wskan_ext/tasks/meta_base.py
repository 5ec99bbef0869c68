"""The meta-model base class, the model registry's data (defaults, output levels) and the
shared normalisation helper; the models themselves live in :mod:`wskan_ext.tasks.models`
(weight-space models) and :mod:`wskan_ext.tasks.probe_models` (probe-only baselines)."""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from .definitions import SplitData, TaskSpec

__all__ = ["DEFAULTS", "LEVELS", "MODELS", "PROBE_ONLY", "MetaModel", "check_compatible"]

#: Default hyperparameters of each model (overridable through ``config``).
DEFAULTS: Dict[str, dict] = {
    # dropout None: 0.1 for classification tasks, 0 for regression (resolved when the model is built);
    # io: position-gated input/output read-out for graph-level tasks (docs/tutorials/tasks.rst, "Attempts")
    # edge_hidden None: the node width (hidden); edges dominate the cost (E >> N);
    # attr_head (every trainable edge-level model): pruning logits through pykan's attribution
    # recursion (wskan_ext.nn.attribution; "residual": plus a free logit), edge-level binary tasks only
    # norm: input standardisation over all neurons / edges ("global") or per KAN layer ("layer")
    "wskan": dict(hidden=64, layers=4, num_points=16, dropout=None, lr=2e-3, weight_decay=1e-5, probe=0, aggr="sum",
                  io=True, edge_hidden=None, norm="global", log_scale=False, shared=False,
                  context=False, layernorm=True, value_range="grid",
                  edge_features="both", typed=False, product=False, bilinear=False, lookup=0,
                  attr_head=False),
    "mlp": dict(hidden=256, layers=2, lr=1e-3, weight_decay=1e-4, attr_head=False),
    "mlp_aligned": dict(hidden=256, layers=2, lr=1e-3, weight_decay=1e-4, attr_head=False),
    "mlp_augment": dict(hidden=256, layers=2, lr=1e-3, weight_decay=1e-4, attr_head=False),
    "deepsets": dict(hidden=64, num_points=16, lr=2e-3, weight_decay=1e-5, attr_head=False),
    "statnn": dict(hidden=128, layers=2, lr=2e-3, weight_decay=1e-5),
    "nfn": dict(hidden=16, layers=2, lr=2e-3, weight_decay=1e-5, attr_head=False),
    "magnitude": dict(),
    "probe_mlp": dict(hidden=256, layers=2, lr=1e-3, weight_decay=1e-4, probe=128, attr_head=False),
    "attribution": dict(probe=128),
}
LEVELS = {"wskan": ("graph", "edge"), "mlp": ("graph", "edge"), "mlp_aligned": ("graph", "edge"),
          "mlp_augment": ("graph", "edge"), "deepsets": ("graph", "edge"), "statnn": ("graph",),
          "nfn": ("graph", "edge"), "magnitude": ("edge",), "probe_mlp": ("graph", "edge"),
          "attribution": ("edge",)}
#: Models that see a KAN only through its forward pass on probe inputs (second table only).
PROBE_ONLY = ("probe_mlp", "attribution")
MODELS = tuple(DEFAULTS)


def check_compatible(model: str, task: TaskSpec) -> None:
    """Raise ``ValueError`` when ``model`` cannot produce ``task``'s output level (or the
    task's kind, for the magnitude heuristic)."""
    if model not in DEFAULTS:
        raise ValueError(f"unknown model {model!r}; choose from {list(MODELS)}")
    if task.level not in LEVELS[model]:
        raise ValueError(
            f"model {model!r} has only {'/'.join(LEVELS[model])}-level heads, but task {task.name!r} is "
            f"{task.level}-level ({task.description})"
        )
    if model in ("magnitude", "attribution") and task.kind != "binary":
        raise ValueError(f"model {model!r} is a pruning heuristic; task {task.name!r} is {task.kind}")


def _standardizer(t: torch.Tensor, dims):
    mean = t.mean(dims, keepdim=True)
    std = t.std(dims, keepdim=True, unbiased=False).clamp_min(1e-6)
    return mean, std


class MetaModel:
    """Base class: see the module docstring. Subclasses set :attr:`name` and implement
    :meth:`_features` (split -> dict of tensors) and :meth:`build_net`."""

    name = "base"
    trainable = True
    #: Whether a graph-level net can also have an edge head for auxiliary edge labels
    #: (``TrainConfig.aux_task``; set per instance by ``build_meta_model``).
    edge_aux = False
    edge_aux_channels = 0

    def __init__(self, task: TaskSpec, train: SplitData, config: Optional[dict] = None, out_channels: int = 1):
        self.task, self.out_channels = task, int(out_channels)
        self.config = {**DEFAULTS[self.name], **(config or {})}
        if self.config.get("attr_head"):
            if task.level != "edge" or task.kind != "binary" or self.out_channels != 1:
                raise ValueError(f"model {self.name!r}: attr_head (the pruning-attribution read-out) needs an "
                                 f"edge-level binary task such as 'pruning'; task {task.name!r} is a "
                                 f"{task.level}-level {task.kind} task")
            # log A, the correction (and the residual logit), see wskan_ext.nn.attribution
            self.out_channels = 3 if self.config["attr_head"] == "residual" else 2
        w = train.weights
        self.widths, self.num_edges = list(w.widths), sum(a * b for a, b in zip(w.widths[:-1], w.widths[1:]))
        self.fit(train)

    def fit(self, train: SplitData) -> None:
        """Fit normalisation statistics on the training split."""

    def encode(self, split: SplitData) -> dict:
        """All inputs of ``split`` (leading model axis) and its ``targets``."""
        return {**self._features(split), "targets": split.targets}

    def batch(self, enc: dict, idx: torch.Tensor, generator: Optional[torch.Generator] = None,
              train: bool = False):
        """``(inputs, targets)`` of the models ``idx`` (``train`` enables augmentation)."""
        return enc["x"][idx], enc["targets"][idx]

    def build_net(self) -> nn.Module:
        """The network; with ``attr_head`` the model's two edge channels go through
        :class:`~wskan_ext.nn.AttributionHead` (pykan's attribution recursion)."""
        net = self._net()
        if self.config.get("attr_head"):
            from ..nn.attribution import AttributionHead
            from ..zoo.labels import PYKAN_EDGE_THRESHOLD

            net = AttributionHead(net, self.widths, PYKAN_EDGE_THRESHOLD,
                                  residual=self.config["attr_head"] == "residual")
        return net

    def _net(self) -> nn.Module:
        raise NotImplementedError


