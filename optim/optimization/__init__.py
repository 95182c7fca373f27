"""The render core: ``InputOptimization``, its defaults, stop criteria, progress and callbacks, batched renders."""
from ..activations import StopForward, model_frozen
from .averaging import ImageAverage
from .batched import make_transform, render_batches
from .defaults import (
    DEFAULT_DECAY_POWER,
    DEFAULT_LR,
    DEFAULT_SIZE,
    DEFAULT_STEPS,
    default_image,
    default_transforms,
    make_optimizer,
    starts_from_photo,
    model_input_channels,
    resolve_average,
    DEFAULT_AVERAGE,
    resolve_residual_gradient,
    DEFAULT_RESIDUAL_GRADIENT,
)
from .hooks import ActivationFetcher, ModuleOutputsHook, run_to_targets
from .input_optimization import InputOptimization
from .progress import ProgressBar, TensorBoardCallback
from .stop_criteria import StopCriteria, n_steps, plateau, target_value
from .streams import apply_transform, image_generators

__all__ = [
    "InputOptimization",
    "n_steps",
    "plateau",
    "target_value",
    "StopCriteria",
    "ProgressBar",
    "TensorBoardCallback",
    "ImageAverage",
    "render_batches",
    "make_transform",
    "make_optimizer",
    "starts_from_photo",
    "resolve_average",
    "DEFAULT_AVERAGE",
    "resolve_residual_gradient",
    "DEFAULT_RESIDUAL_GRADIENT",
    "default_image",
    "default_transforms",
    "model_input_channels",
    "image_generators",
    "apply_transform",
    "DEFAULT_SIZE",
    "DEFAULT_LR",
    "DEFAULT_DECAY_POWER",
    "DEFAULT_STEPS",
    "ModuleOutputsHook",
    "ActivationFetcher",
    "StopForward",
    "model_frozen",
    "run_to_targets",
]
