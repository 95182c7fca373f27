"""optim: optimization-based interpretability for PyTorch vision models.

Subpackages and the top-level helpers load on first use, so ``import optim`` stays light (no matplotlib,
scikit-learn, PIL or tqdm) and a researcher pays only for what they touch.

Example (8 steps at 64 x 64 so it runs in a second; real renders take 128+ steps at 128 px or more)::

    >>> import optim as opt
    >>> model = opt.models.efficientnet_lite0(pretrained=True).eval()
    >>> image = opt.images.NaturalImage((64, 64))
    >>> loss_fn = opt.loss.ChannelActivation("blocks.10", 7)
    >>> obj = opt.InputOptimization(model, loss_fn, image, opt.transforms.TransformationRobustness())
    >>> history = obj.optimize(opt.optimization.n_steps(8, show_progress=False))
    >>> history.shape  # the loss (minus the mean activation) of every step
    torch.Size([8])
    >>> bool(history[-1] < history[0])
    True
    >>> image().export("channel7.png")
    [PosixPath('channel7.png')]
"""
from __future__ import annotations

import importlib
from typing import Any, List

__version__ = "0.1.0"

_SUBPACKAGES = (
    "activations",
    "layouts",
    "images",
    "transforms",
    "loss",
    "optimization",
    "models",
    "circuits",
    "reducer",
    "atlas",
    "dataset",
    "attribution",
    "analysis",
    "render",
    "jobs",
    "recipes",
)

# top-level name -> module that defines it
_ATTRIBUTES = {
    "InputOptimization": "optim.optimization",
    "ImageTensor": "optim.images",
    "show": "optim.images",
    "save_tensor_as_image": "optim.images",
    "make_grid_image": "optim.images",
    "hue_to_rgb": "optim.transforms",
    "nchannels_to_rgb": "optim.transforms",
    "weights_to_heatmap_2d": "optim.circuits",
    "render_vis": "optim.render",
    "render_layer": "optim.render",
    "render_model": "optim.jobs",
}

__all__ = list(_SUBPACKAGES) + list(_ATTRIBUTES) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"optim.{name}")
        globals()[name] = module
        return module
    if name in _ATTRIBUTES:
        value = getattr(importlib.import_module(_ATTRIBUTES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'optim' has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))
