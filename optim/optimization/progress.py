"""The one progress bar of optim's renders, and the per-step callbacks every entry point accepts.

A callback is any function ``callback(step, loss, images)`` called after every optimization step, with the
step number (counted over the whole render, batches included), the summarized loss (a detached 0-d tensor)
and the current images (a detached ``[B, C, H, W]`` tensor, before the transforms).
:class:`TensorBoardCallback` is the documented example: it logs to TensorBoard as captum.optim users expect.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional

import torch

__all__ = ["ProgressBar", "StepCallback", "TensorBoardCallback"]

StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


def check_callback(callback: Optional[StepCallback]) -> Optional[StepCallback]:
    """``callback`` if it is ``None`` or callable, else a ``TypeError`` (the one check of ``callback=``)."""
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be a function (step, loss, images), got {type(callback).__name__}")
    return callback


class ProgressBar:
    """A tqdm bar over ``total`` steps, opened on the first update, that shows the current objective.

    One bar can span several optimizations (``render_layer`` shows one bar over all its batches).

    Args:
        total: the number of steps of the whole render.
        enabled: ``False`` for no output at all.

    Example:
        >>> bar = ProgressBar(4, enabled=False)
        >>> bar.update(2, [torch.tensor(-1.5)]); bar.close()
    """

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total = total
        self.enabled = enabled
        self._bar: Any = None

    def update(self, done: int, history: Optional[List[torch.Tensor]] = None) -> None:
        """Move the bar to ``done`` steps; ``history[-1]`` (a summarized loss) is shown as the objective."""
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, unit="step")
        if done > self._bar.n:
            self._bar.update(done - self._bar.n)
        # Reading the loss syncs a GPU; a few times per second is plenty for a progress bar.
        if history and (done % 8 == 0 or done >= self.total):
            self._bar.set_postfix(objective=f"{-float(history[-1]):.4g}", refresh=False)

    def close(self) -> None:
        """Close the bar (a later update opens a new one)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class TensorBoardCallback:
    """Log a render to TensorBoard: the loss every step and the images every ``image_every`` steps.

    Pass it as ``callback=`` to ``render_vis``, ``render_layer``, ``InputOptimization.optimize``, the atlas or
    the recipes; open the logs with ``tensorboard --logdir DIR``. Needs the ``tensorboard`` package.

    Args:
        log_dir: the folder to write event files to, or a ``torch.utils.tensorboard.SummaryWriter``.
        image_every: log the images every this many steps (0: never).
        tag: the prefix of the scalar and image tags.

    Example:
        >>> import tempfile
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     log = TensorBoardCallback(d, image_every=2)
        ...     _ = opt.render_vis(net, "0:1", image=opt.render.default_image(16), thresholds=(4,),
        ...                        progress=False, callback=log)
        ...     log.close()
        ...     log.steps_logged
        4
    """

    def __init__(self, log_dir: Any, image_every: int = 16, tag: str = "render") -> None:
        if isinstance(image_every, bool) or not isinstance(image_every, int) or image_every < 0:
            raise ValueError(f"image_every must be an int >= 0, got {image_every!r}")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # the tensorboard package is missing
            raise ImportError(
                'TensorBoardCallback needs the optional dependency "tensorboard"; '
                'install it with: pip install "optim-vis[tensorboard]"'
            ) from err
        self.writer = log_dir if isinstance(log_dir, SummaryWriter) else SummaryWriter(str(log_dir))
        self.image_every = image_every
        self.tag = tag
        self.steps_logged = 0

    def __call__(self, step: int, loss: torch.Tensor, images: torch.Tensor) -> None:
        self.writer.add_scalar(f"{self.tag}/loss", float(loss), step)
        if self.image_every and step % self.image_every == 0:
            self.writer.add_images(f"{self.tag}/images", images.float().clamp(0, 1)[:, :3].cpu(), step)
        self.steps_logged += 1

    def close(self) -> None:
        """Flush and close the writer."""
        self.writer.close()
