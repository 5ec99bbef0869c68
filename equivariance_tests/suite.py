"""Run the whole suite on one model: the engine of ``python -m wskan_ext.equivariance_tests``.

Properties (each a Hypothesis test under the chosen profile):

1. ``equivariance`` -- single KANs of random architectures, random hidden permutations;
2. ``mixed batch`` -- lists of KANs with different architectures (one call per batch for
   batch formats such as ``graph``, one per item otherwise);
3. ``sensitivity`` -- permuting *input* neurons (not a symmetry) must change the output.

An ``nn.Module`` whose floating-point parameters are not in the suite's ``dtype`` is tested
as a cast *copy* (``copy.deepcopy(model).to(dtype)``; the caller's module is never changed).
Failures are reported without Hypothesis's ``@reproduce_failure`` hint: every property runs
with an explicit seed (:attr:`SuiteRow.seed`), so the same call -- or the command line with
``--seed`` -- replays it.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch

from . import strategies as kst
from .actions import get_format
from .checks import default_tolerance, equivariance_check, sensitivity_check
from .profiles import profile_settings

__all__ = ["SuiteRow", "run_suite", "format_table"]


@dataclass
class SuiteRow:
    """One line of the suite's table. ``measured`` is the worst equivariance error (or,
    for sensitivity, the smallest change seen); ``report`` the failure report, if any."""

    name: str
    passed: bool
    measured: float
    threshold: str
    examples: int
    report: str = ""
    seed: Optional[int] = None  #: Hypothesis seed of the run (``None`` when derandomized)


def _arch_kwargs(input_format: str, widths, max_depth, max_width, grid_sizes, k, per_layer, min_input=1):
    kw = dict(min_depth=2, max_depth=max_depth, max_width=max_width, min_hidden_width=2, grid_sizes=grid_sizes, k=k,
              per_layer=per_layer, min_width=1)
    if widths is not None:
        kw = dict(widths=list(widths), grid_sizes=grid_sizes, k=k, per_layer=per_layer)
    if input_format in ("graph", "pykan"):  # one G and k for all layers (of all KANs)
        kw["per_layer"] = False
    return kw


_HINTS = ("@reproduce_failure", "reproduce_failure(", "@seed(", "--hypothesis-seed", "print_blob")


def _notes(e: BaseException) -> List[str]:
    """Hypothesis's notes on ``e`` minus its pytest-oriented replay hints (the suite gives
    its own replay instructions: :attr:`SuiteRow.seed`, ``--seed`` on the command line)."""
    return [n for n in getattr(e, "__notes__", []) if not any(h in n for h in _HINTS)]


def _dtype_hint(e: BaseException, dtype) -> str:
    text = str(e)
    if "dtype" in text or ("Double" in text and "Float" in text):
        return (f"\n(the suite draws KANs in {dtype}; a model in another dtype must be cast, e.g. "
                f"model.to({dtype}), or run the suite with that dtype)")
    return ""


def _run_property(name, prop, strategy, settings, seed=None, dtype=None) -> SuiteRow:
    from hypothesis import given
    from hypothesis import seed as hseed

    stats = {"n": 0, "worst": None, "threshold": ""}
    test = given(strategy)(settings(prop(stats)))
    if seed is not None:
        test = hseed(seed)(test)
    try:
        test()
        passed, report = True, ""
    except AssertionError as e:
        passed = False
        report = "\n".join([str(e)] + _notes(e))
    except Exception as e:  # the model crashed: report it as a failure, with its type
        passed = False
        report = f"{type(e).__name__}: {e}{_dtype_hint(e, dtype)}\n" + "\n".join(_notes(e))
    worst = stats["worst"]
    return SuiteRow(name, passed, math.nan if worst is None else worst, stats["threshold"], stats["n"], report,
                    seed)


def _model_in_dtype(model, dtype: torch.dtype, cast: bool):
    """``model`` itself, or -- for an ``nn.Module`` with floating-point parameters or buffers
    in another dtype -- a cast deep copy (``cast=True``) or a ``TypeError`` (``cast=False``)."""
    if not isinstance(model, torch.nn.Module):
        return model
    found = {t.dtype for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()}
    if not found or found == {dtype}:
        return model
    have = ", ".join(sorted(str(d) for d in found))
    advice = f"cast it (model.to({dtype})) or run the suite with dtype={have.split(', ')[0]}"
    if not cast:
        raise TypeError(f"{type(model).__name__} has {have} parameters but the suite draws {dtype} KANs: {advice}")
    try:
        return copy.deepcopy(model).to(dtype)
    except Exception as e:  # noqa: BLE001 - a module that cannot be copied: say what to do instead
        raise TypeError(f"{type(model).__name__} has {have} parameters but the suite draws {dtype} KANs, and a "
                        f"copy to cast could not be made ({type(e).__name__}: {e}): {advice}") from e


def run_suite(model: Callable, *, input_format: str = "weights", output: str = "invariant",
              dtype: torch.dtype = torch.float64, profile: str = "ci", tolerance: Optional[float] = None,
              widths: Optional[Sequence[int]] = None, max_depth: int = 3, max_width: int = 4,
              grid_sizes=(1, 5), k=(1, 3), per_layer: bool = False, sensitivity: bool = True,
              max_examples: Optional[int] = None, seed: Optional[int] = None,
              cast: bool = True) -> List[SuiteRow]:
    """Run the equivariance, mixed-batch and sensitivity properties on ``model``.

    Args:
        model: a callable taking one input in ``input_format`` (see :mod:`.actions`) and
            returning the ``output`` kind (``"invariant"``, ``"node"``, ``"edge"``, ...).
        dtype: dtype of the generated KANs. An ``nn.Module`` with parameters in another
            dtype is tested as a cast deep copy (the module passed in is not changed); with
            ``cast=False`` it raises ``TypeError`` instead.
        profile: ``"ci"`` or ``"thorough"`` (see :mod:`.profiles`).
        widths: fix the architecture (e.g. for models that need one input size);
            otherwise ``2..max_depth`` layers of ``1..max_width`` neurons (hidden >= 2).
        grid_sizes, k: fixed ints or inclusive ranges; ``per_layer``: vary them per layer.
        sensitivity: also run the input-permutation sensitivity property.
        max_examples: override the profile's number of examples per property.
        cast: test an ``nn.Module`` in another dtype as a cast copy (``False``: raise
            ``TypeError`` naming both dtypes).
        seed: Hypothesis seed of every property. ``None``: the derandomized ``ci`` profile
            needs none; a random profile draws one, recorded in each row's ``seed``, so that
            passing it back replays the same examples.

    Returns: one :class:`SuiteRow` per property (see :func:`format_table`).
    """
    from hypothesis import settings as hs

    fmt = get_format(input_format)
    model = _model_in_dtype(model, dtype, cast)
    # no example database (the suite writes no files) and no @reproduce_failure blobs: replay by seed
    settings = hs(profile_settings(profile), database=None, print_blob=False)
    if max_examples is not None:
        settings = hs(settings, max_examples=max_examples)
    if seed is None and not settings.derandomize:
        seed = random.SystemRandom().randrange(2**32)
    tol = default_tolerance(dtype) if tolerance is None else tolerance
    akw = _arch_kwargs(fmt.name, widths, max_depth, max_width, grid_sizes, k, per_layer)
    rows = []

    def equiv(stats):
        def prop(case):
            kans, perms = case
            res = equivariance_check(model, kans, perms, input_format=fmt, output=output, tolerance=tol)
            stats["n"] += 1
            stats["worst"] = max(stats["worst"] or 0.0, res.error)
            stats["threshold"] = f"<= {res.tolerance:.0e}"
            assert res.passed, res.report()

        return prop

    single = kst.kans_and_permutations(dtype=dtype, **akw).map(lambda wp: ([wp[0]], [wp[1]]))
    rows.append(_run_property(f"{output} / single KANs", equiv, single, settings, seed, dtype))

    if widths is None:
        from hypothesis import strategies as st

        @st.composite
        def mixed(draw):
            kw = dict(akw)
            if fmt.name in ("graph", "pykan"):  # one G, k per batch: draw them once
                a = draw(kst.architectures(**akw))
                kw.update(grid_sizes=a["grid_sizes"][0], k=a["k"][0])
            return draw(kst.batches_and_permutations(min_size=2, max_size=3, dtype=dtype, **kw))

        rows.append(_run_property(f"{output} / mixed-architecture batches", equiv, mixed(), settings, seed, dtype))

    if sensitivity:
        def sens(stats):
            def prop(w):
                res = sensitivity_check(model, w, input_format=fmt)
                stats["n"] += 1
                stats["worst"] = res.error if stats["worst"] is None else min(stats["worst"], res.error)
                stats["threshold"] = f"> {res.tolerance:.0e}"
                assert res.passed, res.report()

            return prop

        skw = dict(akw)
        if widths is None:
            skw["min_width"] = 2
        rows.append(_run_property("sensitive to input-neuron permutation", sens,
                                  kst.kan_weights(dtype=dtype, **skw), settings, seed, dtype))
    return rows


def format_table(rows: Sequence[SuiteRow]) -> str:
    """A fixed-width pass/fail table of :func:`run_suite` rows."""
    w = max(len(r.name) for r in rows)
    lines = [f"{'check':<{w}}  {'result':<6}  {'measured':>10}  {'threshold':>9}  {'examples':>8}"]
    lines.append("-" * len(lines[0]))
    for r in rows:
        lines.append(f"{r.name:<{w}}  {'PASS' if r.passed else 'FAIL':<6}  {r.measured:>10.3e}  {r.threshold:>9}  "
                     f"{r.examples:>8}")
    return "\n".join(lines)
