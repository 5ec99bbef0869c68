"""Benchmark: batched exact KAN -> MLP -> KAN conversion of a zoo of KANs.

Default workload (issue 5): 1000 KANs of widths [64, 16, 10], G = 5, k = 3, float32, CPU.
Measures (medians over ``--repeats``):

* ``kan_to_mlp`` on the whole batch (one call, batched tensor ops) vs the real
  alternative, a Python loop converting model by model (timed on ``--loop-models``
  models and scaled to the batch);
* ``mlp_to_kan`` (route ``exact``) back from the batched MLP;
* evaluation of the batched MLP vs the KAN's own Cox--de Boor forward;
* max relative error of MLP vs KAN (inputs inside the grid and out to ``|x| = 1e3``),
  and of the round-tripped KAN;
* per-model parameter counts: KAN, factored MLP, merged MLP.

* a roofline for the round trip: the machine's copy bandwidth (a 256 MiB ``clone``, bytes
  read + written per second, measured in the same run) and the bytes the round trip cannot
  avoid (the factored MLP's dense weights written once by ``kan_to_mlp`` and read once by
  ``mlp_to_kan``), whose ratio is the bandwidth floor of the round trip.

Prints a table and writes JSON (``--out``, default ``benchmarks/out/convert.json``) and, with
``--md``, the printed table for the docs. Never asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time

import torch

from wskan_ext import KAN, kan_to_mlp, mlp_to_kan
from wskan_ext.convert import mlp_parameter_count


CPU_TIMES = {}


def timed(fn, repeats, device, name=None):
    """Median wall time (and, recorded under ``name``, median process CPU time, which is
    what a busy shared machine distorts least)."""
    times, cpu, out = [], [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if name:
        CPU_TIMES[name] = statistics.median(cpu)
    return statistics.median(times), out


def rel_err(a, b):
    return float((a - b).abs().max() / (1.0 + b.abs().max()))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=1000)
    p.add_argument("--widths", type=int, nargs="+", default=[64, 16, 10])
    p.add_argument("--grid", type=int, default=5)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--loop-models", type=int, default=50, help="models converted one by one for the baseline")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--units", choices=["auto", "knots", "basis"], default="auto", help="kan_to_mlp unit layout")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default=os.path.join("benchmarks", "out", "convert.json"))
    p.add_argument("--md", default=None, help="also write the printed table here (docs include)")
    args = p.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(args.seed)
    kan = KAN(args.widths, grid=args.grid, k=args.k, num_models=args.models, generator=gen, dtype=dtype, device=device)
    with torch.no_grad():  # trained-like weights: larger coefficients and non-uniform, per-neuron grids
        for layer in kan.layers:
            layer.coef.copy_(torch.randn(layer.coef.shape, generator=gen, dtype=dtype).to(device))
            g = layer.grid
            jitter = 0.3 * (g[..., 1:2] - g[..., 0:1]) * (torch.rand(g.shape, generator=gen, dtype=dtype).to(device) - 0.5)
            layer.grid.add_(jitter)
    w = kan.weights(detach=True)

    t_k2m, mlp = timed(lambda: kan_to_mlp(w, units=args.units), args.repeats, device, "kan_to_mlp_batched")
    loop_n = min(args.loop_models, args.models)
    t_loop, _ = timed(
        lambda: [kan_to_mlp(w[i], units=args.units) for i in range(loop_n)], max(1, args.repeats // 2), device, "kan_to_mlp_loop"
    )
    CPU_TIMES["kan_to_mlp_loop_scaled"] = CPU_TIMES.pop("kan_to_mlp_loop") * args.models / loop_n
    t_loop_scaled = t_loop * args.models / loop_n
    t_m2k, back = timed(lambda: mlp_to_kan(mlp), args.repeats, device, "mlp_to_kan_batched")

    n0 = args.widths[0]
    x_in = (2 * torch.rand(args.samples, n0, generator=gen, dtype=dtype) - 1).to(device)
    x_far = (1e3 * (2 * torch.rand(args.samples // 4, n0, generator=gen, dtype=dtype) - 1)).to(device)
    x = torch.cat([x_in, x_far])
    with torch.no_grad():
        t_kan_fwd, y_kan = timed(lambda: w(x), args.repeats, device)
        t_mlp_fwd, y_mlp = timed(lambda: mlp(x), args.repeats, device)
        y_back = back(x)
        ref = w.double()(x.double())
    err_mlp = rel_err(y_mlp.double(), ref)
    s_in = x_in.shape[0]
    err_mlp_in = rel_err(y_mlp[:, :s_in].double(), ref[:, :s_in])  # inside the grids only
    err_back = rel_err(y_back.double(), ref)
    err_kan = rel_err(y_kan.double(), ref)

    single = w[0]
    counts = {
        "kan": single.num_parameters(),
        "factored": mlp_parameter_count(kan_to_mlp(single, units=args.units)),
        "merged": mlp_parameter_count(kan_to_mlp(single, form="merged", units=args.units)),
        "factored_knots": mlp_parameter_count(kan_to_mlp(single, units="knots")),
        "factored_basis": mlp_parameter_count(kan_to_mlp(single, units="basis")),
    }
    big = torch.empty(64 * 2**20, dtype=torch.float32, device=device).fill_(1.0)  # 256 MiB
    t_copy, _ = timed(lambda: big.clone(), max(3, args.repeats), device)
    bandwidth = 2 * big.numel() * 4 / t_copy  # bytes read + written per second
    del big
    mlp_bytes = counts["factored"]["parameters"] * args.models * torch.finfo(dtype).bits // 8
    floor = 2 * mlp_bytes / bandwidth  # written once, read once
    res = {
        "config": vars(args),
        "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "seconds": {
            "kan_to_mlp_batched": t_k2m,
            "kan_to_mlp_loop_scaled": t_loop_scaled,
            "mlp_to_kan_batched": t_m2k,
            "round_trip": t_k2m + t_m2k,
            "forward_kan": t_kan_fwd,
            "forward_mlp": t_mlp_fwd,
        },
        "cpu_seconds": CPU_TIMES,
        "load_average": os.getloadavg(),
        "ratios": {
            "loop_over_batched_kan_to_mlp": t_loop_scaled / t_k2m,
            "kan_forward_over_mlp_forward": t_kan_fwd / t_mlp_fwd,
        },
        "max_rel_error": {
            "mlp_vs_kan_float64_ref": err_mlp,
            "mlp_vs_kan_float64_ref_inside_grid": err_mlp_in,
            "round_trip_kan_vs_ref": err_back,
            "kan_own_dtype_vs_ref": err_kan,
        },
        "parameters_per_model": counts,
        "roofline": {"copy_bandwidth_gb_s": bandwidth / 1e9, "mlp_bytes": mlp_bytes, "round_trip_floor_s": floor},
    }
    CPU_TIMES["round_trip"] = CPU_TIMES["kan_to_mlp_batched"] + CPU_TIMES["mlp_to_kan_batched"]
    c = CPU_TIMES
    rows = [
        ("kan_to_mlp, batched (1 call)", f"{t_k2m * 1e3:9.1f} ms  (cpu {c['kan_to_mlp_batched'] * 1e3:8.1f} ms)"),
        (f"kan_to_mlp, loop (scaled from {loop_n})", f"{t_loop_scaled * 1e3:9.1f} ms  (cpu {c['kan_to_mlp_loop_scaled'] * 1e3:8.1f} ms)"),
        ("  ratio loop / batched", f"{t_loop_scaled / t_k2m:9.1f} x"),
        ("mlp_to_kan (exact), batched", f"{t_m2k * 1e3:9.1f} ms  (cpu {c['mlp_to_kan_batched'] * 1e3:8.1f} ms)"),
        ("round trip KAN->MLP->KAN", f"{(t_k2m + t_m2k) * 1e3:9.1f} ms  (cpu {c['round_trip'] * 1e3:8.1f} ms)"),
        (f"forward KAN ({x.shape[0]} samples)", f"{t_kan_fwd * 1e3:9.1f} ms"),
        ("forward MLP (factored)", f"{t_mlp_fwd * 1e3:9.1f} ms"),
        ("max rel err MLP vs float64 KAN", f"{err_mlp:9.2e}"),
        ("  same, inputs inside the grids only", f"{err_mlp_in:9.2e}"),
        ("max rel err round-trip KAN", f"{err_back:9.2e}"),
        ("max rel err KAN own dtype", f"{err_kan:9.2e}"),
        ("params/model KAN", f"{counts['kan']:9d}"),
        ("params/model factored (nonzero)", f"{counts['factored']['parameters']:9d} ({counts['factored']['nonzero']})"),
        ("params/model merged (nonzero)", f"{counts['merged']['parameters']:9d} ({counts['merged']['nonzero']})"),
        ("params/model factored, knot units", f"{counts['factored_knots']['parameters']:9d} ({counts['factored_knots']['nonzero']})"),
        ("params/model factored, basis units", f"{counts['factored_basis']['parameters']:9d} ({counts['factored_basis']['nonzero']})"),
        ("copy bandwidth (read + write)", f"{bandwidth / 1e9:9.1f} GB/s"),
        ("round trip bandwidth floor", f"{floor * 1e3:9.1f} ms  (MLP weights {mlp_bytes / 2**20:.0f} MiB written + read)"),
    ]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print("command: python benchmarks/convert.py " + " ".join(sys.argv[1:] if argv is None else argv))
        print(f"convert benchmark: {args.models} KANs {args.widths}, G={args.grid}, k={args.k}, {args.dtype}, "
              f"units={args.units}, {res['device_name']}, {res['threads']} threads, torch {torch.__version__}, "
              f"load average at start {load}, medians of {args.repeats}")
        for name, val in rows:
            print(f"  {name:<40s} {val}")
    print(buf.getvalue(), end="")
    if args.md:
        with open(args.md, "w") as f:
            f.write(buf.getvalue())
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()
