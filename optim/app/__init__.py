"""The optim app: a Streamlit interface (extra ``app``) over a persistent render gallery.

``optim app`` (or ``optim-app``) launches :data:`APP_SCRIPT` with ``streamlit run``. The gallery and the
model loading live in plain modules that import neither Streamlit nor anything heavy, so the command line
and scripts use them too.

Example::

    from optim.app import Gallery
    for entry in Gallery("~/optim-gallery").entries(model="efficientnet_lite0"):
        print(entry.caption, entry.path)
"""
from pathlib import Path

from .gallery import DATA_DIR_ENV, Gallery, GalleryEntry, default_data_dir, resolve_data_dir

__all__ = ["APP_SCRIPT", "Gallery", "GalleryEntry", "DATA_DIR_ENV", "default_data_dir", "resolve_data_dir", "main"]

#: The Streamlit script of the app.
APP_SCRIPT = Path(__file__).with_name("streamlit_app.py")


def main() -> None:
    """Entry point of the ``optim-app`` console script: ``optim app`` with the same arguments."""
    import sys

    from ..cli import main as cli_main

    sys.exit(cli_main(["app", *sys.argv[1:]]))
