"""Uniform siblings: one shared signature per family, checked with ``inspect.signature``, and its behaviour.

- every image parameterization: ``(size, channels, batch, init, *, knobs...)``;
- every loss class: targets and required values positional, ``batch_index`` and every knob keyword-only;
- every model factory of the registry: ``(pretrained=False, *, progress=True, model_path=None, **kwargs)``
  with ``num_classes``.
"""
import inspect

import pytest
import torch
import torch.nn as nn

import optim as opt

P = inspect.Parameter

# Wrappers built from ready parameterizations take those, not a geometry (see ImageParameterization).
_IMAGE_WRAPPERS = {"StackImage", "SimpleTensorParameterization"}


def _exported_subclasses(module, base):
    found = {}
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) and issubclass(obj, base):
            found[name] = obj
    return found


def _keyword_only_after(params, count):
    """The names among params[count:] that are not keyword-only (``*args``/``**kwargs`` aside)."""
    return [p.name for p in params[count:] if p.kind not in (P.KEYWORD_ONLY, P.VAR_KEYWORD)]


# --- the three families --------------------------------------------------------------------------------
def test_every_parameterization_takes_size_channels_batch_init_then_keyword_only():
    classes = _exported_subclasses(opt.images, opt.images.ImageParameterization)
    classes.pop("ImageParameterization", None)
    assert {"PixelImage", "FFTImage", "LaplacianImage", "NaturalImage", "PhaseImage", "CPPNImage",
            "SharedImage", "StackImage"} <= set(classes)
    wrong = {}
    for name, cls in sorted(classes.items()):
        params = list(inspect.signature(cls).parameters.values())
        if name in _IMAGE_WRAPPERS:
            problems = _keyword_only_after(params, 1)
        else:
            head = [(p.name, p.kind) for p in params[:4]]
            problems = [] if head == [(n, P.POSITIONAL_OR_KEYWORD) for n in ("size", "channels", "batch", "init")] \
                else [f"starts with {[p.name for p in params[:4]]}"]
            problems += _keyword_only_after(params, 4)
        if problems:
            wrong[name] = problems
    assert not wrong, f"parameterizations off the shared signature: {wrong}"


def test_every_loss_class_takes_batch_index_and_knobs_keyword_only():
    classes = _exported_subclasses(opt.loss, opt.loss.Loss)
    assert len(classes) == 26, sorted(classes)
    with_batch_index, wrong = [], {}
    for name, cls in sorted(classes.items()):
        params = list(inspect.signature(cls).parameters.values())
        if name == "ActivationInterpolation":
            # its four arguments default to None only so that captum's keyword names (target1=...) can stand
            # in for them; leaving one out still raises (tests/test_captum_parity.py)
            params = [p for p in params if p.kind is not P.VAR_KEYWORD]
            assert [p.name for p in params] == ["target_one", "channel_index_one", "target_two", "channel_index_two",
                                                "layout"]
            assert params[-1].kind is P.KEYWORD_ONLY
            continue
        problems = [p.name for p in params if p.default is not P.empty and p.kind is not P.KEYWORD_ONLY]
        problems += [p.name for p in params if p.kind in (P.VAR_POSITIONAL, P.POSITIONAL_ONLY)]
        if "batch_index" in {p.name for p in params}:
            with_batch_index.append(name)
            if inspect.signature(cls).parameters["batch_index"].kind is not P.KEYWORD_ONLY:
                problems.append("batch_index")
        if problems:
            wrong[name] = problems
    assert not wrong, f"loss arguments with defaults that are not keyword-only: {wrong}"
    # every single-target loss reads part of the batch; the abstract base, the interpolation (across the
    # batch) and the algebra do not
    assert set(classes) - set(with_batch_index) == {"Loss", "ActivationInterpolation", "CompositeLoss"}
    # every loss on a layer takes its layout keyword-only (optim.layouts); ClassLogit reads [batch, classes] only
    assert "layout" not in inspect.signature(opt.loss.ClassLogit).parameters
    for name in set(classes) - {"Loss", "CompositeLoss", "ClassLogit"}:
        assert inspect.signature(classes[name]).parameters["layout"].kind is P.KEYWORD_ONLY, name
    # the required arguments, positional, as captum spells them
    assert list(inspect.signature(opt.loss.ChannelActivation).parameters)[:2] == ["target", "channel_index"]
    assert list(inspect.signature(opt.loss.NeuronActivation).parameters)[:2] == ["target", "channel_index"]
    assert list(inspect.signature(opt.loss.ClassLogit).parameters) == [
        "target", "class_index", "batch_index", "num_classes"]
    assert list(inspect.signature(opt.loss.FacetLoss).parameters)[:4] == [
        "ultimate_target", "layer_target", "vec", "facet_weights"]
    parse = inspect.signature(opt.loss.parse).parameters
    assert [p.kind for p in parse.values()] == [P.POSITIONAL_OR_KEYWORD] + [P.KEYWORD_ONLY] * 3


def test_every_registered_factory_has_the_shared_signature():
    names = opt.models.list_models()
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "googlenet", "inceptionv1",
            "vgg16"} <= set(names)
    expected = [("pretrained", P.POSITIONAL_OR_KEYWORD, False), ("progress", P.KEYWORD_ONLY, True),
                ("model_path", P.KEYWORD_ONLY, None)]
    for name in names:
        params = list(inspect.signature(opt.models.model_info(name).factory).parameters.values())
        assert [(p.name, p.kind, p.default) for p in params[:3]] == expected, name
        # num_classes is reachable: through **kwargs (documented) or named
        assert params[-1].kind is P.VAR_KEYWORD or "num_classes" in {p.name for p in params}, name
        assert "num_classes" in opt.models.model_info(name).factory.__doc__, name
    get_model = inspect.signature(opt.models.get_model).parameters
    assert [(p.name, p.kind) for p in get_model.values()] == [
        ("name", P.POSITIONAL_OR_KEYWORD), ("pretrained", P.POSITIONAL_OR_KEYWORD), ("kwargs", P.VAR_KEYWORD)]
    assert get_model["pretrained"].default is False


# --- losses: the one index validator -------------------------------------------------------------------
def test_a_negative_channel_index_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"^channel_index must be >= 0, got -1$"):
        opt.loss.L2Mean("image", channel_index=-1)
    with pytest.raises(ValueError, match=r"^channel_index must be >= 0, got -1$"):
        opt.loss.ChannelActivation("mixed4a", -1)
    with pytest.raises(ValueError, match=r"^channel_index must be >= 0, got -3$"):
        opt.loss.NeuronActivation("mixed4a", -3)


def test_a_none_channel_index_is_refused_at_construction():
    with pytest.raises(TypeError, match=r"^channel_index must be an int, got None \(NoneType\)$"):
        opt.loss.ChannelActivation(nn.ReLU(), None)
    with pytest.raises(TypeError, match=r"^channel_index must be an int, got None \(NoneType\)$"):
        opt.loss.NeuronActivation("mixed4a", None)


def test_a_negative_batch_index_selects_like_python():
    x = torch.arange(24.0).reshape(3, 2, 2, 2)  # image n, channel c: 8n + 4c + 0..3
    acts = {"layer": x}
    assert opt.loss.ChannelActivation("layer", 1, batch_index=-1)(acts).flatten().tolist() == [20.0, 21.0, 22.0, 23.0]
    assert opt.loss.ChannelActivation("layer", 0, batch_index=-3)(acts).flatten().tolist() == [0.0, 1.0, 2.0, 3.0]
    assert opt.loss.LayerActivation("layer", batch_index=[-2, 3])(acts).sum().item() == float(x[1:].sum()) == 248.0
    assert opt.loss.NeuronActivation("layer", 1, x=0, y=1, batch_index=-2)(acts).item() == 14.0
    with pytest.raises(ValueError, match=r"^batch_index -4 is out of range for layer 'layer', which has 3 images "
                                         r"\(valid: -3\.\.2\)$"):
        opt.loss.ChannelActivation("layer", 0, batch_index=-4)(acts)


# --- model factories: num_classes -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "googlenet",
                                  "inceptionv1", "vgg16"])
def test_num_classes_gives_that_many_outputs(name):
    # on the meta device: shapes only, with no time spent drawing random weights (VGG16 has 134M)
    with torch.device("meta"):
        model = opt.models.get_model(name, num_classes=7).eval()
        out = model(torch.empty(2, 3, 224, 224))
    assert out.shape == (2, 7)


def test_pretrained_lite0_with_num_classes_keeps_the_backbone_and_gets_a_fresh_head(pretrained_lite0):
    model = opt.models.get_model("efficientnet_lite0", pretrained=True, num_classes=7).eval()
    assert model.classifier.out_features == 7 and model.classifier.in_features == 1280
    pretrained = pretrained_lite0.state_dict()
    state = model.state_dict()
    assert set(state) == set(pretrained)
    for key, value in state.items():
        if key.startswith("classifier."):
            assert value.shape[0] == 7, key
        else:
            assert torch.equal(value, pretrained[key]), key
    assert model.transform_input  # the pretrained defaults still apply
    with torch.no_grad():
        x = torch.rand(1, 3, 64, 64)
        assert model(x).shape == (1, 7)
        # the features before the head are those of the pretrained model
        torch.testing.assert_close(model.head(model.blocks(model.stem(model._transform_input(x)))),
                                   pretrained_lite0.head(pretrained_lite0.blocks(pretrained_lite0.stem(
                                       pretrained_lite0._transform_input(x)))))
    # the same count as the weights keeps the pretrained head
    same = opt.models.efficientnet_lite0(pretrained=True, num_classes=1000)
    assert torch.equal(same.classifier.weight, pretrained_lite0.classifier.weight)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"num_classes": 0}, ValueError, r"^num_classes must be >= 1, got 0$"),
        ({"num_classes": "7"}, TypeError, r"^num_classes must be an int, got '7' \(str\)$"),
        ({"num_classes": True}, TypeError, r"^num_classes must be an int, got True \(bool\)$"),
    ],
)
def test_bad_num_classes_are_refused_by_every_factory(kwargs, error, message):
    for name in ("efficientnet_lite0", "googlenet", "vgg16"):
        with pytest.raises(error, match=message), torch.device("meta"):
            opt.models.get_model(name, **kwargs)
