r"""Meta-models for the tasks: how each model encodes a zoo split and what network it trains.

Every meta-model is a :class:`MetaModel`: built from the task and the *training* split
(normalisation statistics, alignment reference and magnitude thresholds come from training
data only), it :meth:`~MetaModel.encode` s any split once into tensors with a leading model
axis, cuts mini-batches from them with :meth:`~MetaModel.batch`, and builds one
:class:`torch.nn.Module` whose ``forward(inputs)`` returns ``(B, C)`` (graph level) or
``(B, E, C)`` (edge level, KAN-graph edge order). The module alone goes through
:class:`~torch.nn.parallel.DistributedDataParallel`.

=================  ==========================================================  ==========
name               model                                                       levels
=================  ==========================================================  ==========
``wskan``          :class:`~wskan_ext.WSKAN` on the KAN-graph; edge features =  graph, edge
                   canonical coefficients + edge-function values on the grid
                   (+ probe statistics with ``probe=P``, see
                   :mod:`wskan_ext.tasks.probes`)
``mlp``            :class:`~wskan_ext.nn.baselines.FlatMLP` on raw weights       graph, edge
``mlp_aligned``    the same after weight matching to a training KAN              graph, edge
``mlp_augment``    the same with random hidden permutations at training time    graph, edge
``deepsets``       :class:`~wskan_ext.nn.baselines.DeepSetsEdges`                graph, edge
``statnn``         :class:`~wskan_ext.nn.baselines.StatNN`                       graph
``nfn``            HNP NFN (:class:`~wskan_ext.adapters.nfn.KANInvariantNFN` /   graph, edge
                   :class:`~wskan_ext.nn.baselines.NFNEdges`)
``magnitude``      :class:`~wskan_ext.nn.baselines.MagnitudeHeuristic` (no       edge
                   training)
=================  ==========================================================  ==========
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from ..kan.weights import KANWeights, permute_hidden, random_hidden_permutations
from ..nn import baselines as B
from .definitions import SplitData, TaskSpec

__all__ = ["MODELS", "DEFAULTS", "MetaModel", "build_meta_model", "check_compatible"]

#: Default hyperparameters of each model (overridable through ``config``).
DEFAULTS: Dict[str, dict] = {
    "wskan": dict(hidden=64, layers=3, num_points=16, dropout=0.0, lr=2e-3, weight_decay=1e-5, probe=0),
    "mlp": dict(hidden=256, layers=2, lr=1e-3, weight_decay=1e-4),
    "mlp_aligned": dict(hidden=256, layers=2, lr=1e-3, weight_decay=1e-4),
    "mlp_augment": dict(hidden=256, layers=2, lr=1e-3, weight_decay=1e-4),
    "deepsets": dict(hidden=64, num_points=16, lr=2e-3, weight_decay=1e-5),
    "statnn": dict(hidden=128, layers=2, lr=2e-3, weight_decay=1e-5),
    "nfn": dict(hidden=16, layers=2, lr=2e-3, weight_decay=1e-5),
    "magnitude": dict(),
}
LEVELS = {"wskan": ("graph", "edge"), "mlp": ("graph", "edge"), "mlp_aligned": ("graph", "edge"),
          "mlp_augment": ("graph", "edge"), "deepsets": ("graph", "edge"), "statnn": ("graph",),
          "nfn": ("graph", "edge"), "magnitude": ("edge",)}
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
    if model == "magnitude" and task.kind != "binary":
        raise ValueError(f"model 'magnitude' is a pruning heuristic; task {task.name!r} is {task.kind}")


def _standardizer(t: torch.Tensor, dims):
    mean = t.mean(dims, keepdim=True)
    std = t.std(dims, keepdim=True, unbiased=False).clamp_min(1e-6)
    return mean, std


class MetaModel:
    """Base class: see the module docstring. Subclasses set :attr:`name` and implement
    :meth:`_features` (split -> dict of tensors) and :meth:`build_net`."""

    name = "base"
    trainable = True

    def __init__(self, task: TaskSpec, train: SplitData, config: Optional[dict] = None, out_channels: int = 1):
        self.task, self.out_channels = task, int(out_channels)
        self.config = {**DEFAULTS[self.name], **(config or {})}
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
        raise NotImplementedError


class _Flat(MetaModel):
    name = "mlp"

    def _vec(self, w: KANWeights) -> torch.Tensor:
        from wskan_ext.adapters.flat import to_flat

        return to_flat(w)[0].float()

    def fit(self, train):
        v = self._vec(self._prepare(train.weights, train.targets)[0])
        self.mean, self.std = _standardizer(v, 0)

    def _prepare(self, w, targets):
        return w, targets

    def _features(self, split):
        w, y = self._prepare(split.weights, split.targets)
        return {"x": (self._vec(w) - self.mean) / self.std, "targets_aligned": y}

    def encode(self, split):
        f = self._features(split)
        return {"x": f["x"], "targets": f["targets_aligned"]}

    def build_net(self):
        c = self.config
        return B.FlatMLP(self.mean.shape[-1], self.out_channels, c["hidden"], c["layers"],
                         num_edges=self.num_edges if self.task.level == "edge" else 0)


class _FlatAligned(_Flat):
    name = "mlp_aligned"

    def fit(self, train):
        self.reference = train.weights[0]
        super().fit(train)

    def _prepare(self, w, targets):
        from ..align import align_to

        aligned, perms = align_to(w, self.reference)
        if self.task.level == "edge":
            targets = B.permute_edge_labels(targets, self.widths, perms)
        return aligned, targets


class _FlatAugment(_Flat):
    name = "mlp_augment"

    def fit(self, train):
        # permutation-symmetric statistics: pool over a few randomly permuted copies
        g = torch.Generator().manual_seed(0)
        w = train.weights
        copies = [self._vec(permute_hidden(w, random_hidden_permutations(w, g, per_model=True))) for _ in range(4)]
        self.mean, self.std = _standardizer(torch.cat(copies), 0)

    def encode(self, split):
        return {"w": split.weights, "x": (self._vec(split.weights) - self.mean) / self.std, "targets": split.targets}

    def batch(self, enc, idx, generator=None, train=False):
        if not train:
            return enc["x"][idx], enc["targets"][idx]
        w = enc["w"][idx]
        perms = random_hidden_permutations(w, generator, per_model=True)
        y = enc["targets"][idx]
        if self.task.level == "edge":
            y = B.permute_edge_labels(y, self.widths, perms)
        return (self._vec(permute_hidden(w, perms)) - self.mean) / self.std, y


def _edge_inputs(w: KANWeights, num_points: int) -> torch.Tensor:
    """Per-edge features ``(B, E, G+k+1 + P + L)``: canonical coefficients, edge-function
    values at ``P`` points of the source grid range, and a one-hot of the edge's layer."""
    from ..graph import kan_to_graph

    Bm = w.num_models
    coef = kan_to_graph(w).edge_attr.view(Bm, -1, w.grid_sizes[0] + w.k[0] + 1)
    vals = kan_to_graph(w, encoding="values", num_points=num_points).edge_attr.view(Bm, -1, num_points)
    sizes = torch.tensor([a * b for a, b in zip(w.widths[:-1], w.widths[1:])])
    layer = torch.nn.functional.one_hot(torch.repeat_interleave(torch.arange(w.depth), sizes), w.depth)
    return torch.cat([coef, vals, layer.to(coef.dtype).expand(Bm, -1, -1)], -1).float()


class _DeepSets(MetaModel):
    name = "deepsets"

    def fit(self, train):
        e = _edge_inputs(train.weights, self.config["num_points"])
        self.mean, self.std = _standardizer(e, (0, 1))

    def _features(self, split):
        return {"x": (_edge_inputs(split.weights, self.config["num_points"]) - self.mean) / self.std}

    def build_net(self):
        return B.DeepSetsEdges(self.mean.shape[-1], self.out_channels, self.config["hidden"], self.task.level)


class _Stat(MetaModel):
    name = "statnn"

    def fit(self, train):
        self.mean, self.std = _standardizer(B.weight_statistics(train.weights).float(), 0)

    def _features(self, split):
        return {"x": (B.weight_statistics(split.weights).float() - self.mean) / self.std}

    def build_net(self):
        c = self.config
        return B.StatNN(self.mean.shape[-1], self.out_channels, c["hidden"], c["layers"])


class _NFN(MetaModel):
    name = "nfn"

    def _raw(self, w):
        from wskan_ext.adapters.nfn import to_wsfeat

        ws = to_wsfeat(w)
        return list(ws.weights), list(ws.biases)

    def fit(self, train):
        ws, bs = self._raw(train.weights.map(lambda t: t.float()))
        self.stats = [(_standardizer(t, (0, 2, 3)), _standardizer(b, (0, 2))) for t, b in zip(ws, bs)]
        self.in_channels = ws[0].shape[1]

    def _features(self, split):
        ws, bs = self._raw(split.weights.map(lambda t: t.float()))
        ws = [(t - m) / s for t, ((m, s), _) in zip(ws, self.stats)]
        bs = [(b - m) / s for b, (_, (m, s)) in zip(bs, self.stats)]
        return {"w": ws, "b": bs}

    def batch(self, enc, idx, generator=None, train=False):
        from nfn.common import WeightSpaceFeatures

        return (WeightSpaceFeatures(tuple(t[idx] for t in enc["w"]), tuple(t[idx] for t in enc["b"])),
                enc["targets"][idx])

    def build_net(self):
        from wskan_ext.adapters.nfn import KANInvariantNFN, network_spec

        c, spec = self.config, network_spec(self.widths)
        if self.task.level == "edge":
            return B.NFNEdges(spec, self.in_channels, self.out_channels, c["hidden"], c["layers"])
        return KANInvariantNFN(spec, self.in_channels, c["hidden"], c["layers"], self.out_channels)


class WSKANNet(nn.Module):
    r""":class:`~wskan_ext.WSKAN` taking the dict of :meth:`_WSKAN.batch`.

    Edge level: WS-KAN's equivariant edge head, ``(B, E, C)``. Graph level: a *per-layer*
    invariant read-out -- the mean of the final node features of each layer and of the
    final edge features of each edge layer, concatenated, then an MLP:

    .. math::
        y = \mathrm{MLP}\big(\big[\mathrm{mean}_{v \in \text{layer } l} h_v\big]_{l=0}^{L},
        \big[\mathrm{mean}_{e \in \text{edge layer } l} e_e\big]_{l=0}^{L-1}\big)

    (all graphs of a batch share one architecture, as in a zoo).
    """

    def __init__(self, node_in: int, edge_in: int, out_channels: int, level: str, hidden: int, layers: int,
                 node_layer: torch.Tensor, edge_layer: torch.Tensor, dropout: float = 0.0):
        super().__init__()
        from ..nn.model import WSKAN

        self.level = level
        heads = {} if level == "graph" else {"edge_out_channels": out_channels}
        self.model = WSKAN(node_in, edge_in, hidden, layers, **heads)
        L = int(edge_layer.max()) + 1
        self.register_buffer("node_pool", _pool_matrix(node_layer, L + 1), persistent=False)
        self.register_buffer("edge_pool", _pool_matrix(edge_layer, L), persistent=False)
        if level == "graph":
            self.head = nn.Sequential(nn.Linear((2 * L + 1) * hidden, hidden), nn.SiLU(), nn.Dropout(dropout),
                                      nn.Linear(hidden, out_channels))

    def forward(self, inputs: dict) -> torch.Tensor:
        out = self.model(_GraphView(inputs))
        b = inputs["num_graphs"]
        if self.level == "edge":
            return out.edge.view(b, -1, out.edge.shape[-1])
        h = torch.einsum("gn,bnc->bgc", self.node_pool, out.node_embedding.view(b, self.node_pool.shape[1], -1))
        e = torch.einsum("ge,bec->bgc", self.edge_pool, out.edge_embedding.view(b, self.edge_pool.shape[1], -1))
        return self.head(torch.cat([h.flatten(1), e.flatten(1)], 1))


def _pool_matrix(groups: torch.Tensor, num: int) -> torch.Tensor:
    """``(num, n)`` row-normalised indicator: row ``g`` averages the entries of group ``g``."""
    m = torch.nn.functional.one_hot(groups.long(), num).t().float()
    return m / m.sum(1, keepdim=True).clamp_min(1)


class _GraphView:
    """Attribute access to the batch dict (what :class:`~wskan_ext.WSKAN` reads)."""

    def __init__(self, d):
        self.__dict__.update(d)


class _WSKAN(MetaModel):
    name = "wskan"

    def _graph(self, w):
        from ..graph import kan_to_graph

        g = kan_to_graph(w)
        Bm = w.num_models
        x = g.x.view(Bm, -1, g.x.shape[-1]).float()
        e = _edge_inputs(w, self.config["num_points"])
        if self.probe_x is not None:  # probe statistics go before the 3 role-flag columns
            from .probes import probe_features

            pn, pe = probe_features(w, self.probe_x)
            x = torch.cat([x[..., :-3], pn.float(), x[..., -3:]], -1)
            e = torch.cat([e, pe.float()], -1)
        return g, x, e

    def fit(self, train):
        self.probe_x = None
        if int(self.config["probe"]):
            from .probes import probe_inputs

            if train.source is None:
                raise ValueError("model 'wskan' with probe > 0 needs the zoo directory of the training split "
                                 "(SplitData.source) to draw probe inputs from its dataset")
            self.probe_x = probe_inputs(train.source, int(self.config["probe"]))
        g, x, e = self._graph(train.weights)
        self.node_stats, self.edge_stats = _standardizer(x, (0, 1)), _standardizer(e, (0, 1))
        N = x.shape[1]
        self.template = dict(edge_index=g.edge_index[:, : self.num_edges], node_role=g.node_role[:N],
                             node_pos=g.node_pos[:N], node_layer=g.node_layer[:N],
                             edge_layer=g.edge_layer[: self.num_edges])
        self.dims = (x.shape[-1], e.shape[-1])

    def _features(self, split):
        _, x, e = self._graph(split.weights)
        (mx, sx), (me, se) = self.node_stats, self.edge_stats
        # role flags (last 3 node columns) stay 0/1
        x = torch.cat([(x[..., :-3] - mx[..., :-3]) / sx[..., :-3], x[..., -3:]], -1)
        return {"x": x, "e": (e - me) / se}

    def batch(self, enc, idx, generator=None, train=False):
        x, e = enc["x"][idx], enc["e"][idx]
        b, N, E = x.shape[0], x.shape[1], e.shape[1]
        t = self.template
        off = (torch.arange(b) * N).repeat_interleave(E)
        inputs = dict(x=x.reshape(b * N, -1), edge_attr=e.reshape(b * E, -1),
                      edge_index=t["edge_index"].repeat(1, b) + off, node_role=t["node_role"].repeat(b),
                      node_pos=t["node_pos"].repeat(b), batch=torch.arange(b).repeat_interleave(N), num_graphs=b)
        return inputs, enc["targets"][idx]

    def build_net(self):
        c = self.config
        t = self.template
        return WSKANNet(self.dims[0], self.dims[1], self.out_channels, self.task.level, c["hidden"], c["layers"],
                        t["node_layer"], t["edge_layer"], c["dropout"])


class _Magnitude(MetaModel):
    name = "magnitude"
    trainable = False

    def fit(self, train):
        self.heuristic = B.MagnitudeHeuristic(self.widths).fit(B.edge_magnitudes(train.weights), train.targets)

    def _features(self, split):
        return {"x": B.edge_magnitudes(split.weights)}

    def predict(self, enc) -> torch.Tensor:
        """Logits ``(B, E, 1)`` (``> 0`` = keep)."""
        return self.heuristic.logits(enc["x"]).unsqueeze(-1)


_CLASSES = {c.name: c for c in (_Flat, _FlatAligned, _FlatAugment, _DeepSets, _Stat, _NFN, _WSKAN, _Magnitude)}


def build_meta_model(name: str, task: TaskSpec, train: SplitData, config: Optional[dict] = None,
                     out_channels: int = 1) -> MetaModel:
    """The :class:`MetaModel` ``name`` for ``task``, fitted to the training split."""
    check_compatible(name, task)
    unknown = sorted(set(config or {}) - set(DEFAULTS[name]) - {"epochs", "batch_size", "patience"})
    if unknown:
        raise ValueError(f"model {name!r}: unknown config keys {unknown}; known {sorted(DEFAULTS[name])}")
    return _CLASSES[name](task, train, config, out_channels)
