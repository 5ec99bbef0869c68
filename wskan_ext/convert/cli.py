"""``wskan convert``: KAN -> MLP (a standard ``torch.export`` program) and MLP -> KAN."""

from __future__ import annotations

import argparse
import json
import re

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
                    "MLP, check it against the KAN on random inputs inside and far outside the grid, and "
                    "save it with torch.export (no wskan_ext code needed to load it).",
        epilog="example:\n  wskan convert kan-to-mlp --zoo demo_zoo --id 17 --out kan17_mlp.pt2\n"
               "  python -c \"import torch; m = torch.export.load('kan17_mlp.pt2').module()\"",
    )
    src = k.add_mutually_exclusive_group(required=True)
    src.add_argument("--zoo", help="zoo directory (with --id)")
    src.add_argument("--weights", help="KANWeights safetensors file (wskan_ext.zoo.save_kan_weights)")
    k.add_argument("--id", type=int, help="zoo member id")
    k.add_argument("--form", choices=["factored", "merged"], default="factored")
    k.add_argument("--out", required=True, help="output .pt2 file")
    k.set_defaults(func=_kan_to_mlp)

    m = sub.add_parser(
        "mlp-to-kan", formatter_class=_RAW,
        help="convert an MLP state_dict of Linear layers into a KAN (route 'exact')",
        description="Read an MLP given as a state_dict of Linear layers (safetensors, keys '<i>.weight' / "
                    "'<i>.bias' in layer order, the nn.Sequential layout) with one activation between "
                    "layers, convert it exactly to a KAN and save it as a KANWeights safetensors file.",
        epilog="example:\n  wskan convert mlp-to-kan --state-dict mlp.safetensors --activation relu "
               "--out kan.safetensors",
    )
    m.add_argument("--state-dict", required=True, help="safetensors file of nn.Linear weights and biases")
    m.add_argument("--activation", default="relu", help="activation between layers (default relu)")
    m.add_argument("--out", required=True, help="output KANWeights safetensors file")
    m.set_defaults(func=_mlp_to_kan)


def _kan_to_mlp(args) -> int:
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
        raise SystemExit(f"wskan convert kan-to-mlp: expected one KAN, the file holds {w.num_models}")
    mlp = kan_to_mlp(w, form=args.form)
    g = torch.Generator().manual_seed(0)
    x = torch.cat([2 * torch.rand(256, w.widths[0], generator=g) - 1, 100 * torch.randn(64, w.widths[0], generator=g)])
    x = x.to(w.dtype)
    with torch.no_grad():
        ref, got = w(x), mlp(x)
    err = ((got - ref).abs().max() / ref.abs().max().clamp_min(1.0)).item()
    program = torch.export.export(mlp, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, args.out)
    counts = mlp_parameter_count(mlp)
    print(json.dumps({"out": args.out, "form": args.form, "kan_parameters": w.num_parameters(),
                      "mlp_parameters": counts, "max_rel_error": err}, indent=2, default=str))
    return 0


def _mlp_to_kan(args) -> int:
    import torch
    from safetensors.torch import load_file

    from ..zoo.store import save_kan_weights
    from . import activation_module, mlp_to_kan

    state = load_file(args.state_dict)
    layers = sorted({int(m.group(1)) for key in state if (m := re.match(r"^(\d+)\.weight$", key))})
    if not layers:
        raise SystemExit(f"{args.state_dict}: no '<i>.weight' keys of Linear layers found")
    modules = []
    for j, i in enumerate(layers):
        W = state[f"{i}.weight"]
        lin = torch.nn.Linear(W.shape[1], W.shape[0], bias=f"{i}.bias" in state, dtype=W.dtype)
        with torch.no_grad():
            lin.weight.copy_(W)
            if lin.bias is not None:
                lin.bias.copy_(state[f"{i}.bias"])
        modules.append(lin)
        if j < len(layers) - 1:
            modules.append(activation_module(args.activation))
    w = mlp_to_kan(torch.nn.Sequential(*modules), route="exact")
    save_kan_weights(args.out, w)
    print(json.dumps({"out": args.out, "widths": w.widths, "base_fun": w.base_fun}, indent=2))
    return 0
