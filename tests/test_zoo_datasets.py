import gzip
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wskan_ext.equivariance_tests.profiles import examples
from wskan_ext.zoo.datasets import (SineData, digits_inr_data, downsample_images, image_coordinates,
                                    image_inr_data, load_digits_data, load_idx_data, read_idx, seed_for)


def test_digits_range_split_and_determinism():
    d = load_digits_data(test_fraction=0.2, seed=3)
    assert d.x_train.shape == (1797 - 359, 64) and d.x_test.shape == (359, 64)
    assert d.x_train.min() >= -1 and d.x_train.max() <= 1
    assert d.x_train.min() == -1 and d.x_train.max() == 1
    again = load_digits_data(test_fraction=0.2, seed=3)
    assert torch.equal(d.x_train, again.x_train) and torch.equal(d.y_test, again.y_test)
    other = load_digits_data(test_fraction=0.2, seed=4)
    assert not torch.equal(d.y_test, other.y_test)  # negative twin: the seed matters
    small = load_digits_data(downsample=4)
    assert small.num_inputs == 16 and small.x_train.min() >= -1 and small.x_train.max() <= 1


@settings(max_examples=examples(8))
@given(st.sampled_from([(8, 4), (8, 2), (28, 7), (28, 14), (6, 3)]), st.integers(0, 1000))
def test_downsample_is_block_mean(sizes, seed):
    H, s = sizes
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(3, H, H, generator=g, dtype=torch.float64)
    out = downsample_images(img, s)
    f = H // s
    ref = img.reshape(3, s, f, s, f).mean((2, 4))
    assert torch.allclose(out, ref, atol=1e-12)
    # negative twin: a strided subsample is not the block mean
    assert not torch.allclose(img[:, ::f, ::f], ref, atol=1e-3)


def test_downsample_rejects_non_divisor():
    with pytest.raises(ValueError, match="not a square divisible by 3"):
        downsample_images(torch.zeros(1, 8, 8), 3)


def _write_idx(path, arr: torch.Tensor, code=0x08, gz=False):
    header = bytes([0, 0, code, arr.dim()]) + struct.pack(f">{arr.dim()}I", *arr.shape)
    data = header + arr.numpy().astype("uint8").tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)
    return data


@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip_and_loader(tmp_path, gz):
    g = torch.Generator().manual_seed(0)
    ext = ".gz" if gz else ""
    tr = torch.randint(0, 256, (12, 8, 8), generator=g, dtype=torch.uint8)
    te = torch.randint(0, 256, (5, 8, 8), generator=g, dtype=torch.uint8)
    ltr, lte = torch.arange(12) % 10, torch.arange(5) % 10
    _write_idx(tmp_path / f"train-images-idx3-ubyte{ext}", tr, gz=gz)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{ext}", te, gz=gz)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{ext}", ltr, gz=gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{ext}", lte, gz=gz)
    assert torch.equal(read_idx(str(tmp_path / f"train-images-idx3-ubyte{ext}")), tr)
    d = load_idx_data(str(tmp_path), downsample=4)
    assert d.x_train.shape == (12, 16) and d.x_test.shape == (5, 16)
    ref = tr.double().reshape(12, 4, 2, 4, 2).mean((2, 4)).flatten(1) * 2 / 255 - 1
    assert torch.allclose(d.x_train.double(), ref, atol=1e-6)
    assert torch.equal(d.y_train, ltr) and d.num_classes == 10


def test_idx_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="bad-idx.*magic"):
        read_idx(str(bad))
    trunc = tmp_path / "trunc-idx"
    data = _write_idx(trunc, torch.zeros(4, 3, 3, dtype=torch.uint8))
    trunc.write_bytes(data[:-5])
    with pytest.raises(ValueError, match="trunc-idx.*must have"):
        read_idx(str(trunc))
    code = tmp_path / "code-idx"
    code.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="code-idx.*type code"):
        read_idx(str(code))
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_idx_data(str(tmp_path))


def test_image_inr_targets():
    coords = image_coordinates(4, 4, torch.float64)
    assert coords.shape == (16, 2) and coords.abs().max() < 1 and torch.allclose(coords[0], torch.tensor([-0.75, -0.75], dtype=torch.float64))
    imgs = torch.arange(2 * 4 * 4, dtype=torch.float64).reshape(2, 4, 4)
    d = image_inr_data(imgs, torch.tensor([3, 7]), vmax=31.0)
    assert d.targets.shape == (2, 16, 1)
    assert torch.allclose(d.targets[1, 5, 0].double(), imgs[1, 1, 1] / 31, atol=1e-6)
    t, lab = d.items(torch.tensor([3]))  # ids wrap modulo the number of items
    assert lab["class"].item() == 7 and torch.equal(t[0], d.targets[1])
    dig = digits_inr_data()
    assert len(dig) == 1797 and dig.targets.shape == (1797, 64, 1)
    assert 0 <= dig.targets.min() and dig.targets.max() <= 1 and set(dig.labels["class"].tolist()) == set(range(10))


def test_sine_targets_and_ranges():
    s = SineData(items=20, points=32, a_range=(0.2, 0.4), b_range=(2.0, 3.0), seed=5)
    a, b = s.labels["a"].double(), s.labels["b"].double()
    assert ((a >= 0.2) & (a <= 0.4)).all() and ((b >= 2) & (b <= 3)).all()
    ref = a[:, None] * torch.sin(b[:, None] * s.coords[:, 0].double()[None])
    assert torch.allclose(s.targets[..., 0].double(), ref, atol=1e-6)
    assert not torch.allclose(s.targets[..., 0].double(), ref.flip(0), atol=1e-3)
    # item i depends only on (seed, i): a longer dataset extends a shorter one
    assert torch.equal(SineData(items=30, points=32, a_range=(0.2, 0.4), b_range=(2.0, 3.0), seed=5).targets[:20], s.targets)
    with pytest.raises(ValueError, match="a_range"):
        SineData(a_range=(1.0, 0.0))


def test_seed_for_is_deterministic_and_spread():
    assert seed_for(1, 2) == seed_for(1, 2) and seed_for(1, 2) != seed_for(2, 1)
    assert len({seed_for(0, i) for i in range(1000)}) == 1000
