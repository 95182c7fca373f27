"""``python -m optim.app``: the app's launcher (what ``optim app`` runs; see :mod:`optim.app.launch`)."""
import sys

from .launch import main

if __name__ == "__main__":
    sys.exit(main())
