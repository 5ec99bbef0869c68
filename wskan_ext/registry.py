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
:func:`~wskan_ext.as_kan_weights`. The library's own ``pykan``, ``efficient_kan`` and
``mlp`` families register the same way, from their own modules (``BUILTIN_FAMILIES``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List

from .kan.module import KAN
from .kan.weights import KANWeights

__all__ = ["register_family", "unregister_family", "as_kan_weights", "families", "ENTRY_POINT_GROUP"]

#: Entry-point group scanned for third-party families.
ENTRY_POINT_GROUP = "wskan_ext.families"

#: The library's own families beyond ``kan_weights`` and ``native``, in detection order:
#: ``"module:function"`` entry points (also declared in ``pyproject.toml``) loaded on first
#: use, so this module imports neither the adapters nor the converters (data flows one way:
#: ``kan`` -> ``registry`` <- ``adapters``, ``convert``).
BUILTIN_FAMILIES = (
    "wskan_ext.adapters.pykan:register",
    "wskan_ext.adapters.efficient_kan:register",
    "wskan_ext.convert.family:register",
)


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


def _register_from(target: Callable[[], object]) -> None:
    result = target()
    if isinstance(result, tuple) and len(result) == 3:
        register_family(*result, overwrite=True)


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib import import_module
    from importlib.metadata import entry_points

    # the library's own families first (also when it runs from a source tree without
    # installed metadata), then third-party ones; each module registers itself
    for spec in BUILTIN_FAMILIES:
        module, _, func = spec.partition(":")
        _register_from(getattr(import_module(module), func))
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.value not in BUILTIN_FAMILIES:
            _register_from(ep.load())


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


register_family("kan_weights", lambda o: isinstance(o, KANWeights), lambda o, **kw: o)
register_family("native", lambda o: isinstance(o, KAN), _native)
