"""Architecture families: turn any supported model object into :class:`~wskan_ext.KANWeights`.

A *family* is a name, a detector (``obj -> bool``) and a converter
(``obj -> KANWeights``). :func:`~wskan_ext.as_kan_weights` tries the registered families in
registration order. Families registered out of the box:

* ``kan_weights`` -- :class:`~wskan_ext.KANWeights` itself (returned as is);
* ``native`` -- our :class:`~wskan_ext.KAN` module;
* ``pykan`` -- pykan ``KAN``/``MultKAN``;
* ``efficient_kan`` -- an efficient-kan ``state_dict``;
* ``mlp`` -- a plain MLP, an ``nn.Sequential`` of ``nn.Linear`` and activation modules,
  converted by the exact MLP -> KAN construction
  (``wskan_ext.mlp_to_kan`` with ``route="exact"``: the base-function branch
  carries the activation, the node affine the bias), so MLP and KAN zoos share one
  pipeline. An ``nn.Sequential`` with an unsupported module is still detected, and the
  conversion raises an error naming that module.

Third-party packages register families through the entry-point group
``wskan_ext.families``: each entry point resolves to a callable taking no argument that
calls :func:`~wskan_ext.register_family` (or returns a ``(name, detector, converter)`` tuple).
For example, in the third-party package's ``pyproject.toml``:

.. code-block:: toml

    [project.entry-points."wskan_ext.families"]
    my_kan = "my_package.wskan_family:register"

The group is scanned once, on the first call to :func:`~wskan_ext.families` or
:func:`~wskan_ext.as_kan_weights`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List

from .kan.module import KAN
from .kan.weights import KANWeights

__all__ = ["register_family", "unregister_family", "as_kan_weights", "families", "ENTRY_POINT_GROUP"]

#: Entry-point group scanned for third-party families.
ENTRY_POINT_GROUP = "wskan_ext.families"


@dataclass(frozen=True)
class Family:
    name: str
    detect: Callable[[object], bool]
    convert: Callable[..., KANWeights]


_FAMILIES: Dict[str, Family] = {}
_ENTRY_POINTS_LOADED = False


def register_family(
    name: str,
    detect: Callable[[object], bool],
    convert: Callable[..., KANWeights],
    *,
    overwrite: bool = False,
) -> None:
    """Register a model family.

    Args:
        name: unique family name.
        detect: ``detect(obj) -> bool``, cheap and exception-free.
        convert: ``convert(obj, **kwargs) -> KANWeights``.
        overwrite: replace an existing family of that name (otherwise ``ValueError``).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"family name must be a non-empty str, got {name!r}")
    if not callable(detect) or not callable(convert):
        raise TypeError(f"family {name!r}: detect and convert must be callables")
    if name in _FAMILIES and not overwrite:
        raise ValueError(f"family {name!r} is already registered (pass overwrite=True to replace it)")
    _FAMILIES[name] = Family(name, detect, convert)


def unregister_family(name: str) -> None:
    """Remove a registered family (``KeyError`` if absent)."""
    del _FAMILIES[name]


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        result = ep.load()()
        if isinstance(result, tuple) and len(result) == 3:
            register_family(*result, overwrite=True)


def families() -> List[str]:
    """Names of the registered families, in detection order."""
    _load_entry_points()
    return list(_FAMILIES)


def as_kan_weights(obj, **kwargs) -> KANWeights:
    """Convert ``obj`` to :class:`~wskan_ext.KANWeights` using the first family that detects it.

    Raises:
        TypeError: no registered family recognises ``obj`` (the message lists them).
    """
    _load_entry_points()
    for fam in _FAMILIES.values():
        if fam.detect(obj):
            return fam.convert(obj, **kwargs)
    raise TypeError(
        f"no registered KAN family recognises an object of type {type(obj).__module__}.{type(obj).__qualname__}; "
        f"registered families: {list(_FAMILIES)} (add one with wskan_ext.register_family)"
    )


def _native(obj, **kwargs) -> KANWeights:
    return obj.weights(detach=True).clone()


def _pykan_detect(obj) -> bool:
    from wskan_ext.adapters.pykan import is_pykan_model

    try:
        return is_pykan_model(obj)
    except ImportError:
        return False


def _pykan_convert(obj, **kwargs) -> KANWeights:
    from wskan_ext.adapters.pykan import from_pykan

    return from_pykan(obj, **kwargs)


def _ekan_detect(obj) -> bool:
    from wskan_ext.adapters.efficient_kan import is_efficient_kan_state_dict

    return is_efficient_kan_state_dict(obj)


def _ekan_convert(obj, **kwargs) -> KANWeights:
    from wskan_ext.adapters.efficient_kan import from_efficient_kan

    return from_efficient_kan(obj, **kwargs)


register_family("kan_weights", lambda o: isinstance(o, KANWeights), lambda o, **kw: o)
register_family("native", lambda o: isinstance(o, KAN), _native)
register_family("pykan", _pykan_detect, _pykan_convert)
register_family("efficient_kan", _ekan_detect, _ekan_convert)


def _mlp_detect(obj) -> bool:
    from torch import nn

    from .convert import BatchedLinear

    return isinstance(obj, nn.Sequential) and any(isinstance(m, (nn.Linear, BatchedLinear)) for m in obj.modules())


def _mlp_convert(obj, **kwargs) -> KANWeights:
    from .convert import mlp_to_kan

    kwargs.setdefault("route", "exact")
    return mlp_to_kan(obj, **kwargs)


register_family("mlp", _mlp_detect, _mlp_convert)
