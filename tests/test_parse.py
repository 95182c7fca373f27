"""Objective strings (opt.loss.parse) and the reference losses of opt.loss.style: exact values."""
import numpy as np
import pytest
import torch

import optim as opt
from optim.loss import (
    ChannelActivation,
    ContentLoss,
    DeepDream,
    NeuronActivation,
    ReferenceDistance,
    StyleLoss,
    Transparency,
    gram_matrix,
    parse,
)


@pytest.fixture
def acts():
    torch.manual_seed(0)
    return {"blocks.10": torch.randn(2, 5, 4, 6), "fc": torch.randn(2, 7)}


# --- parse ------------------------------------------------------------------------------------------------
def test_parse_builds_the_three_kinds(acts):
    dream = parse("blocks.10")
    assert isinstance(dream, DeepDream) and dream.target == "blocks.10"
    assert torch.equal(dream(acts), acts["blocks.10"] ** 2)

    channel = parse("blocks.10:3")
    assert type(channel) is ChannelActivation and channel.channel_index == 3
    assert torch.equal(channel(acts), acts["blocks.10"][:, 3])
    assert torch.equal(parse("fc:6")(acts), acts["fc"][:, 6])

    neuron = parse("blocks.10:2:5:1", batch_index=1)
    assert isinstance(neuron, NeuronActivation) and (neuron.x, neuron.y) == (5, 1)
    # x is the column, y the row
    assert torch.equal(neuron(acts), acts["blocks.10"][1:2, 2, 1:2, 5:6])


def test_parse_batch_index_and_algebra(acts):
    pos_neg = parse("blocks.10:4", batch_index=0) - parse("blocks.10:4", batch_index=1)
    a = acts["blocks.10"]
    expected = a[0, 4].mean() - a[1, 4].mean()
    assert torch.allclose(pos_neg(acts), expected)
    assert parse("blocks.10:1", batch_index=[0, 2]).batch_index == (0, 2)


@pytest.mark.parametrize("bad", ["", ":3", "a:b", "a:1:2", "a:1:2:3:4", "a:-1", "a:1:x:2", "a:1.5"])
def test_parse_rejects_malformed_strings(bad):
    with pytest.raises(ValueError, match="objective|channel|position"):
        parse(bad)


def test_parse_rejects_non_strings():
    with pytest.raises(TypeError, match="str"):
        parse(3)


def test_parse_checks_the_layer_against_a_model(tiny_net):
    with pytest.raises(ValueError, match="no module named 'conv3'.*conv2"):
        parse("conv3:1", model=tiny_net)
    assert parse("conv2:1", model=tiny_net).target == "conv2"


# --- style / reference losses -----------------------------------------------------------------------------
def test_gram_matrix_matches_numpy():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    flat = x.numpy().reshape(2, 3, 20)
    expected = np.einsum("nci,ndi->ncd", flat, flat) / 20
    np.testing.assert_allclose(gram_matrix(x).numpy(), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="positions"):
        gram_matrix(torch.randn(2, 3))


def test_style_loss_value_and_size_independence(acts):
    style = torch.randn(1, 5, 8, 8, dtype=torch.float64)
    loss = StyleLoss("blocks.10", style)
    x = acts["blocks.10"].double()
    expected = ((gram_matrix(x) - gram_matrix(style)) ** 2).mean() / (gram_matrix(style) ** 2).mean()
    assert torch.allclose(loss({"blocks.10": x}), expected)
    # zero at the style itself, and at a tiled copy (Gram matrices are normalized by the positions)
    assert loss({"blocks.10": style}).item() == 0.0
    assert loss({"blocks.10": style.repeat(1, 1, 2, 3)}).abs().item() < 1e-12


def test_content_loss_is_mse_and_broadcasts_a_batch_one_reference(acts):
    x = acts["blocks.10"]
    ref = torch.randn(1, 5, 4, 6)
    assert torch.allclose(ContentLoss("blocks.10", ref)(acts), ((x - ref) ** 2).mean())
    assert ContentLoss("blocks.10", x)(acts).item() == 0.0
    with pytest.raises(ValueError, match=r"does not match.*\(2, 5, 4, 6\)"):
        ContentLoss("blocks.10", torch.randn(1, 5, 3, 6))(acts)
    with pytest.raises(TypeError, match="tensor"):
        ContentLoss("blocks.10", [1.0])


def test_reference_distance_is_relative_per_image(acts):
    x = acts["blocks.10"]
    ref = torch.randn(2, 5, 4, 6)
    got = ReferenceDistance("blocks.10", ref)(acts)
    expected = (x - ref).reshape(2, -1).norm(dim=1) / ref.reshape(2, -1).norm(dim=1)
    assert got.shape == (2,) and torch.allclose(got, expected, atol=1e-6)
    zero = ReferenceDistance("blocks.10", ref)({"blocks.10": torch.zeros_like(ref)})
    assert torch.allclose(zero, torch.ones(2))
    assert ReferenceDistance("blocks.10", ref)({"blocks.10": ref}).max().item() < 1e-3
    # scale-free: scaling both by 10 keeps the value
    scaled = ReferenceDistance("blocks.10", 10 * ref)({"blocks.10": 10 * x})
    assert torch.allclose(scaled, expected, atol=1e-5)


def test_reference_losses_follow_the_activation_dtype():
    ref = torch.randn(1, 2, 3, 3)
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    assert ContentLoss("a", ref)({"a": x}).dtype == torch.float64


def test_transparency_values():
    rgba = torch.rand(3, 4, 5, 5)
    rgba[0, 3] = 1.0
    rgba[1, 3] = 0.0
    rgba[2, 3] = 0.5
    got = Transparency("img")({"img": rgba})
    assert torch.allclose(got, torch.tensor([0.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match="RGBA"):
        Transparency("img")({"img": torch.rand(1, 3, 5, 5)})


def test_feature_inversion_on_tiny_net_lowers_the_content_loss(tiny_net):
    target_image = torch.rand(1, 3, 16, 16)
    ref = opt.optimization.run_to_targets(tiny_net, [tiny_net.conv2], target_image)[tiny_net.conv2].detach()
    loss = ContentLoss("conv2", ref)
    image = opt.images.NaturalImage((16, 16))
    obj = opt.InputOptimization(tiny_net, -loss, image, torch.nn.Identity())
    # the summarized loss is -mean(objective) = the content loss itself
    start = obj.loss().item()
    obj.optimize(opt.optimization.n_steps(60, show_progress=False), lr=0.1)
    end = obj.loss().item()
    assert end < 0.2 * start


def test_exports():
    for name in ("parse", "gram_matrix", "StyleLoss", "ContentLoss", "ReferenceDistance", "Transparency"):
        assert name in opt.loss.__all__
