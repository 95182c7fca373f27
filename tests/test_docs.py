"""The Sphinx docs build without a single warning, and they cover every subpackage and tutorial."""
import subprocess
import sys
from pathlib import Path

import pytest

import optim

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_every_subpackage_and_tutorial_is_documented() -> None:
    api = (DOCS / "api" / "index.rst").read_text()
    for name in optim._SUBPACKAGES:
        assert f"   {name}\n" in api, f"docs/api/index.rst does not list optim.{name}"
        assert f".. automodule:: optim.{name}" in (DOCS / "api" / f"{name}.rst").read_text()
    listed = (DOCS / "tutorials.rst").read_text()
    for notebook in (ROOT / "tutorials").glob("*.ipynb"):
        assert f"``{notebook.name}``" in listed, f"docs/tutorials.rst does not describe {notebook.name}"


def test_docs_build_without_warnings(tmp_path) -> None:
    pytest.importorskip("sphinx", reason="building the docs needs the 'docs' extra (sphinx)")
    pytest.importorskip("myst_parser", reason="building the docs needs the 'docs' extra (myst-parser)")
    if not (ROOT / "README.md").is_file():
        pytest.fail("README.md is missing: docs/readme.md includes it")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d", str(tmp_path / "doctrees"),
         str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=300, cwd=str(ROOT),
    )
    assert result.returncode == 0, result.stderr[-6000:]
    page = (tmp_path / "html" / "api" / "render.html").read_text()
    assert "render_vis" in page and "thresholds" in page  # autodoc ran and napoleon read the Args section
    assert "Overview" in (tmp_path / "html" / "readme.html").read_text()
