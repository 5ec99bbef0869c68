"""Sphinx configuration for wskan_ext (built with -W in CI)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

# Figures are generated from code at every build (never hand-drawn, never stale).
_here = os.path.dirname(os.path.abspath(__file__))
os.makedirs(os.path.join(_here, "_static"), exist_ok=True)
sys.path.insert(0, os.path.join(_here, "scripts"))
sys.path.insert(0, os.path.join(_here, "_ext"))  # run_examples: runs every python block, shows its output
import kan_graph_figure  # noqa: E402

kan_graph_figure.main(os.path.join(_here, "_static", "kan_graph.png"))

project = "wskan_ext"
author = "wskan_ext developers"
copyright = "2026, wskan_ext developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "run_examples",
]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Nitpicky: every reference to *our* API must resolve. Third-party types (torch, PyG,
# nfn, pykan, numpy) are not cross-linked (no intersphinx offline), so they are ignored.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|torch_geometric|nfn|kan|numpy|np|scipy|sklearn|pathlib|typing|collections|matplotlib|os|hypothesis|einops)(\..*)?"),
    (r"py:.*", r"(Tensor|Tensors|Module|nn\.Module|Batch|Data|Generator|Path|PathLike|optional|callable|Callable|Sequence|Mapping|Iterable|Union|Optional|Any|dict|list|tuple|int|float|str|bool|object|None|array|ndarray|DataFrame|Figure|WeightSpaceFeatures|NetworkSpec)"),
    (r"py:class", r".*\.(T|Family)$"),
    (r"py:obj", r".*\.T$"),
]

html_theme = "furo"
html_title = "wskan_ext"
html_static_path = ["_static"]
html_css_files = ["run_examples.css"]
exclude_patterns = ["_build"]
