"""googlenet_places365 and CLIP ResNet-50x4's towers: captum's published architectures, real download code
(checked against state dicts these tests save and serve through a fake torch.hub; nothing downloads), labels,
input transforms and the [0, 1] input warning."""
import math
import shutil
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import optim.models as om
from optim.models import (
    CLIP_ResNet50x4Image,
    CLIP_ResNet50x4Text,
    INCEPTIONV1_PLACES365_CLASSES,
    InceptionV1Places365,
    clip_resnet50x4_image,
    clip_resnet50x4_text,
    googlenet_places365,
)
from optim.models._hub import file_sha256
from optim.models.clip import CLIP_IMAGE_URL, CLIP_TEXT_URL, AttentionPool2d, Bottleneck
from optim.models.googlenet_places365 import PLACES365_URL


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """torch.hub with its cache in ``tmp_path`` and a download that copies ``served[url]`` (a saved file)."""
    served, calls = {}, []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append(url)
        shutil.copyfile(served[url], dst)

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    return served, calls


def _serve(served, url, state_dict, path):
    torch.save(state_dict, path)
    served[url] = path
    return file_sha256(str(path))


def _scalar_state_dict(module: nn.Module):
    """Every tensor of ``module``'s state dict as one distinct value expanded to its shape: the real keys and
    shapes in a file of a few kilobytes."""
    return {
        key: torch.full((), 0.001 * (i + 1), dtype=value.dtype).expand(value.shape)
        for i, (key, value) in enumerate(module.state_dict().items())
    }


# --- googlenet_places365 ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def places():
    torch.manual_seed(0)
    return InceptionV1Places365(aux_logits=True, transform_input=False).eval()


def test_places365_labels_are_the_dataset_categories_in_order():
    labels = INCEPTIONV1_PLACES365_CLASSES
    assert len(labels) == 365 and len(set(labels)) == 365
    assert labels[0] == "/a/airfield" and labels[319] == "/s/street" and labels[-1] == "/z/zen_garden"
    assert list(labels) == sorted(labels)  # categories_places365.txt is alphabetical
    assert om.model_info("googlenet_places365").labels is labels


def test_places365_architecture_has_captum_layer_names_and_caffe_channel_counts(places):
    keys = set(places.state_dict())
    assert {"conv1.weight", "mixed4a.conv_3x3.weight", "aux1.conv.weight", "aux1.fc1.weight", "aux2.fc2.bias",
            "fc.weight"} <= keys
    assert places.mixed4a.conv_3x3.out_channels == 208 and places.mixed4b.conv_1x1.in_channels == 512
    assert places.mixed5a.conv_5x5_reduce.out_channels == 32
    assert places.fc.out_features == 365 and places.aux1.fc2.out_features == 365
    assert not any(k.startswith("_mean") for k in keys)  # the mean pixel is not a weight
    out = places(torch.rand(2, 3, 96, 96))
    assert isinstance(out, tuple) and [o.shape for o in out] == [(2, 365)] * 3


def test_places365_downloads_checks_and_drops_the_auxiliary_heads(fake_hub, tmp_path, places):
    served, calls = fake_hub
    _serve(served, PLACES365_URL, places.state_dict(), tmp_path / "published.pth")
    with pytest.warns(UserWarning, match="no SHA-256 is published"):
        model = googlenet_places365(pretrained=True, progress=False).eval()
    assert calls == [PLACES365_URL]
    assert PLACES365_URL == "https://pytorch-tutorial-assets.s3.amazonaws.com/captum/inceptionv1_places365.pth"
    assert model.aux1 is None and model.aux2 is None
    assert isinstance(model.conv1_relu, om.RedirectedReluLayer) and model.transform_input
    x = torch.rand(1, 3, 80, 80)
    with torch.no_grad():
        # the loaded logits are the saved network's
        ref = InceptionV1Places365(aux_logits=True, transform_input=True).eval()
        ref.load_state_dict(places.state_dict())
        torch.testing.assert_close(model(x), ref(x)[0])
    # cached: a second call downloads nothing; the recorded digest is checked; captum's aux default on request
    with_aux = googlenet_places365(pretrained=True, aux_logits=True).eval()
    assert calls == [PLACES365_URL] and len(with_aux(x)) == 3
    assert torch.equal(with_aux.aux2.fc2.weight, places.aux2.fc2.weight)
    fresh = googlenet_places365(pretrained=True, num_classes=10, aux_logits=True).eval()
    assert fresh.fc.out_features == 10 and fresh.aux1.fc2.out_features == 10
    assert torch.equal(fresh.mixed5b.pool_proj.weight, places.mixed5b.pool_proj.weight)


def test_places365_model_path_and_strict_keys(tmp_path, places):
    path = tmp_path / "places.pth"
    torch.save(places.state_dict(), path)
    model = googlenet_places365(model_path=str(path), aux_logits=True)
    assert torch.equal(model.fc.weight, places.fc.weight)
    with pytest.raises(ValueError, match=r"unexpected keys \['aux1"):
        googlenet_places365(model_path=str(path))  # aux_logits=False: the file holds heads the model lacks


def test_places365_transform_input_is_caffe_bgr_minus_the_places_mean(places):
    plain = InceptionV1Places365(aux_logits=False, transform_input=False).eval()
    transformed = InceptionV1Places365(aux_logits=False, transform_input=True).eval()
    state = {k: v for k, v in places.state_dict().items() if not k.startswith("aux")}
    plain.load_state_dict(state)
    transformed.load_state_dict(state)
    x = torch.rand(2, 3, 64, 64)
    mean = torch.tensor([116.7894, 112.6004, 104.0437]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(transformed(x), plain((x * 255 - mean)[:, [2, 1, 0]]))


@pytest.mark.parametrize("factory", ["googlenet", "googlenet_places365", "vgg16", "clip_resnet50x4_image"])
def test_models_with_an_input_transform_warn_when_the_input_leaves_unit_range(factory):
    kwargs = {"transform_input": True}
    if factory == "vgg16":
        kwargs["layers"] = [4, "P"]
    with torch.device("meta") if factory == "clip_resnet50x4_image" else torch.device("cpu"):
        model = getattr(om, factory)(**kwargs).eval()
    if factory == "clip_resnet50x4_image":  # built on meta (no 87M-parameter init); check its input hook
        model.to_empty(device="cpu")
        with pytest.warns(UserWarning, match=r"CLIP_ResNet50x4Image expects input values in \[0, 1\]"):
            model._transform_input(torch.full((1, 3, 8, 8), 2.0))
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            model(torch.rand(1, 3, 64, 64))  # in range: silent
    with pytest.warns(UserWarning, match=r"expects input values in \[0, 1\]"), torch.no_grad():
        model(torch.rand(1, 3, 64, 64) * 255)


def test_the_range_check_costs_no_device_sync_in_a_render_step():
    from optim.models._input_range import warn_if_outside_unit_range

    x = (torch.rand(1, 3, 4, 4) * 5).requires_grad_()
    with pytest.warns(UserWarning):
        warn_if_outside_unit_range(x, "M")  # on the CPU it is checked, gradient or not
    meta = torch.empty(1, 3, 4, 4, device="meta")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_outside_unit_range(meta, "M")  # no values to read: skipped


# --- CLIP ResNet-50x4 ------------------------------------------------------------------------------------
def test_clip_image_factory_downloads_and_loads_captums_keys(fake_hub, tmp_path):
    served, calls = fake_hub
    with torch.device("meta"):
        reference = CLIP_ResNet50x4Image()
    state = _scalar_state_dict(reference)
    assert len(state) == 519 and state["attnpool.positional_embedding"].shape == (82, 2560)
    assert {"layer1.0.downsample.1.weight", "layer4.5.bn3.running_var", "attnpool.c_proj.weight"} <= set(state)
    _serve(served, CLIP_IMAGE_URL, state, tmp_path / "clip_image.pt")
    assert (tmp_path / "clip_image.pt").stat().st_size < 1_000_000  # expanded scalars: the real keys, tiny file
    with pytest.warns(UserWarning, match="no SHA-256 is published"):
        model = clip_resnet50x4_image(pretrained=True, progress=False)
    assert calls == [CLIP_IMAGE_URL] and CLIP_IMAGE_URL.endswith("/captum/clip_resnet50x4_image.pt")
    assert model.transform_input and isinstance(model.relu1, om.RedirectedReluLayer)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key].to(value.dtype)), key
    with torch.device("meta"):
        assert isinstance(clip_resnet50x4_image(use_linear_modules_only=True).layer2[0].relu3, om.SkipLayer)


def test_clip_text_factory_downloads_and_loads(fake_hub, tmp_path):
    served, calls = fake_hub
    small = dict(num_residual_layers=2, vocab_size=500)
    torch.manual_seed(0)
    saved = CLIP_ResNet50x4Text(**small)
    assert {"transformer.1.attn.in_proj_weight", "transformer.1.attn.out_proj.weight", "transformer.0.ln_1.bias",
            "transformer.0.mlp.0.weight", "transformer.0.mlp.2.bias", "token_embedding.weight",
            "positional_embedding", "ln_final.weight", "text_projection", "logit_scale"} <= set(saved.state_dict())
    assert "transformer.0.attn_mask" not in saved.state_dict()  # the causal mask is not a weight (as captum)
    _serve(served, CLIP_TEXT_URL, saved.state_dict(), tmp_path / "clip_text.pt")
    with pytest.warns(UserWarning, match="no SHA-256 is published"):
        model = clip_resnet50x4_text(pretrained=True, **small)
    assert calls == [CLIP_TEXT_URL] and CLIP_TEXT_URL.endswith("/captum/clip_resnet50x4_text.pt")
    assert torch.equal(model.text_projection, saved.text_projection)
    assert math.isclose(float(model.logit_scale.detach().exp()), 1 / 0.07, rel_tol=1e-6)


def test_clip_attention_pool_is_openai_multi_head_attention_of_the_mean_token():
    torch.manual_seed(1)
    pool = AttentionPool2d(3, 8, out_features=4, num_heads=2).eval()
    x = torch.randn(2, 8, 3, 3)
    # OpenAI's formulation: [HW, N, C] with the mean prepended, positional embedding added, and
    # F.multi_head_attention_forward with separate q/k/v projections; the output at the mean token
    seq = x.reshape(2, 8, 9).permute(2, 0, 1)
    seq = torch.cat([seq.mean(dim=0, keepdim=True), seq], dim=0) + pool.positional_embedding[:, None, :]
    expected = F.multi_head_attention_forward(
        query=seq, key=seq, value=seq, embed_dim_to_check=8, num_heads=2,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0, out_proj_weight=pool.c_proj.weight,
        out_proj_bias=pool.c_proj.bias, use_separate_proj_weight=True, training=False, need_weights=False,
    )[0][0]
    torch.testing.assert_close(pool(x), expected)
    # another grid size resizes the positional embedding; the trained grid is used unchanged
    assert torch.equal(pool._positions(3, 3), pool.positional_embedding)
    assert pool._positions(5, 4).shape == (21, 8) and pool(torch.randn(1, 8, 5, 4)).shape == (1, 4)


def test_clip_bottleneck_pools_before_the_strided_projection():
    torch.manual_seed(2)
    block = Bottleneck(8, 4, stride=2).eval()
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        out = F.relu(block.bn1(block.conv1(x)))
        out = F.relu(block.bn2(block.conv2(out)))
        main = block.bn3(block.conv3(F.avg_pool2d(out, 2)))
        shortcut = block.downsample[2](block.downsample[1](F.avg_pool2d(x, 2)))
        torch.testing.assert_close(block(x), F.relu(main + shortcut))
    assert Bottleneck(16, 4).downsample is None  # same width, stride 1: the identity shortcut


def test_clip_text_embedding_is_read_at_the_end_token_with_a_causal_mask():
    torch.manual_seed(3)
    model = CLIP_ResNet50x4Text(num_residual_layers=2, vocab_size=600).eval()
    tokens = torch.zeros(2, 77, dtype=torch.long)
    tokens[:, :4] = torch.tensor([598, 10, 11, 599])  # start, two words, end (the largest id)
    other = tokens.clone()
    other[1, 4:9] = torch.tensor([1, 2, 3, 4, 5])  # words after the end token
    with torch.no_grad():
        a, b = model(tokens), model(other)
    assert a.shape == (2, 640)
    torch.testing.assert_close(a, b)  # causal: what follows the end token cannot change the embedding
    other[1, 2] = 12
    with torch.no_grad():
        assert not torch.allclose(model(other)[1], a[1])  # a word before it does
    with pytest.raises(ValueError, match=r"\[N, 77\] token ids"):
        model(torch.zeros(1, 5, dtype=torch.long))
