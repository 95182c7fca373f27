"""Repository-level pytest configuration: keep test runs small and deterministic on 2 CPU cores."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")
