r"""A documented, stable flattening of KANs into vectors (and its exact inverse).

For structure-agnostic baselines (an MLP on the weight vector, PCA, ...). The vector of
one KAN concatenates, **layer by layer, and within a layer field by field in the order**
``wskan_ext.kan.weights.FIELDS`` = ``grid, coef, scale_base, scale_sp, mask,
node_scale, node_bias``, each tensor flattened row-major (C order), i.e. the order of
:meth:`KANWeights.tensors() <wskan_ext.KANWeights.tensors>`:

.. code-block:: text

    layer l:  grid (n, G+2k+1) | coef (n, m, G+k) | scale_base (n, m) | scale_sp (n, m)
              | mask (n, m) | node_scale (m,) | node_bias (m,)
    vec = [layer 0 | layer 1 | ... | layer L-1]          # (B, D)

A subset of fields can be selected (``fields=("coef", "scale_base", ...)``); the order
stays that of ``FIELDS``. The :class:`FlatSpec` returned next to the vector records
names, shapes and offsets; :func:`from_flat` inverts :func:`to_flat` bitwise when all
fields are present.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
from einops import rearrange

from wskan_ext.kan.weights import FIELDS, KANWeights

__all__ = ["FlatSpec", "to_flat", "from_flat"]


@dataclass(frozen=True)
class FlatSpec:
    """Where each tensor sits in the flat vector.

    Attributes:
        entries: ``(name, shape, offset)`` per tensor, ``name = "layers.{l}.{field}"``,
            ``shape`` without the model axis.
        size: ``D``, the length of one KAN's vector.
        k, base_fun: the KANs' spline orders and base functions (for the inverse).
        fields: the flattened fields.
    """

    entries: Tuple[Tuple[str, Tuple[int, ...], int], ...]
    size: int
    k: Tuple[int, ...]
    base_fun: Tuple[str, ...]
    fields: Tuple[str, ...]

    def slice(self, name: str) -> slice:
        """The slice of the vector that holds tensor ``name`` (e.g. ``"layers.0.coef"``)."""
        for n, shape, off in self.entries:
            if n == name:
                return slice(off, off + _numel(shape))
        raise KeyError(f"no tensor {name!r} in this FlatSpec; have {[e[0] for e in self.entries]}")


def _numel(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def to_flat(kans, fields: Sequence[str] = FIELDS) -> Tuple[torch.Tensor, FlatSpec]:
    """Flatten KANs to vectors.

    Args:
        kans: :class:`~wskan_ext.KANWeights` or any object a registered family converts.
        fields: which fields to include (kept in ``FIELDS`` order).

    Shapes:
        - batched KANs: returns ``(B, D)``; a single KAN: ``(D,)``.
    """
    from wskan_ext.registry import as_kan_weights

    w = as_kan_weights(kans)
    unknown = [f for f in fields if f not in FIELDS]
    if unknown or not fields:
        raise ValueError(f"fields must be a non-empty subset of {FIELDS}, got {tuple(fields)}")
    order = tuple(f for f in FIELDS if f in fields)
    b = w.unsqueeze()
    parts, entries, off = [], [], 0
    for l in range(b.depth):
        for f in order:
            t = getattr(b, f)[l]
            entries.append((f"layers.{l}.{f}", tuple(t.shape[1:]), off))
            off += _numel(t.shape[1:])
            parts.append(rearrange(t, "b ... -> b (...)"))
    vec = torch.cat(parts, dim=1)
    spec = FlatSpec(tuple(entries), off, tuple(w.k), tuple(w.base_fun), order)
    return (vec if w.batched else vec[0]), spec


def from_flat(vec: torch.Tensor, spec: FlatSpec) -> KANWeights:
    """Inverse of :func:`to_flat` (bitwise). Needs every field in ``spec``.

    Shapes: ``(B, D)`` -> batched :class:`~wskan_ext.KANWeights`; ``(D,)`` -> one KAN.
    """
    if not isinstance(spec, FlatSpec):
        raise TypeError(f"spec must be the FlatSpec returned by to_flat, got {type(spec).__name__}")
    if spec.fields != FIELDS:
        missing = [f for f in FIELDS if f not in spec.fields]
        raise ValueError(f"from_flat needs every field; this vector lacks {missing}")
    if not isinstance(vec, torch.Tensor) or vec.dim() not in (1, 2) or vec.shape[-1] != spec.size:
        got = tuple(vec.shape) if isinstance(vec, torch.Tensor) else type(vec).__name__
        raise ValueError(f"expected a tensor of shape (B, {spec.size}) or ({spec.size},), got {got}")
    single = vec.dim() == 1
    v = vec.unsqueeze(0) if single else vec
    tensors = {}
    for name, shape, off in spec.entries:
        t = v[:, off : off + _numel(shape)].reshape(v.shape[0], *shape)
        tensors[name] = t[0] if single else t
    return KANWeights.from_tensors(tensors, k=list(spec.k), base_fun=list(spec.base_fun))
