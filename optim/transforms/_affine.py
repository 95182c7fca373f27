"""Similarity warps (scale, rotation, translation) as one ``F.affine_grid`` + ``F.grid_sample``.

Coordinates are centred pixel coordinates ``(x, y)`` with y pointing down, so a rotation or scale acts about
the frame centre and stays isotropic on non-square images (normalised grid coordinates would shear them).
Outside the source image the canvas is filled according to ``padding_mode``; a constant fill other than 0
is obtained by sampling, with ``"border"`` mode, from the image framed by a one-pixel ring of that value,
which is exact for every interpolation mode and costs a single pad.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "PADDING_MODES",
    "INTERPOLATION_MODES",
    "check_modes",
    "similarity_theta",
    "sampling_source",
    "warp_similarity",
]

PADDING_MODES = ("constant", "zeros", "border", "reflection")
INTERPOLATION_MODES = ("bilinear", "nearest", "bicubic")


def check_modes(mode: str, padding_mode: str, value: float) -> str:
    """Validate the interpolation and padding modes; returns the padding mode with "zeros" as "constant"."""
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"mode must be one of {INTERPOLATION_MODES}, got {mode!r}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if padding_mode == "zeros":
        if value != 0.0:
            raise ValueError(f"padding_mode 'zeros' fills with 0, got value={value}; use 'constant'")
        return "constant"
    return padding_mode


def similarity_theta(
    scale: torch.Tensor,
    angle: torch.Tensor,
    pre_shift: Optional[torch.Tensor],
    post_shift: Optional[torch.Tensor],
    in_hw: List[int],
    out_hw: List[int],
) -> torch.Tensor:
    """The ``F.affine_grid`` matrix of the content map ``q = scale * R(angle) @ (p + pre_shift) + post_shift``.

    Args:
        scale: 0-d tensor, magnification of the content (2 doubles its size).
        angle: 0-d tensor, counter-clockwise rotation of the content in degrees.
        pre_shift: ``(shift_y, shift_x)`` in source pixels applied before scaling/rotation, or ``None``.
        post_shift: ``(shift_y, shift_x)`` in output pixels applied last, or ``None``.
        in_hw: height and width of the sampled image.
        out_hw: height and width of the output frame (same centre as the input frame).

    Returns:
        A ``(1, 2, 3)`` tensor mapping normalised output coordinates to normalised input coordinates.
    """
    rad = angle * (math.pi / 180.0)
    inv_scale = 1.0 / scale
    c = torch.cos(rad) * inv_scale
    s = torch.sin(rad) * inv_scale
    # Inverse map p = A (q - post) - pre with A = R(angle)^T / scale, in (x, y) order.
    bx = torch.zeros_like(c)
    by = torch.zeros_like(c)
    if post_shift is not None:
        bx = -(c * post_shift[1] - s * post_shift[0])
        by = -(s * post_shift[1] + c * post_shift[0])
    if pre_shift is not None:
        bx = bx - pre_shift[1]
        by = by - pre_shift[0]
    h_in, w_in = float(in_hw[0]), float(in_hw[1])
    h_out, w_out = float(out_hw[0]), float(out_hw[1])
    entries = [
        c * (w_out / w_in),
        -s * (h_out / w_in),
        bx * (2.0 / w_in),
        s * (w_out / h_in),
        c * (h_out / h_in),
        by * (2.0 / h_in),
    ]
    return torch.stack(entries).view(1, 2, 3)


def sampling_source(x: torch.Tensor, padding_mode: str, value: float) -> Tuple[torch.Tensor, str]:
    """The tensor to sample from and the ``grid_sample`` padding mode that realise ``padding_mode``."""
    if padding_mode == "constant":
        if value == 0.0:
            return x, "zeros"
        return F.pad(x, [1, 1, 1, 1], mode="constant", value=value), "border"
    return x, padding_mode


def warp_similarity(
    x: torch.Tensor,
    scale: torch.Tensor,
    angle: torch.Tensor,
    pre_shift: Optional[torch.Tensor],
    post_shift: Optional[torch.Tensor],
    out_hw: List[int],
    mode: str = "bilinear",
    padding_mode: str = "constant",
    value: float = 0.0,
) -> torch.Tensor:
    """Resample an NCHW tensor under one similarity map (see :func:`similarity_theta`).

    Args:
        x: NCHW input.
        scale, angle, pre_shift, post_shift: the map, as in :func:`similarity_theta`.
        out_hw: output height and width.
        mode: ``"bilinear"``, ``"nearest"`` or ``"bicubic"``.
        padding_mode: ``"constant"`` (fill with ``value``), ``"border"`` or ``"reflection"``.
        value: the constant fill.

    Returns:
        The warped ``(N, C, out_h, out_w)`` tensor.
    """
    src, grid_padding = sampling_source(x, padding_mode, value)
    theta = similarity_theta(scale, angle, pre_shift, post_shift, [src.shape[-2], src.shape[-1]], out_hw)
    theta = theta.to(x.dtype).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], out_hw[0], out_hw[1]], align_corners=False)
    return F.grid_sample(src, grid, mode=mode, padding_mode=grid_padding, align_corners=False)
