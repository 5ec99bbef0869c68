r"""Meta-learning tasks on KAN zoos: what is predicted, at which level, from which labels.

=================  ===========  ==============  ===================  ==========================
task               level        kind            zoo labels           metrics
=================  ===========  ==============  ===================  ==========================
``accuracy``       graph        regression (1)  ``test_acc``         MSE, R², Kendall τ
``pruning``        edge         binary          ``prune_mask``       accuracy, F1
``inr_class``      graph        classification  ``class``            accuracy, macro F1
``sine``           graph        regression (2)  ``a``, ``b``         MSE, R²
=================  ===========  ==============  ===================  ==========================

A *graph-level* task predicts one value (vector) per KAN and must be invariant to hidden
neuron permutations; an *edge-level* task predicts one value per edge function
``(l, i, j)``, in the edge order of the KAN-graph layout contract (layer by layer,
source-major), and must be equivariant. :func:`load_split` checks, before any training,
that the zoo has the labels the task needs and that the split is not empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

from ..kan.weights import KANWeights

__all__ = ["TaskSpec", "TASKS", "get_task", "SplitData", "load_split", "load_splits", "edge_targets"]


@dataclass(frozen=True)
class TaskSpec:
    """A meta-learning task.

    Attributes:
        name: registry key.
        level: ``"graph"`` (one prediction per KAN) or ``"edge"`` (one per edge function).
        kind: ``"regression"``, ``"binary"`` (one logit) or ``"classification"`` (softmax).
        labels: zoo label names the targets are read from (``prune_mask`` is the per-layer
            pruning mask of :func:`wskan_ext.zoo.pruning_masks`).
        metrics: names of ``wskan_ext.tasks.metrics`` reported for this task.
        primary: the validation metric used for early stopping; ``higher_is_better`` its
            direction.
        description: one line for tables and ``--help``.
    """

    name: str
    level: str
    kind: str
    labels: Tuple[str, ...]
    metrics: Tuple[str, ...]
    primary: str
    higher_is_better: bool
    description: str

    def out_channels(self, num_classes: Optional[int] = None) -> int:
        """Size of the model head: ``len(labels)`` (regression), 1 (binary) or the
        number of classes."""
        if self.kind == "regression":
            return len(self.labels)
        if self.kind == "binary":
            return 1
        if not num_classes or num_classes < 2:
            raise ValueError(f"task {self.name!r}: classification needs num_classes >= 2, got {num_classes}")
        return int(num_classes)


TASKS: Dict[str, TaskSpec] = {
    "accuracy": TaskSpec("accuracy", "graph", "regression", ("test_acc",), ("mse", "r2", "kendall_tau"),
                         "mse", False, "predict a classifier KAN's test accuracy from its weights"),
    "pruning": TaskSpec("pruning", "edge", "binary", ("prune_mask",), ("accuracy", "f1"),
                        "accuracy", True, "predict which edges pykan's prune_edge keeps"),
    "inr_class": TaskSpec("inr_class", "graph", "classification", ("class",), ("accuracy", "f1_macro"),
                          "accuracy", True, "classify the image an INR KAN represents"),
    "sine": TaskSpec("sine", "graph", "regression", ("a", "b"), ("mse", "r2"),
                     "mse", False, "regress (a, b) of the sine wave a*sin(b*x) a KAN fits"),
}


def get_task(name) -> TaskSpec:
    """The :class:`TaskSpec` called ``name`` (or ``name`` itself if it is one)."""
    if isinstance(name, TaskSpec):
        return name
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
    return TASKS[name]


@dataclass
class SplitData:
    """One split of a zoo, ready for a task.

    Attributes:
        weights: the split's KANs, stacked ``(B, ...)``.
        targets: ``(B, len(labels))`` float (regression), ``(B,)`` long class ids
            (classification) or ``(B, E)`` float 0/1 in edge order (edge-level ``binary``).
        ids: zoo member ids ``(B,)``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        source: the zoo directory the split was read from (``None`` if built otherwise);
            meta-models that need the zoo's dataset (probe inputs) read it from there.
    """

    weights: KANWeights
    targets: torch.Tensor
    ids: torch.Tensor
    split: str
    source: Optional[str] = None

    def __len__(self) -> int:
        return self.targets.shape[0]


def edge_targets(masks: List[torch.Tensor]) -> torch.Tensor:
    """Per-layer edge labels ``(B, n_l, n_{l+1})`` -> ``(B, E)`` in KAN-graph edge order
    (layer by layer, edge ``(i, j)`` of layer ``l`` at ``i * n_{l+1} + j``)."""
    return torch.cat([m.reshape(m.shape[0], -1) for m in masks], dim=1)


def _check_labels(zoo, task: TaskSpec) -> None:
    rows = zoo.metadata
    if not rows:
        raise ValueError(f"zoo {zoo.root}: has no members")
    for name in task.labels:
        if name == "prune_mask":
            continue  # stored as tensors in every shard by the zoo builder
        have = sorted({k for r in rows for k in (r.get("labels") or {})})
        if name not in have:
            raise ValueError(
                f"zoo {zoo.root} has no label {name!r}, which task {task.name!r} needs; it has labels {have} "
                f"(task {task.name!r}: {task.description}; build a matching zoo, e.g. "
                f"{_zoo_hint(task)})"
            )


def _zoo_hint(task: TaskSpec) -> str:
    return {"accuracy": "--dataset digits", "pruning": "any dataset", "inr_class": "--dataset digits_inr",
            "sine": "--dataset sine"}[task.name]


def load_split(zoo, task, split: str) -> SplitData:
    """Read ``split`` of ``zoo`` (a :class:`wskan_ext.zoo.Zoo` or a directory) for ``task``.

    Raises:
        ValueError: the zoo lacks a label the task needs, the split is empty, or a target
            is missing/non-finite for some member (naming the member ids).
    """
    from ..zoo.store import Zoo

    task = get_task(task)
    if not isinstance(zoo, Zoo):
        zoo = Zoo(zoo)
    _check_labels(zoo, task)
    ids = zoo.ids(split)
    if not ids:
        counts = {s: len(zoo.ids(s)) for s in Zoo.SPLITS}
        raise ValueError(f"zoo {zoo.root}: split {split!r} is empty (members per split, diverged excluded: "
                         f"{counts}); build a larger zoo or change split_fractions")
    w, labels, rows = zoo.load(ids=ids)
    if task.level == "edge":
        if "prune_mask" not in labels or len(labels["prune_mask"]) != w.depth:
            raise ValueError(f"zoo {zoo.root}: no per-layer prune_mask tensors, which task {task.name!r} needs")
        y = edge_targets(labels["prune_mask"]).to(torch.float32)
    else:
        cols = []
        for name in task.labels:
            if name not in labels:
                raise ValueError(f"zoo {zoo.root}: split {split!r} has no label tensor {name!r} (task {task.name!r})")
            cols.append(labels[name].to(torch.float64))
        y = torch.stack(cols, dim=1)
        bad = ~torch.isfinite(y).all(1)
        if bool(bad.any()):
            bad_ids = [r["id"] for r, b in zip(rows, bad.tolist()) if b][:10]
            raise ValueError(f"zoo {zoo.root}: split {split!r} has non-finite {list(task.labels)} for members {bad_ids}")
        if task.kind == "classification":
            y = y[:, 0].round().long()
        else:
            y = y.to(torch.float32)
    return SplitData(w, y, torch.tensor([r["id"] for r in rows], dtype=torch.long), split, str(zoo.root))


def load_splits(zoo, task, extra_train=()) -> Dict[str, SplitData]:
    """``{"train", "val", "test"}`` -> :class:`SplitData` (all checked before returning);
    with ``extra_train`` (zoos), the train split is :func:`load_training_split`'s."""
    held = {s: load_split(zoo, task, s) for s in ("val", "test")}
    return {"train": load_training_split(zoo, task, extra_train, held_out=list(held.values())), **held}


def load_training_split(zoo, task, extra=(), held_out: Optional[List[SplitData]] = None) -> SplitData:
    """``zoo``'s train split, plus *every* member (all three splits, diverged excluded) of
    each zoo in ``extra``: more training KANs from other builds of the same kind, while
    validation and test stay ``zoo``'s own.

    Each extra zoo must be a *different* build (another seed or configuration: its config
    fingerprint differs from ``zoo``'s and from the other extras'), and no extra member may
    equal (bit for bit, spline coefficients of every layer) one of ``zoo``'s validation or
    test KANs -- a zoo built with the same seed and a different size shares its first runs;
    it must hold the task's labels and
    KANs of ``zoo``'s architecture, and be a zoo of the same kind (manifest ``task``).
    The result keeps each member's id in its own zoo (ids of different zoos may repeat)
    and ``source`` ``zoo``'s directory. ``held_out``: ``zoo``'s validation and test splits
    when the caller has them already (``load_splits``), so they are not read twice.

    Raises:
        ValueError: an extra zoo repeats a build, is of another kind, lacks the labels,
            or has another architecture (naming the zoo).
    """
    from ..kan.weights import KANWeights
    from ..zoo.store import Zoo

    task = get_task(task)
    zoo = zoo if isinstance(zoo, Zoo) else Zoo(zoo)
    train = load_split(zoo, task, "train")
    if not extra:
        return train
    seen = {zoo.fingerprint: zoo.root}
    if held_out is None:
        held_out = [load_split(zoo, task, s) for s in ("val", "test") if zoo.ids(s)]
    held = {d: (h.split, i) for h in held_out for d, i in zip(_member_digests(h.weights), h.ids.tolist())}
    parts = [train]
    for e in extra:
        e = e if isinstance(e, Zoo) else Zoo(e)
        if e.fingerprint in seen:
            raise ValueError(f"extra training zoo {e.root}: the same build (config fingerprint) as "
                             f"{seen[e.fingerprint]}; "
                             "its members would repeat that zoo's KANs, validation and test included")
        seen[e.fingerprint] = e.root
        if e.manifest.get("task") != zoo.manifest.get("task"):
            raise ValueError(f"extra training zoo {e.root}: a {e.manifest.get('task')!r} zoo, "
                             f"{zoo.root} is a {zoo.manifest.get('task')!r} zoo")
        for s in ("train", "val", "test"):
            if not e.ids(s):
                continue
            part = load_split(e, task, s)
            if not part.weights.same_architecture(train.weights) or part.targets.shape[1:] != train.targets.shape[1:]:
                raise ValueError(f"extra training zoo {e.root}: KANs of architecture {part.weights.architecture}, "
                                 f"{zoo.root} has {train.weights.architecture}")
            hits = [(i, held[d]) for i, d in zip(part.ids.tolist(), _member_digests(part.weights)) if d in held]
            if hits:
                (i, (hs, hi)), n = hits[0], len(hits)
                raise ValueError(f"extra training zoo {e.root}: {n} member(s) equal {zoo.root}'s validation/test "
                                 f"KANs (member {i} of its {s!r} split is {hs!r} member {hi}); the same runs "
                                 "cannot be trained on and held out")
            parts.append(part)
    return SplitData(KANWeights.stack([p.weights for p in parts]), torch.cat([p.targets for p in parts]),
                     torch.cat([p.ids for p in parts]), "train", train.source)


def _member_digests(weights: KANWeights) -> List[bytes]:
    """One digest per KAN of a batch: the bytes of its spline coefficients, every layer."""
    import hashlib

    flat = torch.cat([c.reshape(c.shape[0], -1).to(torch.float64) for c in weights.coef], dim=1).contiguous()
    return [hashlib.blake2b(row.numpy().tobytes(), digest_size=16).digest() for row in flat]
