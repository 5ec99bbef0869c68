"""Benchmark: WSKAN forward+backward time against the number of edges (log-log slope).

Two series of 4 sizes each: (a) more KANs of one architecture ``[4, 8, 8, 2]``;
(b) wider KANs ``[4, h, h, 2]`` at a fixed number of models (edges grow ~h^2, nodes ~h).
A slope near 1 means cost linear in edges. Prints a table, writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import sys
import time

import torch

from wskan_ext import WSKAN, kan_to_graph
from wskan_ext.simulate import random_kans


def slope(xs, ys):
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def time_fb(model, g, reps):
    times = []
    for _ in range(reps + 1):
        model.zero_grad()
        t0 = time.perf_counter()
        out = model(g)
        (out.graph.sum() + out.edge.sum()).backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])  # first call is warm-up


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--scale", type=int, default=1, help="multiply the number of models")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out", "wskan_scaling.json"))
    p.add_argument("--md", default=None, help="also write the printed table here (docs include)")
    args = p.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    series = {
        "num_models": [([4, 8, 8, 2], m * args.scale) for m in (16, 64, 256, 1024)],
        "width": [([4, h, h, 2], 32 * args.scale) for h in (4, 8, 16, 32)],
    }
    rows, result = [], {}
    model = None
    for name, configs in series.items():
        es, ts = [], []
        for widths, B in configs:
            g = kan_to_graph(random_kans(widths, B, generator=gen))
            if model is None:
                with torch.random.fork_rng():
                    torch.manual_seed(0)
                    model = WSKAN(g.x.shape[1], g.edge_attr.shape[1], args.hidden, args.layers,
                                  graph_out_channels=1, edge_out_channels=1)
            t = time_fb(model, g, args.reps)
            E = g.edge_index.shape[1]
            es.append(E)
            ts.append(t)
            rows.append(dict(series=name, widths=widths, num_models=B, nodes=g.num_nodes, edges=E, seconds=t,
                             us_per_edge=1e6 * t / E))
        result[name] = slope(es, ts)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print("command: python benchmarks/wskan_scaling.py " + " ".join(sys.argv[1:] if argv is None else argv))
        print(f"WSKAN hidden {args.hidden}, {args.layers} layers, forward + backward, median of {args.reps}, "
              f"{args.threads} thread(s), torch {torch.__version__}, load average at start {load}")
        print(f"{'series':>10} {'widths':>14} {'models':>6} {'nodes':>7} {'edges':>8} {'fwd+bwd s':>10} {'us/edge':>8}")
        for r in rows:
            print(f"{r['series']:>10} {str(r['widths']):>14} {r['num_models']:>6} {r['nodes']:>7} {r['edges']:>8} "
                  f"{r['seconds']:>10.4f} {r['us_per_edge']:>8.3f}")
        for name, s in result.items():
            print(f"log-log slope (time vs edges), series {name}: {s:.3f}")
    print(buf.getvalue(), end="")
    if args.md:
        with open(args.md, "w") as fh:
            fh.write(buf.getvalue())
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(dict(hidden=args.hidden, layers=args.layers, threads=args.threads, rows=rows, slopes=result), fh, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
