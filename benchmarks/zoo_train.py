"""Benchmark: train 64 KANs ``[64, h, 10]`` (G=5, k=3) on digits with the batched trainer vs
pykan's ``fit``, one model at a time.

Both use the same initial weights (ours, exported with ``to_pykan``), full-batch Adam, the
same learning rates, cross-entropy, fixed grids (pykan: ``update_grid=False``) and the same
number of steps. pykan is timed on ``--pykan-models`` models and its per-model time is
extrapolated to all 64 (labelled as such); each of our two trainers runs ``--repeats`` times
(default 3) and its median time is reported. Also checks that the exported pykan models
reproduce our stored predictions.

Our trainer runs with its default kernels (``spline="auto"``: the compiled
local-support kernels of :mod:`wskan_ext.kan._native` where they apply) and with the dense
ones (``spline="truncated"``: the first layer's dense basis as one GEMM, truncated powers in
the hidden layer), so both ratios to pykan come from the same run.

Also measures, in the same run, the machine's float32 GEMM peak
(``benchmarks/spline_kernel.py:gemm_peak``) and the matmul FLOPs of one training step of the
64 dense-kernel models (``torch.utils.flop_counter.FlopCounterMode``: the difference between 2
and 1 steps), so the table shows the GEMM-bound floor of the dense trainer, that is, the
largest ratio to pykan its matmuls allow at the peak, and the FLOPs the local kernels do on
the ``k+1`` active basis functions (counted from the shapes: ``2 (k+2) m`` per (model, sample,
input) for each of the forward sum, the weight gradients and the input gradient; the
first layer has no input gradient), which the dense cap does not bound, with the base
term's ``2 m`` counted like one more basis function.

    python benchmarks/zoo_train.py [--steps 100] [--hidden 16] [--pykan-models 3] [--out PATH] [--md PATH]
    python benchmarks/zoo_train.py --profile 20   # where a step's time goes (no comparison)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from wskan_ext.adapters.pykan import to_pykan
from wskan_ext.zoo import BuildConfig, PRESETS, load_digits_data, run_hparams, train_batched
from wskan_ext.zoo.labels import evaluate
from wskan_ext.zoo.trainer import init_models

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from spline_kernel import gemm_peak  # noqa: E402


def step_flops(width, x, y, hp, spline="truncated") -> float:
    """Matmul FLOPs of one training step of all models (2 steps minus 1 step: the
    checkpoint evaluation both runs do cancels)."""
    counts = []
    for steps in (1, 2):
        counter = FlopCounterMode(display=False)
        with counter:
            train_batched(width, x, y, hp, steps=steps, spline=spline)
        counts.append(counter.get_total_flops())
    return float(counts[1] - counts[0])


def local_flops(width, s, B, k=3, rows=None) -> float:
    """FLOPs of one training step's layer sums on the ``k+1`` active basis functions and the
    base term: ``2 (k+2) m`` per (model, sample, input) for the forward sum, the weight
    gradients and (hidden layers) the input gradient. With ``rows`` (the number of distinct
    (input, value) pairs of the data, where the first layer runs in its lookup form) the first
    layer instead costs ``2 (k+2) m`` per (model, row) for the table and ``m`` additions per
    (model, sample, input), forward and backward each."""
    total = 0.0
    for layer, (n, m) in enumerate(zip(width[:-1], width[1:])):
        if layer == 0 and rows is not None:
            total += 2 * (2 * (k + 2) * m * B * rows + m * B * s * n)
        else:
            total += (2 if layer == 0 else 3) * 2 * (k + 2) * m * B * s * n
    return total


def profile_steps(width, d, hp, steps):
    """Self CPU time per op of ``steps`` steps of the default trainer, per step (ms)."""
    from torch.profiler import ProfilerActivity, profile

    train_batched(width, d.x_train, d.y_train, hp, steps=2)  # warm-up (builds the kernels)
    t0 = time.perf_counter()
    train_batched(width, d.x_train, d.y_train, hp, steps=steps)
    wall = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_batched(width, d.x_train, d.y_train, hp, steps=steps)
    ev = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ev)
    print(f"{len(hp)} KANs {width}, {steps} steps (+ initialisation and one checkpoint evaluation): "
          f"{wall:.2f} s unprofiled, {1e3 * wall / steps:.1f} ms per step; profiled self CPU time per step:")
    for e in ev[:15]:
        print(f"  {e.key:40s} {e.self_cpu_time_total / 1e3 / steps:8.2f} ms  ({100 * e.self_cpu_time_total / total:4.1f} %)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--pykan-models", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each of our trainers (the median is reported)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out", "zoo_train.json"))
    ap.add_argument("--md", default=None, help="also write the printed table here (docs include)")
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="only profile STEPS steps of the default trainer (torch.profiler, self CPU time per op)")
    a = ap.parse_args()
    if a.threads < 1:
        ap.error(f"--threads must be a positive integer, got {a.threads}")
    if a.repeats < 1:
        ap.error(f"--repeats must be a positive integer, got {a.repeats}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    torch.set_num_threads(a.threads)
    from kan import KAN as PyKAN  # noqa: F401  (import cost not timed)

    d = load_digits_data()
    width = [64, a.hidden, 10]
    cfg = BuildConfig(**{**PRESETS["benchmark"], "hidden": [a.hidden], "size": a.models})
    hp = run_hparams(cfg, range(a.models))

    if a.profile:
        profile_steps(width, d, hp, a.profile)
        return
    def timed(**kw):  # the median of --repeats runs (the trainer is deterministic: the same result each time)
        ts = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            out = train_batched(width, d.x_train, d.y_train, hp, steps=a.steps, **kw)
            ts.append(time.perf_counter() - t0)
        return out, statistics.median(ts), ts

    res, t_ours, ours_times = timed()
    dense, t_dense, dense_times = timed(spline="truncated")
    kernels = f"hidden layer: {res.extra['kernel']}, first layer: {res.extra['first_layer']}"
    w = res.checkpoints[-1]
    dense_eval = evaluate(dense.checkpoints[-1], d.x_test, d.y_test)
    ours_eval = evaluate(w, d.x_test, d.y_test)

    # exported models reproduce our stored predictions
    with torch.no_grad():
        stored = w.forward(d.x_test)
        max_diff, same_acc = 0.0, 0
        for b, pk in enumerate(to_pykan(w)):
            p = pk(d.x_test)
            max_diff = max(max_diff, (p - stored[b]).abs().max().item())
            same_acc += int((p.argmax(-1) == d.y_test).float().mean() == ours_eval["acc"][b])

    # pykan fit, one model at a time, from the same initial weights
    init = init_models(width, 5, 3, hp).weights(detach=True)
    ds = {"train_input": d.x_train, "train_label": d.y_train, "test_input": d.x_test, "test_label": d.y_test}
    times, accs = [], []
    for b in range(a.pykan_models):
        model = to_pykan(init[b])
        t0 = time.perf_counter()
        model.fit(ds, opt="Adam", steps=a.steps, lr=float(hp.lr[b]), update_grid=False,
                  loss_fn=torch.nn.CrossEntropyLoss(), log=10 ** 9)
        times.append(time.perf_counter() - t0)
        with torch.no_grad():
            accs.append((model(d.x_test).argmax(-1) == d.y_test).float().mean().item())
    per_model = statistics.median(times)
    pykan_total = per_model * a.models
    rows = [
        (f"ours, default kernels ({res.extra['kernel']}; median of {a.repeats})", a.models, t_ours, t_ours / a.models),
        (f"ours, dense kernels (truncated; median of {a.repeats})", a.models, t_dense, t_dense / a.models),
        (f"pykan fit (median of {a.pykan_models}, extrapolated x{a.models})", a.models, pykan_total, per_model),
    ]
    peak, _ = gemm_peak(5, torch.device("cpu"))
    flops = step_flops(width, d.x_train, d.y_train, hp) * a.steps
    floor = flops / (peak * 1e9)
    n_rows = None
    if res.extra["first_layer"] == "lookup":
        n_rows = sum(len(torch.unique(c)) for c in d.x_train.T)  # the distinct (input, value) pairs
    lflops = local_flops(width, d.x_train.shape[0], a.models, rows=n_rows) * a.steps
    dense_lflops = local_flops(width, d.x_train.shape[0], a.models) * a.steps
    cmd = "python benchmarks/zoo_train.py " + " ".join(sys.argv[1:])
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
               f"torch {torch.__version__}, Python {platform.python_version()}")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print(f"command: {cmd}")
        print(f"machine: {machine}; 1-min load average at start: {load}; GEMM peak {peak:.1f} GFLOP/s")
        print(f"{a.models} KANs {width}, G=5, k=3, {a.steps} full-batch Adam steps on digits "
              f"({d.x_train.shape[0]} train samples), {a.threads} thread(s)")
        print(f"{'trainer':58s} {'models':>6s} {'total s':>9s} {'s/model':>9s}")
        for r in rows:
            print(f"{r[0]:58s} {r[1]:6d} {r[2]:9.2f} {r[3]:9.3f}")
        ratio, ratio_dense = pykan_total / t_ours, pykan_total / t_dense
        print(f"throughput ratio (ours / pykan): {ratio:.1f}x with the default kernels ({kernels}); "
              f"{ratio_dense:.1f}x with the dense ones ({t_dense / t_ours:.2f}x slower)")
        print(f"test accuracy, default vs dense kernels (same init/lr): max gap "
              f"{(ours_eval['acc'] - dense_eval['acc']).abs().max().item():.4f} over {a.models} models")
        print(f"exported pykan models vs stored predictions: max |logit diff| {max_diff:.2e}, "
              f"same test accuracy for {same_acc}/{a.models}")
        gap = [abs(accs[b] - float(ours_eval["acc"][b])) for b in range(a.pykan_models)]
        print(f"test accuracy, pykan-trained vs ours (same init/lr): max gap {max(gap):.4f} "
              f"(pykan {[round(v, 4) for v in accs]}, ours {[round(float(v), 4) for v in ours_eval['acc'][:a.pykan_models]]})")
        print(f"dense kernels: {flops / 1e9:.0f} GFLOP of matmuls, {flops / 1e9 / t_dense:.1f} GFLOP/s achieved "
              f"({100 * flops / 1e9 / t_dense / peak:.0f} % of the GEMM peak); at the peak the matmuls alone take "
              f"{floor:.1f} s, so with dense bases the ratio to pykan is at most {pykan_total / floor:.0f}x on this machine")
        print(f"local kernels: {dense_lflops / 1e9:.0f} GFLOP on the k+1 active basis functions and the base term "
              f"per (sample, input) ({100 * dense_lflops / flops:.0f} % of the dense matmul FLOPs)"
              + (f"; with the first layer's lookup form ({n_rows} distinct (input, value) pairs of "
                 f"{d.x_train.shape[0] * width[0]}) {lflops / 1e9:.0f} GFLOP" if n_rows is not None else "")
              + f", {lflops / 1e9 / t_ours:.1f} GFLOP/s over the whole run")
    print("\n" + buf.getvalue())
    if a.md:
        with open(a.md, "w") as f:
            f.write(buf.getvalue())
    out = {
        "width": width, "grid": 5, "k": 3, "steps": a.steps, "models": a.models, "threads": a.threads,
        "ours_total_s": t_ours, "ours_per_model_s": t_ours / a.models, "ours_times_s": ours_times,
        "dense_times_s": dense_times,
        "pykan_per_model_s_median": per_model, "pykan_times_s": times, "pykan_total_s_extrapolated": pykan_total,
        "ratio": ratio, "kernels": res.extra, "dense_total_s": t_dense, "ratio_dense": ratio_dense,
        "dense_test_acc": dense_eval["acc"].tolist(), "local_gflop": lflops / 1e9, "distinct_rows": n_rows, "export_max_logit_diff": max_diff, "export_same_accuracy": same_acc,
        "ours_test_acc": ours_eval["acc"].tolist(), "pykan_test_acc": accs,
        "gemm_peak_gflops": peak, "matmul_gflop": flops / 1e9, "gemm_floor_s": floor,
        "command": cmd, "machine": machine, "load_average_1min": load,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
