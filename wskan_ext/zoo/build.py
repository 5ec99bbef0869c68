"""Build a zoo: draw per-run hyperparameters, train shards with the batched trainer,
label every checkpoint, write shards; resumable and shardable across ``torchrun`` ranks.

Determinism: run ``r``'s hyperparameters and init seed come from ``seed_for(seed, 1, r)``,
shard ``s``'s minibatch sampler from ``seed_for(seed, 3, s)``; a shard is always the same
runs trained as one batch. So a shard's bytes do not depend on which process builds it, on
how many processes there are, or on whether the build was interrupted (same hardware and
thread count assumed: CPU reductions may round differently with other thread counts).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import os
from typing import List, Optional, Sequence

import torch
from tqdm.auto import tqdm

from .. import __version__
from .datasets import (SineData, cifar10_inr_data, digits_inr_data, idx_inr_data, load_cifar10_data,
                       load_digits_data, load_idx_data, load_mnist5k_data, mnist5k_inr_data, seed_for)
from .labels import evaluate, pruning_masks
from .files import FORMAT, FORMAT_VERSION, ZooFormatError, ZooLockedError, atomic_write, resolve_dir, zoo_lock
from .shards import clean_float, config_fingerprint, dumps, shard_done, verify_fingerprint, write_shard
from .store import iter_rows
from .trainer import RunHParams, diverged_at, init_models, train_batched
from ..kan.weights import FIELDS
from .config import PRESETS, BuildConfig

__all__ = ["BuildConfig", "PRESETS", "build_zoo", "load_dataset", "run_hparams", "split_of", "DivergedBuildError",
           "divergence_summary", "check_divergence"]


def load_dataset(cfg: BuildConfig):
    """The dataset ``cfg`` describes (see ``wskan_ext.zoo.config.DATASETS``)."""
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
    cols = {k: [] for k in ("lr", "weight_decay", "init_scale", "subset_fraction", "label_noise", "lamb", "seed")}
    for r in runs:
        g = torch.Generator().manual_seed(seed_for(cfg.seed, 1, r))
        # lamb is drawn last, so that the other draws stay those of zoos built before it existed
        for name, log in (("lr", True), ("weight_decay", True), ("init_scale", False),
                          ("subset_fraction", False), ("label_noise", False), ("lamb", True)):
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
    div = diverged_at(res, cfg.diverge_factor, cfg.diverge_weight_bound)
    loss_key = "train_loss" if task == "classification" else "mse"
    if cfg.diverge_factor is not None:  # the same test on the data the labels are measured on
        w0 = init_models(width, cfg.grid, cfg.k, hp, dtype=x.dtype, device=x.device).weights(detach=True)
        loss0 = evaluate(w0, x, y, task=task)["loss" if task == "classification" else "mse"].to(torch.float64)
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
        if cfg.diverge_factor is not None:  # NaN counts as above the bound
            div[:, c] |= ~(lab[loss_key].to(torch.float64) <= cfg.diverge_factor * loss0).cpu()
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
    if any(cfg.lamb):  # recorded only where used: rows of zoos without it stay as they were
        hcols["lamb"] = hp.lamb
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


class DivergedBuildError(ValueError):
    """Too many runs of a build diverged (see ``check_divergence``); the shards are kept."""


def divergence_summary(rows: Sequence[dict]) -> dict:
    """``{"runs", "runs_diverged", "members", "members_diverged"}`` of metadata ``rows``
    (a run diverged when any of its members has status ``"diverged"``)."""
    runs: dict = {}
    for r in rows:
        runs[r["run"]] = runs.get(r["run"], False) or r["status"] != "ok"
    return {"runs": len(runs), "runs_diverged": sum(runs.values()), "members": len(rows),
            "members_diverged": sum(r["status"] != "ok" for r in rows)}


def check_divergence(summary: dict, max_fraction: float, allow: bool = False, out: str = "") -> None:
    """Raise ``DivergedBuildError`` when every run, or more than ``max_fraction`` of the
    runs, diverged (``summary`` from ``divergence_summary``), unless ``allow``."""
    n, d = summary["runs"], summary["runs_diverged"]
    if allow or d == 0 or (d < n and d <= max_fraction * n):
        return
    why = "every run diverged" if d == n else f"more than max_diverged_fraction={max_fraction:g} of the runs diverged"
    raise DivergedBuildError(
        f"{d} of {n} runs diverged ({summary['members_diverged']} of {summary['members']} members): {why} "
        "(non-finite loss, loss above diverge_factor x the initial loss, or a weight above diverge_weight_bound); "
        "lower the learning rate range, or re-run with --allow-diverged (build_zoo(..., allow_diverged=True)) "
        f"to finish the zoo anyway{' in ' + out if out else ''} (its shards are kept)"
    )


_BROADCAST_ERRORS = {c.__name__: c for c in (ZooLockedError, ZooFormatError, DivergedBuildError, ValueError)}


def _agree(dist, rank: int, err: Optional[BaseException], src: Optional[int] = 0) -> None:
    """Make a failure every rank's, so that no rank waits at a barrier for one that has
    failed: ``src=0`` broadcasts rank 0's outcome, ``src=None`` gathers every rank's. A
    rank re-raises its own error; the others raise the same type with the same message."""
    if dist is not None:
        mine = None if err is None else (type(err).__name__, str(err))
        if src is None:
            box = [None] * dist.get_world_size()
            dist.all_gather_object(box, mine)
        else:
            box = [mine]
            dist.broadcast_object_list(box, src=src)
        first = next(((r if src is None else src, b) for r, b in enumerate(box) if b is not None), None)
        if err is None and first is not None:
            raise _BROADCAST_ERRORS.get(first[1][0], ValueError)(f"rank {first[0]} failed: {first[1][1]}")
    if err is not None:
        raise err


def _prepare_dir(out: str, manifest: dict, config: dict) -> None:
    """Rank 0, holding the lock: refuse a newer format or anything built from another
    config (manifest, shards), then write the manifest if there is none."""
    mpath = os.path.join(out, "manifest.json")
    old = None
    if os.path.exists(mpath):
        with open(mpath, "rb") as f:
            old = json.loads(f.read())
        v = old.get("format_version", 0) if isinstance(old, dict) else 0
        if isinstance(v, int) and v > FORMAT_VERSION:
            raise ZooFormatError(f"{mpath}: zoo format version {v} is newer than this library supports "
                                 f"({FORMAT_VERSION})")
    verify_fingerprint(out, config)
    if old is None:
        atomic_write(mpath, dumps(manifest), root=out)
        return
    keys = sorted(k for k in set(old) | set(manifest) if k != "library_version" and old.get(k) != manifest.get(k))
    if keys:
        raise ValueError(f"{out}: holds a zoo built with a different config (manifest entries {keys} differ); "
                         "use a new directory")


def _log_build(out: str, entry: dict) -> None:
    """Append one session's record (wall seconds, shards built, processes, threads) to
    ``DIR/build_log.jsonl``: the zoo's build time, summed over resumed sessions."""
    path = os.path.join(out, "build_log.jsonl")
    old = open(path, "rb").read() if os.path.exists(path) else b""
    atomic_write(path, old + json.dumps(entry, sort_keys=True).encode() + b"\n", root=out)


def build_zoo(cfg: BuildConfig, out: str, progress: bool = True, step_progress: bool = False,
              allow_diverged: bool = False) -> str:
    """Build (or resume) the zoo described by ``cfg`` in directory ``out``; returns the
    directory (resolved with ``realpath`` once, and used for every write).

    **One writer, one identity.** Rank 0 holds the zoo's lock
    (``wskan_ext.zoo.store.zoo_lock``) from before the manifest is written until
    ``metadata.jsonl`` is: a second build into the same directory fails at once with
    ``ZooLockedError``. Before writing anything it checks that
    the manifest and every shard already there were built from ``cfg``
    (``verify_fingerprint``; :class:`ZooFormatError` naming the
    file and the differing entries otherwise); the manifest and every shard carry the
    config fingerprint. Re-running after an interruption skips finished shards.

    **Divergence.** When every run, or more than ``cfg.max_diverged_fraction`` of them,
    diverged (see :class:`BuildConfig`), ``DivergedBuildError`` (a ``ValueError``) is
    raised before ``metadata.jsonl`` is written, unless ``allow_diverged``.

    **Ranks.** Under ``torchrun`` (``WORLD_SIZE > 1``) a process group is created if none
    exists (nccl with CUDA, one GPU per local rank; gloo otherwise); rank ``r`` builds
    shards ``r, r + N, ...``; rank 0 writes the manifest first and the metadata table last.
    A failure on any rank (lock, config mismatch, a shard, divergence) reaches every rank,
    so all of them raise instead of waiting.
    """
    out = resolve_dir(out)
    config = cfg.to_dict()
    dist, rank, world, created = _dist()
    t_start, started = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        with contextlib.ExitStack() as held:
            err = None
            if rank == 0:
                try:
                    held.enter_context(zoo_lock(out))
                except Exception as e:  # noqa: BLE001 - shared with every rank, then re-raised
                    err = e
            _agree(dist, rank, err)
            try:
                data = load_dataset(cfg)
                n_out = data.num_classes if data.task == "classification" else data.num_outputs
                depth = len(cfg.hidden) + 1
                manifest = {
                    "format": FORMAT, "format_version": FORMAT_VERSION, "library_version": __version__,
                    "config": config, "config_fingerprint": config_fingerprint(config),
                    "num_shards": cfg.num_shards, "checkpoints_per_run": len(cfg.checkpoints),
                    "num_members": cfg.size * len(cfg.checkpoints),
                    "architecture": {"widths": [data.num_inputs, *cfg.hidden, n_out], "grid_sizes": [cfg.grid] * depth,
                                     "k": [cfg.k] * depth, "base_fun": ["silu"] * depth},
                    "task": data.task,
                }
                if rank == 0:
                    _prepare_dir(out, manifest, config)
            except Exception as e:  # noqa: BLE001
                err = e
            _agree(dist, rank, err, src=None)
            try:
                mine = [s for s in range(cfg.num_shards) if s % world == rank]
                todo = [s for s in mine if not shard_done(out, s, config=config)]
                bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"zoo shards (rank {rank})",
                           unit="shard", disable=not progress)
                for s in todo:
                    tensors, rows = build_shard(cfg, data, s, progress=step_progress)
                    write_shard(out, s, tensors, rows, config=config)
                    bar.update(1)
                bar.close()
            except Exception as e:  # noqa: BLE001
                err = e
            _agree(dist, rank, err, src=None)
            if rank == 0:
                try:
                    rows = sorted(iter_rows(out, cfg.num_shards), key=lambda r: r["id"])
                    check_divergence(divergence_summary(rows), cfg.max_diverged_fraction, allow_diverged, out)
                    body = b"".join(json.dumps(r, sort_keys=True, allow_nan=False).encode() + b"\n" for r in rows)
                    atomic_write(os.path.join(out, "metadata.jsonl"), body, root=out)
                    _log_build(out, {"started": started, "seconds": time.perf_counter() - t_start,
                                     "shards_built": len(todo) * world, "num_shards": cfg.num_shards,
                                     "world_size": world, "threads_per_process": torch.get_num_threads(),
                                     "library_version": __version__})
                except Exception as e:  # noqa: BLE001
                    err = e
            _agree(dist, rank, err)
    finally:
        if created:
            dist.destroy_process_group()
    return out
