"""Benchmark: the B-spline kernels, forward + backward, in one run.

``spline_sum`` (a KAN layer's splines summed over inputs, what the trainer and
``KANWeights.forward`` evaluate), for a few layer shapes:

* ``native``    -- :func:`~wskan_ext.kan.local_spline.local_spline_sum` with
  ``backend="native"``: the compiled kernel of :mod:`wskan_ext.kan._native` (what
  ``spline_sum`` and the trainer use by default where it applies; only when it is available);
* ``local``     -- the same function with ``backend="torch"``: the eager PyTorch kernel
  (gathers the k+1 active coefficients, scatters gradients with ``index_add_``);
* ``truncated`` -- :func:`~wskan_ext.kan.spline.truncated_power_spline`, as the batched trainer
  calls it every step: ``cT = einsum(coef, A)`` (``A`` precomputed once per fixed grid), the
  clamp at ``t_last``, then the chunked truncated-power GEMMs;
* ``recursion`` -- ``spline_sum(method="recursion")`` (Cox--de Boor basis + einsum);
* ``basis``     -- a candidate measured here, not in the library: the dense ``(B, s, n, G+k)``
  basis scattered from :func:`~wskan_ext.kan.local_spline.local_basis`'s ``k+1`` values,
  then one batched GEMM (forward and coefficient gradient) and, for ``d/dx``, the ``k+1``
  slopes against the gathered ``gy C^T`` (:class:`_BasisGemm`);
* ``compiled`` -- a candidate, only with ``--compile``: the dense basis in closed form (each
  :math:`B_b(x)` is the piece ``floor(u)`` of the cardinal B-spline at ``u = (x - t_b)/h``,
  :func:`closed_form_basis`), then one batched GEMM, the whole function under
  ``torch.compile`` (Inductor fuses the elementwise basis into one loop and differentiates
  it); its first call, which compiles forward and backward, is reported separately.

``spline_eval`` (every edge function separately, ``(B, s, n, m)``): ``local`` vs ``recursion``.

Every timing is the median over ``--repeats`` of one forward and one backward (gradients
for ``x`` and ``coef``), after one warm-up call; wall and process-CPU time are both kept
(CPU time is what a busy shared machine distorts least). Ratios are recursion / kernel
(> 1: faster than Cox--de Boor). Also measured in the same run: a float32 ``(1024 x 1024) @
(1024 x 1024)`` GEMM, the machine's practical peak, next to each kernel's achieved GFLOP/s
under its own FLOP model (see :func:`flop_model`; multiplies and adds count one each), and
the max difference of each kernel from the recursion (the same function is timed).

    python benchmarks/spline_kernel.py [--threads 1] [--repeats 3] [--dtype float32]
        [--device cpu] [--compile] [--out benchmarks/out/spline_kernel.json]

Prints a table and writes JSON. Never asserts on time.
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

from wskan_ext.kan.local_spline import local_basis
from wskan_ext.kan.spline import (spline_eval, spline_sum, truncated_power_coefficients, truncated_power_spline,
                                  uniform_grid)

from wskan_ext.kan import _native
from wskan_ext.kan.local_spline import local_spline_sum

SUM_KERNELS = (["native"] if _native.available() else []) + ["local", "truncated", "basis", "recursion"]

#: ``spline_sum`` workloads: name -> (B models, s samples, n inputs, m outputs, G, k)
SUM_SHAPES = {
    "INR output layer [2,16,1]": (64, 784, 16, 1, 10, 3),
    "INR hidden layer [2,16,16,1]": (64, 784, 16, 16, 10, 3),
    "classifier hidden [64,16,10]": (64, 1437, 16, 10, 5, 3),
    "small": (4, 64, 4, 3, 5, 3),
}
#: ``spline_eval`` workloads (per-edge values), same fields
EVAL_SHAPES = {
    "edge values, mid": (16, 256, 16, 10, 10, 3),
    "edge values, small": (4, 64, 4, 3, 5, 3),
}


def flop_model(kernel: str, B: int, s: int, n: int, m: int, G: int, k: int) -> float:
    """Floating-point operations of one forward + backward, per kernel's own algorithm.

    * ``local`` and ``native``: per (model, sample, input) the k+1 cardinal values (~3 k(k+1)/2 each pass;
      forward, backward values, backward slopes: 3 passes); per edge and sample
      ``2(k+1)`` for the forward contraction, ``2(k+1)`` for ``dx``, ``2(k+1)`` for the
      coefficient scatter;
    * ``truncated``: three GEMMs ``2 B s n K m`` (forward, ``d coef``, ``d x``), ~``2k + 6``
      elementwise per (model, sample, input, knot), and ``cT = coef A`` forward and backward
      (``3 * 2 B n m nb K``);
    * ``recursion``: the Cox--de Boor basis (~6 per basis function per degree, forward, ~2x
      that backward) and three contractions ``2 B s n nb m`` (forward, ``d coef``, ``d basis``).

    ``nb = G + k`` basis functions and ``K = G + 2k + 1`` knots per input.
    """
    K, nb = G + 2 * k + 1, G + k
    rows, edges = B * s * n, B * s * n * m
    if kernel in ("local", "native"):
        return rows * 3 * (3 * k * (k + 1) / 2 + 4) + edges * 6 * (k + 1)
    if kernel == "truncated":
        return 3 * 2 * edges * K + rows * K * (2 * k + 6) + 3 * 2 * B * n * m * nb * K
    if kernel == "recursion":
        basis = sum(K - 1 - d for d in range(1, k + 1)) * 6 * 3 + K
        return rows * basis + 3 * 2 * edges * nb
    if kernel == "basis":  # local values and slopes once, 3 GEMMs, the k+1-term dx contraction
        return rows * (2 * 3 * k * (k + 1) / 2 + 4 + 2 * (k + 1)) + 3 * 2 * edges * nb
    if kernel == "compiled":  # every basis function's piece (~3 k(k+1)/2 + k + 4), its slope, 3 GEMMs
        return 2 * rows * nb * (3 * k * (k + 1) / 2 + k + 4) + 3 * 2 * edges * nb
    raise ValueError(kernel)


class _BasisGemm(torch.autograd.Function):
    """The ``basis`` candidate: ``y = B(x) C`` with the dense basis ``B(x)`` scattered from the
    ``k+1`` local values (uniform grids); ``d coef = B(x)^T gy``; ``d x = sum_r slope_r
    (gy C^T)[first + r]``. Layouts as the truncated kernel (wide dimension in the output)."""

    @staticmethod
    def forward(ctx, x, grid, Ct, k: int):
        B, s, n = x.shape
        nb = grid.shape[-1] - k - 1
        first, vals, slopes = local_basis(x, grid, k)
        idx = (first.unsqueeze(-1) + torch.arange(k + 1, device=x.device)).clamp_(0, nb - 1)
        basis = x.new_zeros(B, s, n, nb).scatter_add_(-1, idx, vals).view(B, s, n * nb)  # out-of-range: value 0
        ctx.save_for_backward(basis, idx, slopes, Ct)
        return torch.bmm(Ct, basis.transpose(1, 2)).transpose(1, 2)  # (B, m, s) -> (B, s, m)

    @staticmethod
    def backward(ctx, gy):
        basis, idx, slopes, Ct = ctx.saved_tensors
        B, s, n = idx.shape[:3]
        G = torch.bmm(gy, Ct).view(B, s, n, -1)
        return (G.gather(-1, idx) * slopes).sum(-1), None, torch.bmm(gy.transpose(1, 2), basis), None


def _cardinal_pieces(f: torch.Tensor, k: int):
    """The ``k+1`` polynomial pieces ``N^k_r(f)`` of the cardinal B-spline (out of place, so
    that Inductor and autograd see plain ops; the recursion of
    :mod:`wskan_ext.kan.local_spline`)."""
    vals = [torch.ones_like(f)]
    for d in range(1, k + 1):
        vals = [(((f + (d - r)) * vals[r - 1]) if r >= 1 else 0) + (((r + 1 - f) * vals[r]) if r < d else 0)
                for r in range(d + 1)]
        vals = [v / d for v in vals]
    return vals


def closed_form_basis(x: torch.Tensor, t0: float, h: float, nb: int, k: int) -> torch.Tensor:
    """Dense B-spline basis on the uniform knots ``t_q = t0 + q h``: ``B_b(x)`` is the piece
    ``p = floor(u)`` of the cardinal B-spline at ``u = (x - t_b)/h`` (``N^k_{k-p}(u - p)``,
    0 outside ``[0, k+1)``). Shapes: ``x (*, n)`` -> ``(*, n, nb)``."""
    u = (x.unsqueeze(-1) - t0) / h - torch.arange(nb, dtype=x.dtype, device=x.device)
    p = u.floor()
    pieces = _cardinal_pieces(u - p, k)
    out = torch.zeros_like(u)
    for q in range(k + 1):
        out = torch.where(p == q, pieces[k - q], out)
    return out


def compiled_runner(grid, k):
    """The ``compiled`` candidate for the shared uniform grid of :func:`make_inputs`:
    ``(C (B, n, m, nb), x (B, s, n)) -> (B, s, m)`` under ``torch.compile``."""
    t0, K = float(grid[0, 0, 0]), grid.shape[-1]
    h, nb = (float(grid[0, 0, -1]) - t0) / (K - 1), K - k - 1

    def f(c, xx):
        B, s, n = xx.shape
        basis = closed_form_basis(xx, t0, h, nb, k).reshape(B, s, n * nb)
        return torch.bmm(basis, c.transpose(2, 3).reshape(B, n * nb, c.shape[2]))

    return torch.compile(f, dynamic=False)


def eval_flop_model(kernel: str, B: int, s: int, n: int, m: int, G: int, k: int) -> float:
    """As :func:`flop_model` for ``spline_eval`` (no sum over inputs; the same counts)."""
    return flop_model(kernel, B, s, n, m, G, k)


def timed(fn, repeats: int, device: torch.device):
    """Median wall and process-CPU seconds of ``fn()`` over ``repeats`` calls after one
    warm-up call, and the warm-up's output."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out = fn()
    sync()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), out


def gemm_peak(repeats: int, device: torch.device):
    """GFLOP/s of a float32 ``(1024 x 1024) @ (1024 x 1024)`` matmul (median time)."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(1024, 1024, generator=g).to(device)
    b = torch.randn(1024, 1024, generator=g).to(device)
    wall, _, _ = timed(lambda: a @ b, max(repeats, 5), device)
    return 2 * 1024 ** 3 / wall / 1e9, wall


def make_inputs(B, s, n, m, G, k, dtype, device, seed=0):
    """Uniform pykan grids on [-1, 1] (shared by the models), coefficients, inputs with ~20 %
    outside the grid, the upstream gradient."""
    g = torch.Generator().manual_seed(seed)
    grid = uniform_grid(n, G, k, dtype=dtype).expand(B, n, G + 2 * k + 1).contiguous().to(device)
    coef = (0.3 * torch.randn(B, n, m, G + k, generator=g, dtype=dtype)).to(device)
    x = (1.25 * (2 * torch.rand(B, s, n, generator=g, dtype=dtype) - 1) * grid[:1, :1, -k - 1]).to(device)
    return grid, coef, x


def sum_runners(grid, coef, x, k, gy, compile_candidate=False):
    """fwd+bwd closures for the ``spline_sum`` kernels (``compiled`` with
    ``compile_candidate``), and their outputs (for the agreement check)."""
    A = truncated_power_coefficients(grid, k)  # fixed grid: once, as in the trainer
    tl = grid[..., -1].unsqueeze(-2)

    def local(c, xx):
        return local_spline_sum(xx, grid, c, k, backend="torch")

    def native(c, xx):
        return local_spline_sum(xx, grid, c, k, backend="native")

    def recursion(c, xx):
        return spline_sum(xx, grid, c, k, method="recursion")

    def truncated(c, xx):
        cT = torch.einsum("Biob,Bibq->Biqo", c, A).contiguous()
        return truncated_power_spline(torch.minimum(xx, tl), grid, cT, k)

    def basis(c, xx):  # (B, n, m, nb) -> (B, m, n nb)
        return _BasisGemm.apply(xx, grid, c.permute(0, 2, 1, 3).reshape(c.shape[0], c.shape[2], -1), k)

    def make(f):
        def step():
            c = coef.detach().requires_grad_(True)
            xx = x.detach().requires_grad_(True)
            y = f(c, xx)
            y.backward(gy)
            return y.detach(), xx.grad, c.grad
        return step

    runners = {"local": make(local), "truncated": make(truncated), "basis": make(basis), "recursion": make(recursion)}
    if _native.available():
        runners["native"] = make(native)
    if compile_candidate:
        runners["compiled"] = make(compiled_runner(grid, k))
    return runners


def eval_runners(grid, coef, x, k, gy):
    def make(method):
        def step():
            c = coef.detach().requires_grad_(True)
            xx = x.detach().requires_grad_(True)
            y = spline_eval(xx, grid, c, k, method=method)
            y.backward(gy)
            return y.detach(), xx.grad, c.grad
        return step

    return {"local": make("local"), "recursion": make("recursion")}


def rel_diffs(out, ref):
    """``max |a - b| / max |b|`` for the value, ``d/dx`` and ``d/dcoef``."""
    return {name: float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
            for name, a, b in zip(("value", "dx", "dcoef"), out, ref)}


def bench(shapes, runners_fn, flops_fn, kernels, dtype, device, repeats, peak):
    rows = []
    for name, (B, s, n, m, G, k) in shapes.items():
        grid, coef, x = make_inputs(B, s, n, m, G, k, dtype, device)
        out_shape = (B, s, m) if runners_fn is not eval_runners else (B, s, n, m)
        gy = torch.randn(out_shape, generator=torch.Generator().manual_seed(2), dtype=dtype).to(device)
        runners = runners_fn(grid, coef, x, k, gy)
        res, outs = {}, {}
        for kern in kernels:
            t0 = time.perf_counter()
            wall, cpu, outs[kern] = timed(runners[kern], repeats, device)
            first = time.perf_counter() - t0 - repeats * wall  # the warm-up call (compiles, if any)
            fl = flops_fn(kern, B, s, n, m, G, k)
            res[kern] = {"wall_s": wall, "cpu_s": cpu, "gflop": fl / 1e9, "gflops_per_s": fl / wall / 1e9,
                         "peak_fraction": fl / wall / 1e9 / peak, "first_call_s": first}
        for kern in kernels:
            d = rel_diffs(outs[kern], outs["recursion"])
            res[kern]["rel_diff_vs_recursion"] = d
            res[kern]["max_rel_diff_vs_recursion"] = max(d.values())
        for kern in kernels:
            res[kern]["speedup_vs_recursion"] = res["recursion"]["wall_s"] / res[kern]["wall_s"]
        if "truncated" in res:
            for kern in ("native", "local", "basis", "compiled"):
                if kern in res:
                    res[kern]["speedup_vs_truncated"] = res["truncated"]["wall_s"] / res[kern]["wall_s"]
        rows.append({"workload": name, "B": B, "s": s, "n": n, "m": m, "G": G, "k": k, "kernels": res})
    return rows


def print_table(title, rows, kernels, peak):
    print(f"\n{title}")
    head = f"{'workload':30s} {'B,s,n,m,G,k':>22s} {'kernel':>10s} {'ms':>9s} {'cpu ms':>9s} {'GFLOP/s':>8s} " \
           f"{'%peak':>6s} {'vs rec':>7s} {'max rel diff':>12s}"
    print(head)
    print("-" * len(head))
    for r in rows:
        shape = f"{r['B']},{r['s']},{r['n']},{r['m']},{r['G']},{r['k']}"
        for i, kern in enumerate(kernels):
            v = r["kernels"][kern]
            print(f"{r['workload'] if i == 0 else '':30s} {shape if i == 0 else '':>22s} {kern:>10s} "
                  f"{1e3 * v['wall_s']:9.2f} {1e3 * v['cpu_s']:9.2f} {v['gflops_per_s']:8.2f} "
                  f"{100 * v['peak_fraction']:5.1f}% {v['speedup_vs_recursion']:6.2f}x "
                  f"{v['max_rel_diff_vs_recursion']:12.1e}")
        ratios = [f"{kern} {1 / r['kernels'][kern]['speedup_vs_truncated']:.2f}"
                  for kern in ("native", "local", "basis", "compiled") if "speedup_vs_truncated" in r["kernels"].get(kern, {})]
        if ratios:
            print(f"{'':30s} {'':>22s} time / truncated's: " + ", ".join(ratios))
        if "compiled" in r["kernels"]:
            print(f"{'':30s} {'':>22s} compiled: first call (compiles forward and backward) "
                  f"{r['kernels']['compiled']['first_call_s']:.1f} s")
    print(f"(GEMM peak, float32 1024^3: {peak:.1f} GFLOP/s)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per kernel and workload (median)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=os.path.join("benchmarks", "out", "spline_kernel.json"))
    p.add_argument("--md", default=os.path.join("docs", "spline_kernel_results.inc"),
                   help="also write the printed tables here (included by docs/benchmarks.rst)")
    p.add_argument("--compile", action="store_true",
                   help="also time the 'compiled' candidate (torch.compile; needs a C++ compiler)")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error(f"--threads must be a positive integer, got {args.threads}")
    if args.repeats < 1:
        p.error(f"--repeats must be a positive integer, got {args.repeats}")
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    t_start = time.perf_counter()

    peak, gemm_s = gemm_peak(args.repeats, device)
    sum_kernels = SUM_KERNELS + (["compiled"] if args.compile else [])
    sums = bench(SUM_SHAPES, lambda *a: sum_runners(*a, compile_candidate=args.compile), flop_model, sum_kernels,
                 dtype, device, args.repeats, peak)
    evals = bench(EVAL_SHAPES, eval_runners, eval_flop_model, ["local", "recursion"], dtype, device,
                  args.repeats, peak)

    cmd = "python benchmarks/spline_kernel.py " + " ".join(sys.argv[1:] if argv is None else argv)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
               f"torch {torch.__version__}, Python {platform.python_version()}"
               + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print(f"B-spline kernels, forward + backward (x and coef), {args.dtype}, {device}, "
              f"{args.threads} thread(s), median of {args.repeats}")
        print(f"command: {cmd}")
        print(f"machine: {machine}; 1-min load average at start: {load}; GEMM peak {peak:.1f} GFLOP/s")
        print_table("spline_sum (layer: splines summed over inputs)", sums, sum_kernels, peak)
        print_table("spline_eval (every edge function)", evals, ["local", "recursion"], peak)
    print("\n" + buf.getvalue())
    if args.md:
        with open(args.md, "w") as f:
            f.write(buf.getvalue())
    total = time.perf_counter() - t_start
    out = {"command": cmd, "machine": machine, "threads": args.threads, "device": str(device),
           "dtype": args.dtype, "repeats": args.repeats, "load_average_1min": load,
           "gemm_peak_gflops": peak, "gemm_1024_s": gemm_s,
           "spline_sum": sums, "spline_eval": evals, "total_s": total}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"\ntotal {total:.1f} s; written {args.out}")


if __name__ == "__main__":
    main()
