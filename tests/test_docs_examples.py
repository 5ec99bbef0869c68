"""Every ``.. code-block:: python`` in the docs runs, page by page, so tutorials cannot rot.

Blocks of one page share a namespace and run in order in a fresh temporary directory
(so files a tutorial writes land there), seeded, with one torch thread: exactly as the
docs build runs them to show their output, through the same function
(``run_blocks`` of ``docs/_ext/run_examples.py``). Illustrative snippets that are not
meant to run use ``.. code-block:: text`` instead.
"""

import importlib.util
import re
import textwrap
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. code-block:: python[ \t]*\n((?P=indent)[ \t]+:.*\n)*\n", re.M)

_spec = importlib.util.spec_from_file_location("run_examples", DOCS / "_ext" / "run_examples.py")
run_examples = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_examples)
run_blocks, ExampleError = run_examples.run_blocks, run_examples.ExampleError


def python_blocks(text: str, with_lines: bool = False):
    """Yield the body of each python code-block (dedented); with ``with_lines``,
    ``(body, line of the directive)`` pairs, the line Sphinx reports for the block."""
    for m in _BLOCK.finditer(text):
        base = len(m.group("indent"))
        lines = []
        for line in text[m.end():].splitlines():
            if line.strip() and (len(line) - len(line.lstrip())) <= base:
                break
            lines.append(line)
        body = textwrap.dedent("\n".join(lines))
        yield (body, text.count("\n", 0, m.start()) + 1) if with_lines else body


def readme_blocks(text: str):
    """Yield the body of each fenced python block of a Markdown file."""
    for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        yield m.group(1)


@pytest.mark.slow
def test_readme_quickstart_runs():
    blocks = list(readme_blocks((DOCS.parent / "README.md").read_text()))
    assert blocks, "README has no python block"
    outputs = run_blocks(blocks, "README.md")
    assert any(out.strip() for out in outputs), "the README Quickstart should print what it checked"


PAGES = sorted(p for p in DOCS.rglob("*.rst") if "_build" not in p.parts and list(python_blocks(p.read_text())))


def test_block_extraction_sees_code():
    sample = "Text\n\n.. code-block:: python\n   :caption: x\n\n   a = 1\n   b = a + 1\n\nAfter\n"
    assert list(python_blocks(sample)) == ["a = 1\nb = a + 1\n"]
    assert list(python_blocks(sample, with_lines=True)) == [("a = 1\nb = a + 1\n", 3)]
    assert list(python_blocks("Text\n\n.. code-block:: text\n\n   a = 1\n")) == []


def test_tutorials_live_in_one_place():
    tutorials = ("getting_started", "pykan_to_wskan", "data", "zoo", "tasks", "adapters", "equivariance")
    assert all((DOCS / "tutorials" / f"{t}.rst").exists() and not (DOCS / f"{t}.rst").exists() for t in tutorials)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS).with_suffix("")) for p in PAGES])
def test_docs_page_code_runs(page):
    name = str(page.relative_to(DOCS))
    try:
        run_blocks(list(python_blocks(page.read_text(), with_lines=True)), name)
    except ExampleError as e:  # pragma: no cover - the failure report is the point
        raise AssertionError(str(e)) from e


def _first_seeded_draw():
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.rand(1).item()


def test_runner_captures_each_block_in_one_namespace_in_a_temp_dir(tmp_path, monkeypatch):
    import os

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    outs = run_blocks(["import os\nx = 41\nopen('f.txt', 'w').write('x')",
                       "print(x + 1, os.path.exists('f.txt'), os.environ['MPLBACKEND'])",
                       "import torch\nprint(torch.get_num_threads(), torch.rand(1).item() == r0)"],
                      "sample.rst", namespace={"r0": _first_seeded_draw()})
    assert outs == ["", "42 True Agg\n", "1 True\n"]
    assert os.listdir(tmp_path) == []  # files land in the temporary directory, not here
    assert os.getcwd() == str(tmp_path) and "MPLBACKEND" not in os.environ  # restored


def test_runner_names_the_failing_block():
    with pytest.raises(ExampleError, match=r"sample\.rst: python code block 2 \(line 9\) failed: ZeroDivisionError") as e:
        run_blocks([("x = 1", 3), ("print('before')\ny = x / 0", 9), ("print('never')", 14)], "sample.rst")
    assert e.value.index == 1 and "y = x / 0" in str(e.value)


def _doctree(*blocks):
    """A docutils document with ``blocks`` = ``(language, code)`` literal blocks, each as
    Sphinx's code-block directive makes them (language, source, line)."""
    nodes = pytest.importorskip("docutils.nodes")
    from docutils.frontend import get_default_settings
    from docutils.parsers.rst import Parser
    from docutils.utils import new_document

    doc = new_document("page.rst", get_default_settings(Parser))
    doc["source"] = "page.rst"
    section = nodes.section()
    doc += section
    for i, (language, code) in enumerate(blocks):
        para = nodes.paragraph(text=f"paragraph {i}")
        literal = nodes.literal_block(code, code, language=language)
        para.source = literal.source = "page.rst"
        literal.line = 10 * (i + 1)
        section += [para, literal]
    return doc, nodes


def test_extension_inserts_output_after_a_printing_block():
    doc, nodes = _doctree(("python", "x = 2\nprint('x =', x)"), ("text", "print('not python')"),
                          ("python", "y = x * 21"), ("python", "print(y)"))
    assert run_examples.run_page(doc, "page.rst") == 2
    section = doc.children[0]
    kinds = [type(n).__name__ for n in section.children]
    assert kinds == ["paragraph", "literal_block", "container", "paragraph", "literal_block",
                     "paragraph", "literal_block", "paragraph", "literal_block", "container"]
    outputs = [section.children[2], section.children[-1]]
    for out, text in zip(outputs, ["x = 2", "42"]):
        assert run_examples.OUTPUT_CLASS in out["classes"]
        assert out.children[0].astext() == "Output"
        assert isinstance(out.children[1], nodes.literal_block) and out.children[1].astext() == text
    # the outputs are not taken for code: the page still has its 3 python blocks
    assert len(run_examples.python_block_nodes(doc)) == 3


def test_docs_build_uses_the_extension():
    conf = (DOCS / "conf.py").read_text()
    assert '"run_examples"' in conf and '"_ext"' in conf


def test_extension_fails_on_a_raising_block_naming_it():
    doc, nodes = _doctree(("python", "print('ok')"), ("python", "raise ValueError('boom')"))
    with pytest.raises(ExampleError, match=r"page\.rst: python code block 2 \(line 20\) failed: ValueError: boom"):
        run_examples.run_page(doc, "page.rst")
    assert not list(doc.findall(nodes.container))  # nothing half-inserted

    # what the docs build sees: the doctree-read handler turns it into Sphinx's ExtensionError
    errors = pytest.importorskip("sphinx.errors")

    class Env:
        docname = "tutorials/page"

        def doc2path(self, docname, base=True):
            return f"{docname}.rst"

    app = type("App", (), {"env": Env()})()
    with pytest.raises(errors.ExtensionError, match=r"tutorials/page\.rst: python code block 2 \(line 20\)"):
        run_examples._doctree_read(app, doc)
