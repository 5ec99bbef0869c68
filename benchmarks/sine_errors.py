"""Where the sine errors are: validation error per target and per frequency band, and how far
the INRs' hidden pre-activations leave the grid range, for one or more meta-models (seed 0,
the same budget as ``benchmarks/attempts.py``; the test split is not read).

    python benchmarks/sine_errors.py ZOO MODEL[:JSON_CONFIG] [MODEL[:JSON_CONFIG] ...]
    python benchmarks/sine_errors.py benchmarks/out/zoos/sine 'wskan:{"batch_size": 16}' 'nfn:{"hidden": 128, "batch_size": 16}'

Prints, per model, the validation mse of ``a`` and ``b`` (label space) and the mse of ``b``
and ``a`` within bands of ``b``; then, per band, the share of hidden neurons of the *training*
INRs whose pre-activation over the input grid range leaves ``[-1, 1]`` (from the weights:
the first layer's edge functions on 200 points). Writes the figures as JSON (``--out``).
"""

from __future__ import annotations

import os
import sys

import torch

from wskan_ext.tasks.definitions import load_split
from wskan_ext.tasks.train import predict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attempts import fit_spec, spec_parser, write_json  # noqa: E402  (the same budget and split of a spec's JSON as attempts.py)

BANDS = ((1.0, 2.5), (2.5, 4.0), (4.0, 5.0), (5.0, 6.01))


def band_errors(spec: str, zoo: str, seed: int = 0) -> dict:
    """Train ``spec`` on the sine task (validation for early stopping) and return its
    validation errors per target and per band of ``b``."""
    res = fit_spec(zoo, "sine", spec, seed)
    mm, net = res["meta_model"], res["net"]
    train, val = load_split(zoo, "sine", "train"), load_split(zoo, "sine", "val")
    enc = mm.encode(val)
    mean, std = train.targets.mean(0), train.targets.std(0, unbiased=False).clamp_min(1e-8)  # as fit() does
    err = (predict(mm, net, enc)[:, :2] * std + mean - enc["targets"]) ** 2  # (B, 2): a, b (aux outputs dropped)
    b = enc["targets"][:, 1]
    bands = []
    for lo, hi in BANDS:
        sel = (b >= lo) & (b < hi)
        bands.append({"band": [lo, hi], "n": int(sel.sum()), "mse_b": float(err[sel, 1].mean()),
                      "mse_a": float(err[sel, 0].mean())})
    return {"spec": spec, "mse_a": float(err[:, 0].mean()), "mse_b": float(err[:, 1].mean()), "bands": bands}


def hidden_reach(zoo: str) -> list:
    """Per band of ``b``: share of the training INRs' hidden neurons whose pre-activation
    (the first layer's edge function over the input grid range, 200 points; one input)
    leaves ``[-1, 1]``."""
    train = load_split(zoo, "sine", "train")
    w = train.weights
    g = w.grid[0][:, 0]  # (B, K): the input neuron's knots
    k = w.k[0]
    pts = g[:, k:k + 1] + (g[:, -1 - k:g.shape[-1] - k] - g[:, k:k + 1]) * torch.linspace(0, 1, 200, dtype=w.dtype)
    pre = w.edge_functions(0, pts.unsqueeze(-1))[:, :, 0, :]  # (B, 200, n_hidden)
    reach = pre.abs().amax(1)
    b = train.targets[:, 1]
    out = []
    for lo, hi in BANDS:
        sel = (b >= lo) & (b < hi)
        out.append({"band": [lo, hi], "n_models": int(sel.sum()), "share_beyond_1": float((reach[sel] > 1).float().mean())})
    return out


def main(argv=None):
    a = spec_parser(__doc__, "sine_errors").parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for spec in a.specs:
        r = band_errors(spec, a.zoo)
        rows.append(r)
        print(f"{spec}: validation mse a {r['mse_a']:.5f}  b {r['mse_b']:.4f}")
        for band in r["bands"]:
            lo, hi = band["band"]
            print(f"  b in [{lo}, {hi}): n={band['n']:3d}  mse_b {band['mse_b']:.4f}  mse_a {band['mse_a']:.5f}")
    reach = hidden_reach(a.zoo)
    print("hidden neurons of the training INRs whose pre-activation leaves [-1, 1]:")
    for band in reach:
        lo, hi = band["band"]
        print(f"  b in [{lo}, {hi}): {band['n_models']:4d} INRs  {100 * band['share_beyond_1']:.0f} %")
    write_json(a.out, {"zoo": a.zoo, "models": rows, "reach": reach})


if __name__ == "__main__":
    main()
