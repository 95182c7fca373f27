"""Loss objectives and their algebra: exact values on hand-made activations."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import optim as opt
from optim.loss import (
    ActivationInterpolation,
    ActivationWeights,
    Alignment,
    AngledNeuronDirection,
    ChannelActivation,
    DeepDream,
    Direction,
    Diversity,
    FacetLoss,
    L1,
    L2,
    L2Mean,
    LayerActivation,
    NeuronActivation,
    NeuronDirection,
    TensorDirection,
    TotalVariation,
    VectorLoss,
    default_loss_summarize,
    sum_loss_list,
)


@pytest.fixture
def acts():
    torch.manual_seed(0)
    return {"a": torch.randn(3, 4, 5, 6), "b": torch.randn(3, 2, 3, 3), "logits": torch.randn(3, 10)}


def test_channel_and_layer_activation(acts):
    assert torch.equal(ChannelActivation("a", 2)(acts), acts["a"][:, 2])
    assert torch.equal(ChannelActivation("a", 2, batch_index=1)(acts), acts["a"][1:2, 2])
    assert torch.equal(ChannelActivation("a", 2, batch_index=[1, 3])(acts), acts["a"][1:3, 2])
    assert torch.equal(ChannelActivation("logits", 7)(acts), acts["logits"][:, 7])
    assert torch.equal(LayerActivation("b", batch_index=0)(acts), acts["b"][:1])
    assert torch.equal(DeepDream("b")(acts), acts["b"] ** 2)


def test_neuron_activation_centre_and_position(acts):
    # 5 rows x 6 columns: the centre is row 2, column 3 (Lucid's convention: x = column, y = row).
    assert torch.equal(NeuronActivation("a", 1)(acts), acts["a"][:, 1, 2:3, 3:4])
    assert torch.equal(NeuronActivation("a", 1, x=5, y=0)(acts), acts["a"][:, 1, 0:1, 5:6])
    with pytest.raises(ValueError, match=r"^x 6 is out of range for layer 'a', which has 6 columns \(valid: 0\.\.5\)$"):
        NeuronActivation("a", 1, x=6)(acts)
    with pytest.raises(ValueError, match=r"^y 5 is out of range for layer 'a', which has 5 rows"):
        NeuronActivation("a", 1, y=5)(acts)


def test_channel_out_of_range_names_the_layer_value_and_range(acts):
    with pytest.raises(ValueError, match=r"^channel_index 4 is out of range for layer 'a', which has 4 channels "
                                         r"\(valid: 0\.\.3\)$"):
        ChannelActivation("a", 4)(acts)
    relu = nn.ReLU()
    # a 2-D activation (a linear layer, logits) counts outputs
    with pytest.raises(ValueError, match=r"channel_index 10 is out of range for layer ReLU, which has 10 outputs"):
        ChannelActivation(relu, 10)({relu: acts["logits"]})
    # the direction families name the same unit (one rule, layouts.unit_name)
    with pytest.raises(ValueError, match=r"^the direction has 3 values but ReLU has 10 outputs$"):
        Direction(relu, torch.ones(3))({relu: acts["logits"]})
    with pytest.raises(ValueError, match=r"^the direction has 3 values but ReLU has 10 outputs$"):
        AngledNeuronDirection(relu, torch.ones(3))({relu: acts["logits"]})
    with pytest.raises(ValueError, match=r"^the direction has 3 values but a has 4 channels$"):
        NeuronDirection("a", torch.ones(3))(acts)
    with pytest.raises(ValueError, match=r"^the direction has 3 values but a has 4 channels$"):
        FacetLoss("a", "b", torch.ones(3), torch.ones(2))(acts)
    with pytest.raises(ValueError, match=r"^facet_weights has 3 values but b has 2 channels$"):
        FacetLoss("a", "b", torch.ones(4), torch.ones(3))(acts)
    with pytest.raises(ValueError, match=r"^channel_index must be >= 0, got -1$"):
        ChannelActivation("a", -1)
    with pytest.raises(ValueError, match=r"^batch_index 5 is out of range for layer 'a', which has 3 images "
                                         r"\(valid: -3\.\.2\)$"):
        ChannelActivation("a", 0, batch_index=5)(acts)
    with pytest.raises(ValueError, match=r"batch_index -4 is out of range .* 3 images \(valid: -3\.\.2\)"):
        ChannelActivation("a", 0, batch_index=-4)(acts)
    with pytest.raises(TypeError, match=r"^batch_index must be None, an int or a \[start, end\] pair of ints, "
                                        r"got '0' \(str\)$"):
        ChannelActivation("a", 0, batch_index="0")
    with pytest.raises(ValueError, match=r"\[start, end\] pair of ints, got \[0, 1, 2\] \(3 values\)"):
        ChannelActivation("a", 0, batch_index=[0, 1, 2])
    with pytest.raises(TypeError, match=r"^batch_index end must be an int, got 1.5 \(float\)$"):
        ChannelActivation("a", 0, batch_index=[0, 1.5])
    with pytest.raises(ValueError, match=r"batch_index \[2, 1\] selects no image of the batch of 3"):
        ChannelActivation("a", 0, batch_index=[2, 1])(acts)
    with pytest.raises(ValueError, match=r"batch_index end 4 is out of range .* \(valid: -3\.\.3\)"):
        ChannelActivation("a", 0, batch_index=[0, 4])(acts)


def test_negative_batch_index_means_what_python_indexing_means(acts):
    x = acts["a"]
    assert torch.equal(ChannelActivation("a", 2, batch_index=-1)(acts), x[-1:, 2])
    assert torch.equal(ChannelActivation("a", 2, batch_index=-3)(acts), x[0:1, 2])
    assert torch.equal(LayerActivation("a", batch_index=[-2, 3])(acts), x[-2:3])
    assert torch.equal(LayerActivation("a", batch_index=[0, -1])(acts), x[0:-1])
    assert repr(ChannelActivation("a", 2, batch_index=-1)) == "ChannelActivation(a, 2, batch_index=-1)"
    assert repr(LayerActivation("a", batch_index=(0, -1))) == "LayerActivation(a, batch_index=[0, -1])"


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: ChannelActivation("a", None), r"^channel_index must be an int, got None \(NoneType\)$"),
        (lambda: ChannelActivation("a", True), r"^channel_index must be an int, got True \(bool\)$"),
        (lambda: ChannelActivation("a", 1.0), r"^channel_index must be an int, got 1.0 \(float\)$"),
        (lambda: NeuronActivation("a", None), r"^channel_index must be an int, got None"),
        (lambda: NeuronActivation("a", 0, x="1"), r"^x must be an int, got '1' \(str\)$"),
        (lambda: NeuronDirection("a", torch.ones(4), channel_index=1.5), r"^channel_index must be an int"),
        (lambda: ActivationInterpolation("a", 0, "b", "1"), r"^channel_index_two must be an int"),
        (lambda: L2Mean("a", channel_index=False), r"^channel_index must be an int, got False"),
        (lambda: ActivationWeights("a", torch.ones(4), wx=None), r"^wx must be an int, got None"),
    ],
)
def test_indices_of_the_wrong_type_are_refused_at_construction(build, message):
    with pytest.raises(TypeError, match=message):
        build()


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: L2Mean("a", channel_index=-1), r"^channel_index must be >= 0, got -1$"),
        (lambda: NeuronActivation("a", -2), r"^channel_index must be >= 0, got -2$"),
        (lambda: NeuronActivation("a", 0, y=-1), r"^y must be >= 0, got -1$"),
        (lambda: NeuronDirection("a", torch.ones(4), x=-1), r"^x must be >= 0, got -1$"),
        (lambda: NeuronDirection("a", torch.ones(4), channel_index=-1), r"^channel_index must be >= 0, got -1$"),
        (lambda: AngledNeuronDirection("a", torch.ones(4), y=-3), r"^y must be >= 0, got -3$"),
        (lambda: ActivationInterpolation("a", -1, "b", 0), r"^channel_index_one must be >= 0, got -1$"),
        (lambda: ActivationWeights("a", torch.ones(4), neuron=True, x=-1), r"^x must be >= 0, got -1$"),
        (lambda: ActivationWeights("a", torch.ones(4), wy=0), r"^wy \(the window's size\) must be >= 1, got 0$"),
    ],
)
def test_negative_indices_are_refused_at_construction(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_every_index_is_checked_against_the_activation_when_called(acts):
    with pytest.raises(ValueError, match=r"^channel_index 2 is out of range for layer 'b', which has 2 channels"):
        L2Mean("b", channel_index=2)(acts)
    with pytest.raises(ValueError, match=r"^channel_index 4 is out of range for layer 'a'"):
        NeuronDirection("a", torch.ones(4), channel_index=4)(acts)
    with pytest.raises(ValueError, match=r"^channel_index 2 is out of range for layer 'b'"):
        ActivationInterpolation("a", 0, "b", 2)(acts)
    with pytest.raises(ValueError, match=r"^x 6 is out of range for layer 'a', which has 6 columns"):
        AngledNeuronDirection("a", torch.ones(4), x=6)(acts)
    with pytest.raises(ValueError, match=r"the window x=4, y=0, wx=3, wy=1 does not fit"):
        ActivationWeights("a", torch.ones(4), neuron=True, x=4, y=0, wx=3)(acts)
    x = acts["a"]
    window = ActivationWeights("a", torch.ones(4), neuron=True, x=3, y=1, wx=3, wy=2)(acts)
    assert torch.equal(window, x[:, :, 1:3, 3:6])


def test_check_index_is_the_one_validator():
    from optim.loss import check_index

    assert check_index(np.int64(3), "channel_index") == 3
    assert check_index(-2, "batch_index", size=5, unit="images", negative=True) == 3
    assert check_index(5, "batch_index end", size=5, unit="images", negative=True, stop=True) == 5
    with pytest.raises(ValueError, match=r"^channel_index 7 is out of range for the activation, which has 7 "
                                         r"channels \(valid: 0\.\.6\)$"):
        check_index(7, "channel_index", size=7)


def test_algebra_values_and_targets(acts):
    a, b = ChannelActivation("a", 0), ChannelActivation("b", 1)
    va, vb = acts["a"][:, 0], acts["b"][:, 1]
    assert torch.allclose((a + b)(acts), va.mean() + vb.mean())
    assert torch.allclose((a - b)(acts), va.mean() - vb.mean())
    assert torch.allclose((a * b)(acts), va.mean() * vb.mean())
    assert torch.allclose((a / b)(acts), va.mean() / vb.mean())
    assert torch.allclose((a ** b)(acts), va.mean() ** vb.mean(), equal_nan=True)
    assert torch.equal((2 * a)(acts), 2 * va)
    assert torch.equal((a * 2)(acts), va * 2)
    assert torch.equal((1 - a)(acts), 1 - va)
    assert torch.equal((a - 1)(acts), va - 1)
    assert torch.equal((a / 2)(acts), va / 2)
    assert torch.equal((2 / a)(acts), 2 / va)
    assert torch.equal((a ** 2)(acts), va ** 2)
    assert torch.equal((2 ** a)(acts), 2 ** va)
    assert torch.equal((-a)(acts), -va)
    assert torch.equal(abs(a)(acts), va.abs())
    combo = a + b - 0.5 * ChannelActivation("a", 3)
    assert combo.targets == ["a", "b"]
    assert "ChannelActivation(a, 0)" in repr(combo) and "0.5" in repr(combo)
    with pytest.raises(TypeError, match="str"):
        a + "x"


def test_module_targets_union_by_identity():
    m1, m2 = nn.ReLU(), nn.ReLU()
    loss = ChannelActivation(m1, 0) + ChannelActivation(m2, 0) + NeuronActivation(m1, 1)
    assert len(loss.targets) == 2 and loss.targets[0] is m1 and loss.targets[1] is m2


def test_sum_loss_list_hundreds_of_losses(acts):
    losses = [ChannelActivation("a", i % 4, batch_index=i % 3) for i in range(600)]
    total = sum_loss_list(losses)(acts)
    expected = sum(float(acts["a"][i % 3, i % 4].mean()) for i in range(600))
    assert math.isclose(float(total), expected, rel_tol=1e-5)
    assert sum_loss_list(losses).targets == ["a"]
    with pytest.raises(ValueError):
        sum_loss_list([])


def test_default_summarize():
    assert float(default_loss_summarize(torch.tensor([1.0, 3.0]))) == -2.0


def test_total_variation_and_norms_match_numpy(acts):
    x = acts["b"].numpy()
    tv = np.abs(np.diff(x, axis=2)).sum() + np.abs(np.diff(x, axis=3)).sum()
    assert math.isclose(float(TotalVariation("b")(acts)), tv, rel_tol=1e-5)
    assert math.isclose(float(L1("b", constant=0.5)(acts)), np.abs(x - 0.5).sum(), rel_tol=1e-5)
    assert math.isclose(float(L2("b")(acts)), math.sqrt((x ** 2).sum() + 1e-6), rel_tol=1e-5)
    assert math.isclose(float(L2Mean("b", channel_index=1)(acts)), ((x[:, 1] - 0.5) ** 2).mean(), rel_tol=1e-5)


def test_diversity_matches_pairwise_loop(acts):
    x = acts["a"]
    flat = x.reshape(3, 4, -1)
    grams = [(f @ f.t()).flatten() for f in flat]
    grams = [g / g.norm() for g in grams]
    expected = -sum(float((grams[i] * grams[j]).sum()) for i in range(3) for j in range(3) if i != j) / 3
    assert math.isclose(float(Diversity("a")(acts)), expected, rel_tol=1e-5)


def test_alignment_matches_loop(acts):
    x = acts["a"]
    expected = 0.0
    for d in range(1, 5):
        for i in range(x.shape[0] - d):
            expected += float(((x[i] - x[i + d]) ** 2).mean()) / 2.0 ** d
    assert math.isclose(float(Alignment("a")(acts)), -expected, rel_tol=1e-5)


def test_activation_interpolation_matches_loop(acts):
    one, two = acts["a"][:, 1], acts["b"][:, 0]
    w = [0.0, 0.5, 1.0]
    expected = sum((1 - w[n]) * float(one[n].mean()) + w[n] * float(two[n].mean()) for n in range(3))
    assert math.isclose(float(ActivationInterpolation("a", 1, "b", 0)(acts)), expected, rel_tol=1e-5)


def test_direction_family(acts):
    x = acts["a"]
    vec = torch.tensor([1.0, -2.0, 0.5, 3.0])
    dot = (x * vec.view(1, 4, 1, 1)).sum(1)
    assert torch.allclose(Direction("a", vec)(acts), dot)
    cos = torch.nn.functional.cosine_similarity(x, vec.view(1, 4, 1, 1), dim=1).clamp(min=0.1)
    assert torch.allclose(Direction("a", vec, cossim_pow=2)(acts), dot * cos ** 2, atol=1e-6)
    assert torch.allclose(NeuronDirection("a", vec)(acts), dot[:, 2:3, 3:4])
    assert torch.allclose(
        NeuronDirection("a", vec, channel_index=3)(acts), 3.0 * x[:, 3, 2:3, 3:4]
    )
    pattern = torch.randn(1, 4, 3, 2)
    tdir = (x[:, :, 1:4, 2:4] * pattern).sum(1)
    assert torch.allclose(TensorDirection("a", pattern)(acts), tdir, atol=1e-6)
    w = ActivationWeights("a", vec)(acts)
    assert torch.allclose(w, x * vec.view(1, 4, 1, 1))
    angled = AngledNeuronDirection("a", vec, cossim_pow=0)(acts)
    assert torch.allclose(angled, x[:, :, 2, 3] * vec)
    proj = VectorLoss("a", vec)(acts)
    relu_dot = (torch.relu(x) * vec.view(1, 4, 1, 1)).sum(1)
    assert torch.allclose(proj, relu_dot.mean(dim=(1, 2)), atol=1e-6)
    assert torch.allclose(VectorLoss("a", vec, activation_fn=None)(acts), dot.mean(dim=(1, 2)), atol=1e-6)
    with pytest.raises(ValueError, match="3 values .* 4 channels"):
        Direction("a", torch.ones(3))(acts)


def test_facet_loss_gradient_gate():
    torch.manual_seed(0)
    layer = torch.randn(2, 3, 4, 4, requires_grad=True)
    conv = nn.Conv2d(3, 5, 1)
    ultimate = conv(layer)
    vec = torch.randn(5)
    weights = torch.rand(3)
    acts = {"u": ultimate, "l": layer}
    value = FacetLoss("u", "l", vec, weights)(acts)
    # the ReLU acts on the ultimate activation, before the projection on vec (captum, Goh et al. 2021)
    grad = torch.autograd.grad((torch.relu(ultimate).movedim(1, -1) @ vec).mean(dim=(1, 2)).sum(), layer,
                               retain_graph=True)[0]
    expected = (layer * torch.relu(grad) * weights.view(1, 3, 1, 1)).sum()
    assert torch.allclose(value, expected, atol=1e-5)
    assert FacetLoss("u", "l", vec, weights).targets == ["u", "l"]


def test_reexported_through_opt():
    assert opt.loss.ChannelActivation is ChannelActivation


def test_channel_projection_applies_the_relu_to_the_activations_first():
    from optim.loss.direction import channel_projection

    # relu([-1, 2]) . [1, 1] = 2; projecting first would give relu(1) = 1
    act = torch.tensor([[-1.0, 2.0]])
    vec = torch.tensor([1.0, 1.0])
    assert channel_projection(act, vec).tolist() == [2.0]
    assert VectorLoss("v", vec)({"v": act}).tolist() == [2.0]
    spatial = act.view(1, 2, 1, 1).expand(1, 2, 3, 3)
    assert VectorLoss("v", vec)({"v": spatial}).tolist() == [2.0]
    # [C, K] directions: one value per column
    two = torch.tensor([[1.0, -1.0], [1.0, 0.5]])
    assert channel_projection(act, two).tolist() == [[2.0, 1.0]]


def test_facet_loss_batch_index_cuts_the_gradient_too():
    torch.manual_seed(0)
    layer = torch.randn(3, 3, 4, 4, requires_grad=True)
    ultimate = nn.Conv2d(3, 5, 1)(layer)
    vec, weights = torch.randn(5), torch.rand(3)
    acts = {"u": ultimate, "l": layer}
    grad = torch.autograd.grad((torch.relu(ultimate).movedim(1, -1) @ vec).mean(dim=(1, 2)).sum(), layer,
                               retain_graph=True)[0]
    expected = (layer[-1:] * torch.relu(grad[-1:]) * weights.view(1, 3, 1, 1)).sum()
    value = FacetLoss("u", "l", vec, weights, batch_index=-1)(acts)
    assert torch.allclose(value, expected, atol=1e-5)


def test_a_layout_read_for_one_module_is_not_reused_for_another_module_sharing_its_tensor():
    # A Sequential's output is its last child's tensor (the same object once the recorder knows no in-place op
    # follows). The LayerNorm over the last dim reads as NHWC, the Sequential holding a 4-channel conv as NCHW:
    # each loss must get its own module's layout whichever loss was evaluated first in the pass.
    from optim.activations import ActivationRecorder

    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.LayerNorm(8))
    x = torch.arange(3 * 5 * 8.0).reshape(1, 3, 5, 8) / 100
    block, norm = ChannelActivation(net, 1), ChannelActivation(net[1], 1)
    with torch.no_grad(), ActivationRecorder(net, [net, net[1]]) as rec:
        rec.run(x)  # the first pass learns that nothing writes into the outputs in place
        acts = rec.run(x)
        assert acts[net] is acts[net[1]]
        out = acts[net]
        assert torch.equal(norm(acts), out[..., 1])  # channels-last: unit 1 is the last dim's entry 1
        assert torch.equal(block(acts), out[:, 1])  # channels-first: channel 1 is dim 1
        acts = rec.run(x)
        assert torch.equal(block(acts), out[:, 1])
        assert torch.equal(norm(acts), out[..., 1])


def test_activation_weights_refuses_a_window_without_neuron():
    # x / y / wx / wy describe the window of neuron=True; without it they were ignored and the whole layer weighted
    act = torch.arange(2 * 3 * 3.0).reshape(1, 2, 3, 3)
    weights = torch.tensor([1.0, 0.0])
    assert ActivationWeights("a", weights, neuron=True, x=2, y=0)({"a": act}).flatten().tolist() == [2.0, 0.0]
    assert ActivationWeights("a", weights)({"a": act}).sum().item() == 36.0  # the whole layer, as documented
    for window in ({"x": 2}, {"y": 0}, {"wx": 2}, {"wy": 3}):
        with pytest.raises(ValueError, match=f"{next(iter(window))}=.*neuron=True"):
            ActivationWeights("a", weights, **window)


def test_angled_neuron_direction_refuses_a_position_on_a_layer_without_positions():
    # on (N, C) logits x / y were ignored and every image's whole vector was read
    vec = torch.tensor([1.0, 0.0, 0.0])
    logits = {"l": torch.arange(6.0).reshape(2, 3)}
    assert AngledNeuronDirection("l", vec, cossim_pow=0)(logits).tolist() == [[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]
    for position in ({"x": 2}, {"y": 0}):
        with pytest.raises(ValueError, match=r"a neuron position needs a 4-D .* shape \(2, 3\)"):
            AngledNeuronDirection("l", vec, cossim_pow=0, **position)(logits)
