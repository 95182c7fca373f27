"""Sphinx configuration of the optim docs: the README's narrative, the API reference from the docstrings
(Google style, through napoleon) and the list of tutorials.

Build: ``python -m sphinx -W -b html docs docs/_build/html`` (the test suite builds it with ``-W`` too).
"""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

import optim  # noqa: E402

project = "optim"
author = "the optim authors"
copyright = "the optim authors, BSD-3-Clause"
release = optim.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "architecture.md"]
root_doc = "index"

# Google-style docstrings, as the whole package writes them.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
# torch's own docstrings (e.g. autograd.Function.forward) point at labels of torch's docs; don't inherit them.
autodoc_inherit_docstrings = False
# Optional extras: the reference builds without them installed.
autodoc_mock_imports = ["streamlit", "umap", "captum"]

myst_heading_anchors = 3
# The README links to files of the repository (tests/, tutorials/ ...) that are no documents of the site;
# a type hint such as ``type`` matches the ``type`` field of both LayerInfo tuples (models and analysis).
suppress_warnings = ["myst.xref_missing", "ref.python"]

html_theme = "alabaster"
html_title = f"optim {release}"
html_static_path = []
