"""The ``wskan`` command.

Each subcommand group lives in its own module exposing ``add_parser(subparsers)``. Groups
are discovered: every subpackage ``wskan_ext.<name>`` with a module ``wskan_ext.<name>.cli``
defining ``add_parser`` contributes (e.g. ``wskan_ext/zoo/cli.py``, ``wskan_ext/tasks/cli.py``);
modules listed in :data:`SUBCOMMAND_MODULES` are added too. ``add_parser`` registers a parser
whose ``func`` default takes the parsed ``argparse.Namespace`` and returns an exit code
(``int`` or ``None``). ``wskan check`` (the equivariance suite, the same command as
``python -m wskan_ext.equivariance_tests``) is registered here.

One error policy for every subcommand (:func:`main`):

* the errors a user can cause -- :data:`EXPECTED_ERRORS` (bad values, missing or malformed
  files, unknown keys, missing optional dependencies, :class:`~wskan_ext.zoo.store.ZooFormatError`,
  a file that is not safetensors), a subcommand's ``SystemExit("message")`` and a bad
  command line -- print **one line** ``wskan <cmd>: error: <message>`` on stderr and exit
  with status 2;
* ``wskan --debug ...`` (or ``WSKAN_DEBUG=1``) re-raises them with the full traceback;
* anything else is a bug and keeps its traceback.

Help texts show each option's default (and argparse lists the allowed values of options
with ``choices``); descriptions and epilogs keep their line breaks.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

__all__ = ["main", "build_parser", "SUBCOMMAND_MODULES", "EXPECTED_ERRORS", "HelpFormatter", "Parser", "CommandExit"]

#: Extra modules contributing subcommands (besides the discovered ``wskan_ext.<pkg>.cli``).
SUBCOMMAND_MODULES: list = []


def _expected_errors() -> tuple:
    errors = [ValueError, TypeError, FileNotFoundError, NotADirectoryError, KeyError, ImportError, OSError]
    try:
        from .zoo.store import ZooFormatError
    except ImportError:  # pragma: no cover - the store is part of the package
        pass
    else:
        errors.append(ZooFormatError)
    try:  # a file that is not safetensors (e.g. `convert mlp-to-kan --state-dict garbage`)
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - a dependency
        pass
    else:
        errors.append(SafetensorError)
    return tuple(errors)


#: Exceptions that :func:`main` reports as one line (exit status 2) instead of a traceback.
EXPECTED_ERRORS = _expected_errors()


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written (line breaks kept); every option's help ends with
    its default -- unless the default is ``None``/``False`` (nothing to say) or the help
    text already states it."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default is argparse.SUPPRESS
                or any(m in text.lower() for m in ("%(default)", "(default", "default:"))
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return action.help
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return action.help
        if isinstance(default, (list, tuple)):
            shown = " ".join(str(v) for v in default) if default else "none"
            return f"{text} (default: {shown.replace('%', '%%')})".lstrip()
        return f"{text} (default: %(default)s)".lstrip()


_STOCK_FORMATTERS = (argparse.HelpFormatter, argparse.RawDescriptionHelpFormatter,
                     argparse.ArgumentDefaultsHelpFormatter)


class Parser(argparse.ArgumentParser):
    """The parser class of ``wskan`` and (through ``add_subparsers``) of every subcommand.

    * a stock ``formatter_class`` becomes :class:`HelpFormatter`;
    * a usage error prints one line, ``wskan <cmd>: error: <message> (see 'wskan <cmd> --help')``,
      and exits with status 2 (argparse's default prints the whole usage first).
    """

    def __init__(self, *args, **kwargs):
        fmt = kwargs.get("formatter_class", argparse.HelpFormatter)
        if fmt in _STOCK_FORMATTERS:
            kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _subcommand_modules() -> list:
    import importlib.util
    import pkgutil

    import wskan_ext

    found = []
    for info in sorted(pkgutil.iter_modules(wskan_ext.__path__), key=lambda i: i.name):
        if info.ispkg and importlib.util.find_spec(f"wskan_ext.{info.name}.cli") is not None:
            found.append(f"wskan_ext.{info.name}.cli")
    return found + [m for m in SUBCOMMAND_MODULES if m not in found]


def _add_check(sub) -> None:
    """``wskan check``: the equivariance suite (options and engine of
    ``python -m wskan_ext.equivariance_tests``, not a copy of them)."""
    from .equivariance_tests import __main__ as suite_cli

    p = sub.add_parser(
        "check", help="run the KAN equivariance suite on your metanetwork",
        description="Run the KAN equivariance suite on a model (the same command as\n"
                    "`python -m wskan_ext.equivariance_tests`). Exit status: 0 when every check passes,\n"
                    "1 when one fails (the output ends with the command that replays it), 2 on a usage error.",
        epilog="example:\n  wskan check --model my_models:make_gnn --input-format graph --output node\n"
               "  wskan check --model my_models:make_gnn --profile thorough --seed 1234",
    )
    suite_cli.add_arguments(p)
    p.set_defaults(func=lambda a: suite_cli.run(a, prog="wskan check"))


def _walk(parser):
    """Every parser of the tree (the top-level one first)."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                yield from _walk(sub)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = Parser(
        prog="wskan",
        description="Weight-space learning on Kolmogorov-Arnold Networks.",
        epilog="example:\n  wskan zoo build --dataset digits --size 64 --out my_zoo\n\n"
               "Errors are reported in one line (exit status 2); add --debug for the traceback.",
    )
    parser.add_argument("--version", action="version", version=f"wskan {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _subcommand_modules():
        mod = importlib.import_module(name)
        add = getattr(mod, "add_parser", None)
        if add is not None:
            add(sub)
    if "check" not in sub.choices:
        _add_check(sub)
    for p in _walk(parser):
        # the innermost parser's defaults win, so `_wskan_prog` names the subcommand that ran
        p.set_defaults(_wskan_prog=p.prog)
        if p is not parser and "--debug" not in p._option_string_actions:
            p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _message(e: BaseException) -> str:
    """``e`` as one line."""
    if isinstance(e, KeyError) and len(e.args) == 1:  # str(KeyError) is the repr of its argument
        key = e.args[0]
        text = key if isinstance(key, str) and " " in key.strip() else f"unknown key {key!r}"
    elif isinstance(e, ImportError) and not str(e):
        text = f"missing module {e.name}"
    elif type(e).__name__ == "SafetensorError":  # names no file; say what it means
        text = f"not a valid safetensors file ({e})"
    else:
        text = str(e)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines) or type(e).__name__


class _Status(int):
    """Exit status 2 whose ``str()`` is the message (so code written for argparse-style
    ``SystemExit("message")`` still reads the message from ``e.code``)."""

    def __new__(cls, message: str):
        obj = super().__new__(cls, 2)
        obj.message = message
        return obj

    def __str__(self):
        return self.message


class CommandExit(SystemExit):
    """A subcommand's ``raise SystemExit("message")``, already reported in the one-line
    format: ``code`` is the status 2 (an ``int``), ``str()`` of it and of the exception is
    the message."""

    def __init__(self, message: str):
        super().__init__(_Status(message))
        self.message = message


def _reported_exit(e: SystemExit, prog: str) -> SystemExit:
    """``e`` as it should leave :func:`main`: a message becomes one line on stderr and a
    :class:`CommandExit` (status 2); a numeric status is kept."""
    if e.code is None or isinstance(e.code, int):
        return e
    text = str(e.code)
    for prefix in (f"{prog}: error: ", f"{prog}: ", "error: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    text = _message(ValueError(text))
    print(f"{prog}: error: {text}", file=sys.stderr)
    return CommandExit(text)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``wskan`` console script: returns the command's exit status.

    Like any argparse program, ``--help``, ``--version`` and usage errors (one line, status 2)
    raise ``SystemExit``; so does a subcommand's ``SystemExit("message")``, reported in one
    line and re-raised as :class:`CommandExit` (status 2). Expected errors
    (:data:`EXPECTED_ERRORS`) print one line and return 2 -- or, with ``--debug`` or
    ``WSKAN_DEBUG=1``, propagate with their traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get("WSKAN_DEBUG", "") not in ("", "0")
    prog = getattr(args, "_wskan_prog", parser.prog)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        rc = func(args)
    except SystemExit as e:  # a subcommand's own `raise SystemExit("message")`
        reported = _reported_exit(e, prog)
        if reported is e:
            raise
        raise reported from None
    except EXPECTED_ERRORS as e:
        if debug:
            raise
        print(f"{prog}: error: {_message(e)}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
