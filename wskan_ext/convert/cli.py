"""``wskan convert``: KAN -> MLP (a standard ``torch.export`` program) and MLP -> KAN."""

from __future__ import annotations

import argparse
import json

__all__ = ["add_parser"]

_RAW = argparse.RawDescriptionHelpFormatter


def add_parser(subparsers) -> None:
    """Register ``convert kan-to-mlp`` and ``convert mlp-to-kan``."""
    p = subparsers.add_parser(
        "convert", help="exact KAN <-> MLP conversion", formatter_class=_RAW,
        description="Convert KANs into standard MLPs and MLPs into KANs, exactly "
                    "(see the 'KAN <-> MLP conversion' docs page).",
        epilog="examples:\n"
               "  wskan convert kan-to-mlp --zoo demo_zoo --id 17 --out kan17_mlp.pt2\n"
               "  wskan convert kan-to-mlp --weights kan.safetensors --form merged --out mlp.pt2\n"
               "  wskan convert mlp-to-kan --state-dict mlp.safetensors --activation relu --out kan.safetensors",
    )
    sub = p.add_subparsers(dest="direction", metavar="DIRECTION", required=True)

    k = sub.add_parser(
        "kan-to-mlp", formatter_class=_RAW,
        help="write a KAN as an MLP program (torch.export .pt2, loadable with torch.export.load)",
        description="Convert one KAN (a zoo member or a KANWeights safetensors file) to an nn.Sequential "
                    "MLP, export it with torch.export, evaluate the exported program against the KAN on "
                    "random inputs inside and far outside the grid, print the max relative error and save "
                    "the program only if the error is within --tol (otherwise exit with status 2).",
        epilog="example:\n  wskan convert kan-to-mlp --zoo demo_zoo --id 17 --out kan17_mlp.pt2\n"
               "  python -c \"import torch; m = torch.export.load('kan17_mlp.pt2').module()\"",
    )
    src = k.add_mutually_exclusive_group(required=True)
    src.add_argument("--zoo", help="zoo directory (with --id)")
    src.add_argument("--weights", help="KANWeights safetensors file (wskan_ext.zoo.save_kan_weights)")
    k.add_argument("--id", type=int, help="zoo member id")
    k.add_argument("--form", choices=["factored", "merged"], default="factored")
    k.add_argument("--out", required=True, help="output .pt2 file (parent directories are created)")
    k.add_argument("--tol", type=float, help="largest accepted relative error (default: sqrt(eps) of the dtype, "
                                              "3.5e-4 for float32, 1.5e-8 for float64)")
    k.set_defaults(func=_kan_to_mlp)

    m = sub.add_parser(
        "mlp-to-kan", formatter_class=_RAW,
        help="convert an MLP state_dict (Linear, BatchNorm1d, activations) into a KAN (route 'exact')",
        description="Read an MLP given as the state_dict of an nn.Sequential (safetensors). The module "
                    "indices in the keys give the architecture: consecutive indices mean no module in "
                    "between (the maps are composed, nothing is inserted), a gap of one index is one "
                    "--activation, BatchNorm1d keys (running_mean/var) are folded exactly (eval mode). "
                    "Anything ambiguous (longer gaps, leading or trailing parameter-free modules) needs "
                    "--layers. Unknown keys are refused. The KAN is checked against the MLP on random "
                    "inputs; the max relative error is printed and the file is written only if it is "
                    "within --tol (otherwise exit with status 2).",
        epilog="examples:\n  wskan convert mlp-to-kan --state-dict mlp.safetensors --activation relu "
               "--out kan.safetensors\n"
               "  wskan convert mlp-to-kan --state-dict mlp.safetensors --layers linear,bn,tanh,linear,relu "
               "--out kan.safetensors",
    )
    m.add_argument("--state-dict", required=True, help="safetensors file of an nn.Sequential's state_dict")
    m.add_argument("--activation", default="relu", help="the module filling a one-index gap (default relu)")
    m.add_argument("--layers", help="every module in order, comma-separated, e.g. linear,relu,linear,linear "
                                    "(tokens: linear, bn, dropout, identity, flatten, relu, tanh, silu, ...)")
    m.add_argument("--bn-eps", type=float, default=1e-5, help="BatchNorm1d eps (not stored in a state dict)")
    m.add_argument("--tol", type=float, help="largest accepted relative error (default: sqrt(eps) of the dtype)")
    m.add_argument("--out", required=True, help="output KANWeights safetensors file")
    m.set_defaults(func=_mlp_to_kan)


def _tolerance(args, dtype) -> float:
    if args.tol is not None:
        if not args.tol > 0:
            raise ValueError(f"--tol must be > 0, got {args.tol}")
        return float(args.tol)
    import torch

    return float(torch.finfo(dtype).eps) ** 0.5


def _rel_error(got, ref) -> float:
    return ((got.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1.0)).item()


def _verdict(report: dict, what: str) -> None:
    """Print the report; raise (one line, exit status 2 under ``wskan``) above tolerance."""
    print(json.dumps(report, indent=2, default=str))
    if not report["max_rel_error"] <= report["tolerance"]:
        raise ValueError(
            f"{what}: max relative error {report['max_rel_error']:.3g} exceeds the tolerance "
            f"{report['tolerance']:.3g} on random inputs; nothing was written"
        )


def _kan_inputs(w, generator):
    """256 points uniform in each input's grid range, 64 far outside (N(0, 100^2))."""
    import torch

    g0 = w.grid[0]
    lo, hi = g0[:, 0], g0[:, -1]
    u = torch.rand(256, w.widths[0], generator=generator, dtype=torch.float64).to(w.dtype)
    far = 100 * torch.randn(64, w.widths[0], generator=generator, dtype=torch.float64).to(w.dtype)
    return torch.cat([lo + u * (hi - lo), far])


def _kan_to_mlp(args) -> int:
    import os

    import torch

    from ..zoo.store import load_kan_weights
    from . import kan_to_mlp, mlp_parameter_count

    if args.zoo is not None:
        if args.id is None:
            raise SystemExit("wskan convert kan-to-mlp: --zoo needs --id")
        from ..zoo import Zoo

        w = Zoo(args.zoo).member(args.id)
    else:
        w = load_kan_weights(args.weights)
    if w.batched:
        raise ValueError(f"{args.weights}: expected one KAN, the file holds {w.num_models}")
    tol = _tolerance(args, w.dtype)
    mlp = kan_to_mlp(w, form=args.form)
    x = _kan_inputs(w, torch.Generator().manual_seed(0))
    program = torch.export.export(mlp, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    with torch.no_grad():
        ref, got = w(x), program.module()(x)
    report = {"out": args.out, "form": args.form, "kan_parameters": w.num_parameters(),
              "mlp_parameters": mlp_parameter_count(mlp), "max_rel_error": _rel_error(got, ref), "tolerance": tol,
              "checked_on": "256 inputs inside the grid, 64 far outside (N(0, 100^2))"}
    _verdict(report, "wskan convert kan-to-mlp")
    out = os.path.join(os.path.realpath(os.path.dirname(args.out) or os.curdir), os.path.basename(args.out))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    torch.export.save(program, out)
    return 0


def _mlp_to_kan(args) -> int:
    import torch
    from safetensors.torch import load_file

    from ..zoo.store import save_kan_weights
    from . import mlp_to_kan
    from .state_dict import mlp_from_state_dict

    try:
        state = load_file(args.state_dict)
    except FileNotFoundError:
        raise ValueError(f"{args.state_dict}: file not found") from None
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"{args.state_dict}: not a readable safetensors file ({e})") from None
    mlp = mlp_from_state_dict(state, layers=args.layers, activation=args.activation, bn_eps=args.bn_eps)
    w = mlp_to_kan(mlp, route="exact")
    dtype = w.dtype
    tol = _tolerance(args, dtype)
    g = torch.Generator().manual_seed(0)
    n0 = w.widths[0]
    x = torch.cat([torch.randn(256, n0, generator=g, dtype=torch.float64),
                   100 * torch.randn(64, n0, generator=g, dtype=torch.float64)]).to(dtype)
    with torch.no_grad():
        ref, got = mlp(x), w(x)
    layers = [type(mod).__name__ for mod in mlp]
    report = {"out": args.out, "widths": w.widths, "base_fun": w.base_fun, "mlp_modules": layers,
              "max_rel_error": _rel_error(got, ref), "tolerance": tol,
              "checked_on": "256 inputs N(0, 1), 64 inputs N(0, 100^2)"}
    if args.layers is None:
        report["assumed"] = ("no parameter-free module after the last layer (a state dict cannot show one; "
                             "list every module with --layers if there is)")
    _verdict(report, "wskan convert mlp-to-kan")
    save_kan_weights(args.out, w)
    return 0
