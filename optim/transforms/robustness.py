"""TransformationRobustness: captum.optim's default augmentation stack, fused into one resampling.

The stack is pad -> several integer jitters -> scale -> rotation -> final jitter -> optional crop back to
the input size. Every step is a similarity map of the plane, so their composition is one similarity map and
the whole stack is a single affine grid + ``F.grid_sample`` with the image sitting on an infinite canvas of
the padding value. Besides being several times cheaper than resampling step by step, this avoids the blur
of repeated interpolation and the content lost off the frame between steps. Parameters are drawn from
torch's CPU generator and combined on the host, so a step adds no device synchronisation. ``fused=False``
runs the individual modules one after another instead (the reference the fused path is tested against).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._affine import affine_grid, check_modes, sampling_source, similarity_theta, warp_similarity
from ._sampling import ValueSpec
from .crop import _center_crop
from .geometric import RandomRotation, RandomScaleAffine, RandomSpatialJitter

__all__ = ["TransformationRobustness", "DEFAULT_TRANSLATE", "DEFAULT_SCALE", "DEFAULT_DEGREES"]

# captum.optim's defaults (captum/optim/_param/image/transforms.py, TransformationRobustness).
DEFAULT_TRANSLATE: List[int] = [4] * 10
DEFAULT_SCALE: List[float] = [0.995**n for n in range(-5, 80)] + [0.998**n for n in 2 * list(range(20, 40))]
DEFAULT_DEGREES: List[float] = [
    float(d) for d in list(range(-20, 20)) + list(range(-10, 10)) + list(range(-5, 5)) + 5 * [0]
]


def _check_translate(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")


def _total_shift(jitter_shifts: List[List[int]]) -> List[float]:
    """Sum of the jitters' ``[shift_y, shift_x]``: integer jitters compose into one translation."""
    total_y, total_x = 0, 0
    for shift in jitter_shifts:
        total_y += shift[0]
        total_x += shift[1]
    return [float(total_y), float(total_x)]


class TransformationRobustness(nn.Module):
    """Random pad, jitters, scale, rotation and final jitter, applied as one affine resampling.

    The content map is ``q = scale * R(angle) @ (p + sum(jitters)) + final_jitter`` about the frame centre;
    the output frame is the input padded by ``padding`` on every side (or the input size with
    ``crop_or_pad_output=True``), and everything outside the input image reads ``pad_value``.

    Differences from captum (deliberate): jitters fill with ``pad_value`` instead of reflecting, rotation
    corners show ``pad_value`` instead of black, jitter shifts are symmetric (``[-t, t]``), and scaling keeps
    the frame size (content is magnified or shrunk inside the padded frame, so every step feeds the model the
    same input size). The parameter values are captum's.

    Args:
        padding: pixels of ``pad_value`` added on every side first (captum: ``nn.ConstantPad2d(2, 0.5)``).
        pad_value: the canvas value around the image.
        translate: largest shift of each integer jitter (an int for one jitter, a sequence for several, whose
            sum is roughly Gaussian), or ``None``.
        scale: content magnification factors: a list of choices, a ``(min, max)`` range, a
            ``torch.distributions`` object (as captum accepts; drawn from the image's stream through its inverse
            CDF), or ``None``.
        degrees: rotation angles in degrees: a list of choices, a ``(min, max)`` range, a ``torch.distributions``
            object, or ``None``.
        final_translate: largest shift of the last jitter (applied after scaling, so it moves fractional
            content), or ``None``.
        crop_or_pad_output: make the output the same size as the input.
        mode: interpolation, ``"bilinear"``, ``"nearest"`` or ``"bicubic"``.
        fused: one resampling (default) or the modules one after another.

    Example::

        >>> transform = TransformationRobustness()
        >>> transform(torch.rand(1, 3, 224, 224)).shape
        torch.Size([1, 3, 228, 228])
    """

    def __init__(
        self,
        padding: int = 2,
        pad_value: float = 0.5,
        translate: Optional[Union[int, Sequence[int]]] = DEFAULT_TRANSLATE,
        scale: Optional[ValueSpec] = DEFAULT_SCALE,
        degrees: Optional[ValueSpec] = DEFAULT_DEGREES,
        final_translate: Optional[int] = 2,
        crop_or_pad_output: bool = False,
        mode: str = "bilinear",
        fused: bool = True,
    ) -> None:
        super().__init__()
        _check_translate(padding, "padding")
        pad_value = float(pad_value)
        check_modes(mode, "constant", pad_value)
        if translate is None:
            translates: List[int] = []
        elif isinstance(translate, int) and not isinstance(translate, bool):
            translates = [translate]
        elif isinstance(translate, (list, tuple)):
            translates = list(translate)
        else:
            raise ValueError(f"translate must be an int, a sequence of ints or None, got {translate!r}")
        for t in translates:
            _check_translate(t, "translate")
        if final_translate is not None:
            _check_translate(final_translate, "final_translate")

        self.padding = padding
        self.pad_value = pad_value
        self.mode = mode
        self.crop_or_pad_output = crop_or_pad_output
        self.fused = fused
        self.jitters = nn.ModuleList([RandomSpatialJitter(t, "constant", pad_value) for t in translates])
        self.random_scale: Optional[RandomScaleAffine] = (
            None if scale is None else RandomScaleAffine(scale, mode, "constant", pad_value)
        )
        self.random_rotation: Optional[RandomRotation] = (
            None if degrees is None else RandomRotation(degrees, mode, "constant", pad_value)
        )
        self.final_jitter: Optional[RandomSpatialJitter] = (
            None if final_translate is None else RandomSpatialJitter(final_translate, "constant", pad_value)
        )
        # Every integer shift (the jitters' (y, x), then the final one's) is floor(u * span) - max for one
        # uniform u, so one draw of uniforms covers a step whatever the number of jitters.
        final = 0 if final_translate is None else final_translate
        self.shift_max: List[int] = [t for t in translates for _ in range(2)] + [final, final]
        self.n_jitters = len(translates)

    def sample_params(
        self, generator: Optional[torch.Generator] = None
    ) -> Tuple[List[List[int]], float, float, List[int]]:
        """Draw the parameters of one call from torch's CPU generator (one ``torch.rand``, no device work).

        Args:
            generator: a CPU ``torch.Generator`` to draw from (default: torch's global one).

        Returns:
            ``(jitter_shifts, scale, angle, final_shift)``: one ``[shift_y, shift_x]`` per jitter, the content
            magnification, the rotation in degrees, and the final ``[shift_y, shift_x]``.
        """
        n = len(self.shift_max)
        u: List[float] = torch.rand(n + 2, dtype=torch.float64, generator=generator).tolist()
        shifts: List[int] = []
        for i in range(n):
            t = self.shift_max[i]
            shifts.append(min(int(u[i] * (2 * t + 1)), 2 * t) - t)
        jitter_shifts = [[shifts[2 * i], shifts[2 * i + 1]] for i in range(self.n_jitters)]
        scale = 1.0
        random_scale = self.random_scale
        if random_scale is not None:
            scale = random_scale.value_at(u[n])
        angle = 0.0
        random_rotation = self.random_rotation
        if random_rotation is not None:
            angle = random_rotation.value_at(u[n + 1])
        return jitter_shifts, scale, angle, shifts[n - 2 :]

    def output_size(self, height: int, width: int) -> List[int]:
        """The output ``[height, width]`` for an input of the given size."""
        if self.crop_or_pad_output:
            return [height, width]
        return [height + 2 * self.padding, width + 2 * self.padding]

    def affine_matrix(
        self,
        jitter_shifts: List[List[int]],
        scale: float,
        angle: float,
        final_shift: List[int],
        in_hw: List[int],
        out_hw: List[int],
    ) -> torch.Tensor:
        """The ``(1, 2, 3)`` ``F.affine_grid`` matrix of the whole stack for the given parameters.

        Args:
            jitter_shifts: one ``[shift_y, shift_x]`` per jitter.
            scale: content magnification.
            angle: rotation in degrees.
            final_shift: ``[shift_y, shift_x]`` of the final jitter.
            in_hw: size of the sampled image.
            out_hw: size of the output frame.

        Returns:
            A float64 tensor of shape ``(1, 2, 3)``.
        """
        entries = similarity_theta(
            scale, angle, _total_shift(jitter_shifts), [float(v) for v in final_shift], in_hw, out_hw
        )
        return torch.tensor(entries, dtype=torch.float64).view(1, 2, 3)

    def apply_fused(
        self, x: torch.Tensor, jitter_shifts: List[List[int]], scale: float, angle: float, final_shift: List[int]
    ) -> torch.Tensor:
        """Apply the stack with the given parameters as one resampling (see :meth:`sample_params`)."""
        out_hw = self.output_size(x.shape[-2], x.shape[-1])
        pre = _total_shift(jitter_shifts)
        post = [float(v) for v in final_shift]
        return warp_similarity(x, scale, angle, pre, post, out_hw, self.mode, "constant", self.pad_value)

    def apply_sequential(
        self, x: torch.Tensor, jitter_shifts: List[List[int]], scale: float, angle: float, final_shift: List[int]
    ) -> torch.Tensor:
        """Apply the stack with the given parameters module by module (the slow reference path)."""
        height, width = x.shape[-2], x.shape[-1]
        p = self.padding
        if p > 0:
            x = F.pad(x, [p, p, p, p], mode="constant", value=self.pad_value)
        for i, jitter in enumerate(self.jitters):
            x = jitter.apply_params(x, jitter_shifts[i][0], jitter_shifts[i][1])
        random_scale = self.random_scale
        if random_scale is not None:
            x = random_scale.apply_params(x, scale)
        random_rotation = self.random_rotation
        if random_rotation is not None:
            x = random_rotation.apply_params(x, angle)
        final_jitter = self.final_jitter
        if final_jitter is not None:
            x = final_jitter.apply_params(x, final_shift[0], final_shift[1])
        if self.crop_or_pad_output:
            x = _center_crop(x, [height, width], False, False, self.pad_value)
        return x

    @torch.jit.unused
    def _plain(self, x: torch.Tensor) -> torch.Tensor:
        # An ImageTensor (NaturalImage's output) would route every op of the stack through its
        # __torch_function__, a large share of a small image's step; the result is a plain tensor anyway.
        return x if type(x) is torch.Tensor else x.as_subclass(torch.Tensor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Randomly transform an NCHW tensor (a tensor subclass such as ``ImageTensor`` comes out plain)."""
        if not torch.jit.is_scripting():
            x = self._plain(x)
        if x.dim() != 4:
            raise ValueError(f"TransformationRobustness expects an NCHW tensor, got {x.dim()} dimensions")
        jitter_shifts, scale, angle, final_shift = self.sample_params()
        if self.fused:
            return self.apply_fused(x, jitter_shifts, scale, angle, final_shift)
        return self.apply_sequential(x, jitter_shifts, scale, angle, final_shift)

    @torch.jit.unused
    def forward_streams(self, x: torch.Tensor, generators: List[torch.Generator]) -> torch.Tensor:
        """Transform image ``i`` of the batch with parameters drawn from ``generators[i]``, in one resampling.

        The render core calls this so that an image's augmentations depend on its own random stream only,
        not on its batch or its position in it (see :func:`optim.optimization.apply_transform`).

        Args:
            x: an NCHW tensor.
            generators: one CPU ``torch.Generator`` per image.

        Returns:
            The transformed batch, as :meth:`forward` would shape it.
        """
        x = self._plain(x)
        if x.dim() != 4 or x.shape[0] != len(generators):
            raise ValueError(
                f"forward_streams needs an NCHW tensor with one generator per image, got shape {tuple(x.shape)} "
                f"and {len(generators)} generators"
            )
        if not self.fused:
            outs = []
            for i, g in enumerate(generators):
                outs.append(self.apply_sequential(x[i : i + 1], *self.sample_params(g)))
            return torch.cat(outs)
        out_hw = self.output_size(x.shape[-2], x.shape[-1])
        src, grid_padding = sampling_source(x, "constant", self.pad_value)
        in_hw = [src.shape[-2], src.shape[-1]]
        grids = []
        for g in generators:
            jitter_shifts, scale, angle, final_shift = self.sample_params(g)
            theta = similarity_theta(
                scale, angle, _total_shift(jitter_shifts), [float(v) for v in final_shift], in_hw, out_hw
            )
            grids.append(affine_grid(theta, 1, out_hw, x.device, x.dtype))
        grid = grids[0] if len(grids) == 1 else torch.cat(grids)
        out = F.grid_sample(src, grid, mode=self.mode, padding_mode=grid_padding, align_corners=False)
        return out + self.pad_value if self.pad_value != 0.0 else out

    def extra_repr(self) -> str:
        return (
            f"padding={self.padding}, pad_value={self.pad_value}, crop_or_pad_output={self.crop_or_pad_output}, "
            f"fused={self.fused}"
        )
