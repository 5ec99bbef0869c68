"""Run every ``.. code-block:: python`` of a page at build time and show what it prints.

On ``doctree-read`` the python code blocks written in the page's own source (not those of
included files or docstrings) are executed in document order, in one namespace per page,
inside a fresh temporary working directory, with every RNG seeded once per page
(``torch.manual_seed(0)``, ``numpy.random.seed(0)``, ``random.seed(0)``), ``MPLBACKEND=Agg``,
``OMP_NUM_THREADS=1`` and one torch thread (all restored afterwards). Pages with examples are
re-read at every build, so their outputs always come from the current code. What a block prints to ``sys.stdout`` is inserted right after it as a
literal block in a container of class ``example-output`` (blocks that print nothing get
nothing). A block that raises stops the build with an :class:`~sphinx.errors.ExtensionError`
naming the page, the block and its line.

:func:`run_blocks` does the running without Sphinx; ``tests/test_docs_examples.py`` uses it
too, so the tests and the docs execute the pages the same way.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import sys
import tempfile
import traceback
from typing import List, Optional, Sequence, Tuple, Union

OUTPUT_CLASS = "example-output"
#: set while a page runs (OMP_NUM_THREADS for any subprocess a block starts), restored after
ENVIRONMENT = {"MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
Block = Union[str, Tuple[str, Optional[int]]]


class ExampleError(Exception):
    """A code block of a page raised; the message names the page, the block and its line."""

    def __init__(self, page: str, index: int, line: Optional[int], code: str, exc: BaseException):
        where = f"{page}: python code block {index + 1}" + (f" (line {line})" if line else "")
        frames = exc.__traceback__
        frames = (frames.tb_next or frames) if frames is not None else None  # from the block, not run_blocks
        tb = "".join(traceback.format_exception(type(exc), exc, frames))
        super().__init__(f"{where} failed: {type(exc).__name__}: {exc}\n--- code ---\n{code}\n--- traceback ---\n{tb}")
        self.page, self.index, self.line, self.code, self.exc = page, index, line, code, exc


@contextlib.contextmanager
def _page_environment():
    """Temporary cwd, :data:`ENVIRONMENT`, one torch thread, seeded RNGs; all restored after."""
    old_cwd, old_env = os.getcwd(), {k: os.environ.get(k) for k in ENVIRONMENT}
    py_state = random.getstate()
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with torch
        np = None
    np_state = np.random.get_state() if np is not None else None
    try:
        import torch
    except ImportError:  # pragma: no cover
        torch = None
    with tempfile.TemporaryDirectory(prefix="docs-example-") as tmp, contextlib.ExitStack() as stack:
        if torch is not None:
            stack.enter_context(torch.random.fork_rng(devices=[]))
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            stack.callback(torch.set_num_threads, threads)
            torch.manual_seed(0)
        if np is not None:
            np.random.seed(0)
        random.seed(0)
        os.environ.update(ENVIRONMENT)
        os.chdir(tmp)
        try:
            yield tmp
        finally:
            os.chdir(old_cwd)
            for k, v in old_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            random.setstate(py_state)
            if np is not None:
                np.random.set_state(np_state)
            if "matplotlib.pyplot" in sys.modules:
                sys.modules["matplotlib.pyplot"].close("all")


def run_blocks(blocks: Sequence[Block], page: str, namespace: Optional[dict] = None) -> List[str]:
    """Execute ``blocks`` (code strings, or ``(code, line)`` pairs) in order in one namespace
    (``namespace`` or a fresh one) inside a fresh temporary directory; return what each block
    printed to stdout. Raises :class:`ExampleError` for the first block that raises."""
    ns = namespace if namespace is not None else {"__name__": "__docs__"}
    outputs = []
    with _page_environment():
        for i, block in enumerate(blocks):
            code, line = (block, None) if isinstance(block, str) else block
            buf = io.StringIO()
            try:
                compiled = compile(code, f"{page}[block {i + 1}]", "exec")
                with contextlib.redirect_stdout(buf):
                    exec(compiled, ns)
            except Exception as e:
                raise ExampleError(page, i, line, code, e) from e
            outputs.append(buf.getvalue())
    return outputs


# --------------------------------------------------------------------------- Sphinx side


def python_block_nodes(doctree) -> list:
    """The ``code-block:: python`` literal blocks written in the document's own source."""
    from docutils import nodes

    source = doctree.get("source")
    return [n for n in doctree.findall(nodes.literal_block)
            if n.get("language") == "python" and "source" not in n.attributes  # not literalinclude
            and (source is None or n.source == source)]


def output_node(text: str):
    """``container.example-output`` = an "Output" label + the text as a literal block."""
    from docutils import nodes

    text = text.rstrip("\n")
    label = nodes.paragraph("", "Output", classes=[f"{OUTPUT_CLASS}-label"])
    literal = nodes.literal_block(text, text, classes=[f"{OUTPUT_CLASS}-text"])
    literal["language"] = "none"
    return nodes.container("", label, literal, classes=[OUTPUT_CLASS])


def insert_outputs(blocks: list, outputs: Sequence[str]) -> int:
    """Put ``output_node(out)`` right after each block (after its caption container, if
    any) whose output is not blank; returns how many were inserted."""
    from docutils import nodes

    count = 0
    for node, out in zip(blocks, outputs):
        if not out.strip():
            continue
        anchor = node.parent if isinstance(node.parent, nodes.container) and node.parent.get("literal_block") else node
        new = output_node(out)
        new.source, new.line = node.source, node.line
        anchor.parent.insert(anchor.parent.index(anchor) + 1, new)
        count += 1
    return count


def run_page(doctree, page: str) -> int:
    """Run the page's python blocks and insert their outputs; returns the number inserted."""
    blocks = python_block_nodes(doctree)
    if not blocks:
        return 0
    return insert_outputs(blocks, run_blocks([(n.astext(), n.line) for n in blocks], page))


def _doctree_read(app, doctree) -> None:
    from sphinx.errors import ExtensionError

    env = app.env
    if not python_block_nodes(doctree):
        return
    env.run_examples_pages = getattr(env, "run_examples_pages", set()) | {env.docname}
    try:
        run_page(doctree, str(env.doc2path(env.docname, False)))
    except ExampleError as e:
        raise ExtensionError(str(e), modname=__name__) from e


def _purge(app, env, docname) -> None:
    getattr(env, "run_examples_pages", set()).discard(docname)


def _merge(app, env, docnames, other) -> None:
    env.run_examples_pages = getattr(env, "run_examples_pages", set()) | (
        getattr(other, "run_examples_pages", set()) & set(docnames))


def _outdated(app, env, added, changed, removed) -> list:
    # pages with examples are re-read (re-run) at every build, so their outputs follow the code
    return sorted(getattr(env, "run_examples_pages", set()) - set(removed))


def setup(app):
    app.connect("doctree-read", _doctree_read)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    app.connect("env-get-outdated", _outdated)
    return {"version": "1", "env_version": 1, "parallel_read_safe": True, "parallel_write_safe": True}
