"""``python -m wskan_ext.equivariance_tests --model package.module:factory [...]``

Runs the suite (:func:`.suite.run_suite`) on the model returned by ``factory()`` and
prints a pass/fail table with the measured errors; the exit status is 0 when every check
passes, 1 when one fails, 2 on a usage error (bad ``--model``, ...). A failure ends with the
command that replays it (the same options, plus ``--seed N`` under a random profile).
``wskan check`` is the same command (:func:`add_arguments`, :func:`run`).

The factory is called without arguments (after ``torch.manual_seed(0)``, so a randomly
initialised model is the same on every run) and must return a callable taking one input in
``--input-format`` (e.g. a :class:`~wskan_ext.KANWeights` for ``weights``, a PyG ``Batch``
for ``graph``) and returning the ``--output`` kind. An ``nn.Module`` is moved to
``--dtype`` and put in eval mode.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys


def _ints(text: str, flag: str = "--grid"):
    if text is None:
        return None
    try:
        if "-" in text:
            lo, hi = text.split("-", 1)
            return (int(lo), int(hi))
        return int(text)
    except ValueError:
        raise UsageError(f"{flag} must be an int or a range lo-hi, got {text!r}") from None


class UsageError(ValueError):
    """A bad command line (``--model`` that cannot be loaded, ...): exit status 2."""


def _load(spec: str):
    if ":" not in spec:
        raise UsageError(f"--model must look like 'package.module:factory', got {spec!r}")
    mod, _, attr = spec.partition(":")
    # like `python -m`, find modules in the working directory (`wskan check` is a console script)
    added = os.getcwd() not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise UsageError(f"cannot load --model {spec}: {type(e).__name__}: {e}") from e
    finally:
        if added:
            sys.path.remove(os.getcwd())
    if not callable(obj):
        raise UsageError(f"cannot load --model {spec}: it is not callable")
    return obj


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the suite's options to ``p`` (shared by this module and ``wskan check``)."""
    from .actions import formats, outputs

    actions = [
        p.add_argument("--model", required=True, help="package.module:factory (factory() returns the model)"),
        p.add_argument("--input-format", default="weights", choices=formats(), help="what the model consumes"),
        p.add_argument("--output", default="invariant", choices=outputs(), help="what the model returns"),
        p.add_argument("--dtype", default="float64", choices=("float64", "float32"),
                       help="dtype of the KANs (an nn.Module is cast to it)"),
        p.add_argument("--profile", default="ci", choices=("ci", "thorough"),
                       help="Hypothesis profile: ci = derandomized, bounded; thorough = random, many examples"),
        p.add_argument("--seed", type=int, default=None,
                       help="Hypothesis seed (a random profile draws one and prints it with a failure; "
                            "pass it back to replay)"),
        p.add_argument("--tolerance", type=float, default=None, help="override the dtype's default tolerance"),
        p.add_argument("--widths", default=None, help="fix the architecture, e.g. 2,3,1"),
        p.add_argument("--max-depth", type=int, default=3, help="most layers of a drawn KAN"),
        p.add_argument("--max-width", type=int, default=4, help="most neurons per layer of a drawn KAN"),
        p.add_argument("--grid", default="1-5", help="grid size G: an int or a range lo-hi"),
        p.add_argument("--k", default="1-3", help="spline order k: an int or a range lo-hi"),
        p.add_argument("--per-layer", action="store_true", help="vary G, k per layer"),
        p.add_argument("--max-examples", type=int, default=None, help="override the profile's example count"),
        p.add_argument("--no-sensitivity", action="store_true", help="skip the input-permutation sensitivity check"),
        p.add_argument("-v", "--verbose", action="store_true", help="print failure reports in full"),
    ]
    p.set_defaults(_suite_actions=tuple(actions))
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wskan_ext.equivariance_tests",
                                description="Run the KAN equivariance suite on your metanetwork.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    return add_arguments(p)


def replay_command(prog: str, args: argparse.Namespace, seed=None) -> str:
    """The command line that replays ``args`` (with ``--seed seed`` when given)."""
    parts = []
    for a in getattr(args, "_suite_actions", ()):
        value, flag = getattr(args, a.dest), a.option_strings[-1]
        if a.dest in ("seed", "verbose"):
            continue
        if isinstance(a, argparse._StoreTrueAction):
            parts += [flag] if value else []
        elif value is not None and (value != a.default or a.required):
            parts += [flag, str(value)]
    if seed is not None:
        parts += ["--seed", str(seed)]
    return " ".join([prog] + [shlex.quote(p) for p in parts])


def run(args: argparse.Namespace, prog: str = "python -m wskan_ext.equivariance_tests") -> int:
    """Run the suite as parsed by :func:`add_arguments`; print the table; 0 if all passed,
    1 if a check failed. Raises :class:`UsageError` for a bad ``--model``."""
    import torch

    from .suite import format_table, run_suite

    dtype = getattr(torch, args.dtype)
    try:
        widths = [int(v) for v in args.widths.split(",")] if args.widths else None
    except ValueError:
        raise UsageError(f"--widths must be comma-separated ints such as 2,3,1, got {args.widths!r}") from None
    grid, k = _ints(args.grid, "--grid"), _ints(args.k, "--k")
    factory = _load(args.model)
    torch.manual_seed(0)  # the same model on every run (not --seed: a replay must rebuild the same model)
    try:
        model = factory()
    except (ImportError, AttributeError, ValueError, TypeError) as e:
        raise UsageError(f"cannot load --model {args.model}: {type(e).__name__}: {e}") from e
    if isinstance(model, torch.nn.Module):
        model = model.to(dtype).eval()
    rows = run_suite(model, input_format=args.input_format, output=args.output, dtype=dtype, profile=args.profile,
                     tolerance=args.tolerance, widths=widths, max_depth=args.max_depth, max_width=args.max_width,
                     grid_sizes=grid, k=k, per_layer=args.per_layer,
                     sensitivity=not args.no_sensitivity, max_examples=args.max_examples, seed=args.seed)
    seed = rows[0].seed if rows else args.seed
    print(f"KAN equivariance suite: model={args.model} input={args.input_format} output={args.output} "
          f"dtype={args.dtype} profile={args.profile}" + (f" seed={seed}" if seed is not None else ""))
    print(format_table(rows))
    failed = [r for r in rows if not r.passed]
    for r in failed:
        print(f"\nFAIL: {r.name}")
        text = r.report if args.verbose else "\n".join(r.report.splitlines()[:25])
        print(text)
    if failed:
        how = "same seed" if seed is not None else "derandomized profile: same examples"
        print(f"\nreplay ({how}): {replay_command(prog, args, seed)}")
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args, prog=parser.prog)
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
