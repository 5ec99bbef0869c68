"""The tensor layout of :class:`~wskan_ext.KANWeights` (its fields) and the check that
every layer follows it (:func:`check_layout`, what ``KANWeights.validate`` runs)."""

from __future__ import annotations

import torch

__all__ = ["FIELDS", "EDGE_FIELDS", "check_layout"]

#: Per-layer tensor fields of :class:`KANWeights`, in a fixed order.
FIELDS = ("grid", "coef", "scale_base", "scale_sp", "mask", "node_scale", "node_bias")
#: The fields that live on edges ``(*, n, m)`` (``coef`` has an extra basis axis).
EDGE_FIELDS = ("coef", "scale_base", "scale_sp", "mask")


def check_layout(w) -> None:
    """Check shapes, chaining, dtypes, devices, finiteness and knot order of ``w``
    (a :class:`~wskan_ext.KANWeights`); ``TypeError`` / ``ValueError`` naming the layer
    and the tensor."""
    depth = w.depth
    c0 = w.coef[0]
    if not isinstance(c0, torch.Tensor):
        raise TypeError(f"layer 0: coef must be a torch.Tensor, got {type(c0).__name__}")
    if c0.dim() not in (3, 4):
        raise ValueError(
            f"layer 0: coef must have shape (n_in, n_out, G+k) or (models, n_in, n_out, G+k), "
            f"got {tuple(c0.shape)}"
        )
    batch = tuple(c0.shape[:-3])
    dtype, device = c0.dtype, c0.device
    if not dtype.is_floating_point:
        raise TypeError(f"layer 0: coef must be floating point, got {dtype}")
    prev_out = None
    for l in range(depth):
        tensors = {f: getattr(w, f)[l] for f in FIELDS}
        for f, t in tensors.items():
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"layer {l}: {f} must be a torch.Tensor, got {type(t).__name__}")
            if t.dtype != dtype:
                raise TypeError(f"layer {l}: {f} has dtype {t.dtype}, expected {dtype} (the dtype of layer 0 coef)")
            if t.device != device:
                raise ValueError(f"layer {l}: {f} is on {t.device}, expected {device}")
        coef = tensors["coef"]
        if coef.dim() != len(batch) + 3 or tuple(coef.shape[: len(batch)]) != batch:
            raise ValueError(
                f"layer {l}: coef must have shape {batch + ('n_in', 'n_out', 'G+k')}, got {tuple(coef.shape)}"
            )
        n, m, nb = coef.shape[-3:]
        if n < 1 or m < 1:
            raise ValueError(
                f"layer {l}: zero width: coef has n_in={n}, n_out={m} (shape {tuple(coef.shape)}); "
                "every layer needs at least one input and one output neuron"
            )
        if prev_out is not None and n != prev_out:
            raise ValueError(
                f"layer {l}: layers do not chain: coef has n_in={n} but layer {l - 1} has n_out={prev_out}"
            )
        prev_out = m
        k = w.k[l]
        G = nb - k
        if G < 1:
            raise ValueError(
                f"layer {l}: coef has {nb} basis functions, fewer than k+1={k + 1} (grid size G=nb-k must be >= 1)"
            )
        expected = {
            "grid": batch + (n, G + 2 * k + 1),
            "scale_base": batch + (n, m),
            "scale_sp": batch + (n, m),
            "mask": batch + (n, m),
            "node_scale": batch + (m,),
            "node_bias": batch + (m,),
        }
        for f, shape in expected.items():
            got = tuple(tensors[f].shape)
            if got != shape:
                hint = ""
                if f == "grid" and len(got) == len(shape) and got[:-1] == shape[:-1]:
                    hint = (
                        f" (grid length must be G+2k+1 = {G}+{2 * k}+1 for coef with G+k={nb} "
                        f"basis functions and k={k})"
                    )
                raise ValueError(f"layer {l}: {f} must have shape {shape}, got {got}{hint}")
        for f, t in tensors.items():
            if not torch.isfinite(t).all():
                bad = (~torch.isfinite(t)).nonzero()[0].tolist()
                raise ValueError(f"layer {l}: {f} contains NaN or Inf (first at index {bad})")
        grid = tensors["grid"]
        steps = grid[..., 1:] - grid[..., :-1]
        if not (steps >= 0).all():
            bad = (steps < 0).nonzero()[0].tolist()
            raise ValueError(
                f"layer {l}: grid knots must be non-decreasing; knot {bad[-1] + 1} of row {bad[:-1]} "
                f"({grid[tuple(bad[:-1])][bad[-1] + 1].item():.6g}) is smaller than knot {bad[-1]} "
                f"({grid[tuple(bad[:-1])][bad[-1]].item():.6g})"
            )
