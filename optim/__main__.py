"""``python -m optim``: the command line (see :mod:`optim.cli`)."""
import sys

from .cli import main

__all__: list = []

if __name__ == "__main__":
    sys.exit(main())
