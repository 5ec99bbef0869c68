"""Shared output options of the benchmark scripts that write a docs include and a JSON file."""

from __future__ import annotations

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def output_args(ap, name: str) -> None:
    """``--threads`` (default 1), ``--md`` (``docs/NAME.inc``) and ``--json``
    (``benchmarks/out/NAME.json``) on argparse parser ``ap``."""
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--md", default=os.path.join(HERE, "..", "docs", f"{name}.inc"), help="docs include to write")
    ap.add_argument("--json", default=os.path.join(HERE, "out", f"{name}.json"), help="JSON to write")


def write_report(a, text: str, payload: dict) -> None:
    """Print ``text`` and write it to ``a.md``, and ``payload`` to ``a.json``."""
    print(text)
    with open(a.md, "w") as f:
        f.write(text + "\n")
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(payload, f, indent=1)
    print(f"wrote {a.md} and {a.json}")
