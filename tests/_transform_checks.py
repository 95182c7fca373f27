"""Checks shared by the transform test files: scripted/eager parity and gradcheck under a fixed seed."""
import torch

__all__ = ["scripted_equal", "seeded_gradcheck"]


def scripted_equal(module: torch.nn.Module, x: torch.Tensor, seed: int = 3) -> torch.Tensor:
    """Run ``module`` eagerly and scripted under the same seed, assert equal outputs, return the eager one."""
    scripted = torch.jit.script(module)
    torch.manual_seed(seed)
    eager_out = module(x)
    torch.manual_seed(seed)
    scripted_out = scripted(x)
    torch.testing.assert_close(scripted_out, eager_out, rtol=0, atol=0)
    return eager_out


def seeded_gradcheck(fn, x: torch.Tensor, seed: int = 5) -> None:
    """gradcheck of a (possibly random) transform: reseeding makes every evaluation use the same draw."""

    def seeded(inp: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(seed)
        return fn(inp)

    assert torch.autograd.gradcheck(seeded, (x.double().requires_grad_(),), eps=1e-6, atol=1e-5)
