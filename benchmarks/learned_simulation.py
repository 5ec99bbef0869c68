"""Benchmark: learned forward-pass simulation error against WSKAN hidden width.

For each hidden width, trains a :class:`wskan_ext.simulate.LearnedSimulator` on fresh random
KANs (``--kan-widths``, G=5, k=3, spline coefficients N(0, 0.5^2)) to map (KAN, x) -> KAN(x),
then reports the relative MSE on held-out random KANs, next to the exact message-passing
simulator (the analytic message) and the constant-zero predictor (relative MSE 1).
Defaults: layer-ordered propagation (one round per KAN layer), every neuron supervised;
``--propagation all --supervise output`` gives the plain WSKAN trained on outputs only.
Prints a table, writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from wskan_ext import kan_to_graph
from wskan_ext.simulate import (
    LearnedSimulator,
    evaluate_learned_simulator,
    random_kans,
    simulate_forward,
    train_learned_simulator,
)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    p.add_argument("--kan-widths", type=int, nargs="+", default=[2, 1])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--layers", type=int, default=None, help="WSKAN layers (default: the KAN depth)")
    p.add_argument("--propagation", default="layered", choices=["layered", "all"])
    p.add_argument("--supervise", default="all", choices=["all", "output"])
    p.add_argument("--value-encoding", default="rbf", choices=["rbf", "raw"])
    p.add_argument("--eval-models", type=int, default=2048)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out", "learned_simulation.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    widths = args.kan_widths
    if args.layers is None:
        args.layers = len(widths) - 1

    # the exact simulator on the same kind of KANs, for reference
    w = random_kans(widths, args.eval_models, generator=torch.Generator().manual_seed(123), dtype=torch.float64)
    x = torch.rand(args.eval_models, 1, widths[0], generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 2 - 1
    y = w(x)
    exact_rel = float(((simulate_forward(kan_to_graph(w), x) - y) ** 2).mean() / (y**2).mean())

    rows = []
    g0 = kan_to_graph(random_kans(widths, 1))
    for h in args.hidden:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = LearnedSimulator(g0.x.shape[1], g0.edge_attr.shape[1], hidden_channels=h, num_layers=args.layers,
                                     value_encoding=args.value_encoding, propagation=args.propagation)
        t0 = time.perf_counter()
        losses = train_learned_simulator(model, widths, steps=args.steps, batch_size=args.batch_size,
                                         supervise=args.supervise, generator=torch.Generator().manual_seed(1))
        train_s = time.perf_counter() - t0
        ev = evaluate_learned_simulator(model, widths, num_models=args.eval_models, generator=torch.Generator().manual_seed(2))
        rows.append(dict(hidden=h, parameters=sum(p.numel() for p in model.parameters()), train_s=train_s,
                         final_train_loss=sum(losses[-20:]) / 20, **ev))
    print(f"KAN widths {widths}, {args.steps} steps x {args.batch_size} KANs, {args.layers} WSKAN layers, "
          f"value encoding {args.value_encoding}, propagation {args.propagation}, supervise {args.supervise}")
    print(f"{'hidden':>6} {'params':>8} {'train s':>8} {'test MSE':>10} {'rel. MSE':>9}")
    for r in rows:
        print(f"{r['hidden']:>6} {r['parameters']:>8} {r['train_s']:>8.1f} {r['mse']:>10.5f} {r['relative_mse']:>9.4f}")
    print(f"exact simulator rel. MSE (float64): {exact_rel:.2e}; zero predictor rel. MSE: 1")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(dict(kan_widths=widths, value_encoding=args.value_encoding, steps=args.steps, batch_size=args.batch_size, layers=args.layers,
                       propagation=args.propagation, supervise=args.supervise,
                       exact_relative_mse=exact_rel, rows=rows), fh, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
