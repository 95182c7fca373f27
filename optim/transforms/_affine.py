"""Similarity warps (scale, rotation, translation) as one affine grid + ``F.grid_sample``.

Coordinates are centred pixel coordinates ``(x, y)`` with y pointing down, so a rotation or scale acts about
the frame centre and stays isotropic on non-square images (normalised grid coordinates would shear them).
Outside the source image the canvas is filled according to ``padding_mode``; a constant fill ``v`` other than
0 samples ``x - v`` with zero padding and adds ``v`` back. Every interpolation kernel's weights sum to 1, so
this is exact, and it costs two elementwise passes instead of a padded copy and its backward.
"""
from __future__ import annotations

import math
from typing import List, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "PADDING_MODES",
    "INTERPOLATION_MODES",
    "check_modes",
    "similarity_theta",
    "sampling_source",
    "affine_grid",
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
    scale: float,
    angle: float,
    pre_shift: List[float],
    post_shift: List[float],
    in_hw: List[int],
    out_hw: List[int],
) -> List[float]:
    """The ``F.affine_grid`` matrix of the content map ``q = scale * R(angle) @ (p + pre_shift) + post_shift``.

    Args:
        scale: magnification of the content (2 doubles its size).
        angle: counter-clockwise rotation of the content in degrees.
        pre_shift: ``[shift_y, shift_x]`` in source pixels, applied before scaling and rotation.
        post_shift: ``[shift_y, shift_x]`` in output pixels, applied last.
        in_hw: height and width of the sampled image.
        out_hw: height and width of the output frame (same centre as the input frame).

    Returns:
        The 6 row-major entries of the ``2 x 3`` matrix mapping normalised output coordinates to normalised
        input coordinates (host floats: a handful of scalar operations, no device kernels).
    """
    rad = angle * (math.pi / 180.0)
    c = math.cos(rad) / scale
    s = math.sin(rad) / scale
    # Inverse map p = A (q - post) - pre with A = R(angle)^T / scale, in (x, y) order.
    bx = -(c * post_shift[1] - s * post_shift[0]) - pre_shift[1]
    by = -(s * post_shift[1] + c * post_shift[0]) - pre_shift[0]
    h_in, w_in = float(in_hw[0]), float(in_hw[1])
    h_out, w_out = float(out_hw[0]), float(out_hw[1])
    return [
        c * w_out / w_in,
        -s * h_out / w_in,
        2.0 * bx / w_in,
        s * w_out / h_in,
        c * h_out / h_in,
        2.0 * by / h_in,
    ]


def sampling_source(x: torch.Tensor, padding_mode: str, value: float) -> Tuple[torch.Tensor, str]:
    """The tensor to sample from and the ``grid_sample`` padding mode that realise ``padding_mode``.

    For a constant fill ``value`` the source is ``x - value`` sampled with zero padding: add ``value`` to the
    result (see :func:`warp_similarity`).
    """
    if padding_mode == "constant":
        return (x - value if value != 0.0 else x), "zeros"
    return x, padding_mode


def affine_grid(
    theta: List[float], batch: int, out_hw: List[int], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """``F.affine_grid(theta, size, align_corners=False)`` for a matrix held as host floats.

    The grid is affine in the pixel indices, so it is built from two short coordinate vectors and a
    broadcast sum: no batched matrix product over every pixel (the bulk of ``F.affine_grid``'s time on CPU)
    and no host-to-device copy of the matrix.

    Args:
        theta: the 6 row-major entries of the ``2 x 3`` matrix.
        batch: batch size of the grid (the same matrix for every sample).
        out_hw: output height and width.
        device: device of the grid.
        dtype: dtype of the grid (that of the image to sample).

    Returns:
        A ``(batch, h, w, 2)`` sampling grid.
    """
    h, w = out_hw[0], out_hw[1]
    # Normalised pixel centres: (2 * j + 1) / w - 1.
    u = torch.arange(w, device=device, dtype=dtype) * (2.0 / w) + (1.0 / w - 1.0)
    v = torch.arange(h, device=device, dtype=dtype) * (2.0 / h) + (1.0 / h - 1.0)
    # grid[i, j] = row_part[j] + column_part[i]: tiny per-axis terms, then one broadcast pass over the grid.
    row_part = torch.stack([u * theta[0] + theta[2], u * theta[3] + theta[5]], dim=-1)
    column_part = torch.stack([v * theta[1], v * theta[4]], dim=-1)
    return (row_part[None, :, :] + column_part[:, None, :])[None].expand(batch, h, w, 2)


def warp_similarity(
    x: torch.Tensor,
    scale: float,
    angle: float,
    pre_shift: List[float],
    post_shift: List[float],
    out_hw: List[int],
    mode: str = "bilinear",
    padding_mode: str = "constant",
    value: float = 0.0,
) -> torch.Tensor:
    """Resample an NCHW tensor under one similarity map (see :func:`similarity_theta`).

    Args:
        x: NCHW input.
        scale: content magnification.
        angle: counter-clockwise rotation in degrees.
        pre_shift: ``[shift_y, shift_x]`` before scaling and rotation.
        post_shift: ``[shift_y, shift_x]`` applied last.
        out_hw: output height and width.
        mode: ``"bilinear"``, ``"nearest"`` or ``"bicubic"``.
        padding_mode: ``"constant"`` (fill with ``value``), ``"border"`` or ``"reflection"``.
        value: the constant fill.

    Returns:
        The warped ``(N, C, out_h, out_w)`` tensor.
    """
    src, grid_padding = sampling_source(x, padding_mode, value)
    theta = similarity_theta(scale, angle, pre_shift, post_shift, [src.shape[-2], src.shape[-1]], out_hw)
    grid = affine_grid(theta, x.shape[0], out_hw, x.device, x.dtype)
    out = F.grid_sample(src, grid, mode=mode, padding_mode=grid_padding, align_corners=False)
    if padding_mode == "constant" and value != 0.0:
        out = out + value
    return out
