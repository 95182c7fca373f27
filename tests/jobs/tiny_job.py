"""A render job on a tiny deterministic model, for the torchrun tests: ``python tiny_job.py OUT [STEPS]``."""
import os
import sys
from pathlib import Path

import torch
import torch.nn as nn

from optim.jobs import render_model


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 5, 3), nn.ReLU()).eval()


class _NaN(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float("nan")


def nan_model() -> nn.Module:
    """A model whose output is NaN (the CLI must say so, not write a black PNG)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), _NaN()).eval()


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    out.mkdir(parents=True, exist_ok=True)
    (out / f"pid.{os.environ.get('RANK', '0')}").write_text(str(os.getpid()))
    first_start = os.environ.get("TORCHELASTIC_RESTART_COUNT") == "0"
    if first_start and os.environ.get("TINY_JOB_DIE_FIRST") == os.environ.get("RANK"):
        import time

        time.sleep(3)  # the other ranks are inside the job by now
        os._exit(1)  # dies before the job, as a worker killed while loading its model
    render_model(tiny_model(), ["0", "2"], out, steps=steps, size=16, batch_size=2, seed=0, model_name="tiny")
