"""Where the pruning-mask errors are: validation accuracy per KAN layer, per input neuron of
the first layer and by the model's confidence, for one or more meta-models (seed 0, the
same budget as ``benchmarks/attempts.py``; the test split is not read).

    python benchmarks/pruning_errors.py ZOO MODEL[:JSON_CONFIG] [MODEL[:JSON_CONFIG] ...]
    python benchmarks/pruning_errors.py benchmarks/out/zoos/mnist5k-classifiers-fullprune 'wskan:{}'

Prints, per model, the validation accuracy of the edges of each KAN layer with the share of
kept edges there, the accuracy per input neuron of layer 0, and the accuracy of the edges
whose ``|logit|`` exceeds 0.5, 1, 2 and 4 with their share; writes the figures as JSON
(``--out``).
"""

from __future__ import annotations

import os
import sys

import torch

from wskan_ext.tasks.definitions import load_split
from wskan_ext.tasks.train import predict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attempts import fit_spec, spec_parser, write_json  # noqa: E402  (the same budget and split of a spec's JSON as attempts.py)

MARGINS = (0.5, 1.0, 2.0, 4.0)


def layer_errors(spec: str, zoo: str, seed: int = 0) -> dict:
    """Train ``spec`` on the pruning task (validation for early stopping) and return its
    validation accuracy per KAN layer, per first-layer input neuron and per confidence."""
    res = fit_spec(zoo, "pruning", spec, seed)
    mm, net = res["meta_model"], res["net"]
    val = load_split(zoo, "pruning", "val")
    enc = mm.encode(val)
    logit = predict(mm, net, enc).reshape(len(val), -1)  # (B, E)
    y = enc["targets"].reshape(logit.shape)
    right = ((logit > 0).to(y.dtype) == y).double()
    widths = list(val.weights.widths)
    layers, off = [], 0
    for n, m in zip(widths[:-1], widths[1:]):
        sl = slice(off, off + n * m)
        off += n * m
        layers.append({"edges": n * m, "accuracy": float(right[:, sl].mean()), "kept": float(y[:, sl].double().mean())})
    n0, n1 = widths[0], widths[1]
    per_input = right[:, : n0 * n1].reshape(-1, n0, n1).mean((0, 2)).tolist()
    conf = [{"margin": t, "share": float((logit.abs() > t).double().mean()),
             "accuracy": float(right[logit.abs() > t].mean())} for t in MARGINS]
    return {"spec": spec, "accuracy": float(right.mean()), "layers": layers, "input_neurons": per_input,
            "confidence": conf}


def report(r: dict) -> None:
    """Print one :func:`layer_errors` result."""
    print(f"{r['spec']}: validation accuracy {r['accuracy']:.4f}")
    for l, d in enumerate(r["layers"]):
        print(f"  layer {l}: {d['edges']} edges, accuracy {d['accuracy']:.4f}, kept {d['kept']:.3f}")
    print("  layer 0 per input neuron: " + " ".join(f"{v:.3f}" for v in r["input_neurons"]))
    for c in r["confidence"]:
        print(f"  |logit| > {c['margin']}: {c['share']:.3f} of the edges, accuracy {c['accuracy']:.4f}")


def main(argv=None) -> None:
    args = spec_parser(__doc__, "pruning_errors").parse_args(argv)
    torch.set_num_threads(1)
    out = {"zoo": args.zoo, "command": "python " + " ".join(sys.argv), "rows": []}
    for spec in args.specs:
        out["rows"].append(layer_errors(spec, args.zoo))
        report(out["rows"][-1])
    write_json(args.out, out)


if __name__ == "__main__":
    main()
