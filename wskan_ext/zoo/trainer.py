r"""Train many KANs of one architecture at once (a model axis in every tensor).

Every model ``b`` has its own learning rate, weight decay, initialisation scale, seed,
training subset and label noise; the architecture (widths, ``G``, ``k``) is shared. The
models are held by one :class:`wskan_ext.KAN` with ``num_models=B``; the objective is
:math:`\sum_b \mathcal L_b`, so model ``b``'s gradient is exactly the gradient of its own
loss and models never interact. The optimiser is a vectorised Adam(W):

.. math::
    m_b \leftarrow \beta_1 m_b + (1-\beta_1) g_b,\quad
    v_b \leftarrow \beta_2 v_b + (1-\beta_2) g_b^2,\quad
    \theta_b \leftarrow \theta_b - \eta_b \Big(\frac{\hat m_b}{\sqrt{\hat v_b}+\epsilon}
    + \lambda_b \theta_b\Big)

with per-model :math:`\eta_b, \lambda_b` tensors (``torch.optim`` param groups cannot give
one learning rate per *slice* of a tensor). With :math:`\lambda_b = 0` this is exactly
``torch.optim.Adam``.

Speed: the first layer's inputs are data and its grid is fixed (no grid updates), so its
B-spline basis is computed once per dataset and shared by all models (its ``k+1`` active
values for the compiled local-support kernel, or the dense basis for one matmul); the hidden
layers run the compiled local-support kernel (:mod:`wskan_ext.kan._native`) where it applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from tqdm.auto import tqdm

from ..kan.module import KAN
from ..kan.spline import base_function, bspline_basis
from ..kan.weights import KANWeights
from ._fast_forward import FastForward as _FastForward

__all__ = ["RunHParams", "TrainResult", "train_batched", "init_models", "batched_loss", "diverged_at",
           "sparsity_penalty", "DIVERGE_FACTOR", "DIVERGE_WEIGHT_BOUND"]

#: A checkpoint whose training loss exceeds this many times the model's initial loss diverged.
DIVERGE_FACTOR = 10.0
#: A checkpoint with a trainable weight of absolute value above this bound diverged.
DIVERGE_WEIGHT_BOUND = 1e4


@dataclass
class RunHParams:
    """Per-model hyperparameters; every field is a ``(B,)`` tensor (or list).

    ``init_scale`` multiplies pykan's ``noise_scale`` (spline coefficients) and
    ``scale_base_sigma``; ``subset_fraction`` is the fraction of the training set model ``b``
    sees; ``label_noise`` is the fraction of its (classification) labels replaced by a
    uniformly random class; ``lamb`` is the weight of pykan's sparsity penalty
    (:func:`sparsity_penalty`, ``MultKAN.fit(lamb=...)``) in model ``b``'s objective.
    ``seed`` drives the initialisation, subset and noise of model ``b``.
    """

    lr: torch.Tensor
    seed: torch.Tensor
    weight_decay: Optional[torch.Tensor] = None
    init_scale: Optional[torch.Tensor] = None
    subset_fraction: Optional[torch.Tensor] = None
    label_noise: Optional[torch.Tensor] = None
    lamb: Optional[torch.Tensor] = None

    def __post_init__(self):
        self.lr = torch.as_tensor(self.lr, dtype=torch.float64).reshape(-1)
        B = self.lr.shape[0]
        self.seed = torch.as_tensor(self.seed, dtype=torch.long).reshape(-1)
        defaults = {"weight_decay": 0.0, "init_scale": 1.0, "subset_fraction": 1.0, "label_noise": 0.0, "lamb": 0.0}
        for name, d in defaults.items():
            v = getattr(self, name)
            v = torch.full((B,), d, dtype=torch.float64) if v is None else torch.as_tensor(v, dtype=torch.float64).reshape(-1)
            setattr(self, name, v)
        for name in ("seed",) + tuple(defaults):
            if getattr(self, name).shape[0] != B:
                raise ValueError(f"RunHParams.{name}: expected {B} values (one per model), got {getattr(self, name).shape[0]}")
        if ((self.subset_fraction <= 0) | (self.subset_fraction > 1)).any():
            raise ValueError(f"subset_fraction must be in (0, 1], got {self.subset_fraction.tolist()}")
        if ((self.label_noise < 0) | (self.label_noise > 1)).any():
            raise ValueError(f"label_noise must be in [0, 1], got {self.label_noise.tolist()}")
        if not ((self.lamb >= 0) & torch.isfinite(self.lamb)).all():
            raise ValueError(f"lamb must be finite and >= 0, got {self.lamb.tolist()}")

    def __len__(self) -> int:
        return self.lr.shape[0]


@dataclass
class TrainResult:
    """Output of :func:`train_batched`.

    Shapes:
        - ``checkpoints``: one batched :class:`~wskan_ext.KANWeights` (``B`` models) per step in ``steps``;
        - ``train_loss``: ``(B, len(steps))`` training objective at each checkpoint (the loss
          of the step just taken, on the model's own subset / noisy labels);
        - ``diverged_step``: ``(B,)`` first step with a non-finite loss, ``-1`` if none;
        - ``subset``: ``(B, s)`` bool training subset; ``labels``: ``(B, s)`` noisy labels
          (classification) or ``None``;
        - ``initial_loss``: ``(B,)`` training objective of the initial model on its whole
          subset (its own noisy labels), before any update; ``checkpoint_loss``:
          ``(B, len(steps))`` the same objective of each checkpoint's weights (both ``None``
          in results made without them);
        - ``extra``: ``fast`` and ``spline`` as passed, ``kernel`` the hidden-layer kernel
          ``spline="auto"`` resolved to, ``first_layer`` ``"lookup"`` / ``"native"`` / ``"dense"``
          (the shared first-layer path: the compiled kernel on a table of the distinct
          (input, value) pairs, or per sample, or the dense basis; ``None`` without one).
    """

    steps: List[int]
    checkpoints: List[KANWeights]
    train_loss: torch.Tensor
    diverged_step: torch.Tensor
    subset: torch.Tensor
    labels: Optional[torch.Tensor] = None
    extra: Dict = field(default_factory=dict)
    initial_loss: Optional[torch.Tensor] = None
    checkpoint_loss: Optional[torch.Tensor] = None


def init_models(width, grid, k, hp: RunHParams, *, grid_range=(-1.0, 1.0), base_fun="silu",
                dtype=torch.float32, device=None) -> KAN:
    """A :class:`~wskan_ext.KAN` with ``num_models=len(hp)``; model ``b`` is initialised
    exactly as ``KAN(width, ..., generator=torch.Generator().manual_seed(seed_b))`` with
    ``noise_scale = 0.3 * init_scale_b`` and ``scale_base_sigma = init_scale_b``."""
    singles = []
    for b in range(len(hp)):
        g = torch.Generator().manual_seed(int(hp.seed[b]))
        s = float(hp.init_scale[b])
        m = KAN(width, grid=grid, k=k, base_fun=base_fun, grid_range=grid_range, noise_scale=0.3 * s,
                scale_base_sigma=s, generator=g, dtype=dtype)
        singles.append(m.weights(detach=True))
    return KAN.from_weights(KANWeights.stack(singles).to(device))


def _subset_and_labels(hp: RunHParams, s: int, y: Optional[torch.Tensor], num_classes: Optional[int]):
    B = len(hp)
    subset = torch.zeros(B, s, dtype=torch.bool)
    labels = None if y is None else y.cpu().expand(B, s).clone()
    for b in range(B):
        g = torch.Generator().manual_seed(int(hp.seed[b]) ^ 0x5EED)
        n_keep = max(1, int(round(float(hp.subset_fraction[b]) * s)))
        subset[b, torch.randperm(s, generator=g)[:n_keep]] = True
        if labels is not None and float(hp.label_noise[b]) > 0:
            flip = torch.rand(s, generator=g) < float(hp.label_noise[b])
            labels[b, flip] = torch.randint(num_classes, (int(flip.sum()),), generator=g)
    return subset, labels


def _safe_sqrt(var: torch.Tensor) -> torch.Tensor:
    """``sqrt(var)``, 0 with gradient 0 where ``var <= 0`` (``torch.std``'s gradient is NaN at a
    zero std, e.g. for an always-black pixel)."""
    pos = var > 0
    return torch.where(pos, var, torch.ones_like(var)).sqrt() * pos


def _weighted_centered(v: torch.Tensor, weight: Optional[torch.Tensor], axis: int):
    """``v`` centred over its sample axis ``axis`` (negative) using the samples of weight 1
    (all when ``weight (*, s)`` is None) and zero on the others, and the unbiased
    estimate's ``count - 1`` ``(*,)``."""
    if weight is None:
        weight = torch.ones(v.shape[:v.dim() + axis + 1], dtype=v.dtype, device=v.device)
    wv = weight.to(v.dtype).reshape(weight.shape + (1,) * (-axis - 1))
    n = wv.sum(axis, keepdim=True)
    mean = (v * wv).sum(axis, keepdim=True) / n.clamp_min(1)
    return (v - mean) * wv, (weight.to(v.dtype).sum(-1) - 1).clamp_min(1)


def _edge_output_std(weights: KANWeights, l: int, a: torch.Tensor, weight: Optional[torch.Tensor]):
    r"""Unbiased std over the samples of every edge output of layer ``l`` at inputs ``a (*, s, n)``,
    ``(*, n, m)``, without building the ``(*, s, n, m)`` outputs: each edge is
    :math:`\phi_{ij} = c_{ij} \cdot F_i(x_i)` with features :math:`F_i = (b(x_i), B_{i1}(x_i), ...)`
    and weights :math:`c_{ij} = (\text{mask}\,\text{scale\_base}, \text{mask}\,\text{scale\_sp}\,
    \text{coef})_{ij}`, so :math:`\operatorname{var}\phi_{ij} = c_{ij}^T \operatorname{Cov}(F_i) c_{ij}`."""
    feats = torch.cat([base_function(weights.base_fun[l])(a).unsqueeze(-1),
                       bspline_basis(a, weights.grid[l].unsqueeze(-3), weights.k[l])], -1)  # (*, s, n, F)
    fc, dof = _weighted_centered(feats, weight, -3)
    cov = torch.einsum("...snf,...sng->...nfg", fc, fc) / dof[..., None, None, None]
    mask = weights.mask[l]
    c = torch.cat([(mask * weights.scale_base[l]).unsqueeze(-1),
                   (mask * weights.scale_sp[l]).unsqueeze(-1) * weights.coef[l]], -1)  # (*, n, m, F)
    return _safe_sqrt(torch.einsum("...nmf,...nfg,...nmg->...nm", c, cov, c))


def sparsity_penalty(weights: KANWeights, x: Optional[torch.Tensor], sample_weight: Optional[torch.Tensor] = None,
                     lamb_l1: float = 1.0, lamb_entropy: float = 2.0, lamb_coef: float = 0.0,
                     lamb_coefdiff: float = 0.0, acts: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
    r"""pykan 0.2.8's sparsity regulariser (``MultKAN.get_reg("edge_forward_spline_n", ...)``,
    the term ``fit(lamb=...)`` multiplies), per model and differentiable.

    With the edge outputs :math:`\phi^{(l)}_{ij}(x_{l,i})` on the samples ``x`` (base and
    spline parts, masked) and the normalised scales
    :math:`v^{(l)}_{ij} = \operatorname{std}_s \phi^{(l)}_{ij} / (\operatorname{std}_s x_{l,i} + 0.1)`
    (unbiased stds over the samples of weight 1),

    .. math::
        R = \sum_l \Big[\lambda_{1} \sum_{ij} v_{ij}
        + \lambda_{H} \big(H_{\text{row}}(v) + H_{\text{col}}(v)\big)\Big]
        + \lambda_c \sum_{i,b} \operatorname{mean}_j |c_{ijb}|
        + \lambda_{\Delta} \sum_{i,b} \operatorname{mean}_j |c_{ij,b+1} - c_{ijb}|,

    where :math:`H_{\text{row}}` is the mean over outputs ``j`` of the entropy (base 2, pykan's
    ``+1e-4`` inside the log) of :math:`v_{\cdot j} / (\sum_i v_{ij} + 1)`, and
    :math:`H_{\text{col}}` the same over inputs ``i``; ``c`` are the raw ``coef`` tensors.
    The defaults are ``fit``'s (``lamb_l1=1``, ``lamb_entropy=2``, the coefficient terms off).

    ``acts``: every layer's inputs on ``x`` when the caller already has them (the trainer's
    forward does); ``x`` is then not used.

    Shapes: ``x (s, n_0)`` or ``(B, s, n_0)``; ``sample_weight (B, s)`` 0/1 (``None``: every
    sample); ``acts`` per layer ``(B, s, n_l)``; returns ``(B,)`` (``()`` for an unbatched ``weights``).
    """
    if acts is None:
        _, acts = weights.forward(x, return_hidden=True)
    reg = 0.0
    for l in range(weights.depth):
        a = acts[l]
        ac, dof = _weighted_centered(a, sample_weight, -2)
        sx = _safe_sqrt(ac.pow(2).sum(-2) / dof[..., None]).unsqueeze(-1)  # (*, n, 1)
        v = _edge_output_std(weights, l, a, sample_weight) / (sx + 0.1)  # (*, n, m); pykan's (out, in) transposed
        p_row = v / (v.sum(-2, keepdim=True) + 1)  # pykan: normalised over the inputs of each output
        p_col = v / (v.sum(-1, keepdim=True) + 1)
        h_row = -(p_row * torch.log2(p_row + 1e-4)).sum(-2).mean(-1)
        h_col = -(p_col * torch.log2(p_col + 1e-4)).sum(-1).mean(-1)
        reg = reg + lamb_l1 * v.sum((-2, -1)) + lamb_entropy * (h_row + h_col)
    for c in weights.coef:  # (*, n, m, nb); pykan: sum over (in, basis) of the mean over outputs
        if lamb_coef:
            reg = reg + lamb_coef * c.abs().mean(-2).sum((-2, -1))
        if lamb_coefdiff:
            reg = reg + lamb_coefdiff * c.diff(dim=-1).abs().mean(-2).sum((-2, -1))
    return reg


def batched_loss(pred: torch.Tensor, target: torch.Tensor, task: str) -> torch.Tensor:
    """Per-sample loss ``(B, s)``: cross-entropy (``target (B, s)`` class ids) or squared
    error averaged over output channels (``target (B, s, c)``)."""
    if task == "classification":
        return F.cross_entropy(rearrange(pred, "B s c -> B c s"), target, reduction="none")
    return ((pred - target) ** 2).mean(-1)


def train_batched(
    width: Sequence[int],
    x: torch.Tensor,
    y: torch.Tensor,
    hp: RunHParams,
    *,
    steps: int,
    grid: int = 5,
    k: int = 3,
    task: str = "classification",
    num_classes: Optional[int] = None,
    batch_size: Optional[int] = None,
    checkpoints: Optional[Sequence[int]] = None,
    grid_range=(-1.0, 1.0),
    base_fun: str = "silu",
    betas=(0.9, 0.999),
    eps: float = 1e-8,
    seed: int = 0,
    fast: bool = True,
    spline: str = "auto",
    lamb_l1: float = 1.0,
    lamb_entropy: float = 2.0,
    progress: bool = False,
    desc: str = "train",
) -> TrainResult:
    """Train ``len(hp)`` KANs of architecture ``width`` simultaneously.

    Args:
        x: shared training inputs ``(s, n_0)`` (dtype/device of every model).
        y: class ids ``(s,)`` for ``task="classification"``; per-model targets ``(B, s, c)``
            for ``task="regression"`` (INRs).
        hp: per-model hyperparameters (:class:`RunHParams`).
        steps: optimisation steps; ``checkpoints``: steps (``1..steps``) at which the weights
            are kept (default: ``[steps]``).
        batch_size: samples per step per model (``None`` = full batch over the model's subset).
        seed: seeds the minibatch sampler (use one seed per shard for reproducibility).
        fast: use the fast training forward (shared first-layer basis,
            truncated-power hidden layers per ``spline``); ``False`` runs the module forward.
        spline: spline kernel: ``"auto"`` (default: ``"local"`` where the compiled local-support
            kernels apply -- CPU, float32/float64, uniform grids, ``k <= 5``, a C++ compiler,
            :mod:`wskan_ext.kan._native` -- and ``"truncated"`` otherwise; both measured by
            ``benchmarks/zoo_train.py`` and ``benchmarks/spline_kernel.py``), ``"local"``
            (local-support kernel, :mod:`wskan_ext.kan.local_spline`, compiled where available,
            also for the first layer), ``"truncated"`` (truncated powers in the hidden layers) or
            ``"exact"`` (the module forward's kernels in the hidden layers).
        lamb_l1, lamb_entropy: weights inside pykan's sparsity penalty (:func:`sparsity_penalty`),
            which enters model ``b``'s objective times ``hp.lamb[b]`` on each step's batch, as in
            ``MultKAN.fit(lamb=...)``. Only models with ``lamb > 0`` pay for it (per-layer feature
            covariances on the training forward's layer inputs: 3.6x a plain step, measured by
            ``benchmarks/sparsity_sweep.py``); the recorded losses
            (``train_loss``, ``checkpoint_loss``, divergence) are the data loss alone.

    Returns: :class:`TrainResult`.

    Shapes: ``x (s, n_0)``; ``y (s,)`` or ``(B, s, c)``; checkpoints ``B`` stacked models.
    """
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    B, s = len(hp), x.shape[0]
    checkpoints = sorted(set(int(c) for c in (checkpoints or [steps])))
    if checkpoints[0] < 1 or checkpoints[-1] > steps:
        raise ValueError(f"checkpoints must lie in [1, steps={steps}], got {checkpoints}")
    dtype, device = x.dtype, x.device
    if task == "classification":
        if y.shape != (s,):
            raise ValueError(f"classification targets must have shape ({s},), got {tuple(y.shape)}")
        num_classes = int(num_classes or width[-1])
    elif y.dim() != 3 or y.shape[:2] != (B, s):
        raise ValueError(f"regression targets must have shape ({B}, {s}, c), got {tuple(y.shape)}")
    model = init_models(width, grid, k, hp, grid_range=grid_range, base_fun=base_fun, dtype=dtype, device=device)
    subset, labels = _subset_and_labels(hp, s, y if task == "classification" else None, num_classes)
    subset, target = subset.to(device), (labels.to(device) if labels is not None else y)
    fwd = _FastForward(model, x, spline) if fast else None
    params = [p for p in model.parameters()]
    shape1 = lambda p: (B,) + (1,) * (p.dim() - 1)  # noqa: E731
    lr = [hp.lr.to(dtype=dtype, device=device).view(shape1(p)) for p in params]
    wd = [hp.weight_decay.to(dtype=dtype, device=device).view(shape1(p)) for p in params]
    decay = bool((hp.weight_decay != 0).any())  # without it, three passes per parameter fewer
    m1 = [torch.zeros_like(p) for p in params]
    m2 = [torch.zeros_like(p) for p in params]
    gen = torch.Generator().manual_seed(seed)
    full = batch_size is None or batch_size >= s
    weight_full = subset.to(dtype)
    diverged = torch.full((B,), -1, dtype=torch.long)
    kept, losses, ckpt_losses = [], [], []
    lamb = hp.lamb.to(dtype=dtype, device=device)
    sparse = torch.nonzero(lamb > 0).flatten()  # models that pay for the penalty

    @torch.no_grad()
    def subset_objective():  # each model's objective on its whole subset (no update, no RNG)
        pred = fwd(model, x, None) if fwd is not None else model(x.expand(B, s, x.shape[1]))
        return ((batched_loss(pred, target, task) * weight_full).sum(1) / weight_full.sum(1).clamp_min(1)).cpu()

    initial = None if full else subset_objective()  # full batch: step 1's loss is exactly this
    for t in tqdm(range(1, steps + 1), desc=desc, disable=not progress, leave=False):
        if full:
            idx, w = None, weight_full
        else:
            keys = torch.rand(B, s, generator=gen).to(device) + (~subset).to(dtype)
            idx = keys.topk(batch_size, dim=1, largest=False).indices
            w = torch.gather(weight_full, 1, idx)
        acts = None
        if fwd is not None:
            if len(sparse):  # the penalty reuses this forward's layer inputs
                pred, acts = fwd(model, x, idx, hidden=True)
            else:
                pred = fwd(model, x, idx)
        else:
            xin = x.expand(B, s, x.shape[1]) if idx is None else x[idx]
            pred = model(xin)
        tgt = target if idx is None else (torch.gather(target, 1, idx) if task == "classification"
                                          else target[torch.arange(B, device=device)[:, None], idx])
        per = batched_loss(pred, tgt, task)
        loss_b = (per * w).sum(1) / w.sum(1).clamp_min(1)
        if initial is None:
            initial = loss_b.detach().cpu()
        bad = ~torch.isfinite(loss_b.detach()).cpu()
        diverged[(diverged < 0) & bad] = t
        objective = loss_b.sum()
        if len(sparse):
            if acts is None:  # module forward (fast=False): the penalty runs its own
                xs = x.expand(B, s, x.shape[1]) if idx is None else x[idx]
                reg = sparsity_penalty(model.weights()[sparse], xs[sparse], w[sparse], lamb_l1, lamb_entropy)
            else:
                reg = sparsity_penalty(model.weights()[sparse], None, w[sparse], lamb_l1, lamb_entropy,
                                       acts=[a[sparse] for a in acts])
            objective = objective + (lamb[sparse] * reg).sum()
        for p in params:
            p.grad = None
        objective.backward()
        with torch.no_grad():
            c1, c2 = 1 - betas[0] ** t, 1 - betas[1] ** t
            for p, a, b2, lr_p, wd_p in zip(params, m1, m2, lr, wd):
                g = p.grad
                a.mul_(betas[0]).add_(g, alpha=1 - betas[0])
                b2.mul_(betas[1]).addcmul_(g, g, value=1 - betas[1])
                denom = (b2.sqrt() / math.sqrt(c2)).add_(eps)
                if decay:
                    p.sub_(lr_p * wd_p * p)
                p.sub_((lr_p / c1) * a / denom)
        if t in checkpoints:
            kept.append(model.weights(detach=True).clone())
            losses.append(loss_b.detach().clone())
            ckpt_losses.append(subset_objective())
    return TrainResult(checkpoints, kept, torch.stack(losses, 1).cpu(), diverged, subset.cpu(), labels,
                       {"fast": fast, "spline": spline, "kernel": fwd.spline if fwd is not None else "module",
                        "first_layer": (("lookup" if fwd.local.rows is not None else "native") if fwd.native else "dense") if fwd is not None and fwd.shared else None},
                       initial, torch.stack(ckpt_losses, 1))


#: Trainable weight tensors (``grid`` is fixed, ``mask`` is 0/1), checked against the bound.
_TRAINED = ("coef", "scale_base", "scale_sp", "node_scale", "node_bias")


def diverged_at(result: TrainResult, loss_factor: Optional[float] = DIVERGE_FACTOR,
                weight_bound: Optional[float] = DIVERGE_WEIGHT_BOUND) -> torch.Tensor:
    """``(B, len(steps))`` bool: whether model ``b`` had diverged by checkpoint ``c``.

    A checkpoint is diverged when

    * the training loss was non-finite at some step up to it, or its weights hold NaN/Inf;
    * the training objective of its weights (``checkpoint_loss[b, c]``, on the model's
      whole subset) exceeds ``loss_factor`` times the initial one (``initial_loss[b]``);
    * a trainable weight (``coef``, ``scale_base``, ``scale_sp``, node affine) exceeds
      ``weight_bound`` in absolute value.

    ``loss_factor=None`` / ``weight_bound=None`` switch the respective test off.
    """
    steps = torch.tensor(result.steps)
    d = result.diverged_step
    flag = (d[:, None] >= 0) & (d[:, None] <= steps[None, :])
    for c, w in enumerate(result.checkpoints):
        finite = torch.ones(d.shape[0], dtype=torch.bool)
        for name, t in w.tensors().items():
            t = t.reshape(t.shape[0], -1)
            finite &= torch.isfinite(t).all(1).cpu()
            if weight_bound is not None and name.rsplit(".", 1)[-1] in _TRAINED and t.shape[1]:
                finite &= (t.abs().amax(1) <= weight_bound).cpu()
        flag[:, c] |= ~finite
    if loss_factor is not None and result.initial_loss is not None and result.checkpoint_loss is not None:
        bound = loss_factor * result.initial_loss.to(torch.float64)
        flag |= ~(result.checkpoint_loss.to(torch.float64) <= bound[:, None])  # NaN counts as above
    return flag

