"""Per-run details of result tables written by ``benchmarks/results.py``: for every final
run (model, seed), its best validation epoch, validation and test metrics and training time,
which the result tables summarise as mean ± std.

    python benchmarks/run_details.py RESULTS.json [RESULTS.json ...] [--models wskan nfn] [--digits 5] [--md PATH]

One table per JSON (and per zoo / task in it), with the JSON's epoch cap, and each model's test
mean ± std over its seeds (population std, as the result tables) with ``--digits`` decimals.
Epochs are counted from 1 (``best_epoch + 1`` of the JSON). Configuration-search runs are not
listed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys


def tables(path: str, models=None, digits: int = 4) -> str:
    d = json.load(open(path))
    epochs = d["budget"]["epochs"]
    lines = []
    keys = sorted({(r["zoo"], r["task"]) for r in d["runs"]})
    for zoo, task in keys:
        runs = [r for r in d["runs"] if (r["zoo"], r["task"]) == (zoo, task) and r["table"] == "main"
                and (models is None or r["model"] in models)]
        if not runs:
            continue
        metrics = list(runs[0]["test"])
        lines.append(f"{path}: {zoo} / {task}, epoch cap {epochs}, precision {d['budget'].get('precision', 'float32')}")
        head = f"{'model':14s} {'seed':>4s} {'best epoch':>10s} " + " ".join(
            f"{'val ' + m:>14s}" for m in metrics) + " " + " ".join(f"{'test ' + m:>14s}" for m in metrics) + f" {'train s':>8s}"
        lines += [head, "-" * len(head)]
        for r in runs:
            lines.append(f"{r['label']:14s} {r['seed']:4d} {r['best_epoch'] + 1:>5d} of {epochs:<2d} "
                         + " ".join(f"{r['val'][m]:14.{digits}f}" for m in metrics) + " "
                         + " ".join(f"{r['test'][m]:14.{digits}f}" for m in metrics) + f" {r['train_time_s']:8.1f}")
        lines.append("")
        for label in dict.fromkeys(r["label"] for r in runs):
            vals = {m: [r["test"][m] for r in runs if r["label"] == label] for m in metrics}
            lines.append(f"{label:14s} test mean ± std over {len(vals[metrics[0]])} seed(s): " + ", ".join(
                f"{m} {statistics.mean(v):.{digits}f} ± {statistics.pstdev(v):.{digits}f}" for m, v in vals.items()))
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", help="JSON files written by benchmarks/results.py --out")
    p.add_argument("--models", nargs="+", help="only these models (default: all)")
    p.add_argument("--digits", type=int, default=4, help="decimals of the metrics (default 4)")
    p.add_argument("--md", help="also write the printed tables here (a docs include)")
    a = p.parse_args(argv)
    cmd = "python benchmarks/run_details.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = f"command: {cmd}\n\n" + "\n".join(tables(path, a.models, a.digits) for path in a.results)
    print(text)
    if a.md:
        with open(a.md, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
