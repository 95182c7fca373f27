"""fold_batchnorm / conv_bn_pairs: BatchNorm folded into the convolutions, on a copy, same outputs."""
import pytest
import torch
import torch.nn as nn

from optim.models import Conv2dSame, conv_bn_pairs, fold_batchnorm


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, so a wrong fold shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) * 2 + 0.2)
                if m.affine:
                    m.weight.copy_(torch.randn(n, generator=gen))
                    m.bias.copy_(torch.randn(n, generator=gen) * 0.3)
    return model


def _snapshot(model: nn.Module):
    return {k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()]


def _unchanged(model: nn.Module, snapshot) -> bool:
    state, modes = snapshot
    now = model.state_dict()
    return (
        list(now) == list(state)
        and all(torch.equal(now[k], state[k]) for k in state)
        and [m.training for m in model.modules()] == modes
    )


class _Block(nn.Module):
    """Attribute-style block (torchvision ResNet naming): conv1 -> bn1 -> relu -> conv2 -> bn2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = Conv2dSame(3, 6, 3, stride=2, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1)  # with its own bias
        self.bn2 = nn.BatchNorm2d(5, affine=False)

    def forward(self, x):
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


class _PreAct(nn.Module):
    """Pre-activation order: bn1 is registered before conv1 and applied to the input: not a pair."""

    def __init__(self) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(5)
        self.conv1 = nn.Conv2d(5, 5, 1)

    def forward(self, x):
        return self.conv1(torch.relu(self.bn1(x)))


class _BNAct(nn.BatchNorm2d):
    """A norm with a fused activation (timm's BatchNormAct2d style): folding it would drop the ReLU."""

    def forward(self, x):
        return torch.relu(super().forward(x))


class _StdConv(nn.Conv2d):
    """Weight-standardised convolution: the fold's weight scale would be normalised away."""

    def forward(self, x):
        w = (self.weight - self.weight.mean((1, 2, 3), keepdim=True)) / (self.weight.std((1, 2, 3), keepdim=True) + 1e-5)
        return self._conv_forward(x, w, self.bias)


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return _randomize_bn(
        nn.Sequential(_Block(), _PreAct(), nn.Sequential(nn.Conv2d(5, 4, 1), nn.BatchNorm2d(4), nn.ReLU6()))
    )


def test_tiny_net_folds_every_conv_bn_pair_and_keeps_outputs():
    model = _tiny().train()
    snap = _snapshot(model)
    assert conv_bn_pairs(model) == [("0.conv1", "0.bn1"), ("0.conv2", "0.bn2"), ("2.0", "2.1")]
    folded = fold_batchnorm(model)
    assert _unchanged(model, snap)  # the original keeps its weights, its BatchNorms and train mode
    assert isinstance(model[0].bn1, nn.BatchNorm2d) and model[0].conv1.bias is None
    assert not any(m.training for m in folded.modules())
    assert isinstance(folded[0].conv1, Conv2dSame) and isinstance(folded[0].bn1, nn.Identity)
    assert isinstance(folded[1].bn1, nn.BatchNorm2d)  # the pre-activation norm stays
    assert not any(isinstance(m, nn.BatchNorm2d) for m in (folded[0].bn1, folded[0].bn2, folded[2][1]))
    # the state dict changes: BatchNorm entries gone, a bias on every folded convolution
    assert sorted(folded.state_dict()) == [
        "0.conv1.bias", "0.conv1.weight", "0.conv2.bias", "0.conv2.weight",
        "1.bn1.bias", "1.bn1.num_batches_tracked", "1.bn1.running_mean", "1.bn1.running_var", "1.bn1.weight",
        "1.conv1.bias", "1.conv1.weight", "2.0.bias", "2.0.weight",
    ]
    x = torch.rand(3, 3, 17, 19, generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        want = model(x)
        got = folded(x)
    assert want.shape == got.shape == (3, 4, 9, 10)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)
    # and the gradient to the input (what a render uses)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    model(xa).sum().backward()
    folded(xb).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=0, atol=1e-7)
    assert xa.grad.abs().max() > 1e-4


def test_requires_grad_flags_follow_the_original_convolution():
    model = _tiny().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    folded = fold_batchnorm(model)
    assert not any(p.requires_grad for p in folded.parameters())
    assert fold_batchnorm(_tiny())[0].conv1.bias.requires_grad  # a new bias trains like its weight


def test_layers_that_must_not_fold_are_left_alone():
    torch.manual_seed(0)
    shared_conv, shared_bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 1), _BNAct(4)),  # norm with an activation
        nn.Sequential(_StdConv(4, 4, 1), nn.BatchNorm2d(4)),  # convolution that rescales its weight
        nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, track_running_stats=False)),  # batch statistics
        nn.Sequential(shared_conv, shared_bn),
        nn.Sequential(shared_conv, shared_bn),  # a layer used twice
        nn.Sequential(nn.Conv2d(4, 4, 1), nn.MaxPool2d(1), nn.BatchNorm2d(4)),  # not adjacent
    )
    assert conv_bn_pairs(model) == []
    folded = fold_batchnorm(model)
    assert [type(m) for m in folded.modules()] == [type(m) for m in model.modules()]


class _CustomSequential(nn.Sequential):
    def forward(self, x):  # applies its children in reverse: adjacency does not mean dataflow
        for m in reversed(self):
            x = m(x)
        return x


def test_sequential_with_its_own_forward_is_not_read_as_a_chain():
    assert conv_bn_pairs(_CustomSequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))) == []


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_explicit_pairs_and_their_errors():
    model = _tiny().eval()
    folded = fold_batchnorm(model, pairs=[("2.0", "2.1")])
    assert isinstance(folded[0].bn1, nn.BatchNorm2d) and isinstance(folded[2][1], nn.Identity)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=0, atol=2e-6)
    assert list(fold_batchnorm(model, pairs=[]).state_dict()) == list(model.state_dict())
    with pytest.raises(ValueError, match="'0.nope'.*not a submodule"):
        fold_batchnorm(model, pairs=[("0.nope", "0.bn1")])
    with pytest.raises(ValueError, match="'0.relu' is a ReLU"):
        fold_batchnorm(model, pairs=[("0.relu", "0.bn1")])
    with pytest.raises(ValueError, match="'0.conv2' is a Conv2d"):
        fold_batchnorm(model, pairs=[("0.conv1", "0.conv2")])
    with pytest.raises(ValueError, match="6 features but '2.0' has 4 output channels"):
        fold_batchnorm(model, pairs=[("2.0", "0.bn1")])
    with pytest.raises(ValueError, match="'0.bn1' twice"):
        fold_batchnorm(model, pairs=[("0.conv1", "0.bn1"), ("2.0", "0.bn1")])
    with pytest.raises(TypeError, match="string pairs"):
        fold_batchnorm(model, pairs=["0.conv1"])
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        fold_batchnorm("resnet18")
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        conv_bn_pairs(None)
    with pytest.raises(TypeError, match="TorchScript"):
        fold_batchnorm(torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()))


def test_efficientnet_lite0_pretrained_folds_all_49_norms_within_float_rounding():
    from optim.models import efficientnet_lite0
    from optim.models._utils import collect_activations

    model = efficientnet_lite0(pretrained=True)  # the factory returns train mode
    snap = _snapshot(model)
    pairs = conv_bn_pairs(model)
    norms = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 49 and [bn for _, bn in pairs] == norms
    assert pairs[:2] == [("stem.conv", "stem.bn"), ("blocks.0.depthwise.conv", "blocks.0.depthwise.bn")]
    folded = fold_batchnorm(model)
    assert _unchanged(model, snap) and model.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert isinstance(folded.blocks[8].project.conv, nn.Conv2d) and folded.blocks[8].project.conv.bias is not None
    x = torch.rand(2, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        want, got = model(x), folded(x)
    assert want.abs().max() > 3.0  # logits of a real classifier, not a degenerate output
    torch.testing.assert_close(got, want, rtol=0, atol=3e-5)
    want = collect_activations(model, ["blocks.8", "blocks.8.depthwise.bn"], x)
    got = collect_activations(folded, ["blocks.8", "blocks.8.depthwise.bn"], x)
    for name in ("blocks.8", "blocks.8.depthwise.bn"):  # the norm's name still answers, with its values
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=2e-5 * float(want[name].abs().max()))


def test_torchvision_resnet_and_googlenet_fold_every_norm():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    nets = {
        "resnet18": torchvision.models.resnet18(weights=None),
        "googlenet": torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False),
    }
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    for name, net in nets.items():
        net = _randomize_bn(net).eval()
        norms = [n for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)]
        assert [bn for _, bn in conv_bn_pairs(net)] == norms, name
        folded = fold_batchnorm(net)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        with torch.no_grad():
            want, got = net(x), folded(x)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * float(want.abs().max()), msg=name)
    assert ("layer1.0.conv1", "layer1.0.bn1") in conv_bn_pairs(nets["resnet18"])
    assert ("layer2.0.downsample.0", "layer2.0.downsample.1") in conv_bn_pairs(nets["resnet18"])
    assert ("inception3a.branch1.conv", "inception3a.branch1.bn") in conv_bn_pairs(nets["googlenet"])


def test_inception_v1_has_no_norm_and_its_copy_is_unchanged():
    from optim.models import InceptionV1

    torch.manual_seed(0)
    model = InceptionV1().eval()
    assert conv_bn_pairs(model) == []
    folded = fold_batchnorm(model)
    assert folded is not model and folded.conv1.weight is not model.conv1.weight
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(folded(x), model(x))
