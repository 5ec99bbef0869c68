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
import os
import random
from typing import List, Union

import numpy as np
import torch

from wskan_ext.kan.weights import FIELDS, KANWeights

__all__ = ["from_pykan", "to_pykan", "save_pykan", "is_pykan_model", "identify_base_function",
           "preserve_global_rng", "PYKAN_BASE_FUNCTIONS"]

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
            not representable and raise ``ValueError``. Each layer's base function is read
            from what the layer computes (:func:`identify_base_function`), not from
            ``base_fun_name``: a ``KANLayer.base_fun`` replaced by another known function
            converts to that function, an unknown one raises ``ValueError`` naming the layer.
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
    if isinstance(name, str) and name not in PYKAN_BASE_FUNCTIONS:
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
    bases = [identify_base_function(layer.base_fun, f"layer {l}", layer.grid.dtype, layer.grid.device)
             for l, layer in enumerate(model.act_fun)]
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
    return KANWeights(**kw, k=ks, base_fun=bases)


#: Points where :func:`identify_base_function` compares a layer's base function with the
#: known ones: dense on [-6, 6] (where ReLU/leaky ReLU/ELU/GELU/SiLU/softplus differ) and far out.
_PROBE = (-40.0, -12.0, -7.5, 7.5, 12.0, 40.0)


def identify_base_function(fun, where: str = "", dtype: torch.dtype = torch.float64, device=None) -> str:
    """The name in :data:`~wskan_ext.kan.spline.BASE_FUNCTIONS` of the function ``fun``
    computes, found numerically: ``fun`` is evaluated at fixed points (97 on ``[-6, 6]``
    and six far out) and compared with every known function (tolerance ``64 eps`` relative,
    in ``dtype``). ``ValueError`` naming ``where`` when none matches (or ``fun`` fails).

    pykan stores the base function as a callable on every ``KANLayer`` (``base_fun_name``
    is only the constructor argument), so this reads what the layer really computes.
    """
    from wskan_ext.kan.spline import BASE_FUNCTIONS

    dtype = dtype if dtype.is_floating_point else torch.float64
    x = torch.cat([torch.linspace(-6.0, 6.0, 97, dtype=torch.float64), torch.tensor(_PROBE, dtype=torch.float64)])
    x = x.to(dtype=dtype, device=device)
    pre = f"{where}: " if where else ""
    try:
        with torch.no_grad():
            y = fun(x.clone())
        y = torch.as_tensor(y, device=x.device)
        if y.shape != x.shape:
            raise ValueError(f"returns shape {tuple(y.shape)} for input shape {tuple(x.shape)}")
        y = y.to(torch.float64)
    except Exception as e:
        raise ValueError(f"{pre}cannot evaluate the base function {fun!r} ({type(e).__name__}: {e})") from None
    tol = 64 * torch.finfo(dtype).eps
    best, best_err = None, float("inf")
    for cand, f in BASE_FUNCTIONS.items():
        with torch.no_grad():
            ref = f(x).to(torch.float64)
        err = float(((y - ref).abs() / (1.0 + ref.abs())).max()) if bool(torch.isfinite(y).all()) else float("inf")
        if err < best_err:
            best, best_err = cand, err
    if best_err > tol:
        raise ValueError(
            f"{pre}base function {fun!r} matches none of the known base functions "
            f"{sorted(BASE_FUNCTIONS)} (closest: {best!r}, max relative deviation {best_err:.3g}); "
            "a KAN with this base function cannot be represented"
        )
    return best


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


def save_pykan(model, path: str) -> List[str]:
    """Save a pykan model (or :class:`~wskan_ext.KANWeights`, converted with :func:`to_pykan`)
    with pykan's own ``saveckpt(path)``, creating missing parent directories first.

    pykan writes three files, and ``kan.KAN.loadckpt(path)`` reads all three:

    - ``{path}_config.yml`` -- architecture and options (YAML);
    - ``{path}_state`` -- the ``state_dict`` (``torch.save``);
    - ``{path}_cache_data`` -- ``model.cache_data``, pykan's cache of the last training
      inputs, written with ``torch.save`` (a **pickle**; ``None`` for models that were never
      trained by pykan, e.g. every model built by :func:`to_pykan`). Like ``_state`` it is
      unpickled by ``loadckpt``: load pykan checkpoints only from sources you trust.

    Returns the three paths (``realpath`` of ``path``'s directory, which is created).
    """
    if isinstance(model, KANWeights):
        if model.batched:
            raise ValueError(f"save_pykan: expected one KAN, got a batch of {model.num_models}")
        model = to_pykan(model)
    MultKAN = _import_kan()
    if not isinstance(model, MultKAN):
        raise TypeError(f"save_pykan expects a pykan KAN/MultKAN or KANWeights, got {type(model).__name__}")
    path = os.fspath(path)
    base = os.path.basename(path)
    if base in ("", ".", ".."):
        raise ValueError(f"save_pykan: {path!r} must end with a file name prefix (pykan appends _config.yml etc.)")
    d = os.path.realpath(os.path.dirname(path) or os.curdir)
    os.makedirs(d, exist_ok=True)
    prefix = os.path.join(d, base)
    model.saveckpt(prefix)
    return [f"{prefix}_config.yml", f"{prefix}_state", f"{prefix}_cache_data"]


def register():
    """The ``pykan`` family of :func:`~wskan_ext.as_kan_weights` (entry point
    ``wskan_ext.families``): ``(name, detect, convert)``."""

    def detect(obj) -> bool:
        try:
            return is_pykan_model(obj)
        except ImportError:
            return False

    return "pykan", detect, from_pykan
