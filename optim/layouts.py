"""Activation layouts: the one place that knows how a layer's output is laid out.

Objectives, Grad-CAM and the layer table read an activation through its layout:

- ``"NCHW"``: channels first, ``(N, C, *spatial)`` of any rank (``(N, C)``, ``(N, C, L)``, ``(N, C, H, W)``);
  the aliases ``"NC"`` and ``"NCL"`` name the same layout. A unit is a channel (dim 1).
- ``"NHWC"``: channels last, ``(N, H, W, C)`` (torchvision ``swin_t``'s ``features.*`` outputs, the
  channels-last norms and MLPs inside timm ConvNeXt blocks). A unit is a channel (the last dim).
- ``"NLD"``: tokens, ``(N, L, D)``: ``L`` tokens of ``D`` hidden units (ViT, DeiT, CLIP towers), optionally
  with ``prefix`` tokens first (class token, distillation token, registers) and a 2-D ``grid`` of patch
  tokens after them. A unit is a hidden unit (the last dim); a position is a patch token.
- ``"LND"``: tokens sequence first, ``(L, N, D)`` (``nn.MultiheadAttention(batch_first=False)`` stacks: OpenAI
  CLIP's and older open_clip's transformer blocks); otherwise as ``"NLD"``.

:func:`channels_first` turns any of them into the channels-first view ``(N, C, *spatial)`` that every loss
computes on: NHWC is permuted to NCHW; tokens (LND first made NLD) become ``(N, D, h, w)`` (the patch tokens
on their grid, the prefix tokens dropped) or ``(N, D, L)`` when there is no grid. :func:`unit_count` is the
number of units (channels or hidden units) a layer has, for listings such as ``layer_info``.

**Inference** (``layout=None``), from the activation alone unless a module is given. ``module`` is the module
that produced the activation, ``model`` the model it belongs to (for its ancestors). A module's *widths* are
its channels-last widths (``nn.LayerNorm`` over one dim, ``nn.Linear`` outputs) and its channels-first ones
(convolution outputs, batch / group norm channels), in the module or below it; a module with none of its own
(an activation function, a dropout, a permute) reads those of its nearest ancestor that has some (the MLP or
block it sits in; needs ``model``).

- 4-D: ``"NCHW"``, or ``"NHWC"`` when the widths say so unambiguously: the channels-last widths contain the
  last dim, and dim 1 is none of the widths. A channels-last stage whose height equals one of its widths is
  read as NCHW: give ``layout="NHWC"``.
- 3-D: ``"LND"`` inside a sequence-first transformer: ``module`` is a block (it holds
  ``nn.MultiheadAttention`` modules with ``batch_first=False`` as direct children) or an ``nn.Sequential`` of
  them, or (with ``model``) it sits in such a block (OpenAI CLIP's ``resblocks.0.mlp.c_fc``,
  ``resblocks.0.ln_2``). A module with its own forward holding such blocks further down (a ``Transformer``,
  which may transpose: open_clip's returns ``(N, L, D)``, OpenAI CLIP's ``(L, N, D)``) is ``"LND"`` when only
  its dim 0 fits the token rule below, ``"NLD"`` when only dim 1 does. ``"NCHW"`` (``(N, C, L)``)
  when dim 1 is one of the channels-first widths and the last dim is none of the channels-last ones (a
  ``Conv1d`` / ``BatchNorm1d`` output). Else ``"NLD"``. With ``k = floor(sqrt(L))`` and ``p = L - k * k``, the
  tokens are ``p`` prefix tokens and a ``k x k`` grid when ``k >= 2`` and ``p <= min(8, k - 1)`` (ViT-B/16 at
  224: 197 = 1 + 14 x 14; four registers and a class token: 201 = 5 + 14 x 14); otherwise no prefix and no
  grid (``(N, D, L)``). Give ``Layout("NLD", prefix=..., grid=...)`` for anything else (non-square grids, more
  prefix tokens). Inference refuses to guess the token order (a ``ValueError`` asking for ``layout=``) when
  a module holds attention of both orders, when both or neither leading dim of such a ``Transformer``'s
  output fit the token rule, or when an output inside a sequence-first block has a last dim that is none of
  the block's widths (not one of its ``(L, N, D)`` streams).
- any other rank: ``"NCHW"`` (channels first: ``(N, C)`` logits, ``(N,)`` scores pass through).

Example:
    >>> import torch
    >>> tokens = torch.arange(2 * 5 * 3.0).reshape(2, 5, 3)  # N=2, a class token + a 2x2 grid, D=3
    >>> infer_layout(tokens)
    Layout('NLD', prefix=1, grid=(2, 2))
    >>> channels_first(tokens).shape  # (N, D, h, w): patch tokens only
    torch.Size([2, 3, 2, 2])
    >>> unit_count(tokens), unit_count(torch.zeros(1, 8, 4, 4)), unit_count(torch.zeros(1, 4, 4, 8), "NHWC")
    (3, 8, 8)
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn

__all__ = [
    "LAYOUTS",
    "Layout",
    "LayoutArg",
    "check_layout",
    "infer_layout",
    "channels_first",
    "unit_count",
    "unit_name",
    "units",
    "MAX_PREFIX_TOKENS",
]

#: The layout names :class:`Layout` accepts (``"NC"`` and ``"NCL"`` are aliases of ``"NCHW"``).
LAYOUTS = ("NCHW", "NHWC", "NLD", "LND")
_ALIASES = {"NCHW": "NCHW", "NC": "NCHW", "NCL": "NCHW", "NHWC": "NHWC", "NLD": "NLD", "LND": "LND"}
#: The most prefix tokens (class, distillation, registers) that inference accepts in front of a square grid.
MAX_PREFIX_TOKENS = 8


@dataclass(frozen=True)
class Layout:
    """An activation layout: a name from :data:`LAYOUTS` and, for tokens, the prefix tokens and grid.

    Args:
        name: ``"NCHW"`` (alias ``"NC"``, ``"NCL"``), ``"NHWC"``, ``"NLD"`` or ``"LND"``.
        prefix: tokens only: how many tokens come before the patch tokens (``None``: inferred).
        grid: tokens only: ``(h, w)`` of the patch tokens (``None``: inferred; a square when ``L - prefix``
            is one).

    Raises:
        ValueError: an unknown name, or ``prefix`` / ``grid`` on a layout without tokens, or a negative
            prefix or a grid side below 1.
        TypeError: ``prefix`` or ``grid`` of the wrong type.

    Example:
        >>> Layout("NLD", prefix=1, grid=(14, 14)).tokens
        197
        >>> Layout("NC")
        Layout('NCHW')
        >>> Layout("NHCW")
        Traceback (most recent call last):
        ...
        ValueError: layout must be one of 'NCHW', 'NHWC', 'NLD', 'LND' (or 'NC', 'NCL' for 'NCHW'), got 'NHCW'
    """

    name: str
    prefix: Optional[int] = None
    grid: Optional[Tuple[int, int]] = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or self.name.upper() not in _ALIASES:
            raise ValueError(
                f"layout must be one of {', '.join(map(repr, LAYOUTS))} (or 'NC', 'NCL' for 'NCHW'), "
                f"got {self.name!r}"
            )
        object.__setattr__(self, "name", _ALIASES[self.name.upper()])
        if not self.is_tokens and (self.prefix is not None or self.grid is not None):
            raise ValueError(f"prefix and grid describe token layouts ('NLD', 'LND'), not {self.name!r}")
        if self.prefix is not None:
            if isinstance(self.prefix, bool) or not isinstance(self.prefix, int):
                raise TypeError(f"prefix must be an int (prefix tokens), got {self.prefix!r}")
            if self.prefix < 0:
                raise ValueError(f"prefix must be >= 0 (prefix tokens), got {self.prefix}")
        if self.grid is not None:
            grid = tuple(self.grid) if isinstance(self.grid, (tuple, list)) else None
            if grid is None or len(grid) != 2 or any(isinstance(s, bool) or not isinstance(s, int) for s in grid):
                raise TypeError(f"grid must be an (h, w) pair of ints, got {self.grid!r}")
            if min(grid) < 1:
                raise ValueError(f"grid sides must be >= 1, got {grid}")
            object.__setattr__(self, "grid", grid)

    @property
    def is_tokens(self) -> bool:
        """A token layout (``"NLD"`` or ``"LND"``)."""
        return self.name in ("NLD", "LND")

    @property
    def tokens(self) -> Optional[int]:
        """``prefix + h * w`` when both are known, else ``None``."""
        if self.prefix is None or self.grid is None:
            return None
        return self.prefix + self.grid[0] * self.grid[1]

    @property
    def unit_name(self) -> str:
        """What a unit is called in messages: ``"hidden units"`` for tokens, ``"channels"`` otherwise."""
        return "hidden units" if self.is_tokens else "channels"

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in (("prefix", self.prefix), ("grid", self.grid)) if v is not None)
        return f"Layout({self.name!r}{extra})"


LayoutArg = Union[None, str, Layout]


def check_layout(layout: LayoutArg) -> Optional[Layout]:
    """The one validator of a ``layout=`` argument: ``None`` (infer), a name, or a :class:`Layout`.

    Returns:
        ``None`` or a :class:`Layout` (names normalized: ``"nc"`` -> ``Layout('NCHW')``).

    Raises:
        TypeError: anything else (naming the value and what is allowed).
        ValueError: an unknown name.

    Example:
        >>> check_layout("nhwc")
        Layout('NHWC')
        >>> check_layout(3)
        Traceback (most recent call last):
        ...
        TypeError: layout must be None (infer), a name ('NCHW', 'NHWC', 'NLD', 'LND') or a Layout, got 3 (int)
    """
    if layout is None or isinstance(layout, Layout):
        return layout
    if isinstance(layout, str):
        return Layout(layout)
    raise TypeError(
        f"layout must be None (infer), a name ({', '.join(map(repr, LAYOUTS))}) or a Layout, "
        f"got {layout!r} ({type(layout).__name__})"
    )


def _square_grid(count: int) -> Optional[Tuple[int, int]]:
    side = math.isqrt(count) if count > 0 else 0
    return (side, side) if side >= 1 and side * side == count else None


def _infer_tokens(length: int) -> Tuple[int, Optional[Tuple[int, int]]]:
    """``(prefix, grid)`` for ``length`` tokens by the documented rule; ``(0, None)`` when it does not apply."""
    side = math.isqrt(length)
    prefix = length - side * side
    if side >= 2 and prefix <= min(MAX_PREFIX_TOKENS, side - 1):
        return prefix, (side, side)
    return 0, None


def _resolve_tokens(layout: Layout, length: int, where: str) -> Layout:
    prefix, grid = layout.prefix, layout.grid
    if prefix is None and grid is None:
        prefix, grid = _infer_tokens(length)
    elif grid is None:
        if prefix > length:
            raise ValueError(f"{where} has {length} tokens, fewer than prefix={prefix}")
        grid = _square_grid(length - prefix)
    elif prefix is None:
        prefix = length - grid[0] * grid[1]
        if prefix < 0:
            raise ValueError(f"{where} has {length} tokens, fewer than the grid {grid} needs ({grid[0] * grid[1]})")
    if grid is not None and prefix + grid[0] * grid[1] != length:
        raise ValueError(
            f"{where} has {length} tokens, but prefix={prefix} and grid={grid} make {prefix + grid[0] * grid[1]}"
        )
    return Layout(layout.name, prefix=prefix, grid=grid)


def _widths(module: nn.Module) -> Tuple[set, set]:
    """The widths a module (or anything below it) works in: channels-last ones (LayerNorm over one dim, Linear
    outputs) and channels-first ones (convolutions, batch / group norm). Not cached: a model's layers may be
    replaced (a fresh head), and the walk costs microseconds."""
    last, first = set(), set()
    for m in module.modules():
        if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1:
            last.add(int(m.normalized_shape[0]))
        elif isinstance(m, nn.Linear):
            last.add(int(m.out_features))
        elif isinstance(m, nn.modules.conv._ConvNd):
            first.add(int(m.out_channels))
        elif isinstance(m, nn.modules.batchnorm._NormBase):
            first.add(int(m.num_features))
        elif isinstance(m, nn.GroupNorm):
            first.add(int(m.num_channels))
    return last, first


class _TokenOrderUnknown(ValueError):
    """Inference cannot tell ``(N, L, D)`` from ``(L, N, D)`` (the unit count, the last dim, is known anyway)."""


# model -> {id(child): weakref to its parent}. Weak references only: a strong one to any module of the model (the
# model itself is a parent) would keep the weak key alive forever. Every chain read from it is checked against the
# live children, so a model edited since (a replaced head, an appended block) is walked again.
_PARENTS: "weakref.WeakKeyDictionary[nn.Module, Dict[int, Any]]" = weakref.WeakKeyDictionary()


def _chain(parents: Dict[int, Any], module: nn.Module, model: nn.Module) -> Optional[List[nn.Module]]:
    chain, m = [], module
    while m is not model:
        ref = parents.get(id(m))
        parent = ref() if ref is not None else None
        if parent is None or not any(c is m for c in parent.children()) or len(chain) > len(parents):
            return None
        chain.append(parent)
        m = parent
    return chain


def _ancestors(module: Optional[nn.Module], model: Optional[nn.Module]) -> List[nn.Module]:
    """The modules ``module`` sits in inside ``model``, nearest first (``model`` last); ``[]`` when unknown."""
    if module is None or not isinstance(model, nn.Module) or module is model:  # a plain function: no modules
        return []
    cached = _PARENTS.get(model)
    if cached is not None:
        chain = _chain(cached, module, model)
        if chain is not None:
            return chain
    parents: Dict[int, Any] = {}
    for parent in model.modules():
        for child in parent.children():
            parents.setdefault(id(child), weakref.ref(parent))
    _PARENTS[model] = parents
    chain = _chain(parents, module, model)
    return [] if chain is None else chain  # None: a module outside the model (a transform's, another model's)


# modules whose output has their input's layout: for one with no widths of its own, the module that ran just
# before it (its preceding sibling) tells the layout better than the block around it
_KEEPS_LAYOUT = ("torch.nn.modules.activation", "torch.nn.modules.pooling", "torch.nn.modules.dropout")


def _keeps_layout(module: nn.Module) -> bool:
    return type(module).__module__ in _KEEPS_LAYOUT or isinstance(module, nn.Identity)


def _scope_widths(module: Optional[nn.Module], ancestors: List[nn.Module]) -> Tuple[set, set]:
    """The widths that tell ``module``'s layout: its own; else, for a module that keeps its input's layout (an
    activation, a pool, a dropout), those of the nearest sibling defined before it that has some; else those of
    its nearest ancestor that has some.

    The sibling comes first because a block's (or a whole model's) widths mix every part of it: a classifier
    head's ``Linear`` width can equal a feature map's width, which would make a pool after a concat read as
    channels-last. A module that may transpose (a custom permute) reads its block's widths."""
    if module is not None:
        last, first = _widths(module)
        if last or first:
            return last, first
        if ancestors and _keeps_layout(module):
            siblings = list(ancestors[0].children())
            index = next((i for i, child in enumerate(siblings) if child is module), 0)
            for sibling in reversed(siblings[:index]):
                last, first = _widths(sibling)
                if last or first:
                    return last, first
    for m in ancestors:
        last, first = _widths(m)
        if last or first:
            return last, first
    return set(), set()


def _attention_order(attention: List[nn.Module], owner: nn.Module, where: str) -> bool:
    """Whether ``attention`` (``nn.MultiheadAttention`` modules of ``owner``) all take the sequence first."""
    orders = {bool(m.batch_first) for m in attention}
    if len(orders) > 1:
        raise _TokenOrderUnknown(
            f"cannot infer whether {where} is (N, L, D) or (L, N, D): {type(owner).__name__} holds "
            "nn.MultiheadAttention modules of both orders (batch_first=True and False); give layout='NLD' or 'LND'"
        )
    return orders == {False}


def _sequence_first(
    activation: torch.Tensor, module: Optional[nn.Module], ancestors: List[nn.Module], where: str
) -> bool:
    """The 3-D rule for ``"LND"``: the module's own attention, else that of the block it sits in."""
    if module is not None:
        own = [m for m in module.modules() if isinstance(m, nn.MultiheadAttention)]
        direct = isinstance(module, nn.MultiheadAttention) or any(m in own for m in module.children())
        # a block, or a plain stack of blocks (torch's own Transformer containers never transpose either)
        stacks = (nn.Sequential, nn.TransformerEncoder, nn.TransformerDecoder, nn.Transformer)
        if own and (direct or isinstance(module, stacks)):
            return _attention_order(own, module, where)
        if own and _attention_order(own, module, where):
            # a model or stack with its own forward may transpose (open_clip's Transformer returns (N, L, D),
            # OpenAI CLIP's (L, N, D)): L is the leading dim that fits the token rule
            fits = [_infer_tokens(int(n))[1] is not None for n in activation.shape[:2]]
            if fits[0] == fits[1]:
                raise _TokenOrderUnknown(
                    f"cannot infer whether {where} (shape {tuple(activation.shape)}) is (N, L, D) or (L, N, D): "
                    f"{type(module).__name__} holds sequence-first attention below it, and its forward may "
                    "transpose; give layout='NLD' or 'LND'"
                )
            return fits[0]
        if own:
            return False
    for block in ancestors:
        direct = [m for m in block.children() if isinstance(m, nn.MultiheadAttention)]
        if not direct:
            continue
        if not _attention_order(direct, block, where):
            return False
        last, _ = _widths(block)
        if int(activation.shape[-1]) not in last:
            raise _TokenOrderUnknown(
                f"cannot infer the layout of {where} (shape {tuple(activation.shape)}): it sits in the "
                f"sequence-first block {type(block).__name__}, whose (L, N, D) streams are {sorted(last)} wide, "
                f"but its last dim is {activation.shape[-1]}; give layout='LND', 'NLD' or 'NCL'"
            )
        return True
    return False


def _channels_last(activation: torch.Tensor, widths: Tuple[set, set]) -> bool:
    last, first = widths
    channels_last, dim1 = int(activation.shape[-1]), int(activation.shape[1])
    return channels_last in last and dim1 not in last and dim1 not in first


def _sequence_channels_first(activation: torch.Tensor, widths: Tuple[set, set]) -> bool:
    last, first = widths
    return int(activation.shape[1]) in first and int(activation.shape[-1]) not in last


def infer_layout(
    activation: torch.Tensor,
    layout: LayoutArg = None,
    *,
    module: Optional[nn.Module] = None,
    model: Optional[nn.Module] = None,
    where: str = "",
) -> Layout:
    """The complete layout of ``activation``: ``layout`` checked against it, or inferred (module docstring).

    Args:
        activation: the tensor, batch first.
        layout: ``None`` (infer), a name or a :class:`Layout`; token prefix/grid left ``None`` are inferred.
        module: the module that produced ``activation``, for the width and attention rules (optional).
        model: the model ``module`` belongs to (optional): its ancestors lend their widths to a module that
            has none (an activation inside an MLP) and their attention order to the modules of a block.
        where: how to name the layer in errors (default: "the activation").

    Returns:
        A :class:`Layout` with, for tokens, ``prefix`` and ``grid`` filled in (``grid=None``: no grid).

    Raises:
        ValueError: a layout that does not fit the activation's rank or length (naming the shape); a token
            order inference refuses to guess (see the module docstring; give ``layout=``).

    Example:
        >>> infer_layout(torch.zeros(1, 197, 768))
        Layout('NLD', prefix=1, grid=(14, 14))
        >>> infer_layout(torch.zeros(1, 12, 768))  # 3 x 3 + 3: too many prefix tokens for a 3 x 3 grid
        Layout('NLD', prefix=0)
        >>> infer_layout(torch.zeros(1, 12, 768), Layout("NLD", grid=(3, 4)))
        Layout('NLD', prefix=0, grid=(3, 4))
        >>> ln = nn.LayerNorm(96)
        >>> infer_layout(torch.zeros(1, 56, 56, 96), module=ln)  # a channels-last norm's output
        Layout('NHWC')
        >>> mlp = nn.Sequential(nn.Linear(96, 384), nn.GELU())  # the GELU has no widths: the MLP's count
        >>> infer_layout(torch.zeros(1, 56, 56, 384), module=mlp[1], model=mlp)
        Layout('NHWC')
        >>> conv = nn.Conv1d(3, 64, 3)
        >>> infer_layout(torch.zeros(2, 64, 100), module=conv)  # (N, C, L)
        Layout('NCHW')
        >>> infer_layout(torch.zeros(2, 10), "NLD")
        Traceback (most recent call last):
        ...
        ValueError: layout 'NLD' needs a 3-D (N, L, D) activation; the activation has shape (2, 10)
    """
    if not isinstance(activation, torch.Tensor):
        raise TypeError(f"activation must be a tensor, got {type(activation).__name__}")
    where = where or "the activation"
    given = check_layout(layout)
    shape = tuple(activation.shape)
    if given is None:
        if activation.dim() not in (3, 4) or module is None:
            return _resolve_tokens(Layout("NLD"), shape[1], where) if activation.dim() == 3 else Layout("NCHW")
        ancestors = _ancestors(module, model)
        if activation.dim() == 4:
            return Layout("NHWC") if _channels_last(activation, _scope_widths(module, ancestors)) else Layout("NCHW")
        if _sequence_first(activation, module, ancestors, where):
            return _resolve_tokens(Layout("LND"), shape[0], where)
        if _sequence_channels_first(activation, _scope_widths(module, ancestors)):
            return Layout("NCHW")
        return _resolve_tokens(Layout("NLD"), shape[1], where)
    if given.is_tokens:
        if activation.dim() != 3:
            dims = "(N, L, D)" if given.name == "NLD" else "(L, N, D)"
            raise ValueError(f"layout {given.name!r} needs a 3-D {dims} activation; {where} has shape {shape}")
        return _resolve_tokens(given, shape[1] if given.name == "NLD" else shape[0], where)
    if given.name == "NHWC" and activation.dim() < 3:
        raise ValueError(f"layout 'NHWC' needs an (N, *spatial, C) activation; {where} has shape {shape}")
    return given


def channels_first(
    activation: torch.Tensor,
    layout: LayoutArg = None,
    *,
    module: Optional[nn.Module] = None,
    model: Optional[nn.Module] = None,
    keep_prefix: bool = False,
    where: str = "",
) -> torch.Tensor:
    """The channels-first view ``(N, C, *spatial)`` of an activation in any layout (differentiable).

    - NCHW (any rank): returned as it is.
    - NHWC: ``(N, C, H, W)`` (permuted).
    - LND: made NLD first (``(L, N, D) -> (N, L, D)``), then as tokens.
    - tokens: ``(N, D, h, w)`` of the patch tokens on their grid (prefix tokens dropped), or ``(N, D, L')`` of
      the tokens after the prefix when there is no grid; with ``keep_prefix=True`` always ``(N, D, L)`` of
      every token, prefix included, in order (token ``0`` is the class token of a ViT).

    Args:
        activation: the tensor.
        layout: ``None`` (infer), a name or a :class:`Layout` (see :func:`infer_layout`).
        module: the module that produced it (see :func:`infer_layout`).
        model: the model ``module`` belongs to (see :func:`infer_layout`).
        keep_prefix: tokens only: keep every token, as a sequence.
        where: the layer's name, for errors.

    Raises:
        ValueError: a layout that does not fit the activation.

    Example:
        >>> x = torch.arange(10.0).reshape(1, 5, 2)  # a class token and a 2x2 grid of 2 hidden units
        >>> channels_first(x)[0, 1].tolist()  # hidden unit 1 on the grid
        [[3.0, 5.0], [7.0, 9.0]]
        >>> channels_first(x, keep_prefix=True)[0, 1].tolist()  # every token, the class token first
        [1.0, 3.0, 5.0, 7.0, 9.0]
        >>> channels_first(torch.zeros(1, 4, 6, 8), "NHWC").shape
        torch.Size([1, 8, 4, 6])
        >>> channels_first(x.transpose(0, 1), "LND")[0, 1].tolist()  # sequence first: the same view
        [[3.0, 5.0], [7.0, 9.0]]
    """
    resolved = infer_layout(activation, layout, module=module, model=model, where=where)
    if resolved.name == "NCHW":
        return activation
    if resolved.name == "NHWC":
        return activation.movedim(-1, 1)
    if resolved.name == "LND":
        activation = activation.transpose(0, 1)
    if keep_prefix:
        return activation.transpose(1, 2)
    patches = activation[:, resolved.prefix :].transpose(1, 2)
    if resolved.grid is None:
        return patches
    return patches.reshape(patches.shape[0], patches.shape[1], *resolved.grid)


def unit_count(
    activation: torch.Tensor,
    layout: LayoutArg = None,
    *,
    module: Optional[nn.Module] = None,
    model: Optional[nn.Module] = None,
) -> int:
    """How many units (channels or hidden units) a layer has: C for NCHW, the last dim for NHWC and tokens.

    This is what a layer table reports as the layer's units, and the range of ``"layer:unit"``.

    Args:
        activation: the layer's output (batch first).
        layout: ``None`` (infer, see :func:`infer_layout`), a name or a :class:`Layout`.
        module: the module that produced it (see :func:`infer_layout`).
        model: the model ``module`` belongs to (see :func:`infer_layout`).

    Raises:
        ValueError: an activation with no unit dimension (fewer than 2 dims). A token layer whose order
            (``(N, L, D)`` or ``(L, N, D)``) inference refuses to guess still counts its last dim.

    Example:
        >>> unit_count(torch.zeros(1, 197, 768)), unit_count(torch.zeros(2, 1000))
        (768, 1000)
    """
    return units(activation, layout, module=module, model=model)[0]


def units(
    activation: torch.Tensor,
    layout: LayoutArg = None,
    *,
    module: Optional[nn.Module] = None,
    model: Optional[nn.Module] = None,
) -> Tuple[int, str]:
    """:func:`unit_count` and what messages call the units: ``"hidden units"`` on a token layer, ``"outputs"``
    on a 2-D output (a linear layer; a classifier's logits, one per class), ``"channels"`` otherwise.

    Arguments and errors as for :func:`unit_count`.

    Example:
        >>> units(torch.zeros(1, 197, 768)), units(torch.zeros(2, 1000)), units(torch.zeros(1, 8, 4, 4))
        ((768, 'hidden units'), (1000, 'outputs'), (8, 'channels'))
    """
    if isinstance(activation, torch.Tensor) and activation.dim() < 2:
        raise ValueError(f"an activation of shape {tuple(activation.shape)} has no unit dimension (needs N, C, ...)")
    try:
        resolved = infer_layout(activation, layout, module=module, model=model)
    except _TokenOrderUnknown:
        return int(activation.shape[-1]), "hidden units"  # whichever the order
    count = int(activation.shape[1] if resolved.name == "NCHW" else activation.shape[-1])
    return count, unit_name(activation, resolved)


def unit_name(activation: torch.Tensor, layout: Optional[Layout] = None) -> str:
    """What messages call the units of an activation whose layout is ``layout`` (a layer's output, or a
    channels-first view of it): ``"hidden units"`` on a token layer, ``"outputs"`` on a 2-D activation (a linear
    layer; a classifier's logits, one per class), ``"channels"`` otherwise.

    Example:
        >>> unit_name(torch.zeros(1, 10)), unit_name(torch.zeros(1, 8, 4, 4)), unit_name(torch.zeros(1, 4, 6), "NLD")
        ('outputs', 'channels', 'hidden units')
    """
    if isinstance(layout, str):
        layout = Layout(layout)
    if layout is not None and layout.is_tokens:
        return layout.unit_name
    return "outputs" if activation.dim() == 2 else "channels"
