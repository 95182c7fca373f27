"""Running a child process that stops when its parent is told to stop.

``optim app`` runs the app's launcher, which runs the Streamlit server: each level forwards SIGTERM, SIGINT
and SIGHUP to its child and waits for it (killing it if it does not stop in time), and on Linux a child also
gets SIGTERM if its parent dies without forwarding (``kill -9``), so no server is left listening.

>>> import sys
>>> run_forwarding_signals([sys.executable, "-c", "raise SystemExit(3)"])
3
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, List, Optional, Sequence

__all__ = ["run_forwarding_signals", "FORWARDED_SIGNALS"]

#: The signals a parent passes on to its child.
FORWARDED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name)
)


def _die_with_parent() -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` that asks Linux to send the child SIGTERM when its parent dies, or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):  # pragma: no cover - an unusual libc
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return preexec


def run_forwarding_signals(command: Sequence[str], stop_timeout: float = 20.0, **popen_kwargs: Any) -> int:
    """Run ``command`` to completion, passing SIGTERM / SIGINT / SIGHUP received meanwhile on to it.

    Args:
        command: the argv of the child.
        stop_timeout: seconds the child gets to stop after the first forwarded signal before it is killed.
        **popen_kwargs: passed to ``subprocess.Popen``.

    Returns:
        The child's exit code; ``128 + n`` when it was ended by signal ``n``.

    Raises:
        OSError: the command cannot be started.
    """
    if not sys.platform.startswith("win") and "preexec_fn" not in popen_kwargs:
        popen_kwargs["preexec_fn"] = _die_with_parent()
    proc = subprocess.Popen(list(command), **popen_kwargs)
    received: List[float] = []

    def forward(signum: int, frame: Any) -> None:
        if not received:
            received.append(time.monotonic())
        if proc.poll() is None:
            try:
                proc.send_signal(signum)
            except ProcessLookupError:  # pragma: no cover - it just exited
                pass

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in FORWARDED_SIGNALS:
            previous[signum] = signal.signal(signum, forward)
    try:
        while True:
            try:
                code = proc.wait(timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                if received and time.monotonic() - received[0] > stop_timeout:
                    proc.kill()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if proc.poll() is None:  # an exception in this process: do not leave the child behind
            proc.terminate()
            try:
                proc.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return code if code >= 0 else 128 - code

