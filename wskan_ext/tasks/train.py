r"""Meta-training: fit a meta-model on a zoo's train split, early-stop on val, report test.

Objective (mean over every scalar prediction of the global mini-batch :math:`\mathcal B`):

.. math::
    \mathcal L = \frac{1}{|\mathcal B|\,c} \sum_{b \in \mathcal B} \sum_{o=1}^{c}
    \ell\big(f_\theta(W_b)_o, y_{b,o}\big)

with :math:`\ell` the squared error on standardised targets (regression), binary
cross-entropy on logits (edge masks) or cross-entropy (classes). Adam(W), fixed
``epochs`` with early stopping: after every epoch the task's primary validation metric is
computed and the best weights are kept; training stops after ``patience`` epochs without
improvement (or when ``max_time`` seconds are spent).

**DDP.** Under ``torchrun`` (``WORLD_SIZE > 1``) the same code runs data-parallel: a
gloo (CPU) / nccl (CUDA) process group is created if none exists, the network is wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`, and every global mini-batch (the same
seeded permutation on all ranks) is sharded ``idx[rank::world]`` like
:class:`~torch.utils.data.DistributedSampler`. Each rank's loss is its *sum* times
``world / global_count``, so the averaged gradient equals the single-process gradient of the
same global batch: 1 and N processes follow the same trajectory up to floating-point
summation order (``mlp_augment`` draws its random permutations per rank, so there the
trajectories differ). Validation runs on every rank (identical weights -> identical early
stopping); rank 0 writes the outputs.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import functools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .definitions import SplitData, get_task, load_splits
from .metrics import compute_metrics
from .models import DEFAULTS, build_meta_model, check_compatible

__all__ = ["TrainConfig", "fit", "predict", "dist_info", "validate_model_config", "MODEL_BOUNDS"]


def _int_in(lo: int, hi: Optional[int] = None):
    ok = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)  # noqa: E731
    return ok, f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"


def _real(ok, bound: str):
    return (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and ok(v)), bound


def _aggr_bound():
    from .models import _AGGRS

    return (lambda v: v in _AGGRS), f"one of {sorted(_AGGRS)}"


#: Allowed values of every model hyperparameter (``wskan_ext.tasks.models.DEFAULTS``): a
#: test and the bound stated in errors. The size bounds also keep ``evaluate`` from building
#: an absurd network from an edited ``metrics.json``.
MODEL_BOUNDS = {
    "hidden": _int_in(1, 4096),
    "layers": _int_in(1, 64),
    "num_points": _int_in(1, 1024),
    "lookup": _int_in(0, 256),
    "probe": _int_in(2, 16384),
    # None (WS-KAN's default): 0.1 for classification tasks, 0 for regression
    "dropout": (lambda v, _ok=_real(lambda v: 0 <= v < 1, "")[0]: v is None or _ok(v),
                "a number in [0, 1), or null (0.1 for classification, 0 for regression)"),
    "lr": _real(lambda v: v > 0, "a finite number > 0"),
    "weight_decay": _real(lambda v: v >= 0, "a finite number >= 0"),
    "epochs": _int_in(1),
    "batch_size": _int_in(1),
    "patience": _int_in(1),
    "io": ((lambda v: isinstance(v, bool)), "true or false"),
    "log_scale": ((lambda v: isinstance(v, bool)), "true or false"),
    "shared": ((lambda v: isinstance(v, bool)), "true or false"),
    "context": ((lambda v: isinstance(v, bool)), "true or false"),
    "layernorm": ((lambda v: isinstance(v, bool)), "true or false"),
    "typed": ((lambda v: isinstance(v, bool)), "true or false"),
    "product": ((lambda v: isinstance(v, bool)), "true or false"),
    "bilinear": ((lambda v: isinstance(v, bool)), "true or false"),
    "attr_head": ((lambda v: isinstance(v, bool) or v == "residual"), "true, false or 'residual'"),
    "value_range": ((lambda v: v in ("grid", "support")), "'grid' or 'support'"),
    "edge_features": ((lambda v: v in ("both", "coef", "values")), "'both', 'coef' or 'values'"),
    "norm": ((lambda v: v in ("global", "layer")), "'global' or 'layer'"),
    "edge_hidden": (lambda v, _ok=_int_in(1, 4096)[0]: v is None or _ok(v),
                    "an integer in [1, 4096], or null (the same as hidden)"),
}


def validate_model_config(model: str, config, where: str = "model config") -> None:
    """Check model hyperparameters ``config`` of meta-model ``model`` before any work:
    every key must be one of the model's (``DEFAULTS[model]``; ``epochs``, ``batch_size``
    and ``patience`` are also accepted) and every value within ``MODEL_BOUNDS``
    (``probe``: ``0`` switches WS-KAN's probes off; ``aggr``: ``sum`` or ``pna``).
    ``ValueError`` naming ``where``, the key, the bound and the value otherwise."""
    if model not in DEFAULTS:
        raise ValueError(f"{where}: unknown model {model!r}; choose from {list(DEFAULTS)}")
    if not isinstance(config, dict):
        raise ValueError(f"{where}: expected an object of hyperparameters, got {type(config).__name__}")
    unknown = sorted(set(config) - set(DEFAULTS[model]) - {"epochs", "batch_size", "patience"})
    if unknown:
        raise ValueError(f"{where}: model {model!r}: unknown config keys {unknown}; known {sorted(DEFAULTS[model])}")
    for key, v in config.items():
        if key == "probe" and model == "wskan" and v == 0 and not isinstance(v, bool):
            continue
        ok, bound = _aggr_bound() if key == "aggr" else MODEL_BOUNDS[key]
        if key == "probe" and model == "wskan":
            bound = f"0 (no probes) or {bound}"
        if not ok(v):
            raise ValueError(f"{where}: {key}={v!r} is not allowed: {key} of model {model!r} must be {bound}")


_FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "patience": "--patience", "lr": "--lr",
          "weight_decay": "--weight-decay", "seed": "--seed", "max_time": "--max-time",
          "rank_weight": "--rank-weight", "rank_temperature": "--rank-temperature", "ema": "--ema",
          "aux_points": "--aux-points", "aux_weight": "--aux-weight", "loss_units": "--loss-units",
          "aux_task_weight": "--aux-task-weight", "warmup": "--warmup"}


#: ``TrainConfig.aux_task`` values: off, or an edge-level binary task whose labels join training.
AUX_TASKS = (None, "pruning")


@dataclass
class TrainConfig:
    r"""Meta-training settings (``model`` holds model hyperparameters, see
    ``wskan_ext.tasks.models.DEFAULTS``; ``lr``/``weight_decay`` default to the model's;
    ``warmup``: the fraction of the ``epochs``' steps over which the learning rate first rises
    linearly from 0 (``0``: none; the schedule then runs over the remaining steps);
    ``schedule``: ``"cosine"`` decays the learning rate to 0 over ``epochs`` per step, or
    ``"constant"``; ``precision``: ``"float32"``, or ``"bf16"`` for the forward passes under
    ``torch.autocast`` with bfloat16, parameters and optimiser state staying float32: about
    1.9x faster WS-KAN epochs on a CPU with bf16 matmuls, see docs/benchmarks.rst);
    ``augment``: ``None``, or ``"odd"`` to add to the *training* split, for every KAN, the
    exact weight-space copy computing ``x -> -f(-x)``
    (:func:`~wskan_ext.kan.reflect_input` on every input, then
    :func:`~wskan_ext.kan.negate_output`) with the same label -- label-preserving for odd
    target functions, so only the ``sine`` task accepts it; or ``"logits"`` to add, for every
    classifier KAN, a copy whose logits are rescaled by a random :math:`a > 0` and share a random
    added function of the last hidden layer (:func:`~wskan_ext.kan.mix_logits`, drawn from
    ``seed``; see ``LOGIT_SCALE``): every prediction, hence the test accuracy, is unchanged, so
    only the ``accuracy`` task accepts it. Every model then trains on the same doubled split. Validated on construction (``ValueError`` naming the field, its ``wskan train`` flag and
    the bound); ``rank_weight``: ``0`` (off), or the weight :math:`\lambda` of a soft
    Kendall-:math:`\tau` term added to the MSE of *graph-level regression* tasks (accuracy,
    sine): :math:`\lambda \cdot \operatorname{mean}_{i \ne j,\, y_i \ne y_j}
    \sigma(-(o_i - o_j)\operatorname{sign}(y_i - y_j) / T)` over the pairs of a batch, per
    output column, with temperature ``rank_temperature`` :math:`T` (in standardised target
    units): as :math:`T \to 0` it is the batch's fraction of discordant pairs,
    :math:`(1 - \tau) / 2`; a budget setting that every model gets alike. ``ema``: ``0``
    (off), or the decay :math:`\beta \in (0, 1)` of an exponential moving average of the
    weights, :math:`\bar\theta_{t+1} = \beta\,\bar\theta_t + (1 - \beta)\,\theta_{t+1}`
    after every optimiser step (:class:`torch.optim.swa_utils.AveragedModel`, buffers
    included): validation, early stopping and the returned network then use the averaged
    weights -- a training setting, like ``rank_weight``, that every model gets alike
    (horizon about :math:`1 / (1 - \beta)` steps). ``aux_points``: ``0`` (off), or the number
    ``P`` of fixed input points at which the meta-model also learns to predict each training
    KAN's own outputs, computed from its weights (:mod:`wskan_ext.tasks.auxiliary`; graph-level
    regression tasks; the extra outputs are never used for validation, test or metrics, so
    the meta-model still sees only weights), weighted by ``aux_weight`` -- a training setting
    every trainable model gets alike. ``loss_units``: ``"standardised"`` (each regression target
    standardised on the training split, so every target weighs alike, as R² does) or ``"label"``
    (target :math:`o` weighted by :math:`\sigma_o^2 / \overline{\sigma^2}`: the squared errors in
    label units, the scale of the ``mse`` metric, up to one constant) -- a training setting every
    model gets alike. ``aux_task``: ``None`` (off), or ``"pruning"``: a graph-level task also
    learns the zoo's pruning masks of its *training* KANs (per-edge labels, binary
    cross-entropy through an extra edge head, weighted by ``aux_task_weight``); validation,
    test and the metrics use the task's own output only, so prediction still reads the
    weights alone -- multi-task training, for the models with an edge head (``wskan``,
    ``nfn``). ``model`` is checked against the model by ``validate_model_config`` when
    :func:`fit` starts."""

    epochs: int = 100
    batch_size: int = 32
    patience: int = 20
    lr: Optional[float] = None
    weight_decay: Optional[float] = None
    seed: int = 0
    max_time: Optional[float] = None
    schedule: str = "cosine"
    warmup: float = 0.0
    precision: str = "float32"
    augment: Optional[str] = None
    rank_weight: float = 0.0
    rank_temperature: float = 0.1
    ema: float = 0.0
    aux_points: int = 0
    aux_weight: float = 1.0
    loss_units: str = "standardised"
    aux_task: Optional[str] = None
    aux_task_weight: float = 1.0
    eval_batch_size: int = 256
    progress: bool = True
    model: Dict = field(default_factory=dict)

    def __post_init__(self):
        checks = {
            "epochs": _int_in(1), "batch_size": _int_in(1), "patience": _int_in(1), "eval_batch_size": _int_in(1),
            "seed": _int_in(0, 2 ** 32 - 1),
            "lr": _real(lambda v: v > 0, "a finite number > 0"),
            "weight_decay": _real(lambda v: v >= 0, "a finite number >= 0"),
            "max_time": _real(lambda v: v > 0, "a finite number of seconds > 0"),
            "rank_weight": _real(lambda v: v >= 0, "a finite number >= 0"),
            "rank_temperature": _real(lambda v: v > 0, "a finite number > 0"),
            "ema": _real(lambda v: 0 <= v < 1, "0 (off) or a decay in (0, 1)"),
            "aux_points": _int_in(0, 4096),
            "aux_weight": _real(lambda v: v > 0, "a finite number > 0"),
            "aux_task_weight": _real(lambda v: v > 0, "a finite number > 0"),
            "warmup": _real(lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
        }
        for name, (ok, bound) in checks.items():
            v = getattr(self, name)
            if v is None and name in ("lr", "weight_decay", "max_time"):
                continue
            if not ok(v):
                flag = f" ({_FLAGS[name]})" if name in _FLAGS else ""
                raise ValueError(f"train config: {name}{flag} must be {bound}, got {v!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"train config: schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.precision not in ("float32", "bf16"):
            raise ValueError(
                f"train config: precision (--precision) must be 'float32' or 'bf16', got {self.precision!r}")
        if self.loss_units not in ("standardised", "label"):
            raise ValueError(f"train config: loss_units (--loss-units) must be 'standardised' or 'label', "
                             f"got {self.loss_units!r}")
        if self.augment not in (None, "odd", "logits"):
            raise ValueError(f"train config: augment (--augment) must be null, 'odd' or 'logits', got {self.augment!r}")
        if self.aux_task not in AUX_TASKS:
            raise ValueError(f"train config: aux_task (--aux-task) must be one of {list(AUX_TASKS)}, "
                             f"got {self.aux_task!r}")
        if not isinstance(self.model, dict):
            raise ValueError(f"train config: model must be a dict of hyperparameters, got {type(self.model).__name__}")


def lr_factor(step: int, total: int, warmup: float = 0.0, schedule: str = "cosine") -> float:
    """The learning-rate multiplier of optimiser step ``step`` out of ``total``: a linear rise
    from ``1 / (W + 1)`` to 1 over the first ``W = int(warmup * total)`` steps, then
    ``schedule`` over the rest -- ``"cosine"`` (half a cosine from 1 to 0, held at 0 after
    ``total``) or ``"constant"`` (1)."""
    warm = int(warmup * total)
    if step < warm:
        return (step + 1) / (warm + 1)
    if schedule == "constant":
        return 1.0
    span = max(1, total - warm)  # with no warm-up: the same operations as before warm-up existed
    return 0.5 * (1 + math.cos(math.pi * min(step - warm, span) / span))


def dist_info(create: bool = True):
    """``(dist_module_or_None, rank, world, created)``; creates the process group under
    ``torchrun`` when ``create`` (gloo on CPU)."""
    import torch.distributed as dist

    created = False
    if create and int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        created = True
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist, dist.get_rank(), dist.get_world_size(), created
    return None, 0, 1, created


def _loss(kind: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed loss over all scalar predictions."""
    if kind == "regression":
        return F.mse_loss(out, y, reduction="sum")
    if kind == "binary":
        return F.binary_cross_entropy_with_logits(out.reshape(y.shape), y, reduction="sum")
    return F.cross_entropy(out, y, reduction="sum")


def rank_loss(out: torch.Tensor, y: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    r"""Soft Kendall-:math:`\tau` loss of predictions ``out`` against targets ``y``, both
    ``(b, C)``: per column, the mean over the ordered pairs :math:`i \ne j` with
    :math:`y_i \ne y_j` of :math:`\sigma(-(o_i - o_j)\operatorname{sign}(y_i - y_j) / T)`,
    summed over the columns. As :math:`T \to 0` a column's term is its fraction of
    discordant pairs, :math:`(1 - \tau_b) / 2` without ties. A column with no untied pair
    contributes 0 (and no gradient)."""
    if out.shape != y.shape or out.dim() != 2:
        raise ValueError(f"rank_loss: out and y must both be (b, C), got {tuple(out.shape)} and {tuple(y.shape)}")
    s = torch.sign(y[:, None, :] - y[None, :, :])
    d = out[:, None, :] - out[None, :, :]
    per = torch.sigmoid(-d * s / temperature) * s.abs()
    return (per.sum((0, 1)) / s.abs().sum((0, 1)).clamp_min(1)).sum()


def _autocast(precision: str):
    """``torch.autocast("cpu", bfloat16)`` for ``precision="bf16"`` (meta-training runs on the
    CPU), else a no-op context."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.no_grad()
def predict(mm, net, enc: dict, eval_batch_size: int = 256, precision: str = "float32") -> torch.Tensor:
    """Raw outputs of the whole encoded split (``(B, C)`` or ``(B, E)`` for edge tasks)."""
    n = enc["targets"].shape[0]
    if not mm.trainable:
        out = mm.predict(enc)
    else:
        net.eval()
        outs = []
        for a in range(0, n, eval_batch_size):
            x, _ = mm.batch(enc, torch.arange(a, min(n, a + eval_batch_size)))
            with _autocast(precision):
                outs.append(net(x).float())
        net.train()
        out = torch.cat(outs)
    return out.squeeze(-1) if mm.task.level == "edge" else out


def _split_metrics(task, enc, out, y_mean, y_std):
    if task.kind == "regression":
        out = out * y_std + y_mean
    return compute_metrics(task.metrics, task.kind, enc["targets"], out), out


#: Draw range of ``augment="logits"``: the rescaling :math:`a` is drawn log-uniformly from
#: ``[1/LOGIT_SCALE, LOGIT_SCALE]``, each shared-function weight :math:`\lambda_j` uniformly
#: from ``[-1, 1]``.
LOGIT_SCALE = 2.0


#: The task whose labels each ``augment`` keeps.
AUGMENT_TASKS = {"odd": "sine", "logits": "accuracy"}


def _augmented(train: SplitData, task, augment: str, seed: int = 0) -> SplitData:
    """The training split plus its exact ``augment`` copies (same labels), see :class:`TrainConfig`."""
    from ..kan.transforms import mix_logits, negate_output, reflect_input
    from ..kan.weights import FIELDS

    w = train.weights
    if task.name != AUGMENT_TASKS[augment]:
        why = {"odd": "odd target functions", "logits": "argmax-based scores"}[augment]
        raise ValueError(f"augment={augment!r} keeps the labels only of {why} (task {AUGMENT_TASKS[augment]!r}); "
                         f"task {task.name!r} would get wrong labels")
    if augment == "logits":
        g = torch.Generator().manual_seed(int(seed))
        B, n = train.targets.shape[0], w.widths[-2]
        a = torch.exp((torch.rand(B, generator=g, dtype=torch.float64) * 2 - 1) * math.log(LOGIT_SCALE))
        lam = torch.rand(B, n, generator=g, dtype=torch.float64) * 2 - 1
        w = mix_logits(w, a.to(w.dtype), lam.to(w.dtype))
    else:
        for i in range(w.widths[0]):
            w = reflect_input(w, i)
        w = negate_output(w)
    both = train.weights._replace(**{f: [torch.cat([a, b]) for a, b in zip(getattr(train.weights, f), getattr(w, f))]
                                     for f in FIELDS})
    return SplitData(both, torch.cat([train.targets, train.targets]), torch.cat([train.ids, train.ids]),
                     train.split, train.source)


def fit(zoo, task, model: str, config: Optional[TrainConfig] = None, out_dir: Optional[str] = None,
        read_test: bool = True, extra_train: Sequence = (), load_lock=None) -> dict:
    """Train meta-model ``model`` on ``task`` over ``zoo`` (directory or :class:`~wskan_ext.zoo.Zoo`).

    Checks, before training: the model has the task's output level, the zoo holds the
    labels, no split is empty (``ValueError`` otherwise).

    With ``read_test=False`` (model selection) the test split is never predicted: ``metrics``
    has only ``train`` and ``val``.

    ``extra_train``: other zoos (directories or :class:`~wskan_ext.zoo.Zoo`) whose members,
    all of them, join the training split; validation and test stay ``zoo``'s
    (:func:`~wskan_ext.tasks.definitions.load_training_split`, which refuses a repeated
    build, another architecture or missing labels). Recorded as ``extra_train`` in the
    result, and used again by :func:`evaluate_run`.

    ``load_lock``: a lock (e.g. a ``multiprocessing`` lock shared by parallel runs) held while
    the splits are read and encoded, the step whose memory peak is about twice what training
    then holds; parallel runs on large zoos thus never stack two peaks (``None``: no lock).

    Returns a dict with ``metrics`` (per split), ``test_pred`` / ``test_true`` (label
    space), ``history`` (per-epoch train loss and val metric), timing and settings. With
    ``out_dir`` (rank 0 only) writes ``metrics.json``, ``metrics.csv``, ``model.safetensors``
    and the figures (see ``wskan_ext.tasks.figures``).
    """
    from ..zoo.store import Zoo

    cfg = config or TrainConfig()
    task = get_task(task)
    check_compatible(model, task)
    validate_model_config(model, cfg.model)
    zoo = zoo if isinstance(zoo, Zoo) else Zoo(zoo)
    # paths, not Zoo objects: each extra zoo's shard cache is freed once its members are read
    extra_train = [os.path.abspath(e.root if isinstance(e, Zoo) else e) for e in extra_train]
    if cfg.rank_weight > 0 and (task.kind != "regression" or task.level != "graph"):
        raise ValueError(f"train config: rank_weight (--rank-weight) applies to graph-level regression tasks "
                         f"(accuracy, sine); task {task.name!r} is a {task.level}-level {task.kind} task")
    if cfg.loss_units != "standardised" and task.kind != "regression":
        raise ValueError(f"train config: loss_units (--loss-units) applies to regression tasks; task {task.name!r} "
                         f"is a {task.kind} task")
    if cfg.aux_points and (task.kind != "regression" or task.level != "graph"):
        raise ValueError(f"train config: aux_points (--aux-points) applies to graph-level regression tasks "
                         f"(accuracy, sine); task {task.name!r} is a {task.level}-level {task.kind} task")
    if cfg.aux_task is not None:
        if task.level != "graph":
            raise ValueError(f"train config: aux_task (--aux-task) applies to graph-level tasks; task {task.name!r} "
                             f"is {task.level}-level")
        if cfg.augment is not None:
            raise ValueError(f"train config: aux_task (--aux-task) and augment={cfg.augment!r} do not combine: the "
                             f"augmented copies have no {cfg.aux_task!r} labels")
    with load_lock if load_lock is not None else contextlib.nullcontext():
        splits = load_splits(zoo, task, extra_train)
        edge_y = None
        if cfg.aux_task is not None:
            from .definitions import load_training_split

            side = load_training_split(zoo, cfg.aux_task, extra_train, held_out=[splits["val"], splits["test"]])
            if not torch.equal(side.ids, splits["train"].ids):
                raise ValueError(f"aux_task {cfg.aux_task!r}: the zoo's {cfg.aux_task!r} labels do not cover the same "
                                 f"training members as task {task.name!r}")
            edge_y = side.targets.float()
            del side  # its weights repeat the training split's; only the masks are kept
        if cfg.augment is not None:
            splits["train"] = _augmented(splits["train"], task, cfg.augment, cfg.seed)
        num_classes = None
        if task.kind == "classification":
            num_classes = int(max(int(s.targets.max()) for s in splits.values())) + 1
        c_task, aux = task.out_channels(num_classes), None
        if cfg.aux_points:
            from .auxiliary import function_points, function_values

            aux_x = function_points(splits["train"].weights, cfg.aux_points)
            aux = function_values(splits["train"].weights, aux_x)
        mm = build_meta_model(model, task, splits["train"], cfg.model, c_task + (aux.shape[1] if aux is not None else 0),
                              edge_aux_channels=1 if edge_y is not None else 0)
        enc = {s: mm.encode(d) for s, d in splits.items()}
    y_mean, y_std = 0.0, 1.0
    if task.kind == "regression":
        y_mean = enc["train"]["targets"].mean(0)
        y_std = enc["train"]["targets"].std(0, unbiased=False).clamp_min(1e-8)
    dist, rank, world, created = dist_info()
    t0 = time.perf_counter()
    history, best_epoch, net = [], -1, None
    try:
        if mm.trainable:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                net = mm.build_net()
            ddp = net
            if dist is not None:
                from torch.nn.parallel import DistributedDataParallel

                ddp = DistributedDataParallel(net)
            lr = cfg.lr if cfg.lr is not None else mm.config.get("lr", 1e-3)
            wd = cfg.weight_decay if cfg.weight_decay is not None else mm.config.get("weight_decay", 0.0)
            opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd, foreach=True)
            ema, judged = None, net  # judged: the weights validation sees and early stopping keeps
            if cfg.ema > 0:
                from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

                ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
                judged = ema.module
            if cfg.schedule not in ("cosine", "constant"):
                raise ValueError(f"schedule must be 'cosine' or 'constant', got {cfg.schedule!r}")
            total_steps = max(1, cfg.epochs * -(-len(splits["train"]) // max(1, cfg.batch_size)))
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, functools.partial(lr_factor, total=total_steps, warmup=cfg.warmup, schedule=cfg.schedule))
            gen = torch.Generator().manual_seed(cfg.seed)
            aug = torch.Generator().manual_seed(cfg.seed * 1000003 + rank)
            n, GB = len(splits["train"]), max(1, cfg.batch_size)
            col_w = None
            if cfg.loss_units == "label":  # sqrt of sigma_o^2 / mean sigma^2, applied to outputs and targets
                col_w = (y_std ** 2 / (y_std ** 2).mean()).sqrt().float()
            train_y = enc["train"]["targets"]
            scaled = dict(enc["train"], targets=(train_y - y_mean) / y_std) if task.kind == "regression" else enc["train"]
            if aux is not None:  # standardised per column; the batches carry (task targets | aux targets)
                aux = aux.to(train_y.dtype)
                aux_mean, aux_std = aux.mean(0), aux.std(0, unbiased=False).clamp_min(1e-8)
                aux = (aux - aux_mean) / aux_std
                scaled["targets"] = torch.cat([scaled["targets"].reshape(n, -1), aux], 1)
            best, best_state, bad = None, None, 0
            bar = tqdm(range(cfg.epochs), desc=f"{task.name}/{model}", disable=not cfg.progress or rank != 0,
                       leave=False)
            # dropout draws from the global RNG: seed it per run and rank, and leave the caller's RNG as it was
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed * 1000003 + 7919 + rank)
                for epoch in bar:
                    perm = torch.randperm(n, generator=gen)
                    tot, cnt = 0.0, 0
                    for a in range(0, n, GB):
                        idx = perm[a: a + GB]
                        local, weight = idx[rank::world], 1.0
                        if local.numel() == 0:
                            local, weight = idx[:1], 0.0
                        x, y = mm.batch(scaled, local, aug, train=True)
                        with _autocast(cfg.precision):
                            out = ddp(x, edges=True) if edge_y is not None else ddp(x)
                        out, out_e = (out[0].float(), out[1].float()) if edge_y is not None else (out.float(), None)
                        if aux is not None:
                            (out, out_aux), (y, y_aux) = (t.split([c_task, aux.shape[1]], 1) for t in (out, y))
                        per_item = out[0].numel() if task.kind != "classification" else 1
                        w_out, w_y = (out, y) if col_w is None else (out * col_w, y * col_w)  # loss_units="label"
                        loss = _loss(task.kind, w_out, w_y) * (weight * world / (idx.numel() * per_item))
                        if aux is not None:
                            loss = loss + cfg.aux_weight * F.mse_loss(out_aux, y_aux, reduction="sum") * (
                                weight * world / (idx.numel() * aux.shape[1]))
                        if out_e is not None:  # the auxiliary edge labels (B, E)
                            y_e = edge_y[local]
                            loss = loss + cfg.aux_task_weight * F.binary_cross_entropy_with_logits(
                                out_e.reshape(y_e.shape), y_e, reduction="sum") * (
                                weight * world / (idx.numel() * y_e.shape[1]))
                        if cfg.rank_weight > 0:  # this rank's pairs; DDP averages the ranks' gradients
                            loss = loss + cfg.rank_weight * weight * rank_loss(out, y, cfg.rank_temperature)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        sched.step()
                        if ema is not None:
                            ema.update_parameters(net)
                        tot, cnt = tot + float(loss.detach()) / world, cnt + 1  # this rank's share
                    if dist is not None:  # the epoch's loss over all ranks
                        t = torch.tensor([tot], dtype=torch.float64)
                        dist.all_reduce(t)
                        tot = float(t)
                    out = predict(mm, judged, enc["val"], cfg.eval_batch_size, cfg.precision)
                    out = out[..., :c_task] if aux is not None else out
                    val = _split_metrics(task, enc["val"], out, y_mean, y_std)[0][task.primary]
                    history.append({"epoch": epoch, "train_loss": tot / max(cnt, 1), f"val_{task.primary}": val})
                    better = best is None or (val > best if task.higher_is_better else val < best)
                    if better:
                        best, best_state, best_epoch, bad = val, copy.deepcopy(judged.state_dict()), epoch, 0
                    else:
                        bad += 1
                    bar.set_postfix({f"val_{task.primary}": f"{val:.4f}", "best": f"{best:.4f}"})
                    if bad >= cfg.patience or (cfg.max_time and time.perf_counter() - t0 > cfg.max_time):
                        break
            bar.close()
            net.load_state_dict(best_state)
        metrics, outs, aux_mse = {}, {}, {}
        for s in ("train", "val", "test") if read_test else ("train", "val"):
            pred = predict(mm, net, enc[s], cfg.eval_batch_size, cfg.precision)
            if aux is not None and mm.trainable and s != "test":  # how well the extra outputs decode the function
                z = aux if s == "train" else (
                    function_values(splits[s].weights, aux_x).to(aux.dtype) - aux_mean) / aux_std
                aux_mse[s] = float(((pred[:, c_task:] - z.to(pred.dtype)) ** 2).mean())
            metrics[s], outs[s] = _split_metrics(task, enc[s], pred[..., :c_task] if aux is not None else pred,
                                                 y_mean, y_std)
    finally:
        if created:
            dist.destroy_process_group()
    result = {
        "task": task.name, "model": model, "zoo": os.path.abspath(zoo.root), "seed": cfg.seed,
        "extra_train": extra_train,
        "world_size": world, "epochs_run": len(history), "best_epoch": best_epoch,
        "train_time_s": time.perf_counter() - t0, "sizes": {s: len(d) for s, d in splits.items()},
        "config": {**asdict(cfg), "model": dict(mm.config)},  # defaults resolved for this task
        "metrics": metrics, "history": history,
        **({"aux_mse": aux_mse} if aux_mse else {}),  # standardised mse of the auxiliary outputs (train, val)
        "test_pred": outs.get("test"), "test_true": enc["test"]["targets"] if read_test else None,
        "test_ids": splits["test"].ids if read_test else None,
        "widths": mm.widths,
    }
    if out_dir and rank == 0:
        write_outputs(result, net, out_dir)
    result["net"], result["meta_model"] = net, mm
    return result


def write_outputs(result: dict, net, out_dir: str) -> None:
    """``metrics.json``, ``metrics.csv``, ``model.safetensors`` (trained models) and figures."""
    from ..zoo.store import atomic_write

    os.makedirs(out_dir, exist_ok=True)
    keep = {k: v for k, v in result.items() if k not in ("test_pred", "test_true", "test_ids", "net", "meta_model")}
    atomic_write(os.path.join(out_dir, "metrics.json"), (json.dumps(keep, indent=1) + "\n").encode())
    with open(os.path.join(out_dir, "metrics.csv"), "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["task", "model", "seed", "split", "metric", "value"])
        for s, ms in result["metrics"].items():
            for m, v in ms.items():
                wr.writerow([result["task"], result["model"], result["seed"], s, m, v])
    if net is not None:
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()},
                  os.path.join(out_dir, "model.safetensors"))
    if result["test_pred"] is not None:  # (model selection: the test split was not predicted)
        write_figures(result["task"], result["model"], result["widths"], result["test_true"], result["test_pred"],
                      result["test_ids"], result["metrics"]["test"], out_dir)


def write_figures(task_name: str, model: str, widths, true, pred, ids, metrics: dict, out_dir: str,
                  split: str = "test") -> None:
    """The run's figure on ``split``: predicted vs true values (regression tasks) or the
    first KAN's true and predicted pruning masks (edge tasks); nothing for classification."""
    from .figures import pruning_mask_figure, scatter_figure

    task = get_task(task_name)
    title = f"{task_name} / {model} ({split})"
    if task.kind == "regression":
        scatter_figure(true, pred, os.path.join(out_dir, "pred_vs_true.png"), title, list(task.labels), metrics)
    elif task.level == "edge":
        pruning_mask_figure(widths, true, pred, os.path.join(out_dir, "pruning_mask.png"), title, int(ids[0]))


def _read_run(run_dir: str) -> dict:
    """``run_dir/metrics.json``, checked before anything is built from it: task, model, zoo
    and the model config (``validate_model_config``: known keys, sizes within bounds)."""
    path = os.path.join(run_dir, "metrics.json")
    from ..zoo.files import read_json

    info = read_json(path, f"not found ({run_dir} is not a run directory written by wskan train)", "not valid JSON",
                     ValueError, FileNotFoundError)
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object")
    for key in ("task", "model", "zoo"):
        if not isinstance(info.get(key), str):
            raise ValueError(f"{path}: field {key!r}: expected a string, got {info.get(key)!r:.60}")
    extra = info.get("extra_train", [])
    if not isinstance(extra, list) or not all(isinstance(e, str) for e in extra):
        raise ValueError(f"{path}: field 'extra_train': expected a list of zoo directories, got {extra!r:.60}")
    cfg = info.get("config")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise ValueError(f"{path}: field 'config.model': expected an object of model hyperparameters")
    validate_model_config(info["model"], cfg["model"], where=f"{path}: config.model")
    return info


def evaluate_run(run_dir: str, zoo=None, split: str = "test", out: Optional[str] = None,
                 figures: bool = False) -> dict:
    """Re-evaluate a trained run (``metrics.json`` + ``model.safetensors`` written by
    :func:`wskan_ext.tasks.train.fit`) on ``split`` of ``zoo`` (default: the zoo it was trained on).
    With ``figures``, also draw the run's figure on that split into ``run_dir``
    (``write_figures``).

    The meta-model's normalisation is re-fitted on the *training* zoo's train split (with
    the run's ``extra_train`` zoos, as in training; it is deterministic), the network
    weights are loaded without unpickling.
    """
    from ..zoo.store import Zoo
    from .definitions import load_split, load_training_split

    info = _read_run(run_dir)
    task, model = get_task(info["task"]), info["model"]
    train_zoo = Zoo(info["zoo"])
    target = train_zoo if zoo is None else (zoo if isinstance(zoo, Zoo) else Zoo(zoo))
    train = load_training_split(train_zoo, task, info.get("extra_train") or ())
    data = load_split(target, task, split)
    if list(data.weights.widths) != list(train.weights.widths):
        raise ValueError(f"zoo {target.root} has widths {data.weights.widths}, the run was trained on "
                         f"{train.weights.widths}")
    num_classes = None
    if task.kind == "classification":
        num_classes = int(max(int(train.targets.max()), int(data.targets.max()))) + 1
    aux_points = info["config"].get("aux_points", 0)  # the run's auxiliary outputs: built, then dropped
    if not (isinstance(aux_points, int) and not isinstance(aux_points, bool) and 0 <= aux_points <= 4096):
        raise ValueError(f"{run_dir}/metrics.json: field 'config.aux_points': expected an integer in [0, 4096], "
                         f"got {aux_points!r:.60}")
    c_task = task.out_channels(num_classes)
    aux_task = info["config"].get("aux_task")  # the run's auxiliary edge head: built, then unused
    if aux_task not in AUX_TASKS:
        raise ValueError(f"{run_dir}/metrics.json: field 'config.aux_task': expected one of {list(AUX_TASKS)}, "
                         f"got {aux_task!r:.60}")
    mm = build_meta_model(model, task, train, {k: v for k, v in info["config"]["model"].items()
                                               if k in DEFAULTS[model]}, c_task + aux_points * train.weights.widths[-1],
                          edge_aux_channels=1 if aux_task else 0)
    net = None
    if mm.trainable:
        from safetensors.torch import load_file

        net = mm.build_net()
        wpath = os.path.join(run_dir, "model.safetensors")
        try:
            net.load_state_dict(load_file(wpath))
        except RuntimeError as e:  # names, shapes: the file does not belong to this run's model
            raise ValueError(f"{wpath}: does not fit model {model!r} of {run_dir}/metrics.json "
                             f"({str(e).splitlines()[0]})") from None
    y_mean, y_std = 0.0, 1.0
    if task.kind == "regression":
        y_mean, y_std = train.targets.mean(0), train.targets.std(0, unbiased=False).clamp_min(1e-8)
    enc = mm.encode(data)
    pred = predict(mm, net, enc)
    metrics, pred = _split_metrics(task, enc, pred[..., :c_task] if aux_points else pred, y_mean, y_std)
    res = {"task": task.name, "model": model, "zoo": os.path.abspath(target.root), "split": split,
           "metrics": metrics, "run": os.path.abspath(run_dir)}
    if figures:
        write_figures(task.name, model, list(data.weights.widths), enc["targets"], pred, data.ids, metrics, run_dir,
                      split)
    if out:
        from ..zoo.store import atomic_write

        atomic_write(out, (json.dumps(res, indent=1) + "\n").encode())
    return res
