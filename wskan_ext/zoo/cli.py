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
               "  wskan zoo build --config zoo.json --out my_zoo   # keys: see BuildConfig\n"
               "  torchrun --nproc_per_node=2 -m wskan_ext.cli zoo build --preset demo --out demo_zoo",
    )
    b.add_argument("--out", required=True, help="zoo directory (created; resumed if it exists)")
    b.add_argument("--preset", help="named configuration: demo, tiny, benchmark")
    b.add_argument("--config", help="JSON file with BuildConfig fields (applied after --preset)")
    b.add_argument("--dataset", help="digits | idx | digits_inr | sine")
    b.add_argument("--data-dir", help="folder of MNIST-format IDX files (dataset idx)")
    b.add_argument("--size", type=int, help="number of training runs (members = runs x checkpoints)")
    b.add_argument("--hidden", type=int, nargs="+", help="hidden layer widths, e.g. --hidden 8")
    b.add_argument("--steps", type=int, help="training steps per run")
    b.add_argument("--downsample", type=int, help="average-pool images to this side length")
    b.add_argument("--seed", type=int, help="zoo seed")
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
    i.set_defaults(func=_info)

    e = zsub.add_parser(
        "export", help="export one member as a native KAN or a pykan model", formatter_class=_RAW,
        description="Export member ID. native: a safetensors file (load with "
                    "wskan_ext.zoo.load_kan_weights). pykan: pykan checkpoint files OUT_config.yml / "
                    "OUT_state (load with kan.KAN.loadckpt(OUT)).",
        epilog="examples:\n  wskan zoo export demo_zoo 17 --to native --out m17.safetensors\n"
               "  wskan zoo export demo_zoo 17 --to pykan --out m17",
    )
    e.add_argument("dir")
    e.add_argument("id", type=int)
    e.add_argument("--to", choices=["native", "pykan"], default="native")
    e.add_argument("--out", required=True)
    e.set_defaults(func=_export)


def _build(a) -> int:
    from .build import PRESETS, BuildConfig, build_zoo

    d = {}
    if a.preset:
        if a.preset not in PRESETS:
            raise SystemExit(f"unknown preset {a.preset!r}; choose from {sorted(PRESETS)}")
        d.update(PRESETS[a.preset])
    if a.config:
        with open(a.config) as f:
            d.update(json.load(f))
    for key in ("dataset", "data_dir", "size", "hidden", "steps", "downsample", "seed"):
        v = getattr(a, key)
        if v is not None:
            d[key] = v
    try:
        cfg = BuildConfig.from_dict(d)
    except (ValueError, TypeError) as err:
        raise SystemExit(f"wskan zoo build: {err}")
    build_zoo(cfg, a.out, progress=not a.quiet)
    if not a.quiet:
        print(f"zoo written to {a.out}: {cfg.size} runs x {len(cfg.checkpoints)} checkpoints", file=sys.stderr)
    return 0


def _info(a) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        print(f"  {key}: min {min(vals):.4f}  median {sorted(vals)[len(vals) // 2]:.4f}  max {max(vals):.4f}")
    print(f"  histogram written to {path}")
    return 0


def _export(a) -> int:
    from .store import Zoo, save_kan_weights

    zoo = Zoo(a.dir)
    if a.to == "native":
        save_kan_weights(a.out, zoo.member(a.id))
        print(f"member {a.id} written to {a.out}")
    else:
        model = zoo.to_pykan(a.id)
        model.saveckpt(a.out)
        print(f"member {a.id} written to {a.out}_config.yml / {a.out}_state")
    return 0
