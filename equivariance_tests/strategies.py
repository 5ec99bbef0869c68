"""Hypothesis strategies for KANs, their hidden permutations and their inputs.

All strategies are composable in your own ``@given`` tests. Tensors are generated from a
drawn integer seed through a :class:`torch.Generator` (fast; Hypothesis shrinks the
architecture, the seed and the permutations, which keeps counterexamples small)::

    from hypothesis import given
    from wskan_ext.equivariance_tests import strategies as kst

    @given(kst.kans_and_permutations(max_depth=3, dtype=torch.float64))
    def test_my_model(wp):
        w, perms = wp
        ...
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from hypothesis import strategies as st

from wskan_ext.kan.spline import uniform_grid
from wskan_ext.kan.weights import KANWeights

__all__ = [
    "architectures",
    "kan_weights",
    "pykan_models",
    "hidden_permutations",
    "kans_and_permutations",
    "kan_batches",
    "batches_and_permutations",
    "kan_inputs",
    "random_kan",
]



def _ints(v) -> st.SearchStrategy:
    if isinstance(v, int):
        return st.just(v)
    lo, hi = v
    return st.integers(int(lo), int(hi))


@st.composite
def architectures(
    draw,
    *,
    widths: Optional[Sequence[int]] = None,
    min_depth: int = 1,
    max_depth: int = 3,
    min_width: int = 1,
    max_width: int = 4,
    min_hidden_width: int = 1,
    grid_sizes=(1, 5),
    k=(1, 3),
    base_funs: Sequence[str] = ("silu",),
    per_layer: bool = False,
):
    """KAN architectures as dicts ``{"widths", "grid_sizes", "k", "base_fun"}`` (lists).

    Args:
        widths: fix the widths (otherwise ``min_depth..max_depth`` layers of
            ``min_width..max_width`` neurons; hidden layers at least ``min_hidden_width``).
        grid_sizes, k: a fixed ``int`` or an inclusive ``(min, max)`` range.
        base_funs: base function names to choose from.
        per_layer: draw ``G``, ``k`` and the base function per layer (otherwise one per KAN).
    """
    if widths is None:
        depth = draw(st.integers(min_depth, max_depth))
        ws = [draw(st.integers(min_width, max_width))]
        for l in range(1, depth):
            ws.append(draw(st.integers(max(min_width, min_hidden_width), max(max_width, min_hidden_width))))
        ws.append(draw(st.integers(min_width, max_width)))
    else:
        ws = [int(n) for n in widths]
    depth = len(ws) - 1
    gs, ks, bs = _ints(grid_sizes), _ints(k), st.sampled_from(list(base_funs))
    if per_layer:
        g = [draw(gs) for _ in range(depth)]
        kk = [draw(ks) for _ in range(depth)]
        b = [draw(bs) for _ in range(depth)]
    else:
        g, kk, b = [draw(gs)] * depth, [draw(ks)] * depth, [draw(bs)] * depth
    return {"widths": ws, "grid_sizes": g, "k": kk, "base_fun": b}


def _full_architecture(arch: dict) -> dict:
    """``arch`` with ``grid_sizes``/``k`` given as an ``int`` broadcast to every layer and a
    missing (or single-name) ``base_fun`` filled in (``"silu"``)."""
    widths = [int(n) for n in arch["widths"]]
    depth = len(widths) - 1

    def per_layer(v, name):
        v = [v] * depth if isinstance(v, (int, str)) else list(v)
        if len(v) != depth:
            raise ValueError(f"random_kan: {name}: expected {depth} entries (one per layer), got {len(v)}")
        return v

    return {"widths": widths, "grid_sizes": [int(g) for g in per_layer(arch["grid_sizes"], "grid_sizes")],
            "k": [int(k) for k in per_layer(arch["k"], "k")],
            "base_fun": per_layer(arch.get("base_fun", "silu"), "base_fun")}


def random_kan(arch: dict, seed: int, *, num_models: Optional[int] = None, dtype=torch.float64, device=None,
               random_grid: bool = True, mask_prob: float = 0.0,
               grid_range: Optional[Tuple[float, float]] = None) -> KANWeights:
    """Deterministic random :class:`~wskan_ext.KANWeights` for ``arch`` (the generator behind
    :func:`kan_weights`): per-neuron grid ranges in ``[-2, -0.5] x [0.5, 2]`` with jittered
    knots (``random_grid``), ``coef ~ N(0, 0.5^2)``, ``scale_base ~ N(0, 1)``,
    ``scale_sp ~ U(0.5, 1.5)``, node affine ``U(0.5, 1.5)`` / ``N(0, 0.1^2)``, edges masked
    with probability ``mask_prob``.

    Args:
        arch: a dict as drawn by :func:`architectures`; ``grid_sizes`` and ``k`` may also be
            a single ``int`` for every layer and ``base_fun`` a single name or left out
            (``"silu"``), e.g. ``{"widths": [3, 4, 2], "grid_sizes": 5, "k": 3}``.
        grid_range: ``None`` (random per-neuron ranges) or ``(lo, hi)``: every neuron's
            grid range ``[t_k, t_{G+k}]`` is exactly this interval. With
            ``random_grid=False`` the grids are then pykan's default uniform grids,
            bitwise :func:`~wskan_ext.kan.spline.uniform_grid`. The other tensors do not
            depend on ``grid_range`` (same seed, same values).
    """
    arch = _full_architecture(arch)
    gen = torch.Generator().manual_seed(int(seed))
    lead = () if num_models is None else (int(num_models),)
    f64 = dict(dtype=torch.float64, generator=gen)
    widths = arch["widths"]
    kw = {f: [] for f in ("grid", "coef", "scale_base", "scale_sp", "mask", "node_scale", "node_bias")}
    for l in range(len(widths) - 1):
        n, m, G, k = widths[l], widths[l + 1], arch["grid_sizes"][l], arch["k"][l]
        lo = -0.5 - 1.5 * torch.rand(*lead, n, 1, **f64)
        hi = 0.5 + 1.5 * torch.rand(*lead, n, 1, **f64)
        steps = torch.ones(*lead, n, G + 2 * k, dtype=torch.float64)
        if random_grid:
            steps = 0.5 + torch.rand(*lead, n, G + 2 * k, **f64)
        if grid_range is not None:
            lo, hi = torch.full_like(lo, float(grid_range[0])), torch.full_like(hi, float(grid_range[1]))
        if grid_range is not None and not random_grid:
            kw["grid"].append(uniform_grid(n, G, k, grid_range, dtype=torch.float64).expand(*lead, n, G + 2 * k + 1))
        else:
            inner = steps[..., k:k + G]
            h = (hi - lo) / inner.sum(-1, keepdim=True)
            knots = torch.cat([torch.zeros(*lead, n, 1, dtype=torch.float64), torch.cumsum(steps * h, -1)], -1)
            kw["grid"].append(lo + knots - knots[..., k:k + 1])
        kw["coef"].append(0.5 * torch.randn(*lead, n, m, G + k, **f64))
        kw["scale_base"].append(torch.randn(*lead, n, m, **f64))
        kw["scale_sp"].append(0.5 + torch.rand(*lead, n, m, **f64))
        kw["mask"].append((torch.rand(*lead, n, m, **f64) >= mask_prob).to(torch.float64))
        kw["node_scale"].append(0.5 + torch.rand(*lead, m, **f64))
        kw["node_bias"].append(0.1 * torch.randn(*lead, m, **f64))
    kw = {f: [t.to(dtype=dtype, device=device).contiguous() for t in v] for f, v in kw.items()}
    return KANWeights(**kw, k=list(arch["k"]), base_fun=list(arch["base_fun"]))


def _maybe(v):
    return v if isinstance(v, st.SearchStrategy) else st.just(v)


@st.composite
def kan_weights(draw, architecture=None, *, num_models=None, dtype=torch.float64, device=None,
                random_grid: bool = True, mask_prob=0.0, grid_range=None, **arch_kwargs):
    """Random :class:`~wskan_ext.KANWeights`.

    Args:
        architecture: a dict as drawn by :func:`architectures`, a strategy of such dicts,
            or ``None`` (``architectures(**arch_kwargs)``).
        num_models: ``None`` (unbatched), an ``int`` or a strategy of ints (leading model axis).
        dtype: a torch dtype or a strategy of dtypes, e.g.
            ``st.sampled_from([torch.float64, torch.float32])``.
        device: of the tensors.
        random_grid, mask_prob, grid_range: see :func:`random_kan`; ``mask_prob`` may also
            be a strategy of floats.
    """
    arch = draw(architectures(**arch_kwargs)) if architecture is None else draw(_maybe(architecture))
    nm = draw(_maybe(num_models))
    dt = draw(_maybe(dtype))
    mp = draw(_maybe(mask_prob))
    seed = draw(st.integers(0, 2**31 - 1))
    return random_kan(arch, seed, num_models=nm, dtype=dt, device=device, random_grid=random_grid,
                      mask_prob=mp, grid_range=grid_range)


_WEIGHT_KWARGS = ("num_models", "mask_prob", "device", "grid_range")


@st.composite
def pykan_models(draw, architecture=None, *, dtype=torch.float64, per_layer: bool = False, node_affine=False,
                 update_grid=False, **arch_kwargs):
    """Real pykan ``MultKAN`` models (``auto_save=False``; the global RNG is left untouched)
    holding random weights (:func:`kan_weights` with uniform knot spacing).

    pykan needs one base function per model (``silu``, ``identity`` or ``zero``); with
    ``per_layer=True`` the grid size ``G`` and order ``k`` are drawn per layer (pykan takes
    lists), otherwise once per model. ``dtype`` and the other keyword arguments are those of
    :func:`kan_weights` (e.g. ``mask_prob``) and :func:`architectures` (e.g. ``max_depth``).

    Args:
        node_affine: ``True``, ``False`` or a strategy of bools.
            :func:`~wskan_ext.adapters.pykan.to_pykan` writes the node affine into pykan's
            ``subnode_scale/bias`` and leaves the outer ``node_scale/bias`` the identity;
            ``True`` makes the outer one random too (``U(0.5, 1.5)`` / ``N(0, 0.1^2)``), as
            in a trained model, so that readers must fold both affines.
        update_grid: ``True``, ``False`` or a strategy of bools: afterwards move every grid to
            sample quantiles with pykan's ``update_grid_from_samples`` on 64 inputs
            ``~ N(0, 2.5^2)`` (non-uniform, possibly repeated knots, like a trained model).
    """
    from wskan_ext.adapters.pykan import PYKAN_BASE_FUNCTIONS, to_pykan

    arch_kwargs.setdefault("base_funs", ("silu",))
    bad = set(arch_kwargs["base_funs"]) - set(PYKAN_BASE_FUNCTIONS)
    if bad:
        raise ValueError(f"pykan_models: base functions {sorted(bad)} are not pykan's {PYKAN_BASE_FUNCTIONS}")
    wkw = {k: arch_kwargs.pop(k) for k in _WEIGHT_KWARGS if k in arch_kwargs}
    if architecture is None:
        architecture = draw(architectures(per_layer=per_layer, **arch_kwargs))
        architecture["base_fun"] = [architecture["base_fun"][0]] * len(architecture["base_fun"])
    w = draw(kan_weights(architecture, dtype=dtype, random_grid=False, **wkw))
    models = to_pykan(w)  # a list for batched weights (num_models)
    node_affine, update_grid = draw(_maybe(node_affine)), draw(_maybe(update_grid))
    if node_affine or update_grid:
        gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
        f64 = dict(dtype=torch.float64, generator=gen)
        for model in models if isinstance(models, list) else [models]:
            if node_affine:
                with torch.no_grad():
                    for s, b in zip(model.node_scale, model.node_bias):
                        s.copy_(0.5 + torch.rand(s.shape, **f64))
                        b.copy_(0.1 * torch.randn(b.shape, **f64))
            if update_grid:
                x = 2.5 * torch.randn(64, w.widths[0], **f64)
                model.update_grid_from_samples(x.to(dtype=w.dtype, device=w.device))
    return models


@st.composite
def hidden_permutations(draw, weights: KANWeights, *, per_model: bool = False):
    """One permutation per hidden layer of ``weights`` (``LongTensor (n_h,)``; ``(B, n_h)``
    for batched weights with ``per_model=True``). Shrinks towards the identity."""
    out = []
    for n in weights.widths[1:-1]:
        if per_model and weights.batched:
            out.append(torch.tensor([draw(st.permutations(range(n))) for _ in range(weights.num_models)],
                                    dtype=torch.long).reshape(weights.num_models, n))
        else:
            out.append(torch.tensor(draw(st.permutations(range(n))), dtype=torch.long))
    return out


@st.composite
def kans_and_permutations(draw, *, per_model: bool = False, **kwargs):
    """``(weights, perms)``: :func:`kan_weights` (``**kwargs``) and its hidden permutations."""
    w = draw(kan_weights(**kwargs))
    return w, draw(hidden_permutations(w, per_model=per_model))


@st.composite
def kan_batches(draw, *, min_size: int = 1, max_size: int = 3, same_architecture: bool = False,
                num_models=None, dtype=torch.float64, device=None, **arch_kwargs):
    """Lists of :class:`~wskan_ext.KANWeights` whose architectures differ (unless ``same_architecture``),
    e.g. for a PyG batch mixing widths and depths. ``num_models`` as in :func:`kan_weights`."""
    size = draw(st.integers(min_size, max_size))
    arch = draw(architectures(**arch_kwargs)) if same_architecture else None
    return [draw(kan_weights(arch, num_models=num_models, dtype=dtype, device=device, **({} if arch else arch_kwargs)))
            for _ in range(size)]


@st.composite
def batches_and_permutations(draw, *, per_model: bool = False, **kwargs):
    """``(kans, perms)``: a :func:`kan_batches` list and one permutation list per item."""
    kans = draw(kan_batches(**kwargs))
    return kans, [draw(hidden_permutations(w, per_model=per_model)) for w in kans]


@st.composite
def kan_inputs(draw, weights: KANWeights, *, min_samples: int = 1, max_samples: int = 8,
               outside: bool = True, on_knots: bool = True):
    """Inputs ``x`` for ``weights``: ``(s, n_0)``, or ``(B, s, n_0)`` for batched weights.

    Values are drawn per input neuron relative to its grid ``[t_0, t_last]``: inside it, and
    with ``outside=True`` also up to half a grid width beyond each end (where every B-spline
    is zero and only the base function acts); with ``on_knots`` some samples sit exactly on
    knots (the half-open boundary cases of the basis)."""
    s = draw(st.integers(min_samples, max_samples))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    g = weights.grid[0].to(torch.float64).cpu()  # (*, n0, K)
    lo, hi = g[..., 0], g[..., -1]  # (*, n0)
    lead = g.shape[:-2]
    u = torch.rand(*lead, s, g.shape[-2], generator=gen, dtype=torch.float64)
    if outside:
        u = 2 * u - 0.5
    x = lo.unsqueeze(-2) + u * (hi - lo).unsqueeze(-2)
    if on_knots and s > 1:
        pick = torch.randint(0, g.shape[-1], (*lead, 1, g.shape[-2]), generator=gen)
        x[..., :1, :] = torch.gather(g.transpose(-1, -2), -2, pick)
    return x.to(dtype=weights.dtype, device=weights.device)
