"""How reproducible are the classifier zoo's labels?  A practical ceiling for the pruning and
accuracy-prediction targets, measured on the zoo's *test* members (labels only: no model is
trained or evaluated here, so the test split's predictions stay unread).

Both labels are measurements on a finite data sample, so part of each label is sampling noise
that no function of the weights predicts smoothly:

* **pruning masks** are pykan's attribution scores on the first ``prune_samples`` training
  images, thresholded at 0.03. We recompute them on a *disjoint* draw of the same size and on
  the whole training set and report how often the masks agree, how many edges sit near the
  threshold, and the mask accuracy of the exact scores after multiplicative log-normal noise
  (what a score predictor with that relative error reaches).
* **test accuracy** is measured on the held-out images. We measure it on two disjoint halves
  and report Kendall tau / R² between the halves, and the tau between the full-size label and
  itself with fresh binomial noise of the label's own size (the tau a predictor of the
  noise-free accuracy would reach, simulated).

    python benchmarks/label_ceiling.py [--zoo benchmarks/out/zoos/mnist5k-classifiers] [--md docs/label_ceiling.inc]
    python benchmarks/label_ceiling.py --zoo benchmarks/out/zoos/mnist5k-classifiers-fullprune \
        --compare benchmarks/out/zoos/mnist5k-classifiers --md docs/label_ceiling_fullprune.inc \
        --json benchmarks/out/label_ceiling_fullprune.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
from scipy.stats import kendalltau
from sklearn.metrics import r2_score

from wskan_ext.zoo import BuildConfig, Zoo, edge_attribution, evaluate
from wskan_ext.zoo.build import load_dataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import output_args, write_report  # noqa: E402


def _masks(w, x, thr):
    return torch.cat([(s > thr).flatten(1) for s in edge_attribution(w, x)], 1)


def pruning_rows(w, data, cfg, seed: int):
    s, thr = cfg.prune_samples, cfg.prune_threshold
    x = data.x_train.to(torch.float64)
    label = _masks(w, x[:s], thr)
    rows = [("label recomputed (same images)", (label == _masks(w, x[:s], thr)).double().mean().item())]
    if len(x) >= 2 * s:
        rows.append((f"disjoint draw of {s} training images", (label == _masks(w, x[s:2 * s], thr)).double().mean().item()))
    if s < len(x):
        rows.append((f"all {len(x)} training images", (label == _masks(w, x, thr)).double().mean().item()))
    else:  # the label uses every training image: no disjoint draw of its size exists; two halves
        h = len(x) // 2  # (each noisier than the label) bound its reproducibility from below
        rows.append((f"halves of {h} images vs each other", (_masks(w, x[:h], thr) == _masks(w, x[h:2 * h], thr))
                     .double().mean().item()))
    scores = torch.cat([e.flatten(1) for e in edge_attribution(w, x[:s])], 1)
    mask = torch.cat([m.flatten(1) for m in w.mask], 1) != 0
    sc = scores[mask.expand_as(scores)]
    near = {f: (sc / thr).log().abs().lt(np.log1p(f)).double().mean().item() for f in (0.05, 0.1, 0.2)}
    g = torch.Generator().manual_seed(seed)
    noisy = []
    for sig in (0.02, 0.05, 0.1, 0.2, 0.3):
        n = scores * torch.exp(sig * torch.randn(scores.shape, generator=g, dtype=scores.dtype))
        noisy.append((sig, ((n > thr) == (scores > thr)).double().mean().item()))
    return rows, near, noisy, label.double().mean().item()


def accuracy_rows(w, data, seed: int, reps: int = 200):
    xt, yt = data.x_test.to(torch.float64), data.y_test
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(yt), generator=g)
    a, b = perm[: len(yt) // 2], perm[len(yt) // 2:]
    full = evaluate(w, xt, yt)["acc"].numpy()
    acc_a = evaluate(w, xt[a], yt[a])["acc"].numpy()
    acc_b = evaluate(w, xt[b], yt[b])["acc"].numpy()
    rng = np.random.default_rng(seed)
    n = len(yt)
    sim = [kendalltau(full, rng.binomial(n, full) / n)[0] for _ in range(reps)]
    return {"halves_tau": kendalltau(acc_a, acc_b)[0], "halves_r2": r2_score(acc_a, acc_b),
            "sim_tau_mean": float(np.mean(sim)), "sim_tau_std": float(np.std(sim)),
            "n_test_images": n, "members": len(full)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--zoo", default=os.path.join(here, "out", "zoos", "mnist5k-classifiers"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare", help="a second zoo of the same runs (e.g. mnist5k-classifiers-fullprune): "
                                      "are the weights identical, and how often do the stored masks agree")
    output_args(ap, "label_ceiling")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    zoo = Zoo(a.zoo)
    cfg = BuildConfig(**zoo.manifest["config"])
    data = load_dataset(cfg)
    w = zoo.weights(split=a.split).map(lambda t: t.double())
    rows, near, noisy, kept = pruning_rows(w, data, cfg, a.seed)
    acc = accuracy_rows(w, data, a.seed)
    name = os.path.basename(os.path.normpath(a.zoo))
    cmd = "python benchmarks/label_ceiling.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [f"command: {cmd.strip()}", f"zoo: {name}, split {a.split!r}: {acc['members']} members", "",
             f"pruning masks ({kept:.3f} of the edges kept), agreement with the label:"]
    lines += [f"  {k:<40s} {v:.4f}" for k, v in rows]
    lines.append("  edges within ±5 / 10 / 20 % of the threshold: "
                 + " / ".join(f"{v:.3f}" for v in near.values()))
    lines.append("  mask accuracy of the exact scores times log-normal noise (sigma: accuracy): "
                 + ", ".join(f"{s}: {v:.4f}" for s, v in noisy))
    cmp = None
    if a.compare:
        other = Zoo(a.compare)
        w2 = other.weights(split=a.split).map(lambda t: t.double())
        same = all(torch.equal(p, q) for p, q in zip(w.tensors().values(), w2.tensors().values()))
        acc_diff = (zoo.labels(split=a.split)["test_acc"] - other.labels(split=a.split)["test_acc"]).abs()
        m1 = torch.cat([m.flatten(1) for m in zoo.labels(split=a.split)["prune_mask"]], 1)
        m2 = torch.cat([m.flatten(1) for m in other.labels(split=a.split)["prune_mask"]], 1)
        cmp = {"zoo": os.path.basename(os.path.normpath(a.compare)), "weights_identical": same,
               "prune_samples": BuildConfig(**other.manifest["config"]).prune_samples,
               "mask_agreement": (m1 == m2).double().mean().item(), "kept_fraction": m2.double().mean().item(),
               "test_acc_abs_diff_mean": acc_diff.mean().item(), "test_acc_abs_diff_max": acc_diff.max().item()}
        lines += ["", f"compared with {cmp['zoo']} (prune_samples {cmp['prune_samples']}), split {a.split!r}: "
                      f"weights identical: {same} (test accuracy differs by {cmp['test_acc_abs_diff_mean']:.4f} "
                      f"on average, {cmp['test_acc_abs_diff_max']:.4f} at most); stored masks agree on {cmp['mask_agreement']:.4f} of the edges "
                      f"({cmp['kept_fraction']:.3f} kept there)"]
    lines += ["", f"test accuracy ({acc['n_test_images']} held-out images):",
              f"  Kendall tau between two disjoint halves      {acc['halves_tau']:.4f}",
              f"  R² between two disjoint halves                {acc['halves_r2']:.4f}",
              f"  tau(label, label with fresh binomial noise)   {acc['sim_tau_mean']:.4f} ± {acc['sim_tau_std']:.4f}",
              "", f"wall time {time.time() - t0:.0f} s, {a.threads} thread(s)"]
    text = "\n".join(lines)
    write_report(a, text, {"zoo": name, "split": a.split, "pruning_agreement": dict(rows), "near_threshold": near,
                           "noisy_score_accuracy": dict(noisy), "kept_fraction": kept, "accuracy": acc,
                           "compare": cmp})
    return 0


if __name__ == "__main__":
    sys.exit(main())
