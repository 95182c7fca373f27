"""Circuits: expanded weights against composed kernels, heatmap colours, connection rankings."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.signal import convolve2d

import optim as opt
from optim.circuits import Connection, extract_expanded_weights, top_connections, weights_to_heatmap_2d


class LinearStack(nn.Module):
    """conv_a -> conv_b -> conv_c -> flatten -> fc, with no nonlinearity anywhere."""

    def __init__(self, size: int = 9) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(2, 3, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 4, 3, padding=1)
        self.conv_c = nn.Conv2d(4, 5, 3, padding=1)
        self.fc = nn.Linear(4 * size * size, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.conv_b(self.conv_a(x))
        return self.conv_c(b).sum() + self.fc(torch.flatten(b, 1)).sum()


def _composed_kernel(outer: torch.Tensor, inner: torch.Tensor) -> np.ndarray:
    """Kernel of conv(outer) after conv(inner), both cross-correlations: a full 2-D convolution of the kernels."""
    wo, wi = outer.detach().double().numpy(), inner.detach().double().numpy()
    k = wo.shape[2] + wi.shape[2] - 1
    out = np.zeros((wo.shape[0], wi.shape[1], k, k))
    for o in range(wo.shape[0]):
        for i in range(wi.shape[1]):
            out[o, i] = sum(convolve2d(wo[o, m], wi[m, i], mode="full") for m in range(wo.shape[1]))
    return out


@pytest.fixture
def stack() -> LinearStack:
    torch.manual_seed(1)
    return LinearStack().double()


def test_two_stacked_convs_give_the_composed_kernel(stack: LinearStack) -> None:
    x = torch.zeros(1, 2, 9, 9, dtype=torch.float64)
    full = extract_expanded_weights(stack, "conv_a", stack.conv_c, model_input=x)
    assert full.shape == (5, 3, 9, 9)
    expected = _composed_kernel(stack.conv_c.weight, stack.conv_b.weight)
    np.testing.assert_allclose(full[:, :, 2:7, 2:7].numpy(), expected, rtol=1e-10, atol=1e-12)
    # Nothing outside the 5x5 footprint of the centre neuron.
    outside = full.clone()
    outside[:, :, 2:7, 2:7] = 0
    assert outside.abs().max() == 0
    cropped = extract_expanded_weights(stack, stack.conv_a, stack.conv_c, 5, model_input=x)
    np.testing.assert_allclose(cropped.numpy(), expected, rtol=1e-10, atol=1e-12)
    # Adjacent layers: the expanded weight is the kernel itself.
    direct = extract_expanded_weights(stack, stack.conv_b, stack.conv_c, (3, 3), model_input=x)
    torch.testing.assert_close(direct, stack.conv_c.weight.detach())


def test_2d_target_gives_the_reshaped_linear_weight(stack: LinearStack) -> None:
    x = torch.randn(3, 2, 9, 9, dtype=torch.float64)  # linear path: the input (and batch) do not matter
    weights = extract_expanded_weights(stack, stack.conv_b, stack.fc, model_input=x)
    torch.testing.assert_close(weights, stack.fc.weight.detach().view(6, 4, 9, 9))


def test_model_state_is_restored_whether_or_not_params_require_grad(stack: LinearStack) -> None:
    x = torch.zeros(1, 2, 9, 9, dtype=torch.float64)
    stack.train()
    stack.conv_b.weight.requires_grad_(False)
    flags = [p.requires_grad for p in stack.parameters()]
    a = extract_expanded_weights(stack, stack.conv_a, stack.conv_c, 5, model_input=x)
    for p in stack.parameters():
        p.requires_grad_(False)
    b = extract_expanded_weights(stack, stack.conv_a, stack.conv_c, 5, model_input=x)
    torch.testing.assert_close(a, b)
    assert not a.requires_grad and all(p.grad is None for p in stack.parameters())
    assert all(m.training for m in stack.modules())
    assert not any(p.requires_grad for p in stack.parameters())
    for p, flag in zip(stack.parameters(), flags):
        p.requires_grad_(flag)
    # Errors leave the model as it was, hooks included.
    with pytest.raises(ValueError, match="conv_a"):
        extract_expanded_weights(stack, stack.conv_c, stack.conv_a, model_input=x)
    with pytest.raises(ValueError, match="closest names: conv_a"):
        extract_expanded_weights(stack, "conv_aa", stack.conv_c, model_input=x)
    assert [p.requires_grad for p in stack.parameters()] == flags
    assert all(m.training for m in stack.modules())
    assert all(not m._forward_hooks for m in stack.modules())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_runs_on_the_model_device(stack: LinearStack) -> None:
    gpu = LinearStack().cuda()
    gpu.load_state_dict(stack.float().state_dict())
    weights = extract_expanded_weights(gpu, gpu.conv_a, gpu.conv_c, 5, model_input=torch.zeros(1, 2, 9, 9).cuda())
    assert weights.device.type == "cuda"
    expected = _composed_kernel(stack.conv_c.weight, stack.conv_b.weight)
    np.testing.assert_allclose(weights.cpu().numpy(), expected, rtol=1e-4, atol=1e-5)


def test_linear_googlenet_mixed4a_to_mixed4b_shape() -> None:
    models = pytest.importorskip("optim.models")
    torch.manual_seed(0)
    linear = models.googlenet(pretrained=False, use_linear_modules_only=True)
    # A 5x5 mixed4a map (80px input) covers mixed4b's 5x5 footprint and keeps the test fast.
    weights = extract_expanded_weights(
        linear, linear.mixed4a_relu, linear.mixed4b_relu, 5, model_input=torch.zeros(1, 3, 80, 80)
    )
    assert weights.shape == (512, 508, 5, 5)
    assert weights.abs().sum() > 0 and torch.isfinite(weights).all()
    assert all(not m._forward_hooks for m in linear.modules())
    # the linear path is affine: a change of the 5x5 mixed4a map moves mixed4b's centre neurons by exactly
    # the expanded weights applied to that change
    acts = models.collect_activations(linear.eval(), linear.mixed4a_relu, torch.zeros(1, 3, 80, 80))
    mixed4a = acts[linear.mixed4a_relu]
    delta = torch.randn_like(mixed4a)
    with torch.no_grad():
        moved = linear.mixed4b(mixed4a + delta) - linear.mixed4b(mixed4a)
    torch.testing.assert_close(moved[0, :, 2, 2], torch.einsum("oihw,ihw->o", weights, delta[0]), rtol=1e-4, atol=1e-4)


def _conv_relu_conv(inplace: bool) -> nn.Sequential:
    """A torchvision-style pair of layers: conv -> ReLU(inplace) -> conv."""
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=inplace), nn.Conv2d(4, 5, 3, padding=1))


def test_expanded_weights_from_a_conv_that_an_inplace_relu_overwrites() -> None:
    # The in-place ReLU overwrites conv 0's output; the expanded weights are still taken with respect to the
    # output as the conv produced it (masked by the ReLU's derivative), as on a copy without in-place ops.
    net, plain = _conv_relu_conv(True), _conv_relu_conv(False)
    x = torch.randn(1, 3, 9, 9, generator=torch.Generator().manual_seed(5))
    got = extract_expanded_weights(net, "0", "2", model_input=x)
    torch.testing.assert_close(got, extract_expanded_weights(plain, "0", "2", model_input=x), rtol=0, atol=0)
    # by hand, without hooks: d conv2(relu(a))[:, c, 4, 4] / d a, with a = conv1(x)
    a = plain[0](x).detach().requires_grad_(True)
    out = plain[2](torch.relu(a))
    rows = [torch.autograd.grad(out[0, c, 4, 4], a, retain_graph=True)[0][0] for c in range(5)]
    torch.testing.assert_close(got, torch.stack(rows), rtol=1e-6, atol=1e-7)
    # the old reading (the gradient with respect to the ReLU's output) misses the mask
    masked_out = (a.detach()[0] <= 0)[:, 3:6, 3:6].sum()
    assert masked_out > 0 and got[:, :, 3:6, 3:6].eq(0).sum() >= 5 * masked_out
    assert all(not m._forward_hooks for m in net.modules()) and net[1].inplace


def test_crop_to_footprint_centres_on_the_weights_and_pads_at_the_edge() -> None:
    from optim.circuits import crop_to_footprint

    w = torch.zeros(2, 3, 8, 8)
    w[0, 1, 0:3, 5:8] = torch.arange(1.0, 10.0).view(3, 3)  # a 3 x 3 footprint in the top-right corner
    assert torch.equal(crop_to_footprint(w, 3)[0, 1], w[0, 1, 0:3, 5:8])
    wide = crop_to_footprint(w, (5, 5))  # one row and one column beyond the map: zeros
    assert wide.shape == (2, 3, 5, 5) and torch.equal(wide[0, 1, 1:4, 1:4], w[0, 1, 0:3, 5:8])
    assert wide[0, 1, 0].abs().sum() == 0 and wide[0, 1, :, -1].abs().sum() == 0
    assert torch.equal(crop_to_footprint(torch.zeros(1, 1, 6, 6), 2), torch.zeros(1, 1, 2, 2))  # no footprint
    # a global op in between (squeeze-excitation) leaves a tiny weight everywhere: not part of the footprint
    spread = w + 1e-5
    assert torch.equal(crop_to_footprint(spread, 3)[0, 1], spread[0, 1, 0:3, 5:8])
    with pytest.raises(ValueError, match="crop_shape must be non-negative"):
        crop_to_footprint(w, -1)
    with pytest.raises(TypeError, match="crop_shape must be an int or a pair of ints, got a bool"):
        crop_to_footprint(w, True)
    assert crop_to_footprint(w, [3]).shape == (2, 3, 3, 3) and crop_to_footprint(w[0, 1], 3).shape == (3, 3)


def test_heatmap_colours() -> None:
    w = torch.tensor([[-1.0, -0.5, 0.0], [0.25, 1.0, 3.0]])
    img = weights_to_heatmap_2d(w)
    assert img.shape == (3, 2, 3)

    def rgb(code: str) -> torch.Tensor:
        return torch.tensor([int(code[i : i + 2], 16) / 255 for i in (0, 2, 4)])

    torch.testing.assert_close(img[:, 0, 0], rgb("0571b0"))
    torch.testing.assert_close(img[:, 0, 1], rgb("92c5de"))
    torch.testing.assert_close(img[:, 0, 2], rgb("f7f7f7"))
    torch.testing.assert_close(img[:, 1, 0], (rgb("f7f7f7") + rgb("f4a582")) / 2)
    torch.testing.assert_close(img[:, 1, 1], rgb("ca0020"))
    torch.testing.assert_close(img[:, 1, 2], rgb("ca0020"))  # clamped
    two = weights_to_heatmap_2d(torch.tensor([[0.0]]), colors=["#000000", "ffffff"])
    torch.testing.assert_close(two.flatten(), torch.full((3,), 0.5))
    assert opt.weights_to_heatmap_2d is weights_to_heatmap_2d
    with pytest.raises(ValueError, match="2-D"):
        weights_to_heatmap_2d(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="zz0000"):
        weights_to_heatmap_2d(torch.zeros(2, 2), colors=["zz0000", "ffffff"])


def test_top_connections_ranking() -> None:
    w = torch.zeros(2, 3, 2, 2)
    w[0, 1] = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # norm 5, sum 7
    w[1, 2] = -2.0  # norm 4, sum -8
    w[1, 0, 0, 0] = 1.0
    assert top_connections(w, k=2) == [Connection(0, 1, 5.0), Connection(1, 2, 4.0)]
    assert top_connections(w, k=1, score="sum", largest=False) == [Connection(1, 2, -8.0)]
    assert top_connections(w, k=1, score="max_abs") == [Connection(0, 1, 4.0)]
    assert top_connections(w, k=5, target_channel=1)[:2] == [Connection(1, 2, 4.0), Connection(1, 0, 1.0)]
    assert top_connections(w, k=1, source_channel=0) == [Connection(1, 0, 1.0)]
    assert top_connections(w[:, :, 0, 0], k=1) == [Connection(0, 1, 3.0)]
    with pytest.raises(ValueError, match="score"):
        top_connections(w, score="mean")
    with pytest.raises(ValueError, match="target_channel"):
        top_connections(w, target_channel=2)
