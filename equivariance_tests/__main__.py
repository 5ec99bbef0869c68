"""``python -m wskan_ext.equivariance_tests --model package.module:factory [...]``

Runs the suite (:func:`.suite.run_suite`) on the model returned by ``factory()`` and
prints a pass/fail table with the measured errors; the exit status is 0 when every check
passes, 1 when one fails, 2 on a usage error (bad ``--model``, ...).

The factory is called without arguments and must return a callable taking one input in
``--input-format`` (e.g. a :class:`~wskan_ext.KANWeights` for ``weights``, a PyG ``Batch``
for ``graph``) and returning the ``--output`` kind. An ``nn.Module`` is moved to
``--dtype`` and put in eval mode.
"""

from __future__ import annotations

import argparse
import importlib
import sys


def _ints(text: str):
    if text is None:
        return None
    if "-" in text:
        lo, hi = text.split("-", 1)
        return (int(lo), int(hi))
    return int(text)


def _load(spec: str):
    if ":" not in spec:
        raise ValueError(f"--model must look like 'package.module:factory', got {spec!r}")
    mod, _, attr = spec.partition(":")
    obj = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{spec} is not callable")
    return obj


def build_parser() -> argparse.ArgumentParser:
    from .actions import formats, outputs

    p = argparse.ArgumentParser(prog="python -m wskan_ext.equivariance_tests",
                                description="Run the KAN equivariance suite on your metanetwork.")
    p.add_argument("--model", required=True, help="package.module:factory (factory() returns the model)")
    p.add_argument("--input-format", default="weights", choices=formats())
    p.add_argument("--output", default="invariant", choices=outputs())
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    p.add_argument("--profile", default="ci", choices=("ci", "thorough"))
    p.add_argument("--tolerance", type=float, default=None, help="override the dtype default")
    p.add_argument("--widths", default=None, help="fix the architecture, e.g. 2,3,1")
    p.add_argument("--max-depth", type=int, default=3)
    p.add_argument("--max-width", type=int, default=4)
    p.add_argument("--grid", default="1-5", help="grid size G: an int or a range lo-hi")
    p.add_argument("--k", default="1-3", help="spline order k: an int or a range lo-hi")
    p.add_argument("--per-layer", action="store_true", help="vary G, k per layer")
    p.add_argument("--max-examples", type=int, default=None, help="override the profile's example count")
    p.add_argument("--no-sensitivity", action="store_true", help="skip the input-permutation sensitivity check")
    p.add_argument("-v", "--verbose", action="store_true", help="print failure reports in full")
    return p


def main(argv=None) -> int:
    import torch

    from .suite import format_table, run_suite

    args = build_parser().parse_args(argv)
    dtype = getattr(torch, args.dtype)
    try:
        factory = _load(args.model)
        model = factory()
    except (ImportError, AttributeError, ValueError, TypeError) as e:
        print(f"error: cannot load --model {args.model}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if isinstance(model, torch.nn.Module):
        model = model.to(dtype).eval()
    widths = [int(v) for v in args.widths.split(",")] if args.widths else None
    rows = run_suite(model, input_format=args.input_format, output=args.output, dtype=dtype, profile=args.profile,
                     tolerance=args.tolerance, widths=widths, max_depth=args.max_depth, max_width=args.max_width,
                     grid_sizes=_ints(args.grid), k=_ints(args.k), per_layer=args.per_layer,
                     sensitivity=not args.no_sensitivity, max_examples=args.max_examples)
    print(f"KAN equivariance suite: model={args.model} input={args.input_format} output={args.output} "
          f"dtype={args.dtype} profile={args.profile}")
    print(format_table(rows))
    failed = [r for r in rows if not r.passed]
    for r in failed:
        print(f"\nFAIL: {r.name}")
        text = r.report if args.verbose else "\n".join(r.report.splitlines()[:25])
        print(text)
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
