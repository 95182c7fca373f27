"""Blue-white-red heatmaps of 2-D weights."""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["weights_to_heatmap_2d", "DEFAULT_HEATMAP_COLORS"]

# ColorBrewer RdBu: inhibitory blue, neutral white, excitatory red (as in the Distill circuits thread).
DEFAULT_HEATMAP_COLORS = ("0571b0", "92c5de", "f7f7f7", "f4a582", "ca0020")


def _hex_to_rgb(color: str) -> Sequence[float]:
    code = color[1:] if isinstance(color, str) and color.startswith("#") else color
    if not isinstance(code, str) or len(code) != 6:
        raise ValueError(f"colors must be six-digit hex strings such as 'ca0020', got {color!r}")
    try:
        return [int(code[i : i + 2], 16) / 255.0 for i in (0, 2, 4)]
    except ValueError:
        raise ValueError(f"colors must be six-digit hex strings such as 'ca0020', got {color!r}") from None


def weights_to_heatmap_2d(weight: torch.Tensor, colors: Sequence[str] = DEFAULT_HEATMAP_COLORS) -> torch.Tensor:
    """Colour a 2-D weight map: blue for negative (inhibitory), white for 0, red for positive (excitatory).

    Values are clamped to ``[-1, 1]`` (divide by the largest magnitude first) and linearly interpolated
    between ``colors``, which sit evenly spaced over ``[-1, 1]`` (the default five at -1, -0.5, 0, 0.5, 1).

    Args:
        weight: an ``[H, W]`` tensor, ideally scaled to ``[-1, 1]``.
        colors: at least two six-digit hex colours (``"ca0020"`` or ``"#ca0020"``), most negative first.

    Returns:
        A ``[3, H, W]`` RGB image in ``[0, 1]`` on ``weight``'s device (float dtype of ``weight``).

    Raises:
        ValueError: for a weight that is not 2-D or malformed colours.

    Example::

        >>> img = weights_to_heatmap_2d(torch.tensor([[-1.0, 0.0, 1.0]]))
        >>> img.shape
        torch.Size([3, 1, 3])
        >>> img[:, 0]  # columns: blue (-1), white (0), red (+1)
        tensor([[0.0196, 0.9686, 0.7922],
                [0.4431, 0.9686, 0.0000],
                [0.6902, 0.9686, 0.1255]])
    """
    if not torch.is_tensor(weight) or weight.dim() != 2:
        shape = tuple(weight.shape) if torch.is_tensor(weight) else type(weight).__name__
        raise ValueError(f"weights_to_heatmap_2d needs a 2-D [H, W] tensor, got {shape}")
    if isinstance(colors, str) or len(colors) < 2:
        raise ValueError(f"colors must be a sequence of at least two hex strings, got {colors!r}")
    dtype = weight.dtype if weight.is_floating_point() else torch.float32
    stops = torch.tensor([_hex_to_rgb(c) for c in colors], dtype=dtype, device=weight.device)
    position = (weight.to(dtype).clamp(-1.0, 1.0) + 1.0) / 2.0 * (len(colors) - 1)
    lower = position.floor().long().clamp(max=len(colors) - 2)
    frac = (position - lower).unsqueeze(-1)
    rgb = stops[lower] * (1.0 - frac) + stops[lower + 1] * frac
    return rgb.permute(2, 0, 1)
