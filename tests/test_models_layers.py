"""Layer utilities of optim.models: redirected ReLUs, layer surgery, relaxed pooling, SAME convolution,
and the model inspection helpers on torchvision networks."""
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import optim as opt

from optim.models import (
    Conv2dSame,
    LayerInfo,
    MaxPool2dRelaxed,
    RedirectedReLU,
    RedirectedReLU6,
    RedirectedRelu6Layer,
    RedirectedReluLayer,
    SkipLayer,
    collect_activations,
    get_model_layers,
    layer_info,
    replace_layers,
    skip_layers,
)


def _grad(fn, x, grad_out):
    x = x.clone().requires_grad_(True)
    fn(x).backward(grad_out)
    return x.grad


# --- RedirectedReLU ------------------------------------------------------------------------------------


def test_redirected_relu_forward_equals_relu():
    x = torch.randn(2, 3, 5, 5)
    assert torch.equal(RedirectedReLU.apply(x), F.relu(x))
    assert torch.equal(RedirectedReluLayer()(x), F.relu(x))


def test_redirected_relu_backward_is_relu_gradient_when_some_unit_is_alive():
    x = torch.randn(2, 3, 4, 4)
    x[:, :, 0, 0] = 1.0  # every example has a live unit with a nonzero gradient
    g = torch.randn(2, 3, 4, 4)
    g[:, :, 0, 0] = 1.0
    assert torch.equal(_grad(RedirectedReLU.apply, x, g), _grad(F.relu, x, g))


def test_redirected_relu_backward_redirects_only_dead_examples():
    x = torch.tensor([[1.0, -1.0, 2.0], [-1.0, -2.0, -3.0]])
    g = torch.tensor([[3.0, 4.0, -5.0], [6.0, -7.0, 8.0]])
    got = _grad(RedirectedReLU.apply, x, g)
    # example 0 has live units: plain ReLU gradient; example 1 is all dead: only the gradient that
    # pushes its inputs up (negative, since optimizers descend) gets through.
    assert torch.equal(got, torch.tensor([[3.0, 0.0, -5.0], [0.0, -7.0, 0.0]]))
    assert torch.equal(_grad(F.relu, x, g)[1], torch.zeros(3))


def test_redirected_relu_lets_a_dead_unit_recover_under_gradient_descent():
    x = torch.full((1, 4), -1.0, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.5)
    for _ in range(4):
        opt.zero_grad()
        (-RedirectedReLU.apply(x).sum()).backward()
        opt.step()
    assert torch.all(x > 0)  # a plain ReLU would give zero gradient and leave x at -1


def test_redirected_relu6_forward_and_backward():
    x = torch.tensor([[-1.0, 3.0, 7.0], [-1.0, 7.0, 8.0]])
    assert torch.equal(RedirectedReLU6.apply(x), F.relu6(x))
    assert torch.equal(RedirectedRelu6Layer()(x), F.relu6(x))
    g = torch.tensor([[1.0, 2.0, 3.0], [-4.0, -5.0, 6.0]])
    got = _grad(RedirectedReLU6.apply, x, g)
    # example 1: -1 pushed up (-4) passes, 7 pushed further up (-5) is blocked, 8 pushed down (6) passes
    assert torch.equal(got, torch.tensor([[0.0, 2.0, 0.0], [-4.0, 0.0, 6.0]]))


def _redirect_per_example_eq_all(normal_grad, redirected_grad):
    """The dead-example test as it was before the amax check (eq(0).all() per example): the reference."""
    if normal_grad.dim() == 0:
        return redirected_grad() if bool(normal_grad == 0) else normal_grad
    dead = normal_grad.reshape(normal_grad.shape[0], -1).eq(0).all(dim=1)
    dead = dead.reshape((-1,) + (1,) * (normal_grad.dim() - 1))
    return torch.where(dead, redirected_grad(), normal_grad)


def _reference_grad(x, g, relu6):
    if relu6:
        normal = torch.ops.aten.hardtanh_backward(g, x, 0.0, 6.0)
        deeper = ((x <= 0) & (g > 0)) | ((x >= 6) & (g < 0))
    else:
        normal = torch.ops.aten.threshold_backward(g, x, 0)
        deeper = (x <= 0) & (g > 0)
    return _redirect_per_example_eq_all(normal, lambda: g.masked_fill(deeper, 0))


@pytest.mark.parametrize("relu6", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_redirected_relu_gradients_bit_identical_to_eq_all_check(relu6, channels_last):
    fn = RedirectedReLU6.apply if relu6 else RedirectedReLU.apply
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 5, 5, generator=gen) * 4
    g = torch.randn(8, 3, 5, 5, generator=gen)
    x[0] = -torch.rand(3, 5, 5, generator=gen) - 0.1  # dead: every input below zero
    x[1] = 6.5 if relu6 else -1.0  # dead: above the cap (ReLU6) / below zero
    x[2] = -1.0
    x[2, :, 0, 0] = 1.0  # alive only where the gradient is zero: dead
    g[2, :, 0, 0] = 0.0
    g[3] = 0.0  # zero upstream gradient: dead, and its redirection is zero as well
    g[4] = -g[4].abs()  # normal gradient <= 0 with zeros: max is 0 but min < 0, not dead
    x[4, 0] = 1.0
    x[4, 1:] = -1.0
    g[5] = -0.0  # signed zeros count as zero
    g[6, 0, 0, 0] = float("nan")  # NaN is not zero: not dead
    g[6, 0, 0, 1] = float("inf")
    x[6] = -1.0
    x[6, 0, 0, 0] = 1.0  # the NaN reaches the normal gradient
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        g = g.contiguous(memory_format=torch.channels_last)
    got = _grad(fn, x, g)
    # exact equality (NaN where the reference has NaN)
    torch.testing.assert_close(got, _reference_grad(x, g, relu6), rtol=0, atol=0, equal_nan=True)
    assert got.isnan().sum() == 1 and bool(got[6, 0, 0, 0].isnan())
    # the cases above exercise both branches: 0-2 redirected (3 and 5 too, with a zero result), 4, 6, 7 not
    plain = torch.ops.aten.hardtanh_backward(g, x, 0.0, 6.0) if relu6 else torch.ops.aten.threshold_backward(g, x, 0)
    changed = [i for i in range(8) if not torch.equal(plain[i].nan_to_num(), got[i].nan_to_num())]
    assert changed == [0, 1, 2]
    for _ in range(20):  # random inputs, some examples dead, some with zero upstream gradient
        x = torch.randn(6, 4, 3, 3, generator=gen) * 3 - 4 * torch.rand(6, 1, 1, 1, generator=gen)
        g = torch.randn(6, 4, 3, 3, generator=gen) * (torch.rand(6, 1, 1, 1, generator=gen) > 0.3)
        assert torch.equal(_grad(fn, x, g), _reference_grad(x, g, relu6))
    for shape in [(), (5,), (3, 0, 2)]:  # a scalar, one value per example, examples without elements
        x = -torch.rand(shape, generator=gen)
        g = torch.randn(shape, generator=gen)
        assert torch.equal(_grad(fn, x, g), _reference_grad(x, g, relu6))
    assert _grad(fn, torch.randn(0, 3), torch.randn(0, 3)).shape == (0, 3)  # an empty batch


# --- layer surgery -------------------------------------------------------------------------------------


class _Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.block = nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), nn.ReLU6())
        self.head = nn.Sequential(nn.Sequential(nn.MaxPool2d(2)))

    def forward(self, x):
        return self.head(self.block(self.relu(self.conv(x))))


def test_replace_layers_transfers_constructor_arguments_recursively():
    model = _Nested()
    replace_layers(model, nn.MaxPool2d, nn.AvgPool2d, transfer_vars=True, count_include_pad=False)
    pool = model.block[0]
    assert type(pool) is nn.AvgPool2d
    assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (3, 2, 1, True)
    assert pool.count_include_pad is False
    assert type(model.head[0][0]) is nn.AvgPool2d and model.head[0][0].kernel_size == 2
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    # parameters untouched
    assert model.conv.weight.shape == (4, 3, 3, 3)


def test_replace_layers_without_transfer_uses_only_kwargs():
    model = _Nested()
    replace_layers(model, (nn.ReLU, nn.ReLU6), RedirectedReluLayer)
    assert isinstance(model.relu, RedirectedReluLayer) and isinstance(model.block[1], RedirectedReluLayer)
    replace_layers(model, nn.MaxPool2d, nn.AvgPool2d, kernel_size=5)
    assert model.block[0].kernel_size == 5 and model.block[0].stride == 5


def test_replace_layers_rejects_non_classes():
    with pytest.raises(TypeError, match="layer2"):
        replace_layers(_Nested(), nn.ReLU, nn.Identity())
    with pytest.raises(TypeError, match="layer1"):
        replace_layers(_Nested(), "ReLU", nn.Identity)


def test_skip_layers_and_skip_layer_ignore_extra_arguments():
    model = _Nested()
    skip_layers(model, [nn.ReLU, nn.ReLU6])
    assert not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in model.modules())
    assert sum(isinstance(m, SkipLayer) for m in model.modules()) == 2
    x = torch.randn(1, 3, 8, 8)
    expected = model.head(model.block[0](model.conv(x)))  # no nonlinearity left
    assert torch.equal(model(x), expected)
    assert SkipLayer(1, a=2)(x, 3, b=4) is x


def test_max_pool_relaxed_forward_is_max_backward_is_avg():
    x = torch.randn(2, 3, 9, 9)
    relaxed = MaxPool2dRelaxed(3, stride=2, padding=1, ceil_mode=True)
    maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
    avgpool = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True)
    assert torch.allclose(relaxed(x), maxpool(x))
    g = torch.randn_like(maxpool(x))
    assert torch.allclose(_grad(relaxed, x, g), _grad(avgpool, x, g), atol=1e-6)


@pytest.mark.parametrize(
    "size,kernel,stride,pads",
    [(224, 7, 2, (2, 3)), (15, 3, 2, (1, 1)), (16, 3, 2, (0, 1)), (14, 5, 1, (2, 2))],
)
def test_conv2d_same_matches_tensorflow_padding(size, kernel, stride, pads):
    conv = Conv2dSame(2, 3, kernel_size=kernel, stride=stride)
    x = torch.randn(1, 2, size, size)
    out = conv(x)
    assert out.shape[-2:] == (-(-size // stride),) * 2  # ceil(size / stride), as TF "SAME"
    lo, hi = pads
    ref = F.conv2d(F.pad(x, [lo, hi, lo, hi]), conv.weight, conv.bias, stride)
    assert torch.allclose(out, ref, atol=1e-5)


# --- inspection helpers on torchvision models ----------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def test_get_model_layers_resnet18(resnet18):
    names = get_model_layers(resnet18)
    assert names[:4] == ["conv1", "bn1", "relu", "maxpool"]
    assert "layer3.1.conv2" in names and "fc" in names and "" not in names
    assert len(names) == len(list(resnet18.modules())) - 1


def test_layer_info_resnet18_shapes_and_state_restored(resnet18):
    resnet18.train()
    resnet18.fc.weight.requires_grad_(False)
    try:
        rows = {r.name: r for r in layer_info(resnet18, (1, 3, 64, 64))}
        assert all(isinstance(r, LayerInfo) for r in rows.values())
        assert rows["conv1"] == LayerInfo("conv1", "Conv2d", (1, 64, 32, 32), 64)
        assert rows["layer4"].shape == (1, 512, 2, 2) and rows["layer4.1.conv2"].channels == 512
        assert rows["fc"] == LayerInfo("fc", "Linear", (1, 1000), 1000)
        assert all(m.training for m in resnet18.modules())
        assert resnet18.fc.weight.requires_grad is False and resnet18.conv1.weight.requires_grad is True
        assert all(not m._forward_hooks for m in resnet18.modules())
        # running stats untouched: the pass ran in eval mode
        assert torch.equal(resnet18.bn1.running_mean, torch.zeros(64))
    finally:
        resnet18.eval()
        resnet18.fc.weight.requires_grad_(True)


def test_layer_info_rejects_bad_input_size(resnet18):
    with pytest.raises(ValueError, match="input_size"):
        layer_info(resnet18, (1, 3, 0, 64))


def test_collect_activations_resnet18_names_and_modules(resnet18):
    x = torch.rand(2, 3, 64, 64)
    calls = []
    handle = resnet18.fc.register_forward_hook(lambda *a: calls.append(1))
    try:
        acts = collect_activations(resnet18, ["layer1", resnet18.layer2], x)
        # the last call of each target is meant, so one pass learns the call counts by running to the end
        assert calls == [1]
        first = collect_activations(resnet18, ["layer1", resnet18.layer2], x, call=0)
        assert calls == [1]  # the first call is known when it happens: the pass stopped after layer2
    finally:
        handle.remove()
    assert torch.equal(first["layer1"], acts["layer1"])
    with torch.no_grad():
        h = resnet18.maxpool(resnet18.relu(resnet18.bn1(resnet18.conv1(x))))
        l1 = resnet18.layer1(h)
        l2 = resnet18.layer2(l1)
    assert set(acts) == {"layer1", resnet18.layer2}
    assert torch.allclose(acts["layer1"], l1) and torch.allclose(acts[resnet18.layer2], l2)
    assert not acts["layer1"].requires_grad
    assert all(not m._forward_hooks for m in resnet18.modules())
    single = collect_activations(resnet18, "layer1.0.conv1", x)
    assert single["layer1.0.conv1"].shape == (2, 64, 16, 16)
    with pytest.raises(ValueError, match="layer1"):
        collect_activations(resnet18, "layer1.9", x)


def test_inspection_on_torchvision_googlenet_and_vgg11():
    import torchvision

    gnet = torchvision.models.googlenet(weights=None, init_weights=False, aux_logits=False).eval()
    names = get_model_layers(gnet)
    assert "inception4a.branch2.1.conv" in names
    rows = {r.name: r for r in layer_info(gnet, (1, 3, 96, 96))}
    assert rows["inception4a"].channels == 512 and rows["inception5b"].channels == 1024
    acts = collect_activations(gnet, ["inception3a", "inception4e"], torch.rand(1, 3, 96, 96))
    assert acts["inception3a"].shape[1] == 256 and acts["inception4e"].shape[1] == 832

    # only shapes are read: build on the meta device and allocate zeros, skipping the ~2 s random init of
    # VGG's 133M weights
    with torch.device("meta"):
        vgg = torchvision.models.vgg11(weights=None)
    vgg = vgg.to_empty(device="cpu")
    with torch.no_grad():
        for p in vgg.parameters():
            p.zero_()
    modes = [m.training for m in vgg.modules()]
    rows = {r.name: r for r in layer_info(vgg, (1, 3, 32, 32))}
    assert rows["features.0"].shape == (1, 64, 32, 32) and rows["features.20"].shape == (1, 512, 1, 1)
    assert rows["classifier.6"].shape == (1, 1000)
    assert [m.training for m in vgg.modules()] == modes
    acts = collect_activations(vgg, [vgg.features[3]], torch.rand(1, 3, 32, 32))
    assert acts[vgg.features[3]].shape == (1, 128, 16, 16)


def test_layer_info_default_probe_is_the_render_size_and_input_channels():
    # without input_size / model_input the probe is one image of the size a render uses (render_inputs:
    # the native size, else DEFAULT_SIZE = 160) with the channels of the first convolution, not 1x3x224x224
    timm = pytest.importorskip("timm")
    from optim.models.selection import layer_table

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=64, depth=1).eval()
    rows = layer_info(vit)
    assert [r for r in rows if r.error] == []
    assert rows[0] == LayerInfo("patch_embed", "PatchEmbed", (1, 16, 192), 192)  # 64 / 16 = 4 x 4 patches
    assert rows == layer_table(vit)  # what `optim layers` lists
    gray = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    assert layer_info(gray) == [
        LayerInfo("0", "Conv2d", (1, 2, 158, 158), 2), LayerInfo("1", "ReLU", (1, 2, 158, 158), 2)
    ]
    # explicit sizes and inputs as before
    assert layer_info(gray, (2, 1, 8, 8))[0].shape == (2, 2, 6, 6)
    assert layer_info(gray, model_input=torch.zeros(1, 1, 5, 5))[0].shape == (1, 2, 3, 3)
    assert get_model_layers(gray, (1, 1, 8, 8)) == ["0", "1"]
    # the layer graph probes the same way (its default was 1x3x224x224 too) and validates input_size alike
    names, graph = opt.models.get_model_layer_graph(vit)
    assert graph["patch_embed.proj"] == ["patch_embed.norm"] and "head" in graph
    assert opt.models.get_model_layer_graph(gray)[1] == {"0": ["1"], "1": []}
    with pytest.raises(TypeError, match=r"input_size .*got 64 \(int\)"):
        opt.models.get_model_layer_graph(gray, 64)


def test_layer_info_input_size_must_be_a_full_shape():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    with pytest.raises(TypeError, match=r"input_size must be the full input shape, batch first.*got 64 \(int\)"):
        layer_info(net, input_size=64)
    with pytest.raises(TypeError, match="input_size .*got '64'"):
        layer_info(net, "64")
    with pytest.raises(TypeError, match=r"input_size .*got 64 \(int\)"):
        get_model_layers(net, 64)
    # a CHW shape without its batch: Conv2d takes it as one unbatched image and the rows lose the batch dim
    with pytest.warns(UserWarning, match=r"input_size \(3, 64, 64\) looks like one unbatched image.*\(1, 3, 64, 64\)"):
        layer_info(net, input_size=(3, 64, 64))

    # other ranks stay allowed on models holding a Conv2d: audio (N, T, F) and video (N, T, C, H, W)
    class Audio(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, stride=2)

        def forward(self, x):
            return self.conv(x.unsqueeze(1))

    class Frames(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x.flatten(0, 1)).unflatten(0, tuple(x.shape[:2]))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert layer_info(Audio(), (2, 20, 16))[0].shape == (2, 4, 9, 7)
        assert layer_info(Frames(), (1, 2, 3, 8, 8))[0].shape == (2, 4, 6, 6)  # the conv sees the frames
    with pytest.raises(ValueError, match=r"input_size must be positive sizes.*got \(1, 3, 8\.5, 8\)"):
        layer_info(net, (1, 3, 8.5, 8))
    assert layer_info(net, torch.Size([1, 3, 8, 8]))[0] == LayerInfo("0", "Conv2d", (1, 4, 6, 6), 4)
    tokens = nn.Sequential(nn.Linear(16, 24), nn.GELU())  # no Conv2d: any rank
    assert layer_info(tokens, [1, 5, 16])[0] == LayerInfo("0", "Linear", (1, 5, 24), 24)


def test_collect_activations_probes_a_grayscale_model_with_its_own_channel_count():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()).eval()
    acts = collect_activations(net, "0")  # the default probe: a zero image of the channels the model reads
    assert acts["0"].shape == (1, 2, 222, 222)
    torch.testing.assert_close(acts["0"], net[0].bias.detach().view(1, 2, 1, 1).expand(1, 2, 222, 222))
