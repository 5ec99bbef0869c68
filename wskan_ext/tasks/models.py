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
from einops import rearrange
from torch import nn

from ..kan.permute import permute_hidden, random_hidden_permutations
from ..kan.weights import KANWeights
from ..nn import baselines as B
from .definitions import TaskSpec
from .meta_base import DEFAULTS, LEVELS, MODELS, PROBE_ONLY, MetaModel, _standardizer, check_compatible
from .probe_models import Attribution, ProbeMLP

__all__ = ["MODELS", "DEFAULTS", "LEVELS", "PROBE_ONLY", "MetaModel", "build_meta_model", "check_compatible"]

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

    def _net(self):
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


def _edge_inputs(w: KANWeights, num_points: int, log_scale: bool = False, value_range: str = "grid",
                 features: str = "both", return_values: bool = False):
    """Per-edge features ``(B, E, G+k+1 + P + L (+ 3))``: canonical coefficients, edge-function
    values at ``P`` points of the source neuron's range, and a one-hot of the edge's layer.
    ``features`` (WS-KAN option ``edge_features``): ``"both"``, or ``"coef"`` / ``"values"``
    to keep only the coefficients (NFN's input) or only the sampled values (``log_scale``
    needs both).

    ``value_range``: ``"grid"`` samples the grid range ``[t_k, t_{G+k}]``; ``"support"`` the
    whole support of the B-splines, ``[t_0, t_{G+2k}]`` -- where a hidden neuron whose input
    leaves the grid range still evaluates its spline (the outer knots).

    With ``log_scale`` (WS-KAN option ``log_scale``), three more columns: the logarithms
    (``+ 1e-6`` inside) of the std and of the mean absolute value of the ``P`` function values
    and of the coefficients' RMS. A global standardisation maps a 0.001-sized and a 0.01-sized
    edge function to nearly the same inputs; their logarithms keep the relative scale that a
    thresholded label such as pykan's attribution depends on. Functions of the weights only.
    Measured: neither option helped (``docs/tutorials/tasks.rst``, "Attempts").

    With ``return_values``, returns ``(features, values)``, the raw ``(B, E, P)`` samples too
    (what WS-KAN's ``lookup`` reads), computed once whatever ``features`` keeps."""
    from ..graph import kan_to_graph

    if value_range not in ("grid", "support"):
        raise ValueError(f"value_range must be 'grid' or 'support', got {value_range!r}")
    if features not in ("both", "coef", "values"):
        raise ValueError(f"edge_features must be 'both', 'coef' or 'values', got {features!r}")
    if log_scale and features != "both":
        raise ValueError(f"log_scale needs edge_features='both', got {features!r}")
    Bm = w.num_models
    parts = []  # only the encodings asked for are built
    if features != "values":
        coef = kan_to_graph(w).edge_attr.view(Bm, -1, w.grid_sizes[0] + w.k[0] + 1)
        parts.append(coef)
    if features != "coef" or return_values:
        vals = kan_to_graph(w, encoding="values", num_points=num_points, value_range=value_range).edge_attr
        vals = vals.view(Bm, -1, num_points)
    if features != "coef":
        parts.append(vals)
    sizes = torch.tensor([a * b for a, b in zip(w.widths[:-1], w.widths[1:])])
    layer = torch.nn.functional.one_hot(torch.repeat_interleave(torch.arange(w.depth), sizes), w.depth)
    parts.append(layer.to(parts[0].dtype).expand(Bm, -1, -1))
    if log_scale:
        parts.append(torch.stack([vals.std(-1), vals.abs().mean(-1), coef.pow(2).mean(-1).sqrt()], -1).add(1e-6).log())
    feats = torch.cat(parts, -1).float()
    return (feats, vals.float()) if return_values else feats


class _DeepSets(MetaModel):
    name = "deepsets"

    def fit(self, train):
        e = _edge_inputs(train.weights, self.config["num_points"])
        self.mean, self.std = _standardizer(e, (0, 1))

    def _features(self, split):
        return {"x": (_edge_inputs(split.weights, self.config["num_points"]) - self.mean) / self.std}

    def _net(self):
        return B.DeepSetsEdges(self.mean.shape[-1], self.out_channels, self.config["hidden"], self.task.level)


class _Stat(MetaModel):
    name = "statnn"

    def fit(self, train):
        self.mean, self.std = _standardizer(B.weight_statistics(train.weights).float(), 0)

    def _features(self, split):
        return {"x": (B.weight_statistics(split.weights).float() - self.mean) / self.std}

    def _net(self):
        c = self.config
        return B.StatNN(self.mean.shape[-1], self.out_channels, c["hidden"], c["layers"])


class _NFNWithEdges(nn.Module):
    """NFN-HNP's invariant network (:class:`~wskan_ext.adapters.nfn.KANInvariantNFN`) plus an
    equivariant edge head on its trunk (one ``HNPLinear``, read per edge as in
    :class:`~wskan_ext.nn.baselines.NFNEdges`), for auxiliary edge labels
    (``TrainConfig.aux_task``). ``forward(x)`` is the invariant output ``(B, C)``;
    ``forward(x, edges=True)`` also returns the edge output ``(B, E, C_e)``."""

    def __init__(self, inv: nn.Module, spec, hidden: int, edge_channels: int):
        super().__init__()
        from nfn.layers import HNPLinear

        self.inv, self.edge_out = inv, HNPLinear(spec, hidden, edge_channels)

    def forward(self, x, edges: bool = False):
        t = self.inv.trunk(x)
        g = self.inv.head(self.inv.pool(t))
        if not edges:
            return g
        e = self.edge_out(t)
        return g, torch.cat([rearrange(w, "b c j i -> b (i j) c") for w in e.weights], 1)


class _NFN(MetaModel):
    name = "nfn"
    edge_aux = True

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

    def _net(self):
        from wskan_ext.adapters.nfn import KANInvariantNFN, network_spec

        c, spec = self.config, network_spec(self.widths)
        if self.task.level == "edge":
            return B.NFNEdges(spec, self.in_channels, self.out_channels, c["hidden"], c["layers"])
        inv = KANInvariantNFN(spec, self.in_channels, c["hidden"], c["layers"], self.out_channels)
        return _NFNWithEdges(inv, spec, c["hidden"], self.edge_aux_channels) if self.edge_aux_channels else inv


_AGGRS = {"sum": "sum", "pna": ["sum", "mean", "max"]}


class WSKANNet(nn.Module):
    r"""The public :class:`~wskan_ext.WSKAN` on a batch built by :meth:`_WSKAN.batch`:
    ``readout="layer"`` (per-KAN-layer mean/max pooling) for graph-level tasks, the
    equivariant edge head ``(B, E, C)`` for edge-level tasks. All the modelling lives in
    :class:`~wskan_ext.WSKAN`; this wrapper only reshapes the edge output."""

    def __init__(self, node_in: int, edge_in: int, out_channels: int, level: str, hidden: int, layers: int,
                 depth: int, dropout: float = 0.0, aggr: str = "sum", io: bool = False,
                 edge_hidden: Optional[int] = None, shared: bool = False, context: bool = False,
                 layernorm: bool = True, typed: bool = False, product: bool = False,
                 bilinear: bool = False, lookup: int = 0, edge_aux: int = 0):
        super().__init__()
        from ..nn.model import WSKAN

        if aggr not in _AGGRS:
            raise ValueError(f"aggr must be one of {sorted(_AGGRS)}, got {aggr!r}")
        self.level = level
        heads = {"graph_out_channels": out_channels} if level == "graph" else {"edge_out_channels": out_channels}
        if edge_aux and level == "graph":  # auxiliary edge labels (TrainConfig.aux_task)
            heads["edge_out_channels"] = int(edge_aux)
        self.model = WSKAN(node_in, edge_in, hidden, layers, readout="layer", max_layers=depth, dropout=dropout,
                           aggr=_AGGRS[aggr], io_readout=bool(io) and level == "graph",
                           edge_hidden_channels=edge_hidden, shared=shared, context=context,
                           norm="layer" if layernorm else None, typed_edges=typed, product=product,
                           bilinear=bilinear, lookup=lookup, **heads)

    def forward(self, data, edges: bool = False):
        """The task's output; with ``edges=True`` (graph level, ``edge_aux > 0``) also the
        auxiliary edge output ``(B, E, C)``."""
        out = self.model(data)
        if self.level == "edge":
            return out.edge.view(int(data.num_graphs), -1, out.edge.shape[-1])
        if edges:
            return out.graph, out.edge.view(int(data.num_graphs), -1, out.edge.shape[-1])
        return out.graph


def _group_standardizer(t: torch.Tensor, group: torch.Tensor):
    """Mean and std ``(1, N, F)`` of ``t (B, N, F)`` over the models and the rows of the
    same ``group`` (e.g. the KAN layer of each edge): a hidden-neuron permutation keeps
    every row in its group, so the normalisation stays invariant."""
    mean, std = torch.empty_like(t[:1]), torch.empty_like(t[:1])
    for g in group.unique():
        sel = group == g
        m, s = _standardizer(t[:, sel], (0, 1))
        mean[:, sel], std[:, sel] = m, s
    return mean, std


class _WSKAN(MetaModel):
    name = "wskan"
    edge_aux = True

    def _graph(self, w):
        from ..graph import kan_to_graph

        g = kan_to_graph(w)
        Bm = w.num_models
        x = g.x.view(Bm, -1, g.x.shape[-1]).float()
        lookup = bool(self.config["lookup"])
        e = _edge_inputs(w, self.config["num_points"], self.config["log_scale"], self.config["value_range"],
                         self.config["edge_features"], return_values=lookup)
        e, v = e if lookup else (e, None)
        if self.probe_x is not None:  # probe statistics go before the 3 role-flag columns
            from .probes import probe_features

            pn, pe = probe_features(w, self.probe_x)
            x = torch.cat([x[..., :-3], pn.float(), x[..., -3:]], -1)
            e = torch.cat([e, pe.float()], -1)
        return g, x, e, v

    def fit(self, train):
        if self.config["dropout"] is None:  # measured: dropout helps classification, hurts regression
            self.config["dropout"] = 0.0 if self.task.kind == "regression" else 0.1
        self.probe_x = None
        if int(self.config["probe"]):
            from .probes import probe_inputs

            if train.source is None:
                raise ValueError("model 'wskan' with probe > 0 needs the zoo directory of the training split "
                                 "(SplitData.source) to draw probe inputs from its dataset")
            self.probe_x = probe_inputs(train.source, int(self.config["probe"]))
        g, x, e, v = self._graph(train.weights)
        N = x.shape[1]
        if self.config["norm"] == "layer":  # statistics per KAN layer, over models and that layer's neurons / edges
            self.node_stats = _group_standardizer(x, g.node_layer[:N])
            self.edge_stats = _group_standardizer(e, g.edge_layer[: self.num_edges])
        else:
            self.node_stats, self.edge_stats = _standardizer(x, (0, 1)), _standardizer(e, (0, 1))
        self.template = dict(edge_index=g.edge_index[:, : self.num_edges], node_role=g.node_role[:N],
                             node_pos=g.node_pos[:N], node_layer=g.node_layer[:N],
                             edge_layer=g.edge_layer[: self.num_edges])
        self.dims = (x.shape[-1], e.shape[-1])
        if self.config["lookup"]:  # one scale for every sample: the lookup reads function shapes undistorted
            self.value_scale = v.std().clamp_min(1e-8)

    def _features(self, split):
        _, x, e, v = self._graph(split.weights)
        (mx, sx), (me, se) = self.node_stats, self.edge_stats
        # role flags (last 3 node columns) stay 0/1
        x = torch.cat([(x[..., :-3] - mx[..., :-3]) / sx[..., :-3], x[..., -3:]], -1)
        out = {"x": x, "e": (e - me) / se}
        if self.config["lookup"]:
            out["v"] = v / self.value_scale  # the edge functions' raw samples, (B, E, P), one scale
        return out

    def batch(self, enc, idx, generator=None, train=False):
        x, e = enc["x"][idx], enc["e"][idx]
        b, N, E = x.shape[0], x.shape[1], e.shape[1]
        t = self.template
        from ..graph import make_batch

        node_ptr, edge_ptr = torch.arange(b + 1) * N, torch.arange(b + 1) * E
        node = {"x": x.reshape(b * N, -1), **{k: t[k].repeat(b) for k in ("node_role", "node_pos", "node_layer")}}
        edge = {"edge_attr": e.reshape(b * E, -1), "edge_layer": t["edge_layer"].repeat(b)}
        if "v" in enc:
            edge["edge_values"] = enc["v"][idx].reshape(b * E, -1)
        inputs = make_batch(node, edge, t["edge_index"].repeat(1, b) + node_ptr[:-1].repeat_interleave(E), node_ptr,
                            edge_ptr)
        return inputs, enc["targets"][idx]

    def _net(self):
        c = self.config
        t = self.template
        return WSKANNet(self.dims[0], self.dims[1], self.out_channels, self.task.level, c["hidden"], c["layers"],
                        int(t["edge_layer"].max()) + 1, c["dropout"], c["aggr"], c["io"], c["edge_hidden"], c["shared"], c["context"],
                        c["layernorm"], c["typed"], c["product"], c["bilinear"], c["lookup"],
                        edge_aux=self.edge_aux_channels)


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


_CLASSES = {c.name: c for c in (_Flat, _FlatAligned, _FlatAugment, _DeepSets, _Stat, _NFN, _WSKAN, _Magnitude,
                                 ProbeMLP, Attribution)}


def build_meta_model(name: str, task: TaskSpec, train: SplitData, config: Optional[dict] = None,
                     out_channels: int = 1, edge_aux_channels: int = 0) -> MetaModel:
    """The :class:`MetaModel` ``name`` for ``task``, fitted to the training split.
    ``edge_aux_channels > 0``: a graph-level model also gets an edge head of that many
    channels for auxiliary edge labels (``TrainConfig.aux_task``; ``ValueError`` for a model
    without one)."""
    check_compatible(name, task)
    unknown = sorted(set(config or {}) - set(DEFAULTS[name]) - {"epochs", "batch_size", "patience"})
    if unknown:
        raise ValueError(f"model {name!r}: unknown config keys {unknown}; known {sorted(DEFAULTS[name])}")
    cls = _CLASSES[name]
    if edge_aux_channels and not cls.edge_aux:
        raise ValueError(f"model {name!r} has no edge head for auxiliary edge labels (aux_task); models with one: "
                         f"{sorted(k for k, c in _CLASSES.items() if c.edge_aux)}")
    mm = cls(task, train, config, out_channels)
    mm.edge_aux_channels = int(edge_aux_channels)
    return mm
