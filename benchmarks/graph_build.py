"""Benchmark: building KAN-graph batches.

Compares, for ``--num-models`` KANs of each architecture (G=5, k=3, float32):

* ``ours``      -- :func:`wskan_ext.kan_to_graph` on a batched ``KANWeights``;
* ``per_model`` -- one ``torch_geometric.data.Data`` per model (same fields, graph template
  precomputed once) + ``Batch.from_data_list`` (the path Neural Graphs uses);
* ``floor``     -- the raw vectorised ``torch.cat`` / ``reshape`` of the same tensors plus
  offset ``edge_index`` (no input normalisation, no checks, no ``Batch`` object).

Prints a table of medians and ratios and writes JSON (``--out``). Never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from torch_geometric.data import Batch, Data

from wskan_ext import kan_to_graph
from wskan_ext.graph import _template
from wskan_ext.simulate import random_kans


def _fields(w, t, B):
    """The tensors of ``B`` stacked KANs (``w`` batched), in the graph layout (no offsets)."""
    dt = w.dtype
    widths = w.widths
    feats = w.edge_features()
    C, nb = feats[0].shape[-1], w.coef[0].shape[-1]
    edge_attr = torch.cat([f.reshape(B, -1, C) for f in feats], 1).reshape(-1, C)
    edge_coef = torch.cat([c.reshape(B, -1, nb) for c in w.coef], 1).reshape(-1, nb)
    edge_scales = torch.cat(
        [torch.stack([w.scale_base[l], w.scale_sp[l], w.mask[l]], -1).reshape(B, -1, 3) for l in range(w.depth)], 1
    ).reshape(-1, 3)
    K = w.grid[0].shape[-1]
    geom = torch.cat(list(w.grid) + [torch.zeros(B, widths[-1], K, dtype=dt)], 1)
    scale = torch.cat([torch.ones(B, widths[0], dtype=dt)] + list(w.node_scale), 1)
    bias = torch.cat([torch.zeros(B, widths[0], dtype=dt)] + list(w.node_bias), 1)
    role = torch.nn.functional.one_hot(t["node_role"], 3).to(dt).expand(B, -1, -1)
    x = torch.cat([geom, scale.unsqueeze(-1), bias.unsqueeze(-1), role], -1).reshape(-1, K + 5)
    return dict(x=x, edge_attr=edge_attr, edge_coef=edge_coef, edge_scales=edge_scales)


def floor(w):
    B, N = w.num_models, sum(w.widths)
    t = _template(w.widths, w.device)
    out = _fields(w, t, B)
    out["edge_index"] = (t["edge_index"].unsqueeze(1) + (torch.arange(B) * N).view(1, -1, 1)).reshape(2, -1)
    for key in ("node_layer", "node_pos", "node_role"):
        out[key] = t[key].repeat(B)
    out["node_k"] = out["node_layer"].clone()
    out["node_base_fun"] = out["node_layer"].clone()
    out["edge_layer"] = t["edge_layer"].repeat(B)
    out["batch"] = torch.arange(B).repeat_interleave(N)
    return out


def per_model(w):
    t = _template(w.widths, w.device)
    k = torch.tensor([w.k[0]] * (sum(w.widths) - w.widths[-1]) + [-1] * w.widths[-1])
    data = []
    for i in range(w.num_models):
        f = _fields(w[i].unsqueeze(), t, 1)
        data.append(Data(edge_index=t["edge_index"], edge_layer=t["edge_layer"], node_layer=t["node_layer"],
                         node_pos=t["node_pos"], node_role=t["node_role"], node_k=k, node_base_fun=k, **f))
    return Batch.from_data_list(data)


def bench(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-models", type=int, default=4096)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--per-model-reps", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out", "graph_build.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for widths in ([64, 16, 10], [2, 16, 16, 1]):
        w = random_kans(widths, args.num_models, grid=5, k=3, generator=torch.Generator().manual_seed(0))
        g, fl = kan_to_graph(w), floor(w)
        for key in ("x", "edge_attr", "edge_coef", "edge_scales", "edge_index", "batch"):
            assert torch.equal(g[key], fl[key]), key  # same output, else the comparison is void
        pm = per_model(w[: min(8, args.num_models)])
        assert torch.equal(pm.edge_attr, g.edge_attr[: pm.edge_attr.shape[0]])
        del g, fl, pm
        t_floor, tf = bench(lambda: floor(w), args.reps)
        t_ours, to = bench(lambda: kan_to_graph(w), args.reps)
        t_pm, tp = bench(lambda: per_model(w), args.per_model_reps)
        E = args.num_models * sum(a * b for a, b in zip(widths[:-1], widths[1:]))
        rows.append(dict(widths=widths, num_models=args.num_models, edges=E, floor_s=t_floor, ours_s=t_ours,
                         per_model_s=t_pm, ours_over_floor=t_ours / t_floor, per_model_over_floor=t_pm / t_floor,
                         raw=dict(floor=tf, ours=to, per_model=tp)))
    print(f"{'widths':>16} {'models':>6} {'edges':>9} {'floor s':>8} {'ours s':>8} {'per-model s':>11} "
          f"{'ours/floor':>10} {'per-model/floor':>15}")
    for r in rows:
        print(f"{str(r['widths']):>16} {r['num_models']:>6} {r['edges']:>9} {r['floor_s']:>8.3f} {r['ours_s']:>8.3f} "
              f"{r['per_model_s']:>11.3f} {r['ours_over_floor']:>10.2f} {r['per_model_over_floor']:>15.2f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(dict(threads=args.threads, reps=args.reps, rows=rows), fh, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
