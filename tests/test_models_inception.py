"""InceptionV1 (inception5h layout), VGG16 (Caffe layout), weight loading and shipped labels.

All weights are random: the published files cannot be downloaded at test time, so loading goes through
a state dict saved by the test itself (``model_path``) or a monkeypatched ``torch.hub`` download.
"""
import hashlib
import shutil
import warnings
from collections import Counter

import pytest
import torch
import torch.nn as nn

import optim.models as om
from optim.models import (
    IMAGENET_CLASSES,
    INCEPTION5H_CLASSES,
    INCEPTION5H_URL,
    VGG16_CAFFE_URL,
    InceptionV1,
    RedirectedReluLayer,
    VGG16,
    googlenet,
    layer_info,
    vgg16,
)
from optim.models._hub import file_sha256

# (channels, height) of every top-level layer for a 1x3x224x224 input
_INCEPTION_SHAPES = {
    "conv1": (64, 112), "conv1_relu": (64, 112), "pool1": (64, 56), "local_response_norm1": (64, 56),
    "conv2": (64, 56), "conv2_relu": (64, 56), "conv3": (192, 56), "conv3_relu": (192, 56),
    "local_response_norm2": (192, 56), "pool2": (192, 28),
    "mixed3a": (256, 28), "mixed3a_relu": (256, 28), "mixed3b": (480, 28), "mixed3b_relu": (480, 28),
    "pool3": (480, 14),
    "mixed4a": (508, 14), "mixed4a_relu": (508, 14), "mixed4b": (512, 14), "mixed4b_relu": (512, 14),
    "mixed4c": (512, 14), "mixed4c_relu": (512, 14), "mixed4d": (528, 14), "mixed4d_relu": (528, 14),
    "mixed4e": (832, 14), "mixed4e_relu": (832, 14), "pool4": (832, 7),
    "mixed5a": (832, 7), "mixed5a_relu": (832, 7), "mixed5b": (1024, 7), "mixed5b_relu": (1024, 7),
    "avgpool": (1024, 1),
}


@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    return InceptionV1().eval()


def test_inception_every_layer_shape(inception):
    rows = {r.name: r for r in layer_info(inception, (1, 3, 224, 224))}
    top = [r for r in rows if "." not in r]
    assert top == list(_INCEPTION_SHAPES) + ["drop", "fc"]
    for name, (c, h) in _INCEPTION_SHAPES.items():
        assert rows[name].shape == (1, c, h, h), name
    assert rows["drop"].shape == (1, 1024) and rows["fc"].shape == (1, 1008)
    # inside a mixed block: the branches concatenate to the block's channels
    branches = ["conv_1x1", "conv_3x3", "conv_5x5", "pool_proj"]
    assert sum(rows[f"mixed4a.{b}"].channels for b in branches) == 508
    assert rows["mixed4a.conv_3x3_reduce_relu"].shape == (1, 96, 14, 14)
    assert rows["mixed4a.pool"].shape == (1, 480, 14, 14)


def test_inception_state_dict_keys_follow_captum_layout(inception):
    keys = list(inception.state_dict())
    assert keys[:4] == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"]
    assert keys[-2:] == ["fc.weight", "fc.bias"]
    block = [k for k in keys if k.startswith("mixed3a.")]
    assert block == [
        f"mixed3a.{m}.{p}"
        for m in ["conv_1x1", "conv_3x3_reduce", "conv_3x3", "conv_5x5_reduce", "conv_5x5", "pool_proj"]
        for p in ["weight", "bias"]
    ]
    assert len(keys) == 2 * 3 + 9 * 12 + 2
    assert inception.state_dict()["mixed4a.conv_3x3.weight"].shape == (204, 96, 3, 3)
    aux = InceptionV1(aux_logits=True).state_dict()
    assert {"aux1.loss_conv.weight", "aux1.loss_fc.weight", "aux2.loss_classifier.bias"} <= set(aux)


def test_googlenet_round_trip_through_model_path(tmp_path, inception):
    path = tmp_path / "inception.pth"
    torch.save(inception.state_dict(), path)
    model = googlenet(pretrained=True, model_path=str(path)).eval()
    # pretrained defaults
    assert model.transform_input and not model.bgr_transform and model.aux1 is None
    assert isinstance(model.conv1_relu, RedirectedReluLayer) and model.fc.out_features == 1008
    for (k, a), b in zip(inception.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(model(x), inception(x * 255 - 117), atol=1e-5)
    # keyword arguments beat the pretrained defaults
    plain = googlenet(pretrained=True, model_path=str(path), transform_input=False)
    assert not plain.transform_input


def test_googlenet_num_classes_with_pretrained_weights_gets_fresh_heads(tmp_path):
    source = InceptionV1(aux_logits=True).eval()
    path = tmp_path / "inception_aux.pth"
    torch.save(source.state_dict(), path)
    model = googlenet(pretrained=True, model_path=str(path), aux_logits=True, num_classes=7)
    assert model.fc.out_features == 7 and model.fc.in_features == 1024
    assert model.aux1.loss_classifier.out_features == model.aux2.loss_classifier.out_features == 7
    heads = ("fc.", "aux1.loss_classifier.", "aux2.loss_classifier.")
    for key, value in model.state_dict().items():
        if not key.startswith(heads):
            assert torch.equal(value, source.state_dict()[key]), key
    # out_features is InceptionV1's name for the same thing
    assert googlenet(out_features=5).fc.out_features == 5
    with pytest.raises(ValueError, match="num_classes and out_features name the same thing; got 7 and 5"):
        googlenet(num_classes=7, out_features=5)
    # without pretrained, a local file is the user's own: loaded into the model exactly as built
    ten = InceptionV1(out_features=10)
    torch.save(ten.state_dict(), path)
    loaded = googlenet(model_path=str(path), num_classes=10)
    assert torch.equal(loaded.fc.weight, ten.fc.weight)
    with pytest.raises(ValueError, match="fc.weight"):
        googlenet(model_path=str(path), num_classes=7)


def test_googlenet_arguments_after_pretrained_are_keyword_only():
    with pytest.raises(TypeError, match="positional"):
        googlenet(False, True)


def test_googlenet_reports_missing_and_unexpected_keys(tmp_path, inception):
    state = dict(inception.state_dict())
    del state["mixed4b.conv_5x5.bias"]
    state["mixed9z.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"mixed4b\.conv_5x5\.bias.*mixed9z\.weight"):
        googlenet(pretrained=True, model_path=str(path))
    state = dict(inception.state_dict())
    state["fc.bias"] = torch.zeros(5)
    torch.save(state, path)
    with pytest.raises(ValueError, match="fc.bias"):
        googlenet(pretrained=True, model_path=str(path))


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """torch.hub with its cache in ``tmp_path`` and a download that copies ``served[url]`` (a saved file)."""
    served, calls = {}, []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, progress))
        shutil.copyfile(served[url], dst)

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    return served, calls, tmp_path / "hub" / "checkpoints"


def test_file_sha256_matches_hashlib_across_chunks(tmp_path):
    data = bytes(range(256)) * 10_000 + b"tail"  # 2.4 MiB: three 1 MiB chunks
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_sha256(str(path)) == hashlib.sha256(data).hexdigest()


def _serve(served, url, state_dict, path):
    torch.save(state_dict, path)
    served[url] = path
    return file_sha256(str(path))


def test_googlenet_downloads_from_the_published_url_once(fake_hub, tmp_path, inception):
    served, calls, cache = fake_hub
    digest = _serve(served, INCEPTION5H_URL, inception.state_dict(), tmp_path / "published.pth")
    with pytest.warns(UserWarning, match="no SHA-256 is published"):
        model = googlenet(pretrained=True, progress=False)
    assert calls == [(INCEPTION5H_URL, False)] and INCEPTION5H_URL.endswith("inception5h.pth")
    assert torch.equal(model.mixed5b.pool_proj.weight, inception.mixed5b.pool_proj.weight)
    # the first download's digest is recorded and checked on every later load, which reads the cache
    assert (cache / "inception5h.pth.sha256").read_text().strip() == digest
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the note comes with the first download only
        googlenet(pretrained=True)
    assert len(calls) == 1
    assert isinstance(googlenet(), InceptionV1) and len(calls) == 1  # no download without pretrained


def test_a_changed_cached_download_is_rejected_and_deleted(fake_hub, tmp_path, inception):
    served, calls, cache = fake_hub
    _serve(served, INCEPTION5H_URL, inception.state_dict(), tmp_path / "published.pth")
    with pytest.warns(UserWarning):
        googlenet(pretrained=True)
    tampered = dict(inception.state_dict())
    tampered["fc.bias"] = torch.ones(1008)
    torch.save(tampered, cache / "inception5h.pth")
    with pytest.raises(ValueError, match=r"inception5h\.pth.*SHA-256 [0-9a-f]{64}, expected [0-9a-f]{64}.*deleted"):
        googlenet(pretrained=True)
    assert not (cache / "inception5h.pth").exists() and not (cache / "inception5h.pth.sha256").exists()
    with pytest.warns(UserWarning, match="recorded the digest"):
        googlenet(pretrained=True)
    # a damaged cache is caught by its digest before torch.load tries to read it
    (cache / "inception5h.pth").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="expected"):
        googlenet(pretrained=True)
    with pytest.warns(UserWarning, match="recorded the digest"):
        model = googlenet(pretrained=True)  # downloaded again, recorded again
    assert len(calls) == 3 and torch.equal(model.fc.bias, inception.fc.bias)


def test_an_unverifiable_cache_is_downloaded_again(fake_hub, tmp_path, inception):
    served, calls, cache = fake_hub
    # a first download that is no checkpoint (an error page) is dropped, not recorded as the good digest
    served[INCEPTION5H_URL] = tmp_path / "error.html"
    served[INCEPTION5H_URL].write_text("<html>rate limited</html>")
    with pytest.raises(Exception, match="(?i)pickle|load"):
        googlenet(pretrained=True)
    assert not (cache / "inception5h.pth").exists() and not (cache / "inception5h.pth.sha256").exists()
    digest = _serve(served, INCEPTION5H_URL, inception.state_dict(), tmp_path / "published.pth")
    # a cached file with no record (or a half-written one) has nothing to be checked against: fetched afresh
    (cache / "inception5h.pth").write_bytes(b"left by an older version")
    with pytest.warns(UserWarning, match="recorded the digest"):
        googlenet(pretrained=True)
    (cache / "inception5h.pth.sha256").write_text(digest[:20])
    with pytest.warns(UserWarning, match="recorded the digest"):
        model = googlenet(pretrained=True)
    assert len(calls) == 3 and (cache / "inception5h.pth.sha256").read_text().strip() == digest
    assert torch.equal(model.conv1.weight, inception.conv1.weight)


def test_a_pinned_sha256_is_verified(fake_hub, tmp_path, monkeypatch, inception):
    served, calls, cache = fake_hub
    digest = _serve(served, INCEPTION5H_URL, inception.state_dict(), tmp_path / "published.pth")
    assert om.WEIGHTS_SHA256[INCEPTION5H_URL] is None and om.WEIGHTS_SHA256[VGG16_CAFFE_URL] is None
    monkeypatch.setitem(om.WEIGHTS_SHA256, INCEPTION5H_URL, digest.upper())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a pinned digest needs no note
        model = googlenet(pretrained=True)
    assert torch.equal(model.conv1.weight, inception.conv1.weight)
    assert not (cache / "inception5h.pth.sha256").exists()
    monkeypatch.setitem(om.WEIGHTS_SHA256, INCEPTION5H_URL, "0" * 64)
    with pytest.raises(ValueError, match="expected " + "0" * 64):
        googlenet(pretrained=True)
    assert not (cache / "inception5h.pth").exists()
    monkeypatch.setitem(om.WEIGHTS_SHA256, INCEPTION5H_URL, "abc")
    with pytest.raises(ValueError, match="sha256 must be 64 hex characters, got 'abc'"):
        googlenet(pretrained=True)
    assert len(calls) == 1  # the wrong pin was caught on the cached file; a malformed one before any download


def test_inception_linear_variant_has_no_relu_or_max_pool():
    model = InceptionV1(use_linear_modules_only=True).eval()
    nonlinear = (nn.ReLU, nn.MaxPool2d, RedirectedReluLayer)
    assert not [n for n, m in model.named_modules() if isinstance(m, nonlinear)]
    assert isinstance(model.conv1_relu, om.SkipLayer) and isinstance(model.mixed3a.pool, nn.AvgPool2d)
    assert (model.pool1.kernel_size, model.pool1.stride, model.pool1.ceil_mode) == (3, 2, True)
    assert set(model.state_dict()) == set(InceptionV1().state_dict())
    rows = {r.name: r.shape for r in layer_info(model, (1, 3, 64, 64))}
    ref = {r.name: r.shape for r in layer_info(InceptionV1(), (1, 3, 64, 64))}
    assert rows == ref


def test_inception_transform_input_and_bgr(inception):
    bgr = InceptionV1(transform_input=True, bgr_transform=True).eval()
    bgr.load_state_dict(inception.state_dict())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(bgr(x), inception((x * 255 - 117)[:, [2, 1, 0]]), atol=1e-4)
        assert torch.allclose(inception(x[0]), inception(x[:1]))  # CHW input is batched
    with pytest.raises(ValueError, match="NCHW"):
        inception(torch.rand(3, 64))


def test_inception_aux_logits():
    model = InceptionV1(aux_logits=True, out_features=10).eval()
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        out, aux1, aux2 = model(x)
        assert out.shape == aux1.shape == aux2.shape == (1, 10)
        # the branches read mixed4a / mixed4d (after their ReLUs), and the main logits are those of the
        # same net without them
        acts = om.collect_activations(model, ["mixed4a_relu", "mixed4d_relu"], x)
        torch.testing.assert_close(aux1, model.aux1(acts["mixed4a_relu"]))
        torch.testing.assert_close(aux2, model.aux2(acts["mixed4d_relu"]))
        plain = InceptionV1(out_features=10).eval()
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("aux")})
        torch.testing.assert_close(plain(x), out)
    with pytest.raises(ValueError, match="out_features"):
        InceptionV1(out_features=0)


def test_redirected_inception_gradient_reaches_dead_input():
    torch.manual_seed(0)
    model = InceptionV1(replace_relus_with_redirectedrelu=True).eval()
    with torch.no_grad():  # kill conv1: every unit of its ReLU is dead
        model.conv1.bias.fill_(-1e3)
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    model(x)[0, 3].backward()
    assert x.grad.abs().sum() > 0
    plain = InceptionV1().eval()
    plain.load_state_dict(model.state_dict())
    y = x.detach().clone().requires_grad_(True)
    plain(y)[0, 3].backward()
    assert y.grad.abs().sum() == 0


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("kwargs", [{}, {"replace_relus_with_redirectedrelu": True, "aux_logits": True}])
def test_inception_torchscript_matches_eager(kwargs):
    model = InceptionV1(transform_input=True, **kwargs).eval()
    scripted = torch.jit.script(model)
    x = torch.rand(1, 3, 224, 224)
    # optimized_execution(False): the same scripted graph, without the profiling runs and fusion passes
    # that cost seconds on a first call
    with torch.no_grad(), torch.jit.optimized_execution(False):
        eager, script = model(x), scripted(x)
    eager = eager if isinstance(eager, tuple) else (eager,)
    script = script if isinstance(script, tuple) else (script,)
    for a, b in zip(eager, script):
        assert torch.allclose(a, b, atol=1e-5)
    assert type(model.conv1_relu) is (RedirectedReluLayer if kwargs else nn.ReLU)  # model untouched


# --- VGG16 ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return VGG16().eval()


def test_vgg16_layout_and_shapes(vgg):
    convs = [n for n, m in vgg.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs == [f"features.{i}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)]
    assert [n for n, m in vgg.named_modules() if isinstance(m, nn.MaxPool2d)] == [
        f"features.{i}" for i in (4, 9, 16, 23, 30)
    ]
    rows = {r.name: r.shape for r in layer_info(vgg, (1, 3, 64, 64))}
    assert rows["features.3"] == (1, 64, 64, 64) and rows["features.29"] == (1, 512, 4, 4)
    assert rows["features.30"] == (1, 512, 2, 2) and rows["avgpool"] == (1, 512, 7, 7)
    assert set(vgg.state_dict()) == {f"{c}.{p}" for c in convs for p in ("weight", "bias")}


def test_vgg16_caffe_transform(vgg):
    raw = VGG16(transform_input=False).eval()
    raw.load_state_dict(vgg.state_dict())
    x = torch.rand(1, 3, 32, 32)
    mean = torch.tensor([123.68, 116.779, 103.939]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(vgg(x), raw((x * 255 - mean)[:, [2, 1, 0]]), atol=1e-4)
        no_scale = VGG16(scale_input=False).eval()
        no_scale.load_state_dict(vgg.state_dict())
        assert torch.allclose(no_scale(x * 255), vgg(x), atol=1e-3)


def test_vgg16_round_trip_download_and_variants(tmp_path, fake_hub, vgg):
    path = tmp_path / "vgg.pth"
    torch.save(vgg.state_dict(), path)
    loaded = vgg16(pretrained=True, model_path=str(path))
    assert loaded.classifier is None and loaded.transform_input
    assert torch.equal(loaded.features[28].weight, vgg.features[28].weight)
    served, calls, _ = fake_hub
    _serve(served, VGG16_CAFFE_URL, vgg.state_dict(), tmp_path / "published_vgg.pth")
    with pytest.warns(UserWarning, match="no SHA-256"):
        vgg16(pretrained=True)
    assert calls == [(VGG16_CAFFE_URL, True)]
    # the key check fails before any weight is read: build on the meta device, skipping the ~2 s random
    # init of the 124M classifier weights
    with pytest.raises(ValueError, match="classifier.0.weight"), torch.device("meta"):
        vgg16(pretrained=True, model_path=str(path), classifier_logits=True)
    linear = VGG16(use_linear_modules_only=True)
    assert not any(isinstance(m, (nn.ReLU, nn.MaxPool2d)) for m in linear.modules())
    assert sum(isinstance(m, om.SkipLayer) for m in linear.modules()) == 13  # captum's marker of a linear variant
    redirected = VGG16(replace_relus_with_redirectedrelu=True)
    assert sum(isinstance(m, RedirectedReluLayer) for m in redirected.modules()) == 13


def test_vgg16_num_classes_adds_a_fresh_classifier_to_the_pretrained_features(tmp_path, vgg):
    path = tmp_path / "vgg.pth"
    torch.save(vgg.state_dict(), path)
    model = vgg16(pretrained=True, model_path=str(path), num_classes=7).eval()
    assert model.classifier is not None and model.classifier[6].out_features == 7
    for key, value in vgg.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 7)
    with pytest.raises(ValueError, match="num_classes=7 needs the classifier, but classifier_logits=False"):
        vgg16(num_classes=7, classifier_logits=False)


# --- labels --------------------------------------------------------------------------------------------


def test_labels():
    assert len(IMAGENET_CLASSES) == 1000
    assert IMAGENET_CLASSES[285] == "Egyptian cat" and IMAGENET_CLASSES[967] == "espresso"
    assert IMAGENET_CLASSES.index("tench") == 0
    # one label per output of the 1008-way classifier: "dummy", the 1000 classes, 7 never-trained outputs
    assert len(INCEPTION5H_CLASSES) == 1008 == InceptionV1().fc.out_features
    assert INCEPTION5H_CLASSES[0] == "dummy" and INCEPTION5H_CLASSES[8] == "Egyptian cat"
    assert INCEPTION5H_CLASSES[1000] == "dumbbell"
    assert INCEPTION5H_CLASSES[1001:] == [f"unused {i}" for i in range(1001, 1008)]
    # the inception5h labels are the 1000 ImageNet classes in another order (four spelled differently)
    renamed = {"crane": "crane bird", "cannon [ground]": "cannon", "maillot": "maillot tank suit",
               "teddy bear": "teddy"}
    inception = Counter(INCEPTION5H_CLASSES[1:1001])
    for old, new in renamed.items():
        inception[old] -= 1
        inception[new] += 1
    assert +inception == Counter(IMAGENET_CLASSES)
    assert {"IMAGENET_CLASSES", "INCEPTION5H_CLASSES"} <= set(om.__all__)
