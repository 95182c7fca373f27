"""Per-image random streams: an image depends on (model, objective, settings, seed), not on its batch.

A batched render gives image ``i`` its own CPU ``torch.Generator``, seeded from ``(seed, key_i)`` where the key
is the image's identity (its channel in ``render_layer``, its index in ``render_vis``). The image's initial
noise and every random draw of the transforms applied to it come from that generator only, so the same image
rendered alone, in a batch of 16, or by another process of a sharded job, is the same tensor.
"""
from __future__ import annotations

import hashlib
import operator
from typing import Any, Hashable, List, Optional, Sequence

import torch
import torch.nn as nn

__all__ = ["image_generators", "check_seed", "apply_transform", "is_deterministic"]

_SEED_LIMIT = 2**63


def check_seed(seed: Any) -> Optional[int]:
    """Validate a seed: ``None`` or an int in ``[0, 2**63)`` (what ``torch.manual_seed`` takes everywhere).

    Example:
        >>> check_seed(2**70)
        Traceback (most recent call last):
        ...
        ValueError: seed must be None or an int in [0, 2**63), got 1180591620717411303424
    """
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be None or an int in [0, 2**63), got {seed!r} ({type(seed).__name__})")
    if not 0 <= seed < _SEED_LIMIT:
        raise ValueError(f"seed must be None or an int in [0, 2**63), got {seed}")
    return seed


def image_generators(seed: int, keys: Sequence[Hashable]) -> List[torch.Generator]:
    """One CPU generator per image, seeded from ``(seed, key)`` by SHA-256 (stable across runs and machines).

    Args:
        seed: the render's seed.
        keys: one identity per image (ints or strings; equal keys give equal streams).

    Returns:
        ``len(keys)`` fresh ``torch.Generator`` objects.

    Example:
        >>> a, b = image_generators(0, [5, 6])
        >>> c, = image_generators(0, [6])
        >>> torch.equal(torch.rand(3, generator=b), torch.rand(3, generator=c))
        True
    """
    check_seed(seed)
    gens = []
    for key in keys:
        digest = hashlib.sha256(f"optim:{seed}:{_canonical_key(key)!r}".encode()).digest()
        gens.append(torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "little") >> 1))
    return gens


def _canonical_key(key: Any) -> Any:
    """``key`` as the plain Python value it equals, so that its ``repr`` (what seeds the stream) does not depend on
    its type: numpy scalars and 0-d tensors become ``int`` / ``float`` / ``str`` / ``bool``, ``str`` subclasses
    ``str``, and tuples are read element by element."""
    if isinstance(key, tuple):
        return tuple(_canonical_key(k) for k in key)
    if not isinstance(key, (str, int, float)) and getattr(key, "shape", None) in ((), torch.Size([])):
        item = getattr(key, "item", None)
        if callable(item):
            key = item()  # numpy scalars, 0-d tensors
    if isinstance(key, bool):
        return bool(key)
    if isinstance(key, str):
        return str.__str__(key)  # the characters: a str Enum's own __str__ would name the member
    if not isinstance(key, float) and hasattr(key, "__index__"):
        return operator.index(key)  # numpy integers name the same stream as the int
    if isinstance(key, float):
        return float(key)
    return key


def is_deterministic(module: nn.Module) -> bool:
    """Whether a transform draws no random numbers, so the batch can go through it in one call.

    ``nn.Identity``, a module whose class or instance says ``deterministic = True`` (optim's deterministic
    transforms do), and an ``nn.Sequential`` of those are; any other module is assumed to draw from torch's
    global generator and runs image by image.

    Example:
        >>> is_deterministic(opt.transforms.CenterCrop(8)), is_deterministic(opt.transforms.BlendAlpha())
        (True, False)
    """
    if isinstance(module, nn.Identity) or getattr(module, "deterministic", False) is True:
        return True
    if isinstance(module, nn.Sequential):
        return all(is_deterministic(m) for m in module)
    return False


def apply_transform(transform: nn.Module, x: torch.Tensor, generators: Optional[Sequence[torch.Generator]]) -> torch.Tensor:
    """Apply ``transform`` so that image ``i``'s random draws come from ``generators[i]`` alone.

    A module with ``forward_streams(x, generators)`` (``TransformationRobustness``) does it in one call; an
    ``nn.Sequential`` is applied child by child; a deterministic module (:func:`is_deterministic`) takes the
    whole batch; any other module runs once per image with torch's global CPU generator set to that image's
    stream (and the caller's global state restored).

    Args:
        transform: the transform module.
        x: the NCHW batch.
        generators: one generator per image, or ``None`` for a plain ``transform(x)``.

    Returns:
        The transformed batch.

    Raises:
        ValueError: when a transform gives images of different sizes (a random resize per image cannot form a
            batch: use a size-preserving transform such as ``RandomScaleAffine``, or render one image at a time).
    """
    if generators is None:
        return transform(x)
    if isinstance(transform, nn.Sequential):
        for child in transform:
            x = apply_transform(child, x, generators)
        return x
    streams = getattr(transform, "forward_streams", None)
    if streams is not None:
        return streams(x, list(generators))
    if is_deterministic(transform):
        return transform(x)
    outs = []
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for i, g in enumerate(generators):
            torch.set_rng_state(g.get_state())
            if devices:  # a transform drawing on the GPU draws from a stream seeded by the image's own
                with torch.cuda.device(x.device):
                    torch.cuda.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)))
            out = transform(x[i : i + 1])
            g.set_state(torch.get_rng_state())
            if out.shape[0] != 1:
                raise ValueError(
                    f"the transform {type(transform).__name__} turned one image into {out.shape[0]}; a render needs "
                    "one output image per input image"
                )
            outs.append(out)
    sizes = {tuple(o.shape[1:]) for o in outs}
    if len(sizes) > 1:
        raise ValueError(
            f"the transform {type(transform).__name__} gave the images of one batch different sizes {sorted(sizes)}: "
            "a per-image random resize cannot form a batch; use a size-preserving transform (RandomScaleAffine) "
            "or render one image per batch"
        )
    return torch.cat(outs)
