"""Every ``.. code-block:: python`` in the docs runs, page by page, so tutorials cannot rot.

Blocks of one page share a namespace and run in order in a fresh temporary directory
(so files a tutorial writes land there). Illustrative snippets that are not meant to run
use ``.. code-block:: text`` instead.
"""

import re
import textwrap
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. code-block:: python[ \t]*\n((?P=indent)[ \t]+:.*\n)*\n", re.M)


def python_blocks(text: str):
    """Yield the body of each python code-block (dedented)."""
    for m in _BLOCK.finditer(text):
        base = len(m.group("indent"))
        lines = []
        for line in text[m.end():].splitlines():
            if line.strip() and (len(line) - len(line.lstrip())) <= base:
                break
            lines.append(line)
        yield textwrap.dedent("\n".join(lines))


def readme_blocks(text: str):
    """Yield the body of each fenced python block of a Markdown file."""
    import re as _re

    for m in _re.finditer(r"^```python\n(.*?)^```", text, _re.S | _re.M):
        yield m.group(1)


@pytest.mark.slow
def test_readme_quickstart_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = list(readme_blocks((DOCS.parent / "README.md").read_text()))
    assert blocks, "README has no python block"
    ns = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md[block {i}]", "exec"), ns)


PAGES = sorted(p for p in DOCS.rglob("*.rst") if "_build" not in p.parts and list(python_blocks(p.read_text())))


def test_block_extraction_sees_code():
    sample = "Text\n\n.. code-block:: python\n   :caption: x\n\n   a = 1\n   b = a + 1\n\nAfter\n"
    assert list(python_blocks(sample)) == ["a = 1\nb = a + 1\n"]
    assert list(python_blocks("Text\n\n.. code-block:: text\n\n   a = 1\n")) == []


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_docs_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    ns = {"__name__": "__docs__"}
    for i, block in enumerate(python_blocks(page.read_text())):
        try:
            exec(compile(block, f"{page.name}[block {i}]", "exec"), ns)
        except Exception as e:  # pragma: no cover - the failure report is the point
            raise AssertionError(f"{page.name}: code block {i} failed: {type(e).__name__}: {e}\n---\n{block}") from e

