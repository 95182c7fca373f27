"""The check captum's models make on their input: warn when an image meant to be in ``[0, 1]`` leaves it."""
from __future__ import annotations

import warnings

import torch

__all__ = ["warn_if_outside_unit_range"]


@torch.jit.unused
def warn_if_outside_unit_range(x: torch.Tensor, model: str) -> None:
    """Warn (``UserWarning``) when ``x`` has values below 0 or above 1.

    Models that normalize their own input (``transform_input=True``) expect an RGB image in ``[0, 1]``; an
    input already normalized, or in ``[0, 255]``, still runs but means something else to the network, so they
    say so, as captum's do. The message is the same every time, so Python shows it once per call site.

    The check reads two numbers back from the tensor. On an accelerator, for an input that requires a gradient
    (a render step), that would stall every step waiting for the device, so it is skipped there: a render's
    ``NaturalImage`` keeps its images in ``[0, 1]`` anyway. It is also skipped while tracing or compiling, and
    for meta tensors (which hold no values).

    Args:
        x: the model's input.
        model: the model's name, for the message.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_if_outside_unit_range(torch.tensor([0.0, 255.0]), "InceptionV1")
        ...     warn_if_outside_unit_range(torch.tensor([0.0, 1.0]), "InceptionV1")
        >>> [str(w.message)[:70] for w in caught]  # one warning: the first input only
        ['InceptionV1 expects input values in [0, 1] (it normalizes its input it']
    """
    if x.numel() == 0 or x.is_meta or torch.jit.is_tracing():
        return
    if hasattr(torch, "compiler") and torch.compiler.is_compiling():
        return
    if x.device.type != "cpu" and x.requires_grad:
        return
    low, high = torch.aminmax(x.detach())
    if bool(low < 0) or bool(high > 1):
        warnings.warn(
            f"{model} expects input values in [0, 1] (it normalizes its input itself) but got values outside "
            "that range; pass an RGB image scaled to [0, 1], or build the model with transform_input=False for "
            "an input you normalized yourself",
            UserWarning,
            stacklevel=3,
        )
