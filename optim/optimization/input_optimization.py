"""``InputOptimization``: the render core. Every render in optim (``render_vis``, ``render_layer``, the atlas,
the recipes, the CLI and the app) is one or more ``optimize`` calls of this class.

One step: ``image = input_param()``; ``x = transform(image)`` with image ``i``'s random draws taken from its own
stream (:mod:`optim.optimization.streams`); ``model(x)`` with the activation core recording every target (and
skipping the rest of the forward pass); ``loss = summarize(loss_function(activations))``; one optimizer step.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Set, Tuple

import torch
import torch.nn as nn

from .._utils import model_device_dtype, named_module_map
from ..activations import (
    INFERENCE_MODE_HELP,
    ActivationMap,
    ActivationRecorder,
    StopForward,
    autograd_context,
    model_frozen,
)
from ..loss.base import Loss, default_loss_summarize
from ..models._layers import residual_gradient as branch_gradient
from .defaults import (
    check_lr,
    DEFAULT_LR,
    DEFAULT_LR_DECAY_STEPS,
    check_lr_decay_steps,
    scheduled_lr,
    schedules_lr,
    OptimizerArg,
    default_image,
    default_transforms,
    make_optimizer,
    starts_from_photo,
    model_input_channels,
    check_residual_gradient,
    resolve_residual_gradient,
)
from .progress import StepCallback, check_callback
from .stop_criteria import _coerce
from .streams import apply_transform, check_seed, image_generators

__all__ = ["InputOptimization"]


#: What torch says when ``view`` cannot reinterpret a tensor's strides (a channels-last map flattened by ``.view``).
_LAYOUT_ERROR = "view size is not compatible with input tensor's size and stride"


class _ChannelsLastRefused(Exception):
    """The model could not run on a channels-last input (see :func:`model_input_layout`)."""


def model_input_layout(x: torch.Tensor) -> torch.Tensor:
    """The memory layout renders feed a model: channels-last for a 4-D float32 image on the CPU, ``x`` itself
    otherwise.

    oneDNN's CPU convolutions run channels-last without a layout reorder around every layer. A whole render step
    (default image and transforms, 2 threads, 224 px; ``benchmarks/step_overhead.py`` prints Lite0's) takes
    0.82-0.92x the time on EfficientNet-Lite0, InceptionV1, MobileNetV3 and ResNet-50 / VGG-16 at batch 4,
    0.96-0.97x on the last two at batch 1, and 1.05x on ResNet-18's ``layer4`` at batch 1 (the one case measured
    slower). float64 and bfloat16 convolutions can be slower channels-last: they keep ``x``. Values agree up to
    float rounding. CUDA keeps the contiguous layout (not measured there). A 1-channel image is both layouts at
    once. A model, loss or backward function that flattens a feature map with ``.view`` cannot take it; then
    :class:`InputOptimization` feeds the model the transforms' output as it is (a loss reads each layer in the
    layout it comes out in, which follows the input's). Renders use it with ``InputOptimization(...,
    channels_last=True)`` only: on EfficientNet-Lite0 the forward pass agrees with the contiguous one to 2e-6,
    but a single ReLU6 unit of 57600 at ``blocks.15`` falls on the other side of its threshold and the input
    gradient moves by 0.3%, so the render follows another trajectory.

    Example:
        >>> model_input_layout(torch.rand(1, 3, 8, 8)).is_contiguous(memory_format=torch.channels_last)
        True
        >>> x = torch.rand(2, 5); model_input_layout(x) is x
        True
    """
    if x.dim() == 4 and x.device.type == "cpu" and x.dtype == torch.float32:
        return x.contiguous(memory_format=torch.channels_last)
    return x


class InputOptimization:
    """Render an input that optimizes ``loss_function`` on ``model`` (captum.optim's class, Lucid's core).

    The model is never changed: during :meth:`optimize` it is in eval mode with ``requires_grad`` off, hooks
    exist only inside :meth:`optimize`, and all of it is restored on every exit path. It works under
    ``torch.no_grad()`` (a validation loop, a notebook cell); inside ``torch.inference_mode()`` it works as long
    as the model and the image were built outside it, and otherwise says so.

    The image is the parameterization's current state (``input_param()``: the last step's); ``render_vis`` returns
    an average of the steps' images instead, which a hand-wired render gets from
    :class:`~optim.optimization.ImageAverage` (``optimize(..., callback=average.then(None))``).

    Args:
        model: the network (``None`` for a loss on the image or transforms alone).
        loss_function: the objective; its targets may be modules of the model, of the transform or of the
            parameterization, dotted names of the model's modules (``"layer3.1.conv2"``), or
            ``"input_param.<name>"`` / ``"transform.<name>"``.
        input_param: the image parameterization (default: :func:`~optim.optimization.default_image` with the
            model's input channels, :func:`~optim.optimization.model_input_channels`); it is moved to the model's
            device, and to its dtype when that is float32 or wider. For a bfloat16 or float16 model the image is
            computed in float32 and cast to the model's dtype after the transforms, just before the model (the
            images a render returns stay float32).
        transform: applied to the image before the model (default:
            :func:`~optim.optimization.default_transforms`). It is all that runs between the image and the model:
            unlike ``render_vis`` / ``render_layer`` / the recipes, which add the normalization the model's config
            declares (timm ``pretrained_cfg``, :func:`~optim.models.preprocess.render_inputs`), this class adds
            none; append it yourself (``nn.Sequential(default_transforms(), Normalize(mean, std))``) for a model
            that expects normalized input.
        seed: a render seed. Image ``i`` gets its own random stream from ``(seed, image_keys[i])``; the image is
            re-initialized from it (``input_param.reset_parameters``) and its transforms draw from it, so the
            result depends on the seed and the key, not on the batch. ``None``: the image is used as built and
            the streams are seeded from torch's global generator (``torch.manual_seed`` makes it reproducible).
        image_keys: the identity of each image of the batch (default ``0 .. B-1``); ``render_layer`` uses the
            channel, so a channel renders the same alone or in any batch.
        call: which call of a target module called several times per forward pass (default the last, see
            :class:`~optim.activations.ActivationRecorder`).
        inplace_safe: protect recorded outputs against later in-place ops (default; after the first step it
            costs nothing where no in-place op follows a target). ``False`` only to measure that cost.
        channels_last: feed the model :func:`model_input_layout` of each image (channels-last for float32 on the
            CPU, where most convolutional networks step 3-18% faster); default ``False``: the transforms' output
            as it is. Off by default because it changes every render's float rounding and, with it, the
            trajectory: on ``benchmarks/class_transfer.py``'s classes (9 seeds) the renders transferred to
            EfficientNet-Lite2 in 943 of 1080 cases against 953, and at 128 steps in 258 of 270 against 267,
            with no mechanism found (see :func:`model_input_layout`). Where the model, the loss or a backward
            function refuses that layout (a feature map flattened with ``.view``), the step runs again without
            it, as does every later one.
        residual_gradient: while :meth:`optimize` runs, the gradient through the model's residual branches is
            multiplied by this, the skip connections' is not (the Skip Gradient Method, Wu et al. 2020:
            :func:`~optim.models.residual_gradient`, which says which models have such branches; the forward pass
            is the model's own). ``None``: ``DEFAULT_RESIDUAL_GRADIENT`` (0.25) for an image from noise, 1 (the true
            gradient) for one built from a photo (:func:`~optim.optimization.resolve_residual_gradient`). Renders
            made through the weakened branches transfer better to other networks (:mod:`optim.optimization.defaults`).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> image = opt.images.NaturalImage((32, 32))
        >>> obj = opt.InputOptimization(net, opt.loss.ChannelActivation(net[0], 2), image, seed=0)
        >>> history = obj.optimize(opt.optimization.n_steps(8, show_progress=False))
        >>> history.shape, bool(history[-1] < history[0])
        (torch.Size([8]), True)
    """

    def __init__(
        self,
        model: Optional[nn.Module],
        loss_function: Loss,
        input_param: Optional[nn.Module] = None,
        transform: Optional[nn.Module] = None,
        *,
        seed: Optional[int] = None,
        image_keys: Optional[Sequence[Hashable]] = None,
        call: int = -1,
        inplace_safe: bool = True,
        channels_last: bool = False,
        residual_gradient: Optional[float] = None,
    ) -> None:
        if not isinstance(loss_function, Loss):
            raise TypeError(f"loss_function must be an optim.loss.Loss, got {type(loss_function).__name__}")
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module or None, got {type(model).__name__}")
        seed = check_seed(seed)
        check_residual_gradient(residual_gradient)
        if input_param is None:
            input_param = default_image(channels=model_input_channels(model))
        if transform is None:
            transform = default_transforms()
        for name, value in (("input_param", input_param), ("transform", transform)):
            if not isinstance(value, nn.Module):
                raise TypeError(f"{name} must be an nn.Module, got {type(value).__name__}")
        self.model = model if model is not None else nn.Identity()
        self.loss_function = loss_function
        self.input_param = input_param
        self.transform = transform
        self.call = call
        self.inplace_safe = bool(inplace_safe)
        # the image goes to the model's dtype just before the model (_step_loss); the parameterization and
        # the transforms compute in float32 at least (no low-precision FFT), float64 for a float64 model
        self._model_dtype: Optional[torch.dtype] = None
        if any(True for _ in self.model.parameters()) or any(True for _ in self.model.buffers()):
            device, dtype = model_device_dtype(self.model)
            self._model_dtype = dtype
            self.input_param.to(device=device, dtype=dtype if dtype.itemsize >= 4 else torch.float32)
            self.transform.to(device=device)
        if any(p.is_inference() for p in self.input_param.parameters()):
            raise RuntimeError(
                f"the image parameterization {type(self.input_param).__name__} was built inside "
                f"torch.inference_mode(), so its tensors cannot be trained: {INFERENCE_MODE_HELP}"
            )
        with torch.no_grad():
            batch = int(self._image().shape[0])
        keys = list(range(batch)) if image_keys is None else list(image_keys)
        if len(keys) != batch:
            raise ValueError(f"image_keys must give one key per image: {batch} images, got {len(keys)} keys")
        if seed is None:
            # streams from the global generator: torch.manual_seed(...) before the call reproduces the render
            seed = int(torch.randint(0, 2**62, (1,)).item())
            self.generators = image_generators(seed, keys)
        else:
            self.generators = image_generators(seed, keys)
            self._reset_image(self.generators)
        self.seed = seed
        self.image_keys = keys
        self._optimizer: Optional[torch.optim.Optimizer] = None
        self._optimizer_source: Any = None
        self._call_counts: Optional[Dict[int, int]] = None
        self._count_shapes: Any = None
        self._inplace: Dict[int, Optional[bool]] = {}
        self._steps_done = 0
        # the model's input shapes that ran: a failure on another is explained by the input (_explain_input_error)
        self._shapes_taken: Set[Tuple[int, ...]] = set()
        # feed the model model_input_layout(image), until the model, the loss or a backward function refuses it
        self._channels_last = bool(channels_last)
        #: the factor on the gradient through the model's residual branches while it optimizes (1: the true one)
        self.residual_gradient = resolve_residual_gradient(residual_gradient, self.input_param)

    def _reset_image(self, generators: List[torch.Generator]) -> None:
        reset = getattr(self.input_param, "reset_parameters", None)
        if reset is None:
            raise TypeError(
                f"seed= needs an image parameterization with reset_parameters(generators) to draw its initial "
                f"state from; {type(self.input_param).__name__} has none (build it yourself under "
                "torch.manual_seed and pass seed=None)"
            )
        reset(generators)

    def parameters(self) -> List[nn.Parameter]:
        """The trainable tensors: those of the image parameterization."""
        return [p for p in self.input_param.parameters() if p.requires_grad]

    @property
    def targets(self) -> List[Any]:
        """The loss's targets (captum's attribute; read-only: the loss decides them)."""
        return list(self.loss_function.targets)

    def cleanup(self) -> None:
        """captum's clean-up call, kept for code written against it: it removes nothing, because hooks exist
        only inside :meth:`optimize` and :meth:`loss` and are removed on every exit path. Safe to call any
        number of times.

        Example:
            >>> net = nn.Sequential(nn.Conv2d(3, 2, 1))
            >>> obj = opt.InputOptimization(net, opt.loss.ChannelActivation(net[0], 1), opt.images.PixelImage(4))
            >>> obj.cleanup(); obj.cleanup()
            >>> len(net[0]._forward_hooks)
            0
        """
        return None

    def _image(self) -> torch.Tensor:
        image = self.input_param()
        if type(image) is not torch.Tensor:
            # ImageTensor's per-op Python dispatch is pure overhead inside transforms and the model.
            image = image.as_subclass(torch.Tensor)
        return image

    def _names(self) -> Dict[str, nn.Module]:
        names: Dict[str, nn.Module] = {"input_param": self.input_param, "transform": self.transform}
        for prefix, root in (("input_param.", self.input_param), ("transform.", self.transform)):
            names.update({prefix + n: m for n, m in root.named_modules() if n})
        # the model's own names win, as in the recorder (torchvision's detection models have a `transform`)
        for name in named_module_map(self.model):  # plain names, a compiled model's too
            names.pop(name, None)
        return names

    def _check_targets(self) -> None:
        targets = self.loss_function.targets
        if not targets:
            raise ValueError(f"the loss {self.loss_function!r} has no targets")
        in_transform = {id(m) for m in self.transform.modules()} - {id(m) for m in self.model.modules()}
        names = self._names()
        for target in targets:
            module = target if isinstance(target, nn.Module) else names.get(target) if isinstance(target, str) else None
            if module is not None and id(module) in in_transform:
                raise ValueError(
                    f"the loss targets a module of the transform ({type(module).__name__}): transforms are applied "
                    "per image stream (forward_streams, or image by image), so their modules' outputs are not "
                    "recorded; target a layer of the model or the image parameterization"
                )
        known = {id(m) for root in (self.model, self.input_param, self.transform) for m in root.modules()}
        for target in targets:
            if isinstance(target, nn.Module) and id(target) not in known:
                raise ValueError(
                    f"the loss targets a {type(target).__name__} module that is not part of the model, the "
                    "transform or the image parameterization"
                )

    def _recorder(self) -> ActivationRecorder:
        self._check_targets()
        in_model = {id(m) for m in self.model.modules()}
        names = self._names()
        # a target in the image or the transforms fires before the model runs: stopping there would lose the
        # image of the step, so only targets inside the model end a pass early
        early = all(
            id(t) in in_model if isinstance(t, nn.Module) else t not in names for t in self.loss_function.targets
        )
        rec = ActivationRecorder(self.model, self.loss_function.targets, call=self.call, names=names,
                                 stop_early=early, inplace_safe=self.inplace_safe)
        # what earlier optimize() calls learned: call counts (to stop early) and which outputs need a copy
        rec.call_counts, rec.count_shapes = self._call_counts, self._count_shapes
        for slot in rec._slots:
            slot.clone = self._inplace.get(id(slot.module))
        return rec

    def _remember(self, rec: ActivationRecorder) -> None:
        self._call_counts, self._count_shapes = rec.call_counts, rec.count_shapes
        self._inplace = {id(s.module): s.clone for s in rec._slots}

    def _step_loss(
        self,
        rec: ActivationRecorder,
        summarize: Callable[[torch.Tensor], torch.Tensor],
        before_backward: Optional[Callable[[torch.Tensor, torch.Tensor], None]] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """A step's forward pass: its summarized loss and the image it read. With ``before_backward``, also its
        backward pass, after ``before_backward(loss, image)``. Run twice where the layout is refused."""
        images: List[torch.Tensor] = []
        channels_last: List[bool] = []

        def forward() -> None:
            image = self._image()
            images.append(image)
            x = apply_transform(self.transform, image, self.generators)
            if self._model_dtype is not None and x.is_floating_point() and x.dtype != self._model_dtype:
                x = x.to(self._model_dtype)
            fed = model_input_layout(x) if self._channels_last else x
            channels_last.append(fed is not x)
            try:
                self.model(fed)
            except StopForward:  # the recorder ending the pass early, every step
                self._shapes_taken.add(tuple(x.shape))
                raise
            except Exception as err:
                if fed is not x and isinstance(err, RuntimeError) and _LAYOUT_ERROR in str(err):
                    raise _ChannelsLastRefused from err
                if tuple(x.shape) not in self._shapes_taken:  # the model's own failure on an input shape new to it
                    self._explain_input_error(err, image, x)
                raise
            self._shapes_taken.add(tuple(x.shape))

        def attempt() -> torch.Tensor:
            value = summarize(self.loss_function(rec.run_call(forward)))
            if before_backward is not None:
                before_backward(value, images[-1])
                value.backward()
            return value

        # until a pass has run, the layout may be refused: the pass then runs again with the same transforms
        states = [g.get_state() for g in self.generators] if self._channels_last and not self._shapes_taken else None
        try:
            return attempt(), images[-1]
        except _ChannelsLastRefused:
            pass
        except RuntimeError as err:
            # a loss, or a backward function, that flattens a channels-last map with .view
            if not (channels_last and channels_last[-1] and _LAYOUT_ERROR in str(err)):
                raise
        # a model, loss or backward function that flattens a feature map with .view (x.view(n, -1)) needs the
        # layout the transforms return: the step runs again with it, as does every later one
        self._channels_last = False
        for generator, state in zip(self.generators, states or []):
            generator.set_state(state)
        for p in self.parameters():
            p.grad = None  # whatever the refused backward pass reached
        return attempt(), images[-1]

    def _explain_input_error(self, err: Exception, image: torch.Tensor, fed: torch.Tensor) -> None:
        """Raise the renders' ``ValueError`` (:func:`optim.render.input_error`: the image's size and channel count
        against the model's native size and first layer, and the size the transforms fed it) for a model that
        refused an input shape it had not taken before, where they explain it; return otherwise."""
        from ..models.preprocess import input_config
        from ..render import input_error  # optim.render builds on this module

        if not isinstance(err, (RuntimeError, ValueError, AssertionError, TypeError)) or image.dim() != 4:
            return
        fed_hw = tuple(fed.shape[-2:]) if fed.dim() == 4 else None
        explained = input_error(err, self.model, input_config(self.model), tuple(image.shape[-2:]), fed_hw,
                                int(image.shape[1]), parameterization=True)
        if explained is not None:
            raise explained from err

    def loss(self, loss_summarize_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
        """Evaluate the summarized loss of the current image once (model untouched afterwards).

        The transforms draw from the images' streams, as a step would.

        Args:
            loss_summarize_fn: reduces the loss tensor to a scalar (default ``-mean``).

        Returns:
            The scalar loss (with a graph to the parameterization).
        """
        summarize = loss_summarize_fn or default_loss_summarize
        with autograd_context(), model_frozen(self.model), self._recorder() as rec:
            value, _ = self._step_loss(rec, summarize)
            self._remember(rec)
            return value

    def _make_optimizer(self, optimizer: OptimizerArg, lr: float) -> torch.optim.Optimizer:
        if isinstance(optimizer, torch.optim.Optimizer):
            return make_optimizer(optimizer, self.parameters(), lr)  # checks that it holds the image's parameters
        # Continuing a render with the same optimizer argument keeps its state (Adam's moments); the learning rate
        # of Adam or an optimizer class follows the call, a factory's stays its own.
        if self._optimizer is None or optimizer is not self._optimizer_source:
            self._optimizer = make_optimizer(optimizer, self.parameters(), lr,
                                             from_photo=starts_from_photo(self.input_param))
            self._optimizer_source = optimizer
        lr = check_lr(lr)
        if schedules_lr(optimizer):
            for group in self._optimizer.param_groups:
                group["lr"] = lr
        return self._optimizer

    def optimize(
        self,
        stop_criteria: Optional[Callable[..., bool]] = None,
        optimizer: OptimizerArg = None,
        loss_summarize_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        lr: float = DEFAULT_LR,
        *,
        callback: Optional[StepCallback] = None,
        step_offset: int = 0,
        lr_decay_steps: Optional[float] = DEFAULT_LR_DECAY_STEPS,
    ) -> torch.Tensor:
        """Optimize the parameterization; call again to continue (the optimizer's state carries over).

        Args:
            stop_criteria: ``(step, obj, history, optimizer) -> bool``; default ``n_steps(DEFAULT_STEPS)``; an
                int means that many steps.
            optimizer: ``None`` for AdamW with ``DEFAULT_WEIGHT_DECAY`` (``PHOTO_START_OPTIMIZER``, plain Adam, for
                an image built from a photo: :func:`~optim.optimization.defaults.starts_from_photo`), an optimizer
                class (built with ``lr``), a function ``params -> optimizer``, or an instance over
                :meth:`parameters` (see :func:`~optim.optimization.make_optimizer`).
            loss_summarize_fn: reduces the loss tensor to the scalar to minimize (default ``-mean``).
            lr: the learning rate of a default or class-given optimizer.
            callback: ``callback(step, loss, images)`` after every step (see
                :mod:`optim.optimization.progress`).
            step_offset: added to the step number the callback sees (a render in several calls or batches).
            lr_decay_steps: the learning rate of step ``t`` (counted over every call) is
                ``lr / sqrt(1 + t / lr_decay_steps)`` (:func:`~optim.optimization.defaults.scheduled_lr`);
                ``None`` keeps it constant. This applies to the default AdamW (``optimizer=None``) and an optimizer
                class; an instance or a factory keeps its own rate.

        Returns:
            The summarized loss of every step, a 1-D CPU tensor.

        Raises:
            FloatingPointError: when the loss becomes NaN or infinite (names the step and the likely causes).
            ValueError: the model refused an input shape it had not run on: the message names the image's size
                and channel count, the size the transforms fed it and the model's native size, where they
                explain the model's own error (:func:`optim.render.input_error`; raised from it).
        """
        stop = _coerce(stop_criteria)
        summarize = loss_summarize_fn or default_loss_summarize
        check_callback(callback)
        lr_decay_steps = check_lr_decay_steps(lr_decay_steps)
        opt = self._make_optimizer(optimizer, lr)
        param_storage = {p.untyped_storage().data_ptr() for g in opt.param_groups for p in g["params"]}
        schedule = check_lr(lr) if schedules_lr(optimizer) else None
        # a finiteness check reads the loss, which syncs a GPU: every step on CPU, every 16 steps elsewhere
        check_every = 1 if model_device_dtype(self.model)[0].type == "cpu" else 16
        history: List[torch.Tensor] = []
        step = 0

        def check_finite(loss_value: torch.Tensor, image: torch.Tensor) -> None:
            if step % check_every == 0 and not torch.isfinite(loss_value).all():
                # off the CPU the steps since the last check were not read: name the first bad one
                if history:
                    self._first_non_finite(torch.stack(history))
                self._non_finite(step, loss_value, image)

        try:
            with autograd_context(), model_frozen(self.model), branch_gradient(self.model, self.residual_gradient), \
                    self._recorder() as rec:
                try:
                    while stop(step, self, history, opt):
                        opt.zero_grad(set_to_none=True)
                        loss_value, image = self._step_loss(rec, summarize, check_finite)
                        # the image this step read: copied only where opt.step() would move it in place (a
                        # parameterization that returns its own parameter, PixelImage)
                        shown = image.detach()
                        if callback is not None and shown.untyped_storage().data_ptr() in param_storage:
                            shown = shown.clone()
                        if schedule is not None:
                            for group in opt.param_groups:
                                group["lr"] = scheduled_lr(schedule, self._steps_done + step, lr_decay_steps)
                        opt.step()
                        detached = loss_value.detach()
                        history.append(detached)
                        step += 1  # counted before the callback: a callback that interrupts still ran this step
                        if callback is not None:
                            callback(step_offset + step - 1, detached, shown)
                finally:
                    self._remember(rec)
        finally:
            self._steps_done += step  # also when interrupted: a resumed render continues the schedule
            close = getattr(stop, "close", None)
            if callable(close):
                close()
        if not history:
            return torch.empty(0)
        out = torch.stack(history).cpu()
        self._first_non_finite(out)
        return out

    def _first_non_finite(self, history: torch.Tensor) -> None:
        """Raise for the first step of ``history`` (the stacked losses) whose loss is not finite, if any."""
        bad = (~torch.isfinite(history)).reshape(history.shape[0], -1).any(dim=1)
        if bool(bad.any()):
            step = int(bad.nonzero()[0, 0])
            self._non_finite(step, history[step], None)

    def _non_finite(self, step: int, loss: torch.Tensor, image: Optional[torch.Tensor]) -> None:
        if image is None:  # a step found later (off the CPU the loss is read every 16 steps): its image is gone
            where = ("its image is no longer known; look for a NaN start image, a learning rate too large, or a model "
                     "or objective that outputs NaN/inf")
        elif not bool(torch.isfinite(image).all()):
            where = "the image itself is not finite (a NaN start image, or a learning rate too large)"
        else:
            where = ("the image is finite, so the model or the objective produced it (a model that outputs NaN/inf, "
                     "a division by zero in the loss)")
        raise FloatingPointError(f"the loss became {float(loss.detach().reshape(-1)[0])} at step {step}: {where}")
