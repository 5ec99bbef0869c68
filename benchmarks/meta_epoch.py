"""Benchmark: one meta-training epoch of each model on the same zoo, task and batch size.

Runs exactly the training step of ``wskan_ext.tasks.fit`` (``MetaModel.batch``, forward,
loss, backward, AdamW step) over the whole training split, one warm-up epoch and then
``--epochs`` timed ones (median), for every model given, in one process and one thread
(``--threads``). Reports seconds per epoch, the ratio to NFN-HNP (``nfn``) measured in the
same run, the parameter count, and FLOPs per epoch counted by
:class:`torch.utils.flop_counter.FlopCounterMode` (matmuls only) with the achieved GFLOP/s
next to the machine's float32 GEMM peak (``benchmarks/spline_kernel.py:gemm_peak``),
measured in the same run. Prints a table, writes JSON (``--out``) and the table for the
docs (``--md``).

    python benchmarks/meta_epoch.py --zoo benchmarks/out/zoos/mnist5k-classifiers --task accuracy \\
        nfn wskan 'wskan:{"hidden": 32}'
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

from wskan_ext.tasks.definitions import get_task, load_splits
from wskan_ext.tasks.models import build_meta_model
from wskan_ext.tasks.train import _loss
from wskan_ext.zoo.store import Zoo

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from spline_kernel import gemm_peak  # noqa: E402


def epoch_runner(mm, enc, task, batch_size, seed=0, compile_layers=False, bf16=False):
    """A closure running one training epoch (fit's inner loop) and the FLOPs of one epoch.
    ``compile_layers``: wrap every ``WSKANLayer`` in ``torch.compile(dynamic=True)``;
    ``bf16``: forward and loss under ``torch.autocast("cpu", torch.bfloat16)`` (mixed
    precision: parameters and optimiser state stay float32)."""
    torch.manual_seed(seed)
    net = mm.build_net()
    layers = getattr(getattr(net, "model", None), "layers", None)
    if compile_layers and layers is not None:
        for i, layer in enumerate(layers):
            layers[i] = torch.compile(layer, dynamic=True)
    opt = torch.optim.AdamW(net.parameters(), lr=float(mm.config.get("lr", 1e-3)), foreach=True)
    n = int(enc["targets"].shape[0])
    gen, aug = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)

    def step(idx):
        x, y = mm.batch(enc, idx, aug, train=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        per_item = out[0].numel() if task.kind != "classification" else 1
        loss = _loss(task.kind, out.float(), y) / (idx.numel() * per_item)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def run():
        perm = torch.randperm(n, generator=gen)
        for a in range(0, n, batch_size):
            step(perm[a: a + batch_size])

    counter = FlopCounterMode(display=False)
    with counter, torch._dynamo.config.patch(disable=True):  # count the eager ops
        step(torch.arange(min(batch_size, n)))
    flops = counter.get_total_flops() * n / min(batch_size, n)
    return run, flops, sum(p.numel() for p in net.parameters())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", help="MODEL or MODEL:JSON_CONFIG (model hyperparameters)")
    p.add_argument("--zoo", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per model (median)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out", "meta_epoch.json"))
    p.add_argument("--compile", action="store_true",
                   help="wrap WS-KAN's layers in torch.compile (the warm-up epoch pays the compilation)")
    p.add_argument("--bf16", action="store_true",
                   help="every model's forward under torch.autocast('cpu', bfloat16) (mixed precision)")
    p.add_argument("--md", default=None, help="also write the printed table here (docs include)")
    args = p.parse_args(argv)
    for name in ("threads", "epochs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    task, zoo = get_task(args.task), Zoo(args.zoo)
    splits = load_splits(zoo, task)
    nc = int(splits["train"].targets.max()) + 1 if task.kind == "classification" else None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    peak, _ = gemm_peak(5, torch.device("cpu"))
    rows = []
    for spec in args.models:
        model, _, cfg = spec.partition(":")
        mm = build_meta_model(model, task, splits["train"], json.loads(cfg) if cfg else {}, task.out_channels(nc))
        enc = mm.encode(splits["train"])
        run, flops, params = epoch_runner(mm, enc, task, args.batch_size, compile_layers=args.compile,
                                          bf16=args.bf16)
        run()  # warm-up
        times = []
        for _ in range(args.epochs):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        rows.append({"model": spec, "epoch_s": statistics.median(times), "epoch_times_s": times,
                     "params": params, "gflop_per_epoch": flops / 1e9,
                     "gflops": flops / 1e9 / statistics.median(times)})
        if args.compile and model == "wskan":
            rows[-1]["model"] = spec = spec + " (compiled)"
        if args.bf16:
            rows[-1]["model"] = spec = spec + " (bf16)"
        print(f"{spec}: {rows[-1]['epoch_s']:.2f} s/epoch", flush=True)
    ref = next((r["epoch_s"] for r in rows if r["model"].partition(":")[0].split(" ")[0] == "nfn"), None)  # the first NFN spec
    cmd = "python benchmarks/meta_epoch.py " + " ".join(sys.argv[1:] if argv is None else argv)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
               f"torch {torch.__version__}, Python {platform.python_version()}")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print(f"One training epoch ({len(splits['train'])} KANs, batch {args.batch_size}, "
              f"{args.threads} thread(s), median of {args.epochs}) on {os.path.basename(os.path.normpath(args.zoo))} "
              f"/ {task.name}")
        print(f"command: {cmd}")
        print(f"machine: {machine}; 1-min load average at start: {load}; GEMM peak {peak:.1f} GFLOP/s\n")
        w = max(len(r["model"]) for r in rows) + 2
        print(f"{'model':{w}s} {'s/epoch':>8s} {'x NFN':>6s} {'params':>9s} {'GFLOP/ep':>9s} {'GFLOP/s':>8s} {'% peak':>7s}")
        for r in rows:
            ratio = f"{r['epoch_s'] / ref:6.1f}" if ref else f"{'-':>6s}"
            print(f"{r['model']:{w}s} {r['epoch_s']:8.2f} {ratio} {r['params']:9d} {r['gflop_per_epoch']:9.1f} "
                  f"{r['gflops']:8.1f} {100 * r['gflops'] / peak:6.1f}%")
    print("\n" + buf.getvalue())
    if args.md:
        with open(args.md, "w") as f:
            f.write("::\n\n" + "".join("    " + line + "\n" for line in buf.getvalue().splitlines()))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"command": cmd, "machine": machine, "threads": args.threads, "load_average_1min": load,
                   "gemm_peak_gflops": peak, "zoo": args.zoo, "task": task.name, "batch_size": args.batch_size,
                   "rows": rows}, f, indent=1)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
