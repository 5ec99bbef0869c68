"""``wskan zoo build | info | export``."""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

__all__ = ["add_parser"]

_RAW = argparse.RawDescriptionHelpFormatter


def add_parser(subparsers) -> None:
    """Register the ``zoo`` subcommand group on an ``argparse`` subparsers object."""
    zoo = subparsers.add_parser(
        "zoo", help="build, inspect and export KAN zoos", formatter_class=_RAW,
        description="Build, inspect and export zoos of trained KANs.",
        epilog="examples:\n  wskan zoo build --preset demo --out demo_zoo\n  wskan zoo info demo_zoo\n"
               "  wskan zoo export demo_zoo 17 --to pykan --out model17",
    )
    zsub = zoo.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    zoo.set_defaults(func=lambda a: (zoo.print_help(), 2)[1])

    b = zsub.add_parser(
        "build", help="train a zoo (resumable; shards across torchrun ranks)", formatter_class=_RAW,
        description="Train a zoo of KANs and store it in a directory. Re-running the same command "
                    "resumes an interrupted build. Under `torchrun --nproc_per_node=N` the shards are "
                    "split across ranks.",
        epilog="examples:\n  wskan zoo build --dataset digits --size 64 --out my_zoo\n"
               "  wskan zoo build --preset demo --out demo_zoo\n"
               "  wskan zoo build --preset mnist5k --lamb 5e-4 5e-3 --out sparse_zoo   # pykan's sparsity training\n"
               "  wskan zoo build --config zoo.json --out my_zoo   # keys: see BuildConfig\n"
               "  wskan zoo build --config high_lr.json --allow-diverged --out risky_zoo   # keep diverged runs\n"
               "  torchrun --nproc_per_node=2 -m wskan_ext.cli zoo build --preset demo --out demo_zoo",
    )
    b.add_argument("--out", required=True, help="zoo directory (created; resumed if it exists)")
    b.add_argument("--preset", help="named configuration: " + ", ".join(_preset_names()))
    b.add_argument("--config", help="JSON file with BuildConfig fields (applied after --preset)")
    b.add_argument("--dataset", help="classifiers: digits | mnist5k | idx | cifar10; INRs: digits_inr | "
                                     "mnist5k_inr | idx_inr | cifar10_inr | sine")
    b.add_argument("--data-dir", help="folder of MNIST-format IDX files (idx, idx_inr; torchvision's "
                                      "<root>/<Name>/raw/ works) or cifar-10-batches-bin (cifar10, cifar10_inr)")
    b.add_argument("--data-name", help="which IDX dataset under a torchvision root (MNIST, FashionMNIST, KMNIST)")
    b.add_argument("--limit", type=int, help="INR datasets: use the first N images (default: --size)")
    b.add_argument("--rgb", action="store_true", help="CIFAR-10: fit RGB (3 outputs) instead of grey")
    b.add_argument("--grid", type=int, help="grid intervals G of every layer")
    b.add_argument("-k", "--k", type=int, help="spline order k")
    b.add_argument("--size", type=int, help="number of training runs (members = runs x checkpoints)")
    b.add_argument("--hidden", type=int, nargs="+", help="hidden layer widths, e.g. --hidden 8")
    b.add_argument("--steps", type=int, help="training steps per run")
    b.add_argument("--downsample", type=int, help="average-pool images to this side length")
    b.add_argument("--seed", type=int, help="zoo seed")
    b.add_argument("--lamb", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="range of pykan's sparsity penalty weight (fit(lamb=...)), drawn per run "
                        "log-uniformly (uniformly if LOW is 0); default 0 0 (off)")
    b.add_argument("--threads", type=int, default=None,
                   help="torch threads per process (default 1 under torchrun, else all cores)")
    b.add_argument("--allow-diverged", action="store_true",
                   help="finish the zoo even when every run, or more than max_diverged_fraction of them, "
                        "diverged (they are kept with status 'diverged')")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=_build)

    i = zsub.add_parser(
        "info", help="counts and an accuracy histogram", formatter_class=_RAW,
        description="Print member counts per split and status, and write a histogram figure of "
                    "test accuracy (or PSNR for INR zoos).",
        epilog="example:\n  wskan zoo info demo_zoo --figure demo_zoo/accuracy.png",
    )
    i.add_argument("dir")
    i.add_argument("--figure", help="figure path (default DIR/info.png)")
    i.add_argument("--psnr-threshold", type=float, default=25.0,
                   help="INR zoos: flag members whose PSNR (dB) is below this")
    i.set_defaults(func=_info)

    e = zsub.add_parser(
        "export", help="export one member as a native KAN or a pykan model", formatter_class=_RAW,
        description="Export member ID. native: a safetensors file (load with "
                    "wskan_ext.zoo.load_kan_weights). pykan: pykan checkpoint files OUT_config.yml, "
                    "OUT_state and OUT_cache_data (load with kan.KAN.loadckpt(OUT); needs pykan).",
        epilog="examples:\n  wskan zoo export demo_zoo 17 --to native --out m17.safetensors\n"
               "  wskan zoo export demo_zoo 17 --to pykan --out m17",
    )
    e.add_argument("dir")
    e.add_argument("id", type=int)
    e.add_argument("--to", choices=["native", "pykan"], default="native")
    e.add_argument("--out", required=True)
    e.set_defaults(func=_export)


def _preset_names():
    from .build import PRESETS

    return sorted(PRESETS)


def default_checkpoints(steps: int):
    """Checkpoints when only ``--steps`` is given: ``steps/8, steps/4, steps/2, steps``."""
    steps = int(steps)
    return sorted({max(1, steps // 8), max(1, steps // 4), max(1, steps // 2), steps})


def set_threads(threads) -> int:
    """Set torch's intra-op threads: ``threads`` if given (must be >= 1), else 1 under
    ``torchrun`` (one per rank, so ranks do not oversubscribe the cores) and torch's default
    otherwise. Returns the number set."""
    import torch

    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"--threads must be a positive number of threads, got {threads}")
        n = int(threads)
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        n = 1
    else:
        return torch.get_num_threads()
    torch.set_num_threads(n)
    return n


def _read_config(path: str) -> dict:
    """The JSON object of BuildConfig fields in file ``path`` (``--config``)."""
    where = f"--config {path}"
    try:
        with open(path) as f:
            raw = f.read()
    except OSError as e:
        raise ValueError(f"{where}: cannot read the file ({e.strerror or e})") from None
    try:
        d = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a JSON object of BuildConfig fields, got {type(d).__name__}")
    return d


def _build(a) -> int:
    from .build import PRESETS, BuildConfig, build_zoo, divergence_summary
    from .store import iter_rows

    d = {}
    if a.preset:
        if a.preset not in PRESETS:
            raise SystemExit(f"unknown preset {a.preset!r}; choose from {sorted(PRESETS)}")
        d.update(PRESETS[a.preset])
    if a.config:
        d.update(_read_config(a.config))
    set_threads(a.threads)
    for key in ("dataset", "data_dir", "data_name", "limit", "size", "hidden", "steps", "downsample", "seed",
                "grid", "k", "lamb"):
        v = getattr(a, key)
        if v is not None:
            d[key] = v
    if a.rgb:
        d["grey"] = False
    if "steps" in d and "checkpoints" not in d and not a.preset:
        d["checkpoints"] = default_checkpoints(d["steps"])
    cfg = BuildConfig.from_dict(d)  # every field validated before any work (ValueError: one line, exit 2)
    out = build_zoo(cfg, a.out, progress=not a.quiet, allow_diverged=a.allow_diverged)
    if int(os.environ.get("RANK", "0")) == 0:
        s = divergence_summary(list(iter_rows(out, cfg.num_shards)))
        print(f"zoo build: {s['runs_diverged']} of {s['runs']} runs diverged ({s['members_diverged']} of "
              f"{s['members']} members have status 'diverged')", file=sys.stderr)
        if not a.quiet:
            print(f"zoo written to {out}: {cfg.size} runs x {len(cfg.checkpoints)} checkpoints", file=sys.stderr)
    return 0


def _info(a) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import numpy as np

    from .store import Zoo

    zoo = Zoo(a.dir)
    counts = collections.Counter((r["split"], r["status"]) for r in zoo.metadata)
    print(f"zoo {a.dir}: {len(zoo)} members, architecture {zoo.architecture['widths']}, "
          f"G={zoo.architecture['grid_sizes']}, k={zoo.architecture['k']}")
    for (split, status), n in sorted(counts.items()):
        print(f"  {split:5s} {status:8s} {n}")
    key = "test_acc" if zoo.manifest.get("task") == "classification" else "psnr"
    vals = [r["labels"].get(key) for r in zoo.metadata if r["status"] == "ok"]
    vals = [v for v in vals if v is not None]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(vals, bins=20, color="tab:blue")
    ax.set_xlabel(key)
    ax.set_ylabel("members")
    ax.set_title(f"{os.path.basename(os.path.abspath(a.dir))}: {len(vals)} members")
    fig.tight_layout()
    path = a.figure or os.path.join(a.dir, "info.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    if vals:
        q = np.quantile(np.asarray(vals, dtype=float), [0.0, 0.05, 0.25, 0.5, 0.75, 1.0])
        print(f"  {key}: min {q[0]:.4f}  p5 {q[1]:.4f}  p25 {q[2]:.4f}  median {q[3]:.4f}  p75 {q[4]:.4f}  "
              f"max {q[5]:.4f}")
        if key == "psnr":
            low = [r["id"] for r in zoo.metadata if r["status"] == "ok"
                   and (r["labels"].get("psnr") is None or r["labels"]["psnr"] < a.psnr_threshold)]
            print(f"  {len(low)} members below {a.psnr_threshold:g} dB" + (f": ids {low[:20]}"
                  + (" ..." if len(low) > 20 else "") if low else ""))
    print(f"  histogram written to {path}")
    return 0


def _export(a) -> int:
    from .store import Zoo, save_kan_weights

    zoo = Zoo(a.dir)  # a missing, incomplete or corrupted zoo, or an unknown id: ValueError (one line)
    member = zoo.member(a.id)
    if a.to == "native":
        path = save_kan_weights(a.out, member)
        print(f"member {a.id} written to {path}")
    else:
        from wskan_ext.adapters.pykan import save_pykan

        paths = save_pykan(member, a.out)
        print(f"member {a.id} written to " + ", ".join(paths))
    return 0
