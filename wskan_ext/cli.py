"""The ``wskan`` command.

Each subcommand group lives in its own module exposing ``add_parser(subparsers)``. Groups
are discovered: every subpackage ``wskan_ext.<name>`` with a module ``wskan_ext.<name>.cli``
defining ``add_parser`` contributes (e.g. ``wskan_ext/zoo/cli.py``, ``wskan_ext/tasks/cli.py``);
modules listed in :data:`SUBCOMMAND_MODULES` are added too. ``add_parser`` registers a parser
whose ``func`` default takes the parsed ``argparse.Namespace`` and returns an exit code
(``int`` or ``None``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

__all__ = ["main", "build_parser", "SUBCOMMAND_MODULES"]

#: Extra modules contributing subcommands (besides the discovered ``wskan_ext.<pkg>.cli``).
SUBCOMMAND_MODULES: list = []


def _subcommand_modules() -> list:
    import importlib.util
    import pkgutil

    import wskan_ext

    found = []
    for info in sorted(pkgutil.iter_modules(wskan_ext.__path__), key=lambda i: i.name):
        if info.ispkg and importlib.util.find_spec(f"wskan_ext.{info.name}.cli") is not None:
            found.append(f"wskan_ext.{info.name}.cli")
    return found + [m for m in SUBCOMMAND_MODULES if m not in found]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wskan",
        description="Weight-space learning on Kolmogorov-Arnold Networks.",
        epilog="example:\n  wskan zoo build --dataset digits --size 64 --out my_zoo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _subcommand_modules():
        mod = importlib.import_module(name)
        add = getattr(mod, "add_parser", None)
        if add is not None:
            add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``wskan`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    rc = func(args)
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
