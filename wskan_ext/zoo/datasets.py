r"""Offline datasets for KAN zoos.

Two kinds of data:

* :class:`ClassificationData` -- one shared input/label set (digits, MNIST-format IDX files);
  every KAN of a zoo is trained on (a per-model subset of) it.
* :class:`FunctionData` -- implicit neural representations (INRs): shared coordinates and one
  regression target per *item*; KAN ``r`` of a zoo fits item ``r``'s target
  (images -> intensity, or 1-D sine waves :math:`a \sin(b x)`).

Input scaling: every input is mapped to ``[-1, 1]``, the default KAN grid range, so that the
first layer's splines see their whole grid. For images, a pixel value ``v`` in ``[0, v_max]``
becomes ``2 v / v_max - 1`` (digits: ``v_max = 16``, IDX files: ``255``). INR targets are
intensities in ``[0, 1]`` (PSNR uses peak value 1).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "ClassificationData",
    "FunctionData",
    "load_digits_data",
    "read_idx",
    "load_idx_data",
    "downsample_images",
    "image_coordinates",
    "image_inr_data",
    "digits_inr_data",
    "SineData",
    "seed_for",
]


def seed_for(*parts: int) -> int:
    """A deterministic 63-bit seed from integers (splitmix64 mixing); used so that every
    run, shard and item draws from its own reproducible stream."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) & 0xFFFFFFFFFFFFFFFF
        x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        x = z ^ (z >> 31)
    return x & 0x7FFFFFFFFFFFFFFF


@dataclass
class ClassificationData:
    """A classification dataset with a fixed train/test split.

    Shapes:
        - ``x_train``: ``(s_train, n_0)``, ``y_train``: ``(s_train,)`` (int64 class ids);
        - ``x_test``: ``(s_test, n_0)``, ``y_test``: ``(s_test,)``.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    info: Dict = field(default_factory=dict)

    task = "classification"

    @property
    def num_inputs(self) -> int:
        return self.x_train.shape[-1]

    def to(self, dtype=None, device=None) -> "ClassificationData":
        c = lambda t: t.to(device=device, dtype=dtype if t.dtype.is_floating_point else t.dtype)  # noqa: E731
        return ClassificationData(
            self.name, c(self.x_train), self.y_train.to(device), c(self.x_test), self.y_test.to(device),
            self.num_classes, dict(self.info),
        )


@dataclass
class FunctionData:
    """INR targets: shared coordinates, one target function per item.

    Shapes:
        - ``coords``: ``(s, d)`` in ``[-1, 1]^d``;
        - ``targets``: ``(items, s, c)``;
        - ``labels``: ``{name: (items,)}`` per-item labels (e.g. ``class``, ``a``, ``b``).
    """

    name: str
    coords: torch.Tensor
    targets: torch.Tensor
    labels: Dict[str, torch.Tensor] = field(default_factory=dict)
    info: Dict = field(default_factory=dict)

    task = "regression"

    def __len__(self) -> int:
        return self.targets.shape[0]

    @property
    def num_inputs(self) -> int:
        return self.coords.shape[-1]

    @property
    def num_outputs(self) -> int:
        return self.targets.shape[-1]

    def items(self, idx: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Targets ``(len(idx), s, c)`` and labels of the items ``idx`` (taken modulo the
        number of items, so any run id maps to an item)."""
        idx = torch.as_tensor(idx, dtype=torch.long) % len(self)
        return self.targets[idx], {k: v[idx] for k, v in self.labels.items()}


def _split(n: int, test_fraction: float, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    n_test = int(round(n * test_fraction))
    return perm[n_test:].sort().values, perm[:n_test].sort().values


def downsample_images(images: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    """Average-pool square images ``(N, H, H)`` to ``(N, size, size)``; ``size`` must divide
    ``H`` (e.g. 28 -> 14 or 7, 8 -> 4). ``None`` returns the input."""
    if size is None or size == images.shape[-1]:
        return images
    H = images.shape[-1]
    if images.shape[-2] != H or size < 1 or H % size:
        raise ValueError(f"downsample: image size {tuple(images.shape[-2:])} is not a square divisible by {size}")
    return F.avg_pool2d(images.unsqueeze(1), kernel_size=H // size).squeeze(1)


def load_digits_data(
    test_fraction: float = 0.2, seed: int = 0, downsample: Optional[int] = None, dtype=torch.float32
) -> ClassificationData:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), inputs in ``[-1, 1]``
    (``2 v / 16 - 1``), optionally average-pooled to ``downsample x downsample`` (4 or 2).

    The split is a seeded random permutation: ``round(1797 * test_fraction)`` test images.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.as_tensor(d.images, dtype=torch.float64)
    images = downsample_images(images, downsample)
    x = (images.flatten(1) * (2.0 / 16.0) - 1.0).to(dtype)
    y = torch.as_tensor(d.target, dtype=torch.long)
    tr, te = _split(len(y), test_fraction, seed)
    side = images.shape[-1]
    return ClassificationData(
        f"digits{side}x{side}", x[tr], y[tr], x[te], y[te], 10,
        {"source": "sklearn.datasets.load_digits", "image_size": side, "test_fraction": test_fraction,
         "split_seed": seed, "input_range": [-1.0, 1.0]},
    )


_IDX_DTYPES = {0x08: ("B", torch.uint8), 0x09: ("b", torch.int8), 0x0B: (">h", torch.int16),
               0x0C: (">i", torch.int32), 0x0D: (">f", torch.float32), 0x0E: (">d", torch.float64)}


def read_idx(path: str) -> torch.Tensor:
    """Read one MNIST-format IDX file (``.gz`` or raw).

    The header is two zero bytes, a type code (``0x08`` = uint8, ...), the number of
    dimensions ``d`` and ``d`` big-endian uint32 sizes; the data follow. Any mismatch
    (bad magic, unknown type, wrong length) raises ``ValueError`` naming the file.
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read IDX file ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (magic number must start with two zero bytes, got {raw[:4]!r})")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type code 0x{code:02x}; expected one of "
                         f"{[hex(c) for c in _IDX_DTYPES]}")
    if ndim < 1 or len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header (ndim={ndim}, {len(raw)} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4: 4 + 4 * ndim])
    fmt, tdtype = _IDX_DTYPES[code]
    itemsize = torch.empty((), dtype=tdtype).element_size()
    expected = 4 + 4 * ndim + math.prod(shape) * itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: IDX file of shape {shape} must have {expected} bytes, got {len(raw)}")
    import numpy as np

    np_dtype = np.dtype(fmt if len(fmt) > 1 else fmt)
    arr = np.frombuffer(raw, dtype=np_dtype, offset=4 + 4 * ndim).reshape(shape)
    return torch.from_numpy(arr.astype(np_dtype.newbyteorder("="), copy=True))


def _find(folder: str, stem: str) -> str:
    for name in (stem, stem + ".gz"):
        p = os.path.join(folder, name)
        if os.path.exists(p):
            return p
    for name in (stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = os.path.join(folder, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"{folder}: no file {stem}[.gz] (MNIST-format IDX files expected)")


def load_idx_data(
    folder: str, downsample: Optional[int] = None, dtype=torch.float32, name: Optional[str] = None
) -> ClassificationData:
    """MNIST / Fashion-MNIST / Kuzushiji-MNIST from a folder holding
    ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``). Pixels ``[0, 255]`` map to
    ``[-1, 1]``; ``downsample`` average-pools (28 -> 14 or 7). The official train/test split
    is kept."""
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ip, lp = _find(folder, f"{prefix}-images-idx3-ubyte"), _find(folder, f"{prefix}-labels-idx1-ubyte")
        images, labels = read_idx(ip), read_idx(lp)
        if images.dim() != 3:
            raise ValueError(f"{ip}: expected images (N, H, W), got shape {tuple(images.shape)}")
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"{lp}: expected {images.shape[0]} labels, got shape {tuple(labels.shape)}")
        img = downsample_images(images.to(torch.float64), downsample)
        parts[split] = ((img.flatten(1) * (2.0 / 255.0) - 1.0).to(dtype), labels.long())
    side = int(math.isqrt(parts["train"][0].shape[1]))
    nc = int(max(parts["train"][1].max(), parts["test"][1].max())) + 1
    return ClassificationData(
        name or f"idx{side}x{side}", *parts["train"], *parts["test"], nc,
        {"source": os.path.abspath(folder), "image_size": side, "input_range": [-1.0, 1.0]},
    )


def image_coordinates(h: int, w: int, dtype=torch.float32) -> torch.Tensor:
    """Pixel-centre coordinates of an ``h x w`` image in ``[-1, 1]^2``, row-major.

    Shapes: returns ``(h*w, 2)`` with columns ``(row, col)``.
    """
    r = (torch.arange(h, dtype=torch.float64) + 0.5) / h * 2 - 1
    c = (torch.arange(w, dtype=torch.float64) + 0.5) / w * 2 - 1
    return torch.cartesian_prod(r, c).to(dtype)


def image_inr_data(images: torch.Tensor, labels: Optional[torch.Tensor] = None, vmax: float = 1.0,
                   name: str = "image_inr", dtype=torch.float32) -> FunctionData:
    """INR targets from any image set: item ``i`` maps coordinate -> intensity ``v / vmax``.

    Shapes: ``images: (N, H, W)`` (grey) or ``(N, C, H, W)``; targets ``(N, H*W, C)``.
    """
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4:
        raise ValueError(f"images must be (N, H, W) or (N, C, H, W), got {tuple(images.shape)}")
    N, C, H, W = images.shape
    targets = (images.to(torch.float64) / vmax).permute(0, 2, 3, 1).reshape(N, H * W, C).to(dtype)
    lab = {} if labels is None else {"class": torch.as_tensor(labels, dtype=torch.long)}
    return FunctionData(name, image_coordinates(H, W, dtype), targets, lab, {"image_size": [H, W], "vmax": vmax})


def digits_inr_data(dtype=torch.float32) -> FunctionData:
    """The built-in INR dataset: the 1797 8x8 digits as coordinate -> intensity (``v/16``),
    with their class labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return image_inr_data(torch.as_tensor(d.images), torch.as_tensor(d.target), vmax=16.0,
                          name="digits_inr", dtype=dtype)


class SineData(FunctionData):
    r"""1-D sine INRs :math:`y = a \sin(b x)` on ``points`` equispaced ``x`` in ``[-1, 1]``,
    with ``a ~ U(a_range)``, ``b ~ U(b_range)`` drawn per item from seed ``(seed, item)``.

    Shapes: ``coords (points, 1)``, ``targets (items, points, 1)``, labels ``a``, ``b``
    ``(items,)``.
    """

    def __init__(self, items: int = 1000, points: int = 64, a_range: Sequence[float] = (0.5, 1.0),
                 b_range: Sequence[float] = (1.0, 6.0), seed: int = 0, dtype=torch.float32):
        for nm, r in (("a_range", a_range), ("b_range", b_range)):
            if len(r) != 2 or not r[0] <= r[1]:
                raise ValueError(f"{nm} must be (low, high) with low <= high, got {r}")
        x = torch.linspace(-1, 1, points, dtype=torch.float64)
        ab = torch.empty(items, 2, dtype=torch.float64)
        for i in range(items):
            g = torch.Generator().manual_seed(seed_for(seed, i))
            ab[i] = torch.rand(2, generator=g, dtype=torch.float64)
        a = a_range[0] + (a_range[1] - a_range[0]) * ab[:, 0]
        b = b_range[0] + (b_range[1] - b_range[0]) * ab[:, 1]
        y = a[:, None] * torch.sin(b[:, None] * x[None, :])
        super().__init__("sine", x[:, None].to(dtype), y[..., None].to(dtype),
                         {"a": a.to(dtype), "b": b.to(dtype)},
                         {"a_range": list(a_range), "b_range": list(b_range), "points": points})
