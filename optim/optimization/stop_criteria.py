"""Stop criteria: callables ``(step, obj, history, optimizer) -> bool`` that say whether to go on.

``history`` holds the summarized loss of each step so far (lower is better). A criterion may also have a
``close()`` method, which the optimization calls on every exit path (it closes progress bars).
"""
from __future__ import annotations

import math
from typing import Any, List, Optional

import torch

from .progress import ProgressBar

__all__ = ["StopCriteria", "n_steps", "plateau", "target_value"]


class StopCriteria:
    """Base class: run at most ``max_steps`` steps, with an optional tqdm progress bar.

    Args:
        max_steps: the step budget.
        show_progress: show a tqdm bar with the current objective.
    """

    def __init__(self, max_steps: int, show_progress: bool = True) -> None:
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 0:
            raise ValueError(f"the number of steps (max_steps) must be an int >= 0, got {max_steps!r}")
        self.max_steps = max_steps
        self.show_progress = show_progress
        self._bar = ProgressBar(max_steps, enabled=show_progress)

    def _progress(self, step: int, history: List[torch.Tensor]) -> None:
        if step > 0:
            self._bar.update(step, history)

    def should_stop(self, step: int, history: List[torch.Tensor]) -> bool:
        """Extra stopping rule of subclasses; the step budget is checked by ``__call__``."""
        return False

    def __call__(self, step: int, obj: Any, history: List[torch.Tensor], optimizer: Any) -> bool:
        self._progress(step, history)
        go_on = step < self.max_steps and not self.should_stop(step, history)
        if not go_on:
            self.close()
        return go_on

    def close(self) -> None:
        """Close the progress bar (a later optimization opens a new one)."""
        self._bar.close()


class n_steps(StopCriteria):  # noqa: N801  (lower case: it reads as a function, as in Lucid and captum)
    """Run exactly ``n`` steps.

    Args:
        n: the number of steps.
        show_progress: show a tqdm bar with the current objective.

    Example:
        >>> image = opt.images.PixelImage((4, 4))
        >>> obj = opt.InputOptimization(None, opt.loss.DeepDream(image), image, nn.Identity())
        >>> obj.optimize(n_steps(3, show_progress=False)).shape
        torch.Size([3])
    """

    def __init__(self, n: int, show_progress: bool = True) -> None:
        super().__init__(n, show_progress)


class plateau(StopCriteria):  # noqa: N801
    """Stop when the loss has not improved by ``min_delta`` for ``patience`` steps (or after ``max_steps``).

    Args:
        patience: how many steps without improvement are tolerated.
        min_delta: the smallest decrease that counts as an improvement.
        max_steps: the step budget.
        show_progress: show a tqdm bar.
    """

    def __init__(self, patience: int = 32, min_delta: float = 1e-4, max_steps: int = 2048, show_progress: bool = True) -> None:
        super().__init__(max_steps, show_progress)
        if isinstance(patience, bool) or not isinstance(patience, int):
            raise TypeError(f"patience must be an int >= 1, got {patience!r} ({type(patience).__name__})")
        if patience < 1:
            raise ValueError(f"patience must be an int >= 1, got {patience}")
        self.patience = patience
        self.min_delta = _finite(min_delta, "min_delta")
        self._best = math.inf
        self._best_step = 0

    def should_stop(self, step: int, history: List[torch.Tensor]) -> bool:
        if step == 0:
            self._best, self._best_step = math.inf, 0
            return False
        value = float(history[-1])
        if value < self._best - self.min_delta:
            self._best, self._best_step = value, step
        return step - self._best_step >= self.patience


class target_value(StopCriteria):  # noqa: N801
    """Stop once the summarized loss is at or below ``value`` (or after ``max_steps``).

    Args:
        value: the loss to reach (the default summary is ``-mean(objective)``, so an objective of 10 is -10).
        max_steps: the step budget.
        show_progress: show a tqdm bar.
    """

    def __init__(self, value: float, max_steps: int = 2048, show_progress: bool = True) -> None:
        super().__init__(max_steps, show_progress)
        self.value = _finite(value, "value")

    def should_stop(self, step: int, history: List[torch.Tensor]) -> bool:
        return bool(history) and step > 0 and float(history[-1]) <= self.value


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r} ({type(value).__name__})")
    return float(value)


def _coerce(stop_criteria: Optional[Any]) -> Any:
    if stop_criteria is None:
        from .defaults import DEFAULT_STEPS

        return n_steps(DEFAULT_STEPS)
    if isinstance(stop_criteria, int) and not isinstance(stop_criteria, bool):
        return n_steps(stop_criteria)
    if not callable(stop_criteria):
        raise TypeError(
            "stop_criteria must be a callable (step, obj, history, optimizer) -> bool or a number of steps, "
            f"got {type(stop_criteria).__name__}"
        )
    return stop_criteria
