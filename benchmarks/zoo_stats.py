"""Describe built zoos: architecture, members per split and status, label quantiles and the
build wall time each build recorded (``DIR/build_log.jsonl``), as a text table for the docs.

    python benchmarks/zoo_stats.py [--root benchmarks/out/zoos] [--md docs/zoo_stats.inc] [--update]

``--update`` rewrites only the entries of the zoos found under ``--root`` and keeps the
other entries of ``--md`` as they are (zoos built on another day or machine); the command
line of each entry's last writer is kept next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from wskan_ext.zoo import Zoo


def build_time(root: str) -> str:
    path = os.path.join(root, "build_log.jsonl")
    if not os.path.exists(path):
        return "not recorded"
    rows = [json.loads(ln) for ln in open(path) if ln.strip()]
    total = sum(r["seconds"] for r in rows)
    procs = sorted({r.get("world_size", 1) for r in rows})
    text = f"{total / 60:.1f} min wall over {len(rows)} session(s), {'/'.join(map(str, procs))} process(es)"
    built, num = sum(r.get("shards_built", 0) for r in rows), rows[-1].get("num_shards")
    if num is not None and built < num:  # a session logs only when it finishes
        text += (f"; that time covers {built} of {num} shards (the others were built by a session that was "
                 f"interrupted, which logs nothing)")
    return text


def describe(name: str, root: str) -> str:
    zoo = Zoo(root)
    arch = zoo.architecture
    counts = {s: len(zoo.ids(s)) for s in Zoo.SPLITS}
    diverged = sum(r["status"] != "ok" for r in zoo.metadata)
    key = "test_acc" if zoo.manifest.get("task") == "classification" else "psnr"
    vals = np.asarray([r["labels"][key] for r in zoo.metadata if r["status"] == "ok" and r["labels"].get(key)
                       is not None], dtype=float)
    q = np.quantile(vals, [0, 0.05, 0.5, 0.95, 1]) if len(vals) else [float("nan")] * 5
    runs = len({r["run"] for r in zoo.metadata})
    return (f"{name}: {len(zoo)} members from {runs} runs, widths {arch['widths']}, G={arch['grid_sizes'][0]}, "
            f"k={arch['k'][0]}, dataset {zoo.manifest['config']['dataset']}\n"
            f"  splits (ok members) {counts}, diverged {diverged}\n"
            f"  {key}: min {q[0]:.3f}, p5 {q[1]:.3f}, median {q[2]:.3f}, p95 {q[3]:.3f}, max {q[4]:.3f}\n"
            f"  build: {build_time(root)}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=os.path.join(os.path.dirname(__file__), "out", "zoos"))
    ap.add_argument("--md", default=os.path.join(os.path.dirname(__file__), "..", "docs", "zoo_stats.inc"))
    ap.add_argument("--update", action="store_true",
                    help="keep --md's entries of zoos not under --root (rewrite only the zoos found)")
    a = ap.parse_args(argv)
    names = sorted(d for d in os.listdir(a.root) if os.path.exists(os.path.join(a.root, d, "metadata.jsonl")))
    cmd = ("python benchmarks/zoo_stats.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    entries = {n: describe(n, os.path.join(a.root, n)) for n in names}
    header = f"command: {cmd}"
    if a.update and os.path.exists(a.md):
        blocks = open(a.md).read().strip().split("\n\n")
        old_header, old = (blocks[0], blocks[1:]) if blocks[0].startswith("command:") else ("", blocks)
        kept = {b.split(":", 1)[0]: b for b in old if b.split(":", 1)[0] not in entries}
        if kept:
            header = "\n".join(filter(None, [old_header, f"updated: {', '.join(names)} by: {cmd}"]))
        entries = {**kept, **entries}
    text = header + "\n\n" + "\n\n".join(entries[n] for n in sorted(entries))
    print(text)
    with open(a.md, "w") as f:
        f.write(text + "\n")
    print(f"wrote {a.md}")


if __name__ == "__main__":
    main()
