"""Inputs and outputs of any vision model (issue 13): native size, normalization, non-tensor outputs.

- ``optim.transforms.Normalize`` / ``normalize``: exact values against NumPy, validation, scripting, gradient.
- ``optim.models.preprocess.input_config`` on timm, torchvision and Hugging Face models (random weights, small
  configs, nothing downloaded) and on optim's own zoo models (which normalize themselves: nothing reported).
- ``render_vis`` / ``render_layer`` / recipes on fixed-size models with the library defaults: the native size,
  the model's normalization, the objective raised; a size the model refuses gives an error naming the fix.
- ``select_tensor``'s default on a ``ModelOutput`` (``logits``), ``class_visualization(target=None)`` and
  ``attribute`` on Hugging Face and dict-output classifiers and on a plain function; a tuple-output layer in
  ``FacetLoss``. Every model is left as it was (modes, ``requires_grad`` flags, no hooks).
"""
import numpy as np
import pytest
import torch
import torch.nn as nn

import optim as opt
from optim.activations import select_tensor
from optim.models.preprocess import InputConfig, input_config, render_inputs
from optim.optimization.defaults import DEFAULT_SIZE, default_image, default_transforms
from optim.transforms import Normalize, TransformationRobustness, normalize

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# --- helpers -------------------------------------------------------------------------------------------------
def _hf_vit(num_labels: int = 5) -> nn.Module:
    """A small random Hugging Face ViT classifier on 32 x 32 images (patches of 8: a 4 x 4 grid + CLS)."""
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
        patch_size=8, num_labels=num_labels, initializer_range=0.5,  # large enough weights to move the logits
    )
    torch.manual_seed(0)
    return transformers.ViTForImageClassification(config).eval()


def _timm_vit(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2, **kwargs).eval()


class DictNet(nn.Module):
    """A classifier whose output is a dict (features first, logits second)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict:
        features = self.relu(self.conv(x))
        return {"features": features, "logits": self.fc(features.mean((2, 3)))}


def _state(model: nn.Module):
    """Everything 'left as it was' covers: each module's mode, each parameter's flag, the hooks."""
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
    return modes, flags, hooks


def _logit(model: nn.Module, image: torch.Tensor, index: int, preprocess=None) -> float:
    with torch.no_grad():
        x = image if preprocess is None else preprocess(image)
        return float(select_tensor(model(x))[0, index])


# --- Normalize ---------------------------------------------------------------------------------------------
def test_normalize_matches_numpy_exactly():
    x = torch.rand(2, 3, 5, 4, generator=torch.Generator().manual_seed(1))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    m32, s32 = np.array(mean, dtype=np.float32), np.array(std, dtype=np.float32)
    expected = (x.numpy() - m32[:, None, None]) / s32[:, None, None]
    got = Normalize(mean, std)(x)
    assert got.dtype == torch.float32 and got.shape == x.shape
    np.testing.assert_array_equal(got.numpy(), expected)
    np.testing.assert_array_equal(normalize(x, mean, std).numpy(), expected)
    # float64 input: computed in float64
    x64 = x.double()
    expected64 = (x64.numpy() - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    np.testing.assert_array_equal(Normalize(mean, std)(x64).numpy(), expected64)
    # one number for every channel; a CHW image; a tensor of statistics
    assert torch.equal(Normalize(0.5, 0.25)(torch.ones(3, 1, 1)), torch.full((3, 1, 1), 2.0))
    assert torch.equal(Normalize(torch.tensor(mean), torch.tensor(std))(x), got)


def test_normalize_gradient_scripting_and_determinism():
    norm = Normalize((0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    x = torch.rand(1, 3, 2, 2, requires_grad=True)
    norm(x).sum().backward()
    assert torch.equal(x.grad[0, :, 0, 0], torch.tensor([2.0, 4.0, 0.5]))
    assert Normalize.deterministic is True
    scripted = torch.jit.script(norm)
    y = torch.rand(2, 3, 4, 4)
    assert torch.equal(scripted(y), norm(y))
    image = opt.images.ImageTensor(y)
    assert type(norm(image)) is torch.Tensor and torch.equal(norm(image), norm(y))


@pytest.mark.parametrize("mean, std, error, match", [
    ((0.5, 0.5, 0.5), (0.5, 0.0, 0.5), ValueError, r"std must be > 0 for every channel, got \(0.5, 0.0, 0.5\)"),
    ((0.5, 0.5, 0.5), (0.5, -1.0, 0.5), ValueError, "std must be > 0"),
    ((0.5, 0.5), (0.5, 0.5, 0.5), ValueError, "mean and std must have the same length .* got 2 and 3"),
    ((), (0.5,), ValueError, "mean is empty"),
    (("a", 0.5, 0.5), (0.5,), TypeError, "mean must hold numbers, got 'a'"),
    ((0.5,), (float("nan"),), ValueError, "std must hold finite numbers"),
    (None, (0.5,), TypeError, "mean must be a number or a sequence"),
    (True, (0.5,), TypeError, "mean must be a number"),
])
def test_normalize_refuses_bad_statistics(mean, std, error, match):
    with pytest.raises(error, match=match):
        Normalize(mean, std)
    with pytest.raises(error, match=match):
        normalize(torch.zeros(1, 3, 2, 2), mean, std)


def test_normalize_checks_the_input_channels():
    message = r"Normalize has 3 channel values but the input has 4 channels \(shape \(1, 4, 2, 2\)\)"
    with pytest.raises(ValueError, match=message):
        Normalize(IMAGENET_MEAN, IMAGENET_STD)(torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError, match="expects a CHW or NCHW tensor"):
        Normalize(IMAGENET_MEAN, IMAGENET_STD)(torch.zeros(3))
    # a grayscale photo for an RGB model's statistics: the conversion that fixes it, CHW and NCHW alike
    with pytest.raises(ValueError, match=r"1 channel \(shape .*photo\.repeat_interleave\(3, dim=-3\)"):
        Normalize(IMAGENET_MEAN, IMAGENET_STD)(torch.zeros(1, 1, 2, 2))
    for gray in (torch.zeros(1, 2, 2), torch.zeros(2, 1, 2, 2)):  # the advised conversion works on CHW and NCHW
        assert gray.repeat_interleave(3, dim=-3).shape[-3] == 3


# --- input_config ---------------------------------------------------------------------------------------------
def test_input_config_timm_vit_and_resnet():
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    assert input_config(vit) == InputConfig(size=(224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                            interpolation="bicubic", channels=3, fixed_size=True, source="timm")
    # the size it was built for wins over the pretrained config's 224; dynamic_img_size: not fixed
    small = _timm_vit(dynamic_img_size=True)
    assert input_config(small).size == (32, 32) and input_config(small).fixed_size is False
    assert input_config(_timm_vit()).fixed_size is True
    resnet = timm.create_model("resnet18", pretrained=False)
    assert input_config(resnet) == InputConfig(size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                               interpolation="bicubic", channels=3, fixed_size=False, source="timm")
    assert input_config(torch.compile(resnet)) == input_config(resnet)  # read through _orig_mod


def test_input_config_torchvision():
    torchvision = pytest.importorskip("torchvision")
    vit = torchvision.models.vit_b_16(weights=None)
    assert input_config(vit) == InputConfig(size=(224, 224), fixed_size=True, source="torchvision")
    resnet = torchvision.models.resnet18(weights=None)
    assert input_config(resnet) == InputConfig(source="torchvision")  # weights=None: no normalization known
    # the weights enum's transforms (no download: reading the preset only)
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    assert input_config(resnet, weights=weights) == InputConfig(
        size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear", source="torchvision")
    with pytest.raises(TypeError, match="weights must be a torchvision weights enum"):
        input_config(resnet, weights="IMAGENET1K_V1")


def test_input_config_hugging_face_with_and_without_processor():
    model = _hf_vit()
    assert input_config(model) == InputConfig(size=(32, 32), channels=3, source="hf")
    processor = transformers.ViTImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.1, 0.2, 0.3],
                                               image_std=[0.4, 0.5, 0.6])
    got = input_config(model, processor)
    # the model's own size wins over the processor's; the processor gives the normalization
    assert got == InputConfig(size=(32, 32), mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), interpolation="bilinear",
                              channels=3, source="hf")
    assert input_config(model, transformers.ViTImageProcessor(do_normalize=False)).mean is None
    # a processor alone describes a model that says nothing
    alone = input_config(nn.Conv2d(3, 4, 3), processor)
    assert alone.size == (64, 64) and alone.mean == (0.1, 0.2, 0.3) and alone.source == "hf"


def test_input_config_zoo_models_report_nothing_and_keep_their_render_defaults():
    lite = opt.models.efficientnet_lite0()
    assert input_config(lite) == InputConfig(source="optim")
    inputs = render_inputs(lite)
    assert inputs.size == (DEFAULT_SIZE, DEFAULT_SIZE) and inputs.preprocess is None
    assert input_config(nn.Conv2d(3, 4, 3)) == InputConfig()
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        input_config(lambda x: x)


def test_render_inputs_prefers_the_callers_values():
    model = _timm_vit()
    got = render_inputs(model)
    assert got.size == (32, 32)
    assert isinstance(got.preprocess, Normalize) and got.preprocess.mean == [0.5, 0.5, 0.5]
    mine = nn.Identity()
    got = render_inputs(model, size=(16, 48), preprocess=mine)
    assert got.size == (16, 48) and got.preprocess is mine
    with pytest.raises(ValueError, match="size must be a positive int"):
        render_inputs(model, size=0)


# --- renders on fixed-size models --------------------------------------------------------------------------------
def test_default_transforms_keep_the_size():
    x = torch.rand(2, 3, 32, 24)
    assert default_transforms()(x).shape == x.shape
    assert TransformationRobustness()(x).shape == (2, 3, 36, 28)  # captum's stack, as a class, is unchanged


def test_render_vis_hf_vit_with_library_defaults_raises_the_logit():
    model = _hf_vit()
    before = _state(model)
    first, last = opt.render_vis(model, opt.loss.ChannelActivation(model, 2), thresholds=(0, 16), progress=False,
                                 seed=0)
    assert first.shape == last.shape == (1, 3, 32, 32)  # the model's native size, kept by the transforms
    start, end = _logit(model, first, 2), _logit(model, last, 2)
    assert end > start + 1.0, (start, end)
    assert _state(model) == before


def test_render_vis_timm_vit_normalizes_as_the_model_declares():
    model = _timm_vit()
    before = _state(model)
    objective = "blocks.1:3"  # hidden unit or token: the wiring is what is checked here
    got = opt.render_vis(model, objective, thresholds=4, progress=False, seed=0)[0]
    assert got.shape == (1, 3, 32, 32) and 0 <= float(got.min()) and float(got.max()) <= 1  # image in [0, 1]
    same = opt.render_vis(model, objective, image=default_image(32), transforms=default_transforms(),
                          preprocess=Normalize((0.5,) * 3, (0.5,) * 3), thresholds=4, progress=False, seed=0)[0]
    assert torch.equal(got, same)
    raw = opt.render_vis(model, objective, preprocess=nn.Identity(), thresholds=2, progress=False, seed=0)[0]
    assert not torch.equal(opt.render_vis(model, objective, thresholds=2, progress=False, seed=0)[0], raw)
    # the class logit goes up, measured through the model's normalization
    norm = Normalize((0.5,) * 3, (0.5,) * 3)
    first, last = opt.render_vis(model, opt.loss.ChannelActivation(model, 7), thresholds=(0, 16), progress=False,
                                 seed=0)
    assert _logit(model, last, 7, norm) > _logit(model, first, 7, norm) + 0.05  # 0.26 -> 0.36
    assert _state(model) == before


def test_dynamic_img_size_vit_renders_with_the_defaults():
    model = _timm_vit(dynamic_img_size=True)
    image = opt.render_vis(model, opt.loss.ChannelActivation(model, 1), thresholds=3, progress=False, seed=0)[0]
    assert image.shape == (1, 3, 32, 32)


def test_a_size_the_model_refuses_names_the_fix():
    model = _hf_vit()
    objective = opt.loss.ChannelActivation(model, 0)
    with pytest.raises(ValueError, match=r"failed on a 36x36 input .*transforms change the image size from 32x32 to "
                                         r"36x36.*crop_or_pad_output=True") as caught:
        opt.render_vis(model, objective, transforms=TransformationRobustness(), thresholds=2, progress=False)
    assert "doesn't match model (32*32)" in str(caught.value.__cause__)
    with pytest.raises(ValueError, match=r"failed on a 48x48 input.*native input size is 32x32 \(hf\)"):
        opt.render_vis(model, objective, image=default_image(48), thresholds=2, progress=False)
    timm_vit = _timm_vit()
    with pytest.raises(ValueError, match=r"VisionTransformer failed on a 48x48 input.*native input size is 32x32 \(timm"):
        opt.render_layer(timm_vit, "patch_embed.proj", channels=[0], size=48, steps=2, progress=False)
    with pytest.raises(ValueError, match="transforms change the image size from 32x32 to 36x36"):
        opt.render_layer(timm_vit, "patch_embed.proj", channels=[0], transforms=TransformationRobustness(), steps=2,
                         progress=False)
    # a failure the size does not explain is the model's own
    broken = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(5, 2))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        opt.render_vis(broken, opt.loss.ChannelActivation(broken[2], 0), image=default_image(8), thresholds=1,
                       progress=False)


def test_render_layer_at_the_native_size():
    model = _timm_vit()
    tiles = opt.render_layer(model, "patch_embed.proj", channels=[0, 5], steps=2, progress=False, seed=0)
    assert tiles.shape == (2, 3, 32, 32)


# --- outputs that are not tensors ---------------------------------------------------------------------------------
def test_select_tensor_defaults_to_logits_on_model_outputs():
    from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput

    logits, loss = torch.randn(2, 5), torch.tensor(1.5)
    assert select_tensor(ImageClassifierOutput(loss=loss, logits=logits)) is logits  # not the loss, listed first
    hidden, pooled = torch.randn(2, 17, 32), torch.randn(2, 32)
    base = BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled)
    assert select_tensor(base) is hidden
    assert select_tensor(base, "pooler_output") is pooled
    assert select_tensor({"features": hidden, "logits": logits}) is logits
    assert select_tensor((hidden, logits)) is hidden and select_tensor((hidden, logits), 1) is logits


def test_class_logit_reads_logits_and_refuses_a_headless_network():
    """ClassLogit reads [batch, classes] only: a feature map's channel is never rendered under a class's name
    (vgg16's features, a backbone without its head)."""
    from optim.loss import ClassLogit

    logits = DictNet().eval()(torch.rand(2, 3, 8, 8))["logits"]
    assert torch.equal(ClassLogit("fc", 2, batch_index=1)({"fc": logits}), logits[1:, 2])
    assert torch.equal(ClassLogit("fc", 2, num_classes=3)({"fc": logits}), logits[:, 2])
    with pytest.raises(ValueError, match=r"^class_index 3 is out of range: the output of 'fc' has 3 classes"):
        ClassLogit("fc", 3)({"fc": logits})
    with pytest.raises(TypeError, match="class_index must be an int"):
        ClassLogit("fc", "goldfish")
    with pytest.raises(ValueError, match="num_classes must be an int >= 1 or None, got 0"):
        ClassLogit("fc", 1, num_classes=0)
    with pytest.raises(TypeError, match="activation must be a tensor, got tuple"):
        ClassLogit("fc", 1)({"fc": (logits,)})
    headless = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()).eval()
    before = _state(headless)
    shape = r"the output of Sequential has shape \(1, 8, 16, 16\): a network without a classification head"
    with pytest.raises(ValueError, match=r"^ClassLogit needs class logits, a \[batch, classes\] output, but " + shape):
        opt.recipes.class_visualization(headless, 5, size=16, steps=2, progress=False, seed=0)
    assert _state(headless) == before


def test_class_names_are_read_against_the_models_own_labels():
    """A class name is looked up in the model's labels (a Hugging Face model's id2label, else ImageNet's), and a
    model with other classes than those names is refused, never optimized at the same index."""
    from optim.models import class_index, model_labels
    from optim.recipes.classes import class_logits

    hf = _hf_vit(3)
    hf.config.id2label = {0: "cat", 1: "dog", 2: "goldfish"}
    assert model_labels(hf) == ["cat", "dog", "goldfish"] and model_labels(DictNet()) is None
    assert [(o.class_index, o.num_classes) for o in class_logits(hf, ["goldfish", "dog", 0, "2"])] == [
        (2, 3), (1, 3), (0, None), (2, None)]
    images = opt.recipes.class_visualization(hf, "goldfish", steps=16, progress=False, seed=0)
    start = opt.recipes.class_visualization(hf, "goldfish", steps=1, lr=0.0, progress=False, seed=0)
    assert _logit(hf, images, 2) > _logit(hf, start, 2)
    with pytest.raises(ValueError, match=r"unknown class name 'Egyptian cat'; no name is close to it \(see the model"):
        class_logits(hf, "Egyptian cat")
    # DictNet has 3 outputs: ImageNet's 1000 names are not its classes
    net = DictNet().eval()
    with pytest.raises(ValueError, match=r"^the output of DictNet has 3 classes, not num_classes=1000 \(the number "
                                         r"of class names the class was read from\): the names are not this model's"):
        opt.recipes.class_visualization(net, "goldfish", size=16, steps=1, progress=False)
    assert _state(net) == _state(DictNet().eval())
    with pytest.raises(TypeError, match=r"^classes must be a class index \(int\), a class name \(str\) or a "
                                        r"sequence of them, got 3.0 \(float\)"):
        opt.recipes.class_visualization(net, 3.0, size=16, steps=1, progress=False)
    # optim's zoo declares its registry labels: Lucid's InceptionV1 has 1008 outputs, "goldfish" is its 450th
    lucid = opt.models.googlenet()
    assert len(model_labels(lucid)) == 1008 and model_labels(opt.models.efficientnet_lite0()) == list(
        opt.models.IMAGENET_CLASSES)
    assert [(o.class_index, o.num_classes) for o in class_logits(lucid, "goldfish")] == [(450, 1008)]
    with pytest.raises(ValueError, match="^class name 'crane' is ambiguous: outputs 429 and 545 are all called that"):
        class_logits(lucid, "crane")  # the bird and the machine: never one of them silently
    with pytest.raises(ValueError, match="^unknown class name 'crane bird'; close names: 'crane', 'scoreboard'$"):
        class_logits(lucid, "crane bird")  # each close name once
    # Places365's names are paths: "/a/airfield" is found as "airfield", in any case
    places = opt.models.model_info("googlenet_places365").labels
    assert class_index("airfield", places) == 0 and class_index("bakery shop", places) == places.index("/b/bakery/shop")
    assert class_index("/A/Airfield", places) == 0


def test_class_specs_labels_and_heads_that_class_visualization_reads():
    """What class_logits takes: any sequence of ints (numpy's too), names or digit strings; labels as a list or an
    id2label mapping; Hugging Face's placeholder labels (LABEL_0, ...) mean none; a [N, C, 1, 1] head is logits."""
    from optim.models import check_labels, model_labels
    from optim.recipes.classes import class_logits

    net = DictNet().eval()
    specs = [(o.class_index, o.num_classes, o.batch_index) for o in class_logits(net, range(3))]
    assert specs == [(0, None, 0), (1, None, 1), (2, None, 2)]
    assert [o.class_index for o in class_logits(net, [np.int64(2), " 1 ", "+0"])] == [2, 1, 0]
    by_map = class_logits(net, ["dog", "bird"], labels={"2": "bird", "0": "cat", "1": "dog"})
    assert [(o.class_index, o.num_classes) for o in by_map] == [(1, 3), (2, 3)]
    with pytest.raises(TypeError, match="^labels must be a sequence of class names or a mapping"):
        class_logits(net, "b", labels="abc")
    with pytest.raises(ValueError, match="^labels is empty"):
        class_logits(net, "b", labels=[])
    with pytest.raises(ValueError, match="^labels as a mapping must have the output indices 0..n-1 as keys"):
        check_labels({1: "dog", 2: "cat"})
    with pytest.raises(ValueError, match="^class_index must be >= 0, got -1"):
        class_logits(net, "-1")
    # a config that names no classes holds LABEL_0 ... : ImageNet's names apply, checked against the 1000 outputs
    hf = _hf_vit(1000)
    assert hf.config.id2label[7] == "LABEL_7" and model_labels(hf) is None
    assert [(o.class_index, o.num_classes) for o in class_logits(hf, "goldfish")] == [(1, 1000)]
    # a convolutional head without Flatten: [N, 1000, 1, 1] is read as the logits
    nin = nn.Sequential(nn.Conv2d(3, 1000, 3, padding=1), nn.AdaptiveAvgPool2d(1)).eval()
    images = opt.recipes.class_visualization(nin, "goldfish", size=8, steps=4, progress=False, seed=0)
    start = opt.recipes.class_visualization(nin, "goldfish", size=8, steps=1, lr=0.0, progress=False, seed=0)
    with torch.no_grad():
        assert nin(images)[0, 1, 0, 0] > nin(start)[0, 1, 0, 0]


def test_class_visualization_on_hf_and_dict_classifiers():
    model = _hf_vit()
    before = _state(model)
    images = opt.recipes.class_visualization(model, [0, 2], steps=16, progress=False, seed=0)
    assert images.shape == (2, 3, 32, 32)  # the model's native size
    start = opt.recipes.class_visualization(model, [0, 2], steps=1, lr=0.0, progress=False, seed=0)
    for i, c in enumerate([0, 2]):
        assert _logit(model, images[i : i + 1], c) > _logit(model, start[i : i + 1], c) + 0.5
    assert _state(model) == before
    net = DictNet().eval()
    out = opt.recipes.class_visualization(net, [0, 2], size=16, steps=8, progress=False, seed=0)
    assert out.shape == (2, 3, 16, 16)
    flat = opt.recipes.class_visualization(net, [0, 2], size=16, steps=1, lr=0.0, progress=False, seed=0)
    assert _logit(net, out[:1], 0) > _logit(net, flat[:1], 0)


@pytest.mark.parametrize("method", ["saliency", "gradcam", "guided_backprop", "integrated_gradients"])
def test_attribute_on_hf_and_dict_outputs(method):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    kw = {"n_steps": 4} if method == "integrated_gradients" else {}
    for model in (_hf_vit().train(), DictNet()):
        model.fc.weight.requires_grad_(False) if isinstance(model, DictNet) else None
        before = _state(model)
        result = opt.attribution.attribute(model, x, [1, 2], method=method, **kw)
        assert result.shape == ((2, 1, 32, 32) if method == "gradcam" else (2, 3, 32, 32))
        assert torch.isfinite(result).all() and float(result.abs().sum()) > 0
        assert _state(model) == before


def test_attribute_saliency_is_the_gradient_of_the_selected_logit():
    model = _hf_vit()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    grad_in = x.clone().requires_grad_(True)
    model(grad_in).logits[0, 3].backward()
    assert torch.allclose(opt.attribution.attribute(model, x, 3, method="saliency"), grad_in.grad, atol=1e-6)


def test_attribute_with_a_plain_function():
    model = _hf_vit()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    as_module = opt.attribution.attribute(model, x, 1, method="saliency")
    assert torch.equal(opt.attribution.attribute(lambda t: model(t).logits, x, 1, method="saliency"), as_module)
    # a function returning a ModelOutput is read the same way
    assert torch.equal(opt.attribution.attribute(lambda t: model(t), x, 1, method="saliency"), as_module)
    occlusion = opt.attribution.attribute(lambda t: model(t).logits, x, 1, method="occlusion", window=8)
    assert occlusion.shape == (1, 3, 32, 32)
    layer = model.vit.embeddings.patch_embeddings.projection
    cam = opt.attribution.attribute(lambda t: model(t).logits, x, 1, method="gradcam", layer=layer)
    assert torch.allclose(cam, opt.attribution.attribute(model, x, 1, method="gradcam", layer=layer))
    with pytest.raises(ValueError, match="Grad-CAM on a function needs layer= a module .* got layer=None"):
        opt.attribution.attribute(lambda t: model(t).logits, x, 1, method="gradcam")
    with pytest.raises(ValueError, match="got layer='vit.layers.1'"):
        opt.attribution.attribute(lambda t: model(t).logits, x, 1, method="gradcam", layer="vit.layers.1")
    with pytest.raises(TypeError, match="method 'guided_backprop' needs an nn.Module .* use one of: saliency"):
        opt.attribution.attribute(lambda t: model(t).logits, x, 1, method="guided_backprop")
    with pytest.raises(TypeError, match="model must be an nn.Module or a callable returning logits, got int"):
        opt.attribution.attribute(3, x, 1, method="saliency")


def test_facet_loss_on_a_tuple_output_layer():
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = self.conv(x)
            return y, y.mean()

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.relu, self.c = nn.Conv2d(3, 4, 3), Pair(), nn.ReLU(inplace=True), nn.Conv2d(4, 5, 1)

        def forward(self, x):
            return self.c(self.relu(self.b(self.a(x))[0]))

    torch.manual_seed(0)
    net = Net().eval()
    before = _state(net)
    loss = opt.loss.FacetLoss("c", "b", torch.ones(5), torch.ones(4))
    history = []
    opt.render_vis(net, loss, image=default_image(16), thresholds=6, progress=False, seed=0,
                   callback=lambda step, value, images: history.append(float(value)))
    assert len(history) == 6 and all(np.isfinite(history))
    # the recording is the tuple's tensor as produced (before the in-place ReLU downstream)
    acts = opt.activations.record_activations(net, ["b"], torch.rand(1, 3, 8, 8))
    assert float(acts["b"].min()) < 0
    assert _state(net) == before


class _Declared(nn.Sequential):
    """A model declaring timm's preprocessing (ImageNet mean and std, 32 px)."""

    pretrained_cfg = {"input_size": (3, 32, 32), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def test_normalize_in_the_transforms_is_not_applied_twice() -> None:
    torch.manual_seed(0)
    model = _Declared(nn.Conv2d(3, 4, 1)).eval()
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    grey = torch.full((1, 3, 32, 32), 0.485)
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    opt.render_vis(model, "0:1", image=grey, transforms=[Normalize(mean, std)], thresholds=(1,), progress=False)
    assert seen[-1][0, 0].abs().max() < 1e-4  # (0.485 - 0.485) / 0.229, normalized once
    torchvision = pytest.importorskip("torchvision")
    seen.clear()
    opt.render_vis(model, "0:1", image=grey, transforms=[torchvision.transforms.Normalize(mean, std)],
                   thresholds=(1,), progress=False)
    assert seen[-1][0, 0].abs().max() < 1e-4
    seen.clear()
    opt.render_vis(model, "0:1", image=grey, transforms=[], thresholds=(1,), progress=False)
    assert seen[-1][0, 0].abs().max() < 1e-4  # and without one in the transforms, render_vis adds it
    model._forward_pre_hooks.clear()


def test_a_loss_error_is_not_reported_as_a_size_error() -> None:
    model = _Declared(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    with pytest.raises(ValueError) as info:
        opt.render_vis(model, "0:10", image=default_image(48), thresholds=(2,), progress=False)
    assert "channel_index 10 is out of range" in str(info.value) and "native input size" not in str(info.value)
    vit = _timm_vit()  # a model that does refuse the size: explained, naming the native size
    with pytest.raises(ValueError, match="native input size is 32x32"):
        opt.render_vis(vit, "blocks.0:1", image=default_image(48), thresholds=(1,), progress=False)


def test_an_rgb_photo_on_a_one_channel_model_is_refused_naming_both_channel_counts() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    photo = torch.rand(3, 24, 24)
    expected = "the image has 3 channels and the model reads 1"
    with pytest.raises(ValueError, match=expected):
        opt.render_vis(model, "0:1", image=photo, thresholds=(1,), progress=False)
    with pytest.raises(ValueError, match=expected):  # a recipe's reference pass, outside the render
        opt.recipes.feature_inversion(model, photo, "1", steps=1, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # a preprocess that converts the channels is the user's fix: no refusal, and the gray photo renders
    (image,) = opt.render_vis(model, "0:1", image=photo, thresholds=(1,), progress=False,
                              preprocess=lambda x: x.mean(1, keepdim=True))
    assert image.shape == (1, 3, 24, 24)
    (image,) = opt.render_vis(model, "0:1", image=photo.mean(-3, keepdim=True), thresholds=(1,), progress=False)
    assert image.shape == (1, 1, 24, 24)
    # a grayscale photo on an RGB model: the advice fits the counts
    rgb = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    with pytest.raises(ValueError, match=r"has 1 channel and the model reads 3: .*repeat_interleave\(3, dim=-3\)"):
        opt.render_vis(rgb, "0:1", image=photo[:1], thresholds=(1,), progress=False)


def test_a_hand_wired_input_optimization_explains_an_image_the_model_refuses() -> None:
    torch.manual_seed(0)
    gray = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()).eval()
    before = _state(gray)
    obj = opt.InputOptimization(gray, opt.loss.ChannelActivation(gray[0], 1), default_image(24))
    with pytest.raises(ValueError, match=r"^Sequential failed on a 24x24 input \(.*\); the image has 3 channels and "
                       r"the model reads 1: .*an image parameterization of 1 channel "
                       r"\(default_image\(size, channels=1\)\)"):
        obj.optimize(1)
    assert _state(gray) == before and not gray[0]._forward_hooks
    with pytest.raises(ValueError, match="the model reads 1"):  # one evaluation of the loss takes the same path
        obj.loss()
    vit = _timm_vit()  # a fixed-size model: the native size is named, and the transforms' output size
    obj = opt.InputOptimization(vit, opt.loss.ChannelActivation(vit.blocks[0], 1), default_image(48))
    with pytest.raises(ValueError, match=r"failed on a 48x48 input .*native input size is 32x32"):
        obj.optimize(1)
    grow = TransformationRobustness(crop_or_pad_output=False)
    obj = opt.InputOptimization(vit, opt.loss.ChannelActivation(vit.blocks[0], 1), default_image(32), grow)
    with pytest.raises(ValueError, match=r"the transforms change the image size from 32x32 to "):
        obj.optimize(1)
    # transforms that change the size at random: explained at the first step that feeds a size the model refuses
    scale = opt.transforms.RandomScale([1.0, 1.0, 1.25])
    for seed in range(4):
        obj = opt.InputOptimization(vit, opt.loss.ChannelActivation(vit.blocks[0], 1), default_image(32), scale,
                                    seed=seed)
        with pytest.raises(ValueError, match=r"failed on a 40x40 input .*change the image size from 32x32 to 40x40"):
            obj.optimize(64)
    # a model that declares a size and already ran on this input shape fails later: not the input's fault, so its
    # own error stays (unguarded, the native-size hint would be given)
    calls = []

    class LaterFailure(nn.Conv2d):
        pretrained_cfg = {"input_size": (3, 32, 32)}

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            if len(calls) > 1:
                raise RuntimeError("a hook of the user's broke")
            return super().forward(x)

    later = LaterFailure(3, 4, 3).eval()
    obj = opt.InputOptimization(later, opt.loss.ChannelActivation(later, 1), default_image(24))
    with pytest.raises(RuntimeError, match="^a hook of the user's broke$"):
        obj.optimize(3)
    assert len(calls) == 2
    calls.clear()
    calls.append(1)  # fails on its first input now: the native size (24 is not 32) is named
    obj = opt.InputOptimization(later, opt.loss.ChannelActivation(later, 1), default_image(24))
    with pytest.raises(ValueError, match="native input size is 32x32"):
        obj.optimize(3)

    class OutOfMemory(LaterFailure):  # running out of memory is never blamed on the input's size
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    oom = OutOfMemory(3, 4, 3).eval()
    obj = opt.InputOptimization(oom, opt.loss.ChannelActivation(oom, 1), default_image(24))
    with pytest.raises(RuntimeError, match="^CUDA out of memory"):
        obj.optimize(1)


def test_a_channel_error_past_the_input_layer_is_not_blamed_on_the_image() -> None:
    torch.manual_seed(0)
    photo = torch.rand(3, 24, 24)
    # the preprocess converts to gray as the model needs; a later layer's own mismatch stays torch's error
    broken = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(5, 4, 3)).eval()
    with pytest.raises(RuntimeError, match="to have 5 channels, but got 4"):
        opt.render_vis(broken, "0:1", image=photo, thresholds=(1,), progress=False,
                       preprocess=lambda x: x.mean(1, keepdim=True))

    class Gated(nn.Module):  # its first-defined Conv2d is not its input layer: torch's count is the one named
        def __init__(self) -> None:
            super().__init__()
            self.gate = nn.Conv2d(2, 1, 3, padding=1)
            self.stem = nn.Conv2d(1, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.stem(x)

    with pytest.raises(ValueError, match="the image has 3 channels and the model reads 1: "):
        opt.render_vis(Gated().eval(), "stem:1", image=photo, thresholds=(1,), progress=False)
    # the input layer read the image's 3 channels; the next one wants 4 and gets 3: the model's error, not the image's
    inner = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Conv2d(4, 2, 3)).eval()
    with pytest.raises(RuntimeError, match="to have 4 channels, but got 3"):
        opt.render_vis(inner, "1:0", image=photo, thresholds=(1,), progress=False)


def test_a_one_channel_model_with_rgb_statistics_renders_with_their_average() -> None:
    class Gray(nn.Sequential):
        pretrained_cfg = {"input_size": (1, 24, 24), "mean": (0.25, 0.5, 0.75), "std": (0.25, 0.25, 0.25)}

    torch.manual_seed(0)
    model = Gray(nn.Conv2d(1, 4, 3), nn.ReLU()).eval()
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    (image,) = opt.render_vis(model, "0:1", image=torch.full((1, 1, 24, 24), 0.75), transforms=[],
                              thresholds=(0,), progress=False)
    assert image.shape == (1, 1, 24, 24)
    opt.render_vis(model, "0:1", image=torch.full((1, 1, 24, 24), 0.75), transforms=[], thresholds=(1,),
                   progress=False)
    torch.testing.assert_close(seen[0], torch.full((1, 1, 24, 24), 1.0), atol=1e-4, rtol=0)  # (0.75 - 0.5) / 0.25
    model._forward_pre_hooks.clear()
