"""Execute every tutorial notebook with a tiny step count, so the tutorials never drift from the code."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("*.ipynb"))


def test_the_tutorials_are_the_generated_ones() -> None:
    nbformat = pytest.importorskip("nbformat", reason="the tutorial tests need nbformat and nbclient")
    sys.path.insert(0, str(ROOT / "tutorials"))
    try:
        import _make_notebooks
    finally:
        sys.path.remove(str(ROOT / "tutorials"))
    assert [p.stem for p in TUTORIALS] == sorted(_make_notebooks.NOTEBOOKS)
    for path in TUTORIALS:
        nb = nbformat.read(path, as_version=4)
        title, cells = _make_notebooks.NOTEBOOKS[path.stem]
        assert [c.source for c in nb.cells] == [f"# {title}"] + [source for _, source in cells], path.name
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks unexecuted"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path, monkeypatch) -> None:
    nbformat = pytest.importorskip("nbformat", reason="the tutorial tests need nbformat and nbclient")
    nbclient = pytest.importorskip("nbclient", reason="the tutorial tests need nbformat and nbclient")
    pytest.importorskip("ipykernel", reason="the tutorial tests need a Jupyter kernel (ipykernel)")
    monkeypatch.setenv("OPTIM_TUTORIAL_STEPS", "2")
    monkeypatch.setenv("OPTIM_TUTORIAL_SIZE", "32")
    monkeypatch.setenv("OPTIM_TUTORIAL_PHOTO", "64")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell on any exception
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(o.output_type in ("execute_result", "display_data", "stream") for o in outputs)
