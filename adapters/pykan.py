"""pykan 0.2.8 interop: ``from_pykan`` / ``to_pykan``.

pykan's ``MultKAN`` (alias ``KAN``) stores, per layer ``l``, a ``KANLayer``
(``grid (n, G+2k+1)``, ``coef (n, m, G+k)``, ``scale_base``, ``scale_sp``, ``mask (n, m)``),
a ``Symbolic_KANLayer`` and two affines: ``subnode_scale/bias`` and ``node_scale/bias``,
applied as ``y = node_scale * (subnode_scale * s + subnode_bias) + node_bias``. We fold
them into one affine: ``scale = node_scale * subnode_scale``,
``bias = node_scale * subnode_bias + node_bias``. ``to_pykan`` writes our affine into the
subnode affine and sets the node affine to the identity, so
``from_pykan(to_pykan(w))`` reproduces ``w`` bit for bit.
"""

from __future__ import annotations

import contextlib
import random
from typing import List, Union

import numpy as np
import torch

from wskan_ext.kan.weights import FIELDS, KANWeights

__all__ = ["from_pykan", "to_pykan", "is_pykan_model", "preserve_global_rng", "PYKAN_BASE_FUNCTIONS"]

#: pykan's base-function names, the only ones ``to_pykan`` can express.
PYKAN_BASE_FUNCTIONS = ("silu", "identity", "zero")


def _import_kan():
    try:
        import kan  # noqa: F401
        from kan.MultKAN import MultKAN
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "pykan is not installed (or one of its undeclared dependencies is missing: "
            "matplotlib, sympy, pandas, scikit-learn, pyyaml, tqdm). "
            "Install with `pip install 'wskan_ext[pykan]'`."
        ) from e
    return MultKAN


def is_pykan_model(obj) -> bool:
    """Whether ``obj`` is a pykan ``MultKAN``/``KAN`` (without importing pykan if absent)."""
    mod = type(obj).__module__ or ""
    if not mod.startswith("kan"):
        return False
    MultKAN = _import_kan()
    return isinstance(obj, MultKAN)


def from_pykan(model, dtype: torch.dtype | None = None) -> KANWeights:
    """Convert a pykan ``KAN``/``MultKAN`` into :class:`~wskan_ext.KANWeights` (a copy).

    Args:
        model: a pykan 0.2.8 model. Multiplication nodes and active symbolic branches are
            not representable and raise ``ValueError``.
        dtype: convert the tensors to this dtype (default: keep the model's).

    Shapes: per layer, ``grid (n, G+2k+1)``, ``coef (n, m, G+k)``, edge tensors ``(n, m)``,
    node affine ``(m,)``.
    """
    MultKAN = _import_kan()
    if not isinstance(model, MultKAN):
        raise TypeError(f"from_pykan expects a pykan KAN/MultKAN, got {type(model).__name__}")
    for l, (n_sum, n_mult) in enumerate(model.width):
        if n_mult:
            raise ValueError(
                f"layer {l}: pykan multiplication nodes are not representable as a KAN graph "
                f"(width[{l}] = [{n_sum}, {n_mult}] has {n_mult} multiplication nodes)"
            )
    name = getattr(model, "base_fun_name", None)
    if name not in PYKAN_BASE_FUNCTIONS:
        raise ValueError(
            f"unknown pykan base function {name!r}; supported: {list(PYKAN_BASE_FUNCTIONS)}"
        )
    if model.symbolic_enabled:
        for l, sym in enumerate(model.symbolic_fun):
            if torch.any(sym.mask != 0):
                bad = (sym.mask != 0).nonzero()[0].tolist()
                raise ValueError(
                    f"layer {l}: symbolic_fun.mask is non-zero (first active edge out={bad[0]}, in={bad[1]}); "
                    "an active symbolic branch cannot be represented by spline weights"
                )
    kw = {f: [] for f in FIELDS}
    ks = []
    for l, layer in enumerate(model.act_fun):
        ks.append(int(layer.k))
        take = lambda t: t.detach().clone() if dtype is None else t.detach().to(dtype).clone()  # noqa: E731
        kw["grid"].append(take(layer.grid))
        kw["coef"].append(take(layer.coef))
        kw["scale_base"].append(take(layer.scale_base))
        kw["scale_sp"].append(take(layer.scale_sp))
        kw["mask"].append(take(layer.mask))
        ns, nb = take(model.node_scale[l]), take(model.node_bias[l])
        ss, sb = take(model.subnode_scale[l]), take(model.subnode_bias[l])
        kw["node_scale"].append(ns * ss)
        kw["node_bias"].append(ns * sb + nb)
    return KANWeights(**kw, k=ks, base_fun=name)


@contextlib.contextmanager
def preserve_global_rng():
    """pykan seeds torch, NumPy and ``random`` globally in its constructor; keep the
    user's random state untouched."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def to_pykan(weights: KANWeights, **kwargs) -> Union["object", List["object"]]:
    """Build pykan ``KAN`` model(s) holding ``weights`` (a list for batched weights).

    The pykan model is constructed with ``auto_save=False`` (so nothing is written to
    ``./model``) and the dtype/device of ``weights``; extra ``kwargs`` go to pykan's
    constructor. The global random state is left untouched.
    """
    MultKAN = _import_kan()
    if not isinstance(weights, KANWeights):
        raise TypeError(f"to_pykan expects KANWeights, got {type(weights).__name__}")
    if weights.batched:
        return [to_pykan(w, **kwargs) for w in weights.unbind()]
    bfs = set(weights.base_fun)
    if len(bfs) != 1 or weights.base_fun[0] not in PYKAN_BASE_FUNCTIONS:
        raise ValueError(
            f"pykan supports one base function for all layers, one of {list(PYKAN_BASE_FUNCTIONS)}; "
            f"got {weights.base_fun}"
        )
    kwargs.setdefault("auto_save", False)
    with preserve_global_rng():
        model = MultKAN(
            width=list(weights.widths),
            grid=list(weights.grid_sizes),
            k=list(weights.k),
            base_fun=weights.base_fun[0],
            **kwargs,
        )
    model = model.to(weights.device)
    if weights.dtype != torch.float32:
        # MultKAN.to() takes only a device; nn.Module.type() converts every tensor's dtype.
        model = model.type(weights.dtype)
    with torch.no_grad():
        for l, layer in enumerate(model.act_fun):
            layer.grid.data = weights.grid[l].detach().clone()
            layer.coef.data = weights.coef[l].detach().clone()
            layer.scale_base.data = weights.scale_base[l].detach().clone()
            layer.scale_sp.data = weights.scale_sp[l].detach().clone()
            layer.mask.data = weights.mask[l].detach().clone()
            model.subnode_scale[l].data = weights.node_scale[l].detach().clone()
            model.subnode_bias[l].data = weights.node_bias[l].detach().clone()
            model.node_scale[l].data = torch.ones_like(weights.node_scale[l])
            model.node_bias[l].data = torch.zeros_like(weights.node_bias[l])
    return model
