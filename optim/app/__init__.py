"""The optim app: a Streamlit interface (extra ``app``) over a persistent render gallery.

``optim app``, ``optim-app`` and ``python -m optim.app`` launch :data:`APP_SCRIPT` with ``streamlit run``
through :mod:`optim.app.launch` (safe defaults: this machine only, state-dict uploads only). The gallery is a
plain module that imports no Streamlit (so is :mod:`optim.app.runs`, the reader of ``optim render-model``
run folders that the gallery page opens); model loading and image conversion live in the library
(:mod:`optim.models.loading`, :mod:`optim.images.export`), shared with the command line.

>>> from optim.app import Gallery
>>> [entry.caption for entry in Gallery("empty-gallery").entries(model="efficientnet_lite0")]
[]
"""
from pathlib import Path

from .gallery import DATA_DIR_ENV, Gallery, GalleryEntry, GalleryIndexError, default_data_dir, resolve_data_dir
from .runs import RenderRun, RunEntry, find_runs, open_run

__all__ = ["APP_SCRIPT", "Gallery", "GalleryEntry", "GalleryIndexError", "DATA_DIR_ENV", "default_data_dir",
           "resolve_data_dir", "RenderRun", "RunEntry", "find_runs", "open_run", "main"]

#: The Streamlit script of the app.
APP_SCRIPT = Path(__file__).with_name("streamlit_app.py")


def main() -> None:
    """Entry point of the ``optim-app`` console script: ``optim app`` with the same arguments."""
    import sys

    from .launch import main as launch

    sys.exit(launch(sys.argv[1:], prog="optim-app"))
