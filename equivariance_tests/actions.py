r"""How the hidden-permutation group acts on each input format and on each kind of output.

An **input format** is a pluggable pair ``(convert, act)``:

* ``convert`` turns KANs into what the model under test consumes;
* ``act(obj, kans, perms)`` applies hidden permutations to an already converted object,
  *in that format* (default: convert the permuted :class:`~wskan_ext.KANWeights`).

``per_item`` formats call the model once per :class:`~wskan_ext.KANWeights` of a batch (a batched
``KANWeights`` is one call); batch formats (PyG graphs) convert the whole list at once.

Built-in formats: ``weights`` (:class:`~wskan_ext.KANWeights` as is), ``graph`` and ``graph-values``
(:func:`~wskan_ext.kan_to_graph` with ``encoding="coef"`` / ``"values"``; the action
permutes node and edge rows, keeping ``node_pos``, ``edge_index`` and ``batch`` fixed),
``nfn`` (:func:`wskan_ext.adapters.nfn.to_wsfeat`, channels first), ``dws``
(:func:`wskan_ext.adapters.dws.to_dws`, passed as the tuple ``(weights, biases)``) and
``pykan`` (a pykan ``MultKAN`` per model). Register more with :func:`register_format`.

An **output action** maps a model output ``y`` to ``g . y``. Built-in: ``invariant``
(``g . y = y``), ``node`` (rows in node order, see :mod:`.layout`), ``edge`` (rows in edge
order), ``weights`` (a :class:`~wskan_ext.KANWeights` permuted with :func:`~wskan_ext.permute_hidden`),
``wsfeat`` (nfn ``WeightSpaceFeatures``) and ``dws`` (a ``(weights, biases)`` tuple).
Register more with :func:`register_output`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from wskan_ext.kan.permute import permute_hidden, take
from wskan_ext.kan.weights import KANWeights

from . import layout as L

__all__ = [
    "InputFormat",
    "OutputAction",
    "ActionContext",
    "register_format",
    "register_output",
    "get_format",
    "get_output",
    "formats",
    "outputs",
    "permute_graph",
    "permute_wsfeat",
    "permute_dws",
    "permute_inputs",
    "permute_outputs",
]


@dataclass
class ActionContext:
    """What an output action needs: the KANs of one model call and their permutations.

    Attributes:
        kans: the :class:`~wskan_ext.KANWeights` items of the call (one for ``per_item`` formats).
        perms: per item, one permutation per hidden layer (``(n_h,)`` or ``(B, n_h)``).
        units: the single-KAN units in row order (see :func:`.layout.units_of`).
    """

    kans: List[KANWeights]
    perms: List[List[torch.Tensor]]
    units: List = field(default_factory=list)

    def __post_init__(self):
        if not self.units:
            for w, p in zip(self.kans, self.perms):
                self.units.extend(L.units_of(w.widths, p, w.num_models))


@dataclass(frozen=True)
class InputFormat:
    """A model input format: ``convert`` KANs to it, ``act`` on it with hidden permutations.

    Attributes:
        name: the name used in ``input_format=...``.
        convert: ``KANWeights -> obj`` (``per_item``) or ``list[KANWeights] -> obj``.
        act: ``(obj, kans, perms) -> obj`` with ``kans``/``perms`` as in :class:`ActionContext`
            (a single item and its permutation list for ``per_item`` formats); ``None``
            means "convert the permuted weights".
        per_item: call the model once per item instead of once per batch.
        single_models: ``convert`` takes only unbatched KANs (batched items are unbound).
        description: one line for reports and ``--help``.
    """

    name: str
    convert: Callable
    act: Optional[Callable] = None
    per_item: bool = True
    single_models: bool = False
    description: str = ""

    def apply(self, obj, kans, perms):
        if self.act is not None:
            return self.act(obj, kans, perms)
        if self.per_item:
            return self.convert(permute_hidden(kans, perms))
        return self.convert([permute_hidden(w, p) for w, p in zip(kans, perms)])


@dataclass(frozen=True)
class OutputAction:
    """How hidden permutations act on a model output.

    Attributes:
        name: the name used in ``output=...``.
        act: ``(y, ctx: ActionContext) -> g . y``.
        locate: optional ``(ctx, index, shape) -> str`` naming the entry ``index`` of an
            output tensor of ``shape`` (e.g. "KAN 0, node (layer 1, neuron 2) [hidden]").
    """

    name: str
    act: Callable
    locate: Optional[Callable] = None
    description: str = ""


_FORMATS: Dict[str, InputFormat] = {}
_OUTPUTS: Dict[str, OutputAction] = {}


def register_format(fmt: InputFormat, *, overwrite: bool = False) -> InputFormat:
    """Register an :class:`InputFormat` under ``fmt.name``."""
    if not isinstance(fmt, InputFormat):
        raise TypeError(f"register_format expects an InputFormat, got {type(fmt).__name__}")
    if fmt.name in _FORMATS and not overwrite:
        raise ValueError(f"input format {fmt.name!r} is already registered (pass overwrite=True to replace it)")
    _FORMATS[fmt.name] = fmt
    return fmt


def register_output(action: OutputAction, *, overwrite: bool = False) -> OutputAction:
    """Register an :class:`OutputAction` under ``action.name``."""
    if not isinstance(action, OutputAction):
        raise TypeError(f"register_output expects an OutputAction, got {type(action).__name__}")
    if action.name in _OUTPUTS and not overwrite:
        raise ValueError(f"output action {action.name!r} is already registered (pass overwrite=True to replace it)")
    _OUTPUTS[action.name] = action
    return action


def get_format(name) -> InputFormat:
    if isinstance(name, InputFormat):
        return name
    if name not in _FORMATS:
        raise ValueError(f"unknown input format {name!r}; registered: {sorted(_FORMATS)}")
    return _FORMATS[name]


def get_output(name) -> OutputAction:
    if isinstance(name, OutputAction):
        return name
    if name not in _OUTPUTS:
        raise ValueError(f"unknown output action {name!r}; registered: {sorted(_OUTPUTS)}")
    return _OUTPUTS[name]


def formats() -> List[str]:
    return sorted(_FORMATS)


def outputs() -> List[str]:
    return sorted(_OUTPUTS)


# ----------------------------------------------------------------- tensor helpers
def _full_perms(widths, perms, device):
    """Permutations of every neuron layer (identity for inputs and outputs)."""
    ident = lambda n: torch.arange(n, device=device)  # noqa: E731
    return [ident(widths[0])] + [torch.as_tensor(p).long().to(device) for p in perms] + [ident(widths[-1])]


def _check_widths(what: str, got: Sequence[int], kans: KANWeights):
    if list(got) != list(kans.widths):
        raise ValueError(f"{what}: layer widths {list(got)} do not match the KAN's widths {kans.widths}")


def permute_inputs(w: KANWeights, perm) -> KANWeights:
    """Permute the *input* neurons of ``w`` (in-axis of layer 0 and its grid rows) — not a
    symmetry: the KAN then computes a different function of its input vector."""
    perm = torch.as_tensor(perm).long()
    kw = {f: list(getattr(w, f)) for f in ("grid", "coef", "scale_base", "scale_sp", "mask")}
    kw["grid"][0] = take(w.grid[0], perm, -2)
    kw["coef"][0] = take(w.coef[0], perm, -3)
    for f in ("scale_base", "scale_sp", "mask"):
        kw[f][0] = take(getattr(w, f)[0], perm, -2)
    return w._replace(**kw)


def permute_outputs(w: KANWeights, perm) -> KANWeights:
    """Permute the *output* neurons of ``w`` (out-axis of the last layer) — not a symmetry."""
    perm = torch.as_tensor(perm).long()
    last = w.depth - 1
    kw = {f: list(getattr(w, f)) for f in ("coef", "scale_base", "scale_sp", "mask", "node_scale", "node_bias")}
    kw["coef"][last] = take(w.coef[last], perm, -2)
    for f in ("scale_base", "scale_sp", "mask", "node_scale", "node_bias"):
        kw[f][last] = take(getattr(w, f)[last], perm, -1)
    return w._replace(**kw)


# ----------------------------------------------------------------- input actions
_GRAPH_FIXED = ("node_pos", "edge_index", "batch", "ptr")


def permute_graph(batch, kans: Sequence[KANWeights], perms: Sequence[Sequence[torch.Tensor]]):
    """Act on a KAN-graph ``Batch`` built from ``kans``: permute the rows of every node field
    (``x`` and ``node_*``) and every edge field (``edge_*``), keeping the structure
    (``node_pos``, ``edge_index``, ``batch``, ``ptr``) fixed.

    Equals ``kan_to_graph([permute_hidden(w, p) for w, p in zip(kans, perms)])``.
    """
    ctx = ActionContext(list(kans), [list(p) for p in perms])
    nidx = L.node_index(ctx.units, batch.x.device)
    eidx = L.edge_index_perm(ctx.units, batch.x.device)
    if nidx.numel() != batch.num_nodes or eidx.numel() != batch.num_edges:
        raise ValueError(
            f"permute_graph: the batch has {batch.num_nodes} nodes / {batch.num_edges} edges but the KANs "
            f"have {nidx.numel()} / {eidx.numel()}"
        )
    out = batch.clone()
    for key in batch.keys():
        val = batch[key]
        if key in _GRAPH_FIXED or not isinstance(val, torch.Tensor):
            continue
        if key == "x" or key.startswith("node_"):
            out[key] = val[nidx]
        elif key.startswith("edge_"):
            out[key] = val[eidx]
    return out


def permute_wsfeat(feat, kans: KANWeights, perms):
    """Act on nfn ``WeightSpaceFeatures`` (channels first): ``weights[l]: (B, C, n_{l+1}, n_l)``
    gets ``p_{l+1}`` on axis -2 and ``p_l`` on axis -1; ``biases[l]: (B, C, n_{l+1})``
    gets ``p_{l+1}``."""
    full = _full_perms(kans.widths, perms, feat.weights[0].device)
    got = [feat.weights[0].shape[-1]] + [w.shape[-2] for w in feat.weights]
    _check_widths("WeightSpaceFeatures", got, kans)
    ws = tuple(take(take(w, full[l + 1], -2), full[l], -1) for l, w in enumerate(feat.weights))
    bs = tuple(take(b, full[l + 1], -1) for l, b in enumerate(feat.biases))
    return type(feat)(ws, bs)


def permute_dws(obj, kans: KANWeights, perms):
    """Act on a DWS tuple (channels last): ``weights[l]: (B, n_l, n_{l+1}, C)`` gets ``p_l``
    on axis 1 and ``p_{l+1}`` on axis 2; ``biases[l]: (B, n_{l+1}, C)`` gets ``p_{l+1}``
    on axis 1. Extra tuple entries (``layer_layout``, ...) are kept."""
    weights, biases = obj[0], obj[1]
    full = _full_perms(kans.widths, perms, weights[0].device)
    _check_widths("dws tuple", [weights[0].shape[1]] + [w.shape[2] for w in weights], kans)
    ws = tuple(take(take(w, full[l], 1), full[l + 1], 2) for l, w in enumerate(weights))
    bs = tuple(take(b, full[l + 1], 1) for l, b in enumerate(biases))
    rest = tuple(obj[2:])
    if hasattr(obj, "_replace"):
        return obj._replace(weights=ws, biases=bs)
    return (ws, bs) + rest


def _graph_convert(encoding):
    def convert(kans):
        from wskan_ext.graph import kan_to_graph

        return kan_to_graph(list(kans), encoding=encoding)

    return convert


def _nfn_convert(w):
    from wskan_ext.adapters.nfn import to_wsfeat

    return to_wsfeat(w)


def _dws_convert(w):
    from wskan_ext.adapters.dws import to_dws

    out = to_dws(w)
    return (out.weights, out.biases)


def _pykan_convert(w):
    from wskan_ext.adapters.pykan import to_pykan

    return to_pykan(w)


register_format(InputFormat("weights", lambda w: w, lambda w, kans, p: permute_hidden(w, p),
                            description="KANWeights (single or batched), one model call per item"))
register_format(InputFormat("graph", _graph_convert("coef"), permute_graph, per_item=False,
                            description="PyG Batch from kan_to_graph(encoding='coef'), one call per batch"))
register_format(InputFormat("graph-values", _graph_convert("values"), permute_graph, per_item=False,
                            description="PyG Batch from kan_to_graph(encoding='values') (mixes grids)"))
register_format(InputFormat("nfn", _nfn_convert, permute_wsfeat,
                            description="nfn WeightSpaceFeatures from wskan_ext.adapters.nfn.to_wsfeat"))
register_format(InputFormat("dws", _dws_convert, permute_dws,
                            description="(weights, biases) tuple from wskan_ext.adapters.dws.to_dws"))
register_format(InputFormat("pykan", _pykan_convert, None, single_models=True,
                            description="a pykan MultKAN per model (auto_save=False)"))


# ----------------------------------------------------------------- output actions
def _rows(y, idx: torch.Tensor, ctx: ActionContext, what: str):
    """Gather rows of every tensor leaf of ``y`` (``(R, *)`` or ``(B, R/B, *)``) by ``idx``."""
    if isinstance(y, (list, tuple)):
        return type(y)(_rows(v, idx, ctx, what) for v in y)
    if isinstance(y, dict):
        return {k: _rows(v, idx, ctx, what) for k, v in y.items()}
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"output={what!r}: expected tensors (or lists/tuples/dicts of them), got {type(y).__name__}")
    R = idx.numel()
    idx = idx.to(y.device)
    if y.dim() >= 1 and y.shape[0] == R:
        return y[idx]
    if y.dim() >= 2 and y.shape[0] * y.shape[1] == R and len(ctx.kans) == 1 and ctx.kans[0].batched:
        return y.reshape(R, *y.shape[2:])[idx].reshape(y.shape)
    raise ValueError(
        f"output={what!r}: expected {R} rows in {what} order (or (models, rows/models, ...)) for KANs with widths "
        f"{[u[0] for u in ctx.units]}, got a tensor of shape {tuple(y.shape)}"
    )


def _node_act(y, ctx):
    return _rows(y, L.node_index(ctx.units), ctx, "node")


def _edge_act(y, ctx):
    return _rows(y, L.edge_index_perm(ctx.units), ctx, "edge")


def _weights_act(y, ctx):
    if isinstance(y, KANWeights):
        if len(ctx.kans) != 1:
            raise ValueError(f"output='weights': got one KANWeights for {len(ctx.kans)} input items; return a list")
        return permute_hidden(y, ctx.perms[0])
    if isinstance(y, (list, tuple)) and all(isinstance(v, KANWeights) for v in y) and len(y) == len(ctx.kans):
        return type(y)(permute_hidden(v, p) for v, p in zip(y, ctx.perms))
    raise TypeError(f"output='weights': expected KANWeights (one per input item), got {type(y).__name__}")


def _one(ctx, what):
    if len(ctx.kans) != 1:
        raise ValueError(f"output={what!r} needs one input item per model call (a per_item input format)")
    return ctx.kans[0], ctx.perms[0]


def _locate_rows(decode, count):
    def locate(ctx, idx, shape):
        rows = sum(count(u[0]) for u in ctx.units)
        if shape[0] == rows:
            row = idx[0]
        elif len(idx) >= 2 and shape[0] * shape[1] == rows:
            row = idx[0] * shape[1] + idx[1]
        else:
            return ""
        return decode(ctx.units, row)

    return locate


register_output(OutputAction("invariant", lambda y, ctx: y, description="g . y = y (graph-level output)"))
register_output(OutputAction("node", _node_act, _locate_rows(L.decode_node, L.num_nodes), "rows in node order"))
register_output(OutputAction("edge", _edge_act, _locate_rows(L.decode_edge, L.num_edges), "rows in edge order"))
register_output(OutputAction("weights", _weights_act, description="KANWeights, permuted with permute_hidden"))
register_output(OutputAction("wsfeat", lambda y, ctx: permute_wsfeat(y, *_one(ctx, "wsfeat")),
                             description="nfn WeightSpaceFeatures (channels first)"))
register_output(OutputAction("dws", lambda y, ctx: permute_dws(y, *_one(ctx, "dws")),
                             description="(weights, biases) tuple (channels last)"))
