"""Compatibility names: model loading lives in :mod:`optim.models.loading` (shared by the command line and the app).

>>> from optim.app.model_source import load_model
>>> load_model is __import__("optim.models.loading", fromlist=["load_model"]).load_model
True
"""
from ..models.loading import (  # noqa: F401
    ScriptModuleWrapper,
    hookable_torchscript,
    is_torchscript,
    load_factory,
    load_model,
    load_weights_file,
    weights_hash,
)

__all__ = [
    "load_model",
    "load_factory",
    "load_weights_file",
    "weights_hash",
    "is_torchscript",
    "hookable_torchscript",
    "ScriptModuleWrapper",
]
