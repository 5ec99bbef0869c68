r"""Equivariance checks for any function of KANs, in the spirit of ``e3nn.util.test``.

For a model ``f``, KANs ``w``, hidden permutations ``g`` and an input format with
conversion ``c`` (see :mod:`.actions`), the **equivariance error** is

.. math::
    \mathrm{err} = \max_{\text{leaves}} \frac{\max |f(g \cdot c(w)) - g \cdot f(c(w))|}
                                          {\max(1, \max |g \cdot f(c(w))|)}

(absolute below magnitude 1, relative above), maximised over the items, trials and
output tensors. Default tolerances (:data:`FLOAT_TOLERANCE`) depend on the lowest
precision among the KANs and the outputs: ``float64`` 1e-9, ``float32`` 1e-4,
``float16`` 1e-2, ``bfloat16`` 5e-2. Sensitivity checks require a change above
:data:`SENSITIVITY_THRESHOLD`: ``float64`` 1e-8, ``float32`` 1e-5, ``float16`` 1e-2,
``bfloat16`` 5e-2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple

import torch

from wskan_ext.kan.permute import random_hidden_permutations
from wskan_ext.kan.weights import KANWeights

from .actions import ActionContext, get_format, get_output, permute_inputs, permute_outputs

__all__ = [
    "FLOAT_TOLERANCE",
    "default_tolerance",
    "SENSITIVITY_THRESHOLD",
    "default_min_change",
    "EquivarianceResult",
    "equivariance_check",
    "equivariance_error",
    "assert_equivariant",
    "assert_invariant",
    "sensitivity_check",
    "assert_sensitive",
    "random_permutations",
]

#: Default tolerance per dtype (see the module docstring for the error measure).
FLOAT_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


#: Default smallest change that :func:`assert_sensitive` accepts, per dtype (far above the
#: round-off a genuinely insensitive model shows, far below a real change).
SENSITIVITY_THRESHOLD = {torch.float64: 1e-8, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def default_min_change(dtype: torch.dtype) -> float:
    """Sensitivity threshold for ``dtype`` (:data:`SENSITIVITY_THRESHOLD`; 1e-5 if unknown)."""
    return SENSITIVITY_THRESHOLD.get(dtype, 1e-5)


def default_tolerance(dtype: torch.dtype) -> float:
    """Tolerance for ``dtype`` (:data:`FLOAT_TOLERANCE`; 1e-4 for unknown float types)."""
    return FLOAT_TOLERANCE.get(dtype, 1e-4)


@dataclass
class EquivarianceResult:
    """Outcome of one check. ``error`` is the equivariance error (or, for sensitivity
    checks, the change), ``passed`` compares it with ``tolerance``."""

    kind: str
    error: float
    tolerance: float
    passed: bool
    dtype: torch.dtype
    input_format: str
    output: str
    function: str
    where: str = ""
    item: int = 0
    architectures: List[dict] = field(default_factory=list)
    perms: List[Any] = field(default_factory=list)
    trials: int = 1

    def report(self) -> str:
        """A readable, multi-line description (used as the ``AssertionError`` message)."""
        if self.kind == "sensitivity":
            head = (f"{self.function} is insensitive to a non-symmetry ({self.output}): it barely changes "
                    f"when the KAN's {self.output} neurons are permuted" if not self.passed else
                    f"{self.function} changes under {self.output}-neuron permutations")
            cmp = f"change       : {self.error:.3e}  (needs > {self.tolerance:.1e})"
        else:
            head = (f"KAN permutation {'equivariance' if self.output != 'invariant' else 'invariance'} "
                    f"{'violated' if not self.passed else 'holds'}: output={self.output!r} of {self.function}")
            cmp = f"error        : {self.error:.3e}  (tolerance {self.tolerance:.1e})"
        lines = [head, f"  input format : {self.input_format}", f"  dtype        : {self.dtype}", "  " + cmp]
        if self.where:
            lines.append(f"  worst at     : {self.where}")
        for i, (arch, p) in enumerate(zip(self.architectures, self.perms)):
            lines.append(f"  KAN item {i}   : {_arch_str(arch)}")
            lines.append(f"    {'permutation' if self.kind == 'sensitivity' else 'hidden perms'} : {p}")
        if self.kind != "sensitivity":
            lines.append("  (error = max|f(g.x) - g.f(x)| / max(1, max|g.f(x)|) over outputs; g = hidden permutations)")
        return "\n".join(lines)

    __str__ = report


def _arch_str(a: dict) -> str:
    s = f"widths={a['widths']} grid_sizes={a['grid_sizes']} k={a['k']} base_fun={a['base_fun']}"
    if a.get("num_models") is not None:
        s += f" num_models={a['num_models']}"
    return s


def _name(f) -> str:
    n = getattr(f, "__qualname__", None) or getattr(f, "__name__", None)
    return n if n else type(f).__name__


def _items(kans) -> Tuple[List[KANWeights], bool]:
    single = not isinstance(kans, (list, tuple))
    seq = [kans] if single else list(kans)
    if not seq:
        raise ValueError("no KANs given (an empty list)")
    out = []
    for i, w in enumerate(seq):
        if not isinstance(w, KANWeights):
            from wskan_ext.registry import as_kan_weights

            w = as_kan_weights(w)
        out.append(w)
    return out, single


def _non_identity(p: torch.Tensor) -> torch.Tensor:
    n = p.shape[-1]
    if n >= 2:
        ident = torch.arange(n)
        if p.dim() == 1 and torch.equal(p, ident):
            p = torch.roll(p, 1)
        elif p.dim() == 2:
            same = (p == ident).all(-1)
            p[same] = torch.roll(p[same], 1, dims=-1)
    return p


def random_permutations(w: KANWeights, generator: Optional[torch.Generator] = None, per_model: bool = True):
    """Random non-identity permutations of every hidden layer with at least 2 neurons
    (``(B, n_h)`` per layer for batched ``w`` when ``per_model``, else ``(n_h,)``)."""
    return [_non_identity(p) for p in random_hidden_permutations(w, generator, per_model=per_model)]


def _perm_str(perms) -> str:
    if not perms:
        return "(no hidden layers)"
    return ", ".join(f"layer {h + 1}: {torch.as_tensor(p).tolist()}" for h, p in enumerate(perms))


def _leaves(y, path="out") -> List[Tuple[str, Any]]:
    if isinstance(y, torch.Tensor):
        return [(path, y)]
    if isinstance(y, KANWeights):
        return [(f"{path}.{k}", t) for k, t in y.tensors().items()]
    if hasattr(y, "weights") and hasattr(y, "biases") and not isinstance(y, tuple):
        return _leaves(tuple(y.weights), f"{path}.weights") + _leaves(tuple(y.biases), f"{path}.biases")
    if isinstance(y, dict):
        return [leaf for k in y for leaf in _leaves(y[k], f"{path}[{k!r}]")]
    if isinstance(y, (list, tuple)):
        return [leaf for i, v in enumerate(y) for leaf in _leaves(v, f"{path}[{i}]")]
    if isinstance(y, (int, float, bool)):
        return [(path, torch.tensor(float(y), dtype=torch.float64))]
    return [(path, y)]


def _lowest_precision(dtypes) -> torch.dtype:
    fl = [d for d in dtypes if isinstance(d, torch.dtype) and d.is_floating_point]
    return max(fl, key=lambda d: torch.finfo(d).eps) if fl else torch.float64


def _compare(got, expected) -> Tuple[float, str, Optional[tuple], Optional[tuple]]:
    """Worst leaf error of ``got`` vs ``expected``: (error, path, index, shape)."""
    a, b = _leaves(got), _leaves(expected)
    if [p for p, _ in a] != [p for p, _ in b]:
        return math.inf, f"output structure differs: {[p for p, _ in a]} vs {[p for p, _ in b]}", None, None
    worst = (0.0, "", None, None)
    for (path, x), (_, y) in zip(a, b):
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            if x != y:
                return math.inf, f"{path}: {x!r} != {y!r}", None, None
            continue
        if x.shape != y.shape:
            return math.inf, f"{path}: shape {tuple(x.shape)} != {tuple(y.shape)}", None, None
        if x.numel() == 0:
            continue
        x64, y64 = x.detach().to(torch.float64), y.detach().to(torch.float64)
        if not (torch.isfinite(x64).all() and torch.isfinite(y64).all()):
            return math.inf, f"{path}: output contains NaN or Inf", None, tuple(x.shape)
        diff = (x64 - y64).abs()
        scale = max(1.0, float(y64.abs().max()))
        err = float(diff.max()) / scale
        if err > worst[0] or worst[1] == "":
            flat = int(diff.reshape(-1).argmax())
            idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), x.shape)) if x.dim() else ()
            worst = (err, path, idx, tuple(x.shape))
    return worst


def _where(action, ctx, path, idx, shape) -> str:
    if idx is None:
        return path
    s = f"{path}[{', '.join(map(str, idx))}]" if idx else path
    if action.locate is not None and idx:
        loc = action.locate(ctx, idx, shape)
        if loc:
            s += f" = {loc}"
    return s


def _groups(fmt, items, perms):
    """(items, perms) per model call, unbinding batched items for single-model formats."""
    if fmt.single_models:
        it, ps = [], []
        for w, p in zip(items, perms):
            if w.batched:
                for b in range(w.num_models):
                    it.append(w[b])
                    ps.append([q[b] if torch.as_tensor(q).dim() == 2 else q for q in p])
            else:
                it.append(w)
                ps.append(p)
        items, perms = it, ps
    if fmt.per_item:
        return [([w], [p]) for w, p in zip(items, perms)]
    return [(items, perms)]


def _call(f, x, args, group):
    a = args(group if len(group) > 1 else group[0]) if callable(args) else tuple(args)
    return f(x, *a)


def equivariance_check(f: Callable, kans, perms=None, *, input_format="weights", output="invariant",
                       tolerance: Optional[float] = None, args=(), ntrials: int = 1, seed: int = 0) -> EquivarianceResult:
    """Measure the equivariance error of ``f`` (see :func:`equivariance_error`) and return an
    :class:`EquivarianceResult` with the worst case (architecture, permutation, location)."""
    fmt, action = get_format(input_format), get_output(output)
    items, single = _items(kans)
    if perms is not None:
        given = [list(perms)] if single else [list(p) for p in perms]
        if len(given) != len(items):
            raise ValueError(f"perms: expected one permutation list per KAN item ({len(items)}), got {len(given)}")
        trials = [given]
    else:
        gen = torch.Generator().manual_seed(seed)
        trials = [[random_permutations(w, gen) for w in items] for _ in range(max(1, ntrials))]
    worst = None
    with torch.no_grad():
        for trial in trials:
            for g, (group, gperms) in enumerate(_groups(fmt, items, trial)):
                x = fmt.convert(group[0] if fmt.per_item else group)
                y = _call(f, x, args, group)
                gx = fmt.apply(x, group[0] if fmt.per_item else group, gperms[0] if fmt.per_item else gperms)
                y_g = _call(f, gx, args, group)
                ctx = ActionContext(group, gperms)
                expected = action.act(y, ctx)
                err, path, idx, shape = _compare(y_g, expected)
                if worst is None or err > worst[0]:
                    dt = _lowest_precision([w.dtype for w in group] + [t.dtype for _, t in _leaves(y)
                                                                       if isinstance(t, torch.Tensor)])
                    worst = (err, _where(action, ctx, path, idx, shape), g, group, gperms, dt)
    err, where, g, group, gperms, dt = worst
    tol = default_tolerance(dt) if tolerance is None else float(tolerance)
    return EquivarianceResult(
        kind="equivariance", error=err, tolerance=tol, passed=bool(err <= tol), dtype=dt,
        input_format=fmt.name, output=action.name, function=_name(f), where=where, item=g,
        architectures=[dict(w.architecture, num_models=w.num_models) for w in group],
        perms=[_perm_str(p) for p in gperms], trials=len(trials),
    )


def equivariance_error(f: Callable, kans, perms=None, *, input_format="weights", output="invariant",
                       args=(), ntrials: int = 1, seed: int = 0) -> float:
    r"""Worst equivariance error of ``f`` under hidden-neuron permutations.

    Args:
        f: the model; called as ``f(x, *args)`` with ``x`` in ``input_format``.
        kans: a :class:`~wskan_ext.KANWeights` (single or batched) or a list of them
            (architectures may differ; anything :func:`~wskan_ext.as_kan_weights` accepts).
        perms: for one ``KANWeights``, one permutation per hidden layer (``(n_h,)`` or
            ``(B, n_h)``); for a list, one such list per item. ``None``: ``ntrials`` random
            non-identity permutations drawn from ``seed``.
        input_format: a registered format name (``"weights"``, ``"graph"``, ``"nfn"``,
            ``"dws"``, ``"pykan"``, ...) or an :class:`~.actions.InputFormat`.
        output: ``"invariant"``, ``"node"``, ``"edge"``, ``"weights"``, ``"wsfeat"``,
            ``"dws"`` or an :class:`~.actions.OutputAction`.
        args: extra positional arguments of ``f`` (a tuple, or a callable mapping the
            call's KANWeights item -- a list for batch formats -- to a tuple).

    Returns: the error defined in the module docstring (``inf`` for NaN/Inf outputs or
    mismatched shapes).
    """
    return equivariance_check(f, kans, perms, input_format=input_format, output=output, args=args,
                              ntrials=ntrials, seed=seed).error


def assert_equivariant(f: Callable, kans, perms=None, *, input_format="weights", output="node",
                       tolerance: Optional[float] = None, args=(), ntrials: int = 1, seed: int = 0) -> EquivarianceResult:
    """Raise ``AssertionError`` (with :meth:`EquivarianceResult.report`) unless the error of
    :func:`equivariance_error` is at most ``tolerance`` (default: by dtype, see
    :data:`FLOAT_TOLERANCE`). Returns the result otherwise."""
    __tracebackhide__ = True
    res = equivariance_check(f, kans, perms, input_format=input_format, output=output, tolerance=tolerance,
                             args=args, ntrials=ntrials, seed=seed)
    if not res.passed:
        raise AssertionError(res.report())
    return res


def assert_invariant(f: Callable, kans, perms=None, *, input_format="weights", tolerance: Optional[float] = None,
                     args=(), ntrials: int = 1, seed: int = 0) -> EquivarianceResult:
    """:func:`assert_equivariant` with ``output="invariant"``: ``f(g . x) == f(x)``."""
    __tracebackhide__ = True
    return assert_equivariant(f, kans, perms, input_format=input_format, output="invariant", tolerance=tolerance,
                              args=args, ntrials=ntrials, seed=seed)


def _same_kan(a: KANWeights, b: KANWeights) -> bool:
    fa, fb = a.edge_features(), b.edge_features()
    return all(torch.equal(x, y) for x, y in zip(fa + a.grid + a.node_scale + a.node_bias,
                                                   fb + b.grid + b.node_scale + b.node_bias))


def sensitivity_check(f: Callable, kans, perm=None, *, input_format="weights", which: str = "input",
                      min_change: Optional[float] = None, args=(), seed: int = 0) -> EquivarianceResult:
    """Measure how much ``f`` changes when the KAN's input (or output) neurons are permuted
    -- a transformation that is *not* a symmetry. ``error`` holds the largest change (same
    measure as the equivariance error, outputs compared position by position)."""
    if which not in ("input", "output"):
        raise ValueError(f"which must be 'input' or 'output', got {which!r}")
    fmt = get_format(input_format)
    items, _ = _items(kans)
    gen = torch.Generator().manual_seed(seed)
    act = permute_inputs if which == "input" else permute_outputs
    best, details, dt = -1.0, [], None
    archs = []
    with torch.no_grad():
        moved = []
        for w in items:
            n = w.widths[0] if which == "input" else w.widths[-1]
            p = torch.as_tensor(perm).long() if perm is not None else (_non_identity(torch.randperm(n, generator=gen)) if n >= 2 else None)
            ok = p is not None and not _same_kan(act(w, p), w)
            moved.append((w, act(w, p) if ok else None, p))
        if not any(m[1] is not None for m in moved):
            raise ValueError(
                f"sensitivity check: no KAN has >= 2 {which} neurons whose permutation changes the weights "
                f"(architectures: {[w.widths for w in items]})"
            )
        for w, wp, p in moved:
            if wp is None:
                continue
            groups = _groups(fmt, [w], [[]]) if fmt.single_models else [([w], [[]])]
            pgroups = _groups(fmt, [wp], [[]]) if fmt.single_models else [([wp], [[]])]
            for (g0, _), (g1, _) in zip(groups, pgroups):
                conv = (lambda ws: fmt.convert(ws[0])) if fmt.per_item else fmt.convert
                y, y_p = _call(f, conv(g0), args, g0), _call(f, conv(g1), args, g1)
                change, path, _, _ = _compare(y_p, y)
                dt = _lowest_precision([w.dtype] + [t.dtype for _, t in _leaves(y) if isinstance(t, torch.Tensor)])
                if change > best:
                    best = change
                    archs = [dict(w.architecture, num_models=w.num_models)]
                    details = [f"{which} neurons permuted by {p.tolist()}"]
    tol = default_min_change(dt) if min_change is None else float(min_change)
    return EquivarianceResult(
        kind="sensitivity", error=best, tolerance=tol, passed=bool(best > tol), dtype=dt, input_format=fmt.name,
        output=which, function=_name(f), where="", architectures=archs, perms=details,
    )


def assert_sensitive(f: Callable, kans, perm=None, *, input_format="weights", which: str = "input",
                     min_change: Optional[float] = None, args=(), seed: int = 0) -> EquivarianceResult:
    """Raise ``AssertionError`` if ``f`` does *not* change (by more than ``min_change``,
    default by dtype: :data:`SENSITIVITY_THRESHOLD`) when the KAN's input neurons (``which="input"``) or
    output neurons (``"output"``) are permuted. These are not symmetries of a KAN, so a
    metanetwork that ignores them -- e.g. one with constant outputs, or one treating input
    neurons as an unordered set -- loses information. Outputs are compared position by
    position; a KAN item is used when it has at least 2 such neurons and the permutation
    changes its weights (``ValueError`` if none qualifies)."""
    __tracebackhide__ = True
    res = sensitivity_check(f, kans, perm, input_format=input_format, which=which, min_change=min_change,
                            args=args, seed=seed)
    if not res.passed:
        raise AssertionError(res.report())
    return res
