"""Every ``wskan`` subcommand has ``--help`` text with an example."""

import argparse

import pytest

from wskan_ext.cli import build_parser


def _leaves(parser, prefix=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    if prefix:
        yield prefix, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaves(sub, prefix + (name,))


COMMANDS = list(_leaves(build_parser()))


def test_all_design_subcommands_exist():
    top = {c[0] for c, _ in COMMANDS}
    assert {"zoo", "train", "evaluate", "convert", "demo"} <= top


@pytest.mark.parametrize("command, parser", COMMANDS, ids=[" ".join(c) for c, _ in COMMANDS])
def test_help_has_example(command, parser):
    text = parser.format_help()
    assert "example" in text.lower(), f"wskan {' '.join(command)} --help has no example"
    assert "wskan" in text or "torchrun" in text
