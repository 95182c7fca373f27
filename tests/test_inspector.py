"""ModelInspector: layer listing, weight views, checkpoint swapping, channel surgery, activation streaming."""
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import optim as opt
from optim.activations import ActivationMap, iter_activations, record_activations
from optim.analysis import ModelInspector
from optim.models import LayerInfo


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fresh_like(model, seed):
    torch.manual_seed(seed)
    return type(model)().eval()


class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def test_layer_info_lists_weighted_layers_with_channels(tiny_net):
    info = ModelInspector(tiny_net).layer_info()
    assert info == [LayerInfo("conv1", "Conv2d", None, 4), LayerInfo("conv2", "Conv2d", None, 6),
                    LayerInfo("fc", "Linear", None, 5)]
    # the one layer table of optim; with an input size one forward pass fills in the output shapes
    assert LayerInfo is opt.models.LayerInfo
    assert ModelInspector(tiny_net).layer_info((2, 3, 8, 8)) == [
        LayerInfo("conv1", "Conv2d", (2, 4, 8, 8), 4), LayerInfo("conv2", "Conv2d", (2, 6, 8, 8), 6),
        LayerInfo("fc", "Linear", (2, 5), 5)]
    nested = ModelInspector(BNNet()).layer_info()
    assert [(r.name, r.type, r.channels) for r in nested] == [
        ("features.0", "Conv2d", 4), ("features.1", "BatchNorm2d", 4), ("head", "Linear", 2)]


def test_weight_access_by_item_and_attribute(tiny_net):
    insp = ModelInspector(tiny_net)
    w = insp.weights["conv2"].w
    assert torch.equal(w, tiny_net.conv2.weight) and not w.requires_grad
    assert w.data_ptr() == tiny_net.conv2.weight.data_ptr()  # a view, not a copy
    assert torch.equal(insp.weights.fc.b, tiny_net.fc.bias)
    net = BNNet()
    bn = ModelInspector(net).weights
    assert bn.features["0"].b is None
    assert torch.equal(bn["features.1"].w, net.features[1].weight)
    assert torch.equal(getattr(bn.features, "1").b, net.features[1].bias)
    with pytest.raises(ValueError, match="conv3"):
        insp.weights["conv3"]
    with pytest.raises(AttributeError):
        insp.weights.nope
    with pytest.raises(AttributeError, match="no weight"):
        insp.weights["relu1"].w


def test_switch_to_round_trip_keeps_parameter_objects(tiny_net, tmp_path):
    insp = ModelInspector(tiny_net)
    original = snapshot(tiny_net)
    param_ids = [id(p) for p in tiny_net.parameters()]
    other = fresh_like(tiny_net, seed=7)
    torch.save(original, tmp_path / "orig.pt")
    assert insp.switch_to(other) is insp
    for k, v in other.state_dict().items():
        assert torch.equal(tiny_net.state_dict()[k], v)
    assert not torch.equal(tiny_net.conv1.weight, original["conv1.weight"])
    insp.switch_to(str(tmp_path / "orig.pt"))
    for k, v in original.items():
        assert torch.equal(tiny_net.state_dict()[k], v)
    assert [id(p) for p in tiny_net.parameters()] == param_ids  # swapped in place, nothing rebuilt
    # a wrapped state dict and a plain dict both work
    torch.save({"state_dict": other.state_dict()}, tmp_path / "wrapped.pt")
    insp.switch_to(tmp_path / "wrapped.pt")
    assert torch.equal(tiny_net.fc.bias, other.fc.bias)
    insp.switch_to(original)
    assert torch.equal(tiny_net.fc.bias, original["fc.bias"])
    with pytest.raises(RuntimeError):
        insp.switch_to({"conv1.weight": original["conv1.weight"]})
    with pytest.raises(TypeError):
        insp.switch_to(42)


@pytest.mark.parametrize("mode", ["both", "weight", "bias"])
def test_set_weights_changes_exactly_the_named_channel(tiny_net, mode):
    insp = ModelInspector(tiny_net)
    other = fresh_like(tiny_net, seed=3)
    before = snapshot(tiny_net)
    insp.set_weights("conv2:4", other, mode=mode)
    after = snapshot(tiny_net)
    changed_w = mode in ("both", "weight")
    changed_b = mode in ("both", "bias")
    for key in before:
        if key == "conv2.weight":
            expected = before[key].clone()
            if changed_w:
                expected[4] = other.conv2.weight[4]
            assert torch.equal(after[key], expected)
            assert changed_w == (not torch.equal(after[key], before[key]))
        elif key == "conv2.bias":
            expected = before[key].clone()
            if changed_b:
                expected[4] = other.conv2.bias[4]
            assert torch.equal(after[key], expected)
        else:
            assert torch.equal(after[key], before[key]), key


def test_set_weights_constant_whole_layer_and_several_channels(tiny_net):
    insp = ModelInspector(tiny_net)
    before = snapshot(tiny_net)
    insp.set_weights("conv1", 0)
    assert torch.count_nonzero(tiny_net.conv1.weight) == 0 and torch.count_nonzero(tiny_net.conv1.bias) == 0
    assert torch.equal(tiny_net.conv2.weight, before["conv2.weight"])
    insp.set_weights("fc:1,3", 2.5, mode="bias")
    assert tiny_net.fc.bias.tolist() == pytest.approx(
        [before["fc.bias"][0].item(), 2.5, before["fc.bias"][2].item(), 2.5, before["fc.bias"][4].item()])
    assert torch.equal(tiny_net.fc.weight, before["fc.weight"])
    # the model's output follows: zeroing conv1 makes conv2's input relu(0) = 0, so only conv2.bias is left
    out = tiny_net.conv2(tiny_net.relu1(tiny_net.conv1(torch.rand(1, 3, 5, 5))))
    torch.testing.assert_close(out, before["conv2.bias"].view(1, -1, 1, 1).expand(1, 6, 5, 5))


def test_set_weights_errors(tiny_net):
    insp = ModelInspector(tiny_net)
    with pytest.raises(ValueError, match="mode"):
        insp.set_weights("conv1", 0, mode="weights")
    with pytest.raises(ValueError, match="out of range"):
        insp.set_weights("conv1:4", 0)
    with pytest.raises(ValueError, match="bad channel"):
        insp.set_weights("conv1:x", 0)
    with pytest.raises(ValueError, match="conv9"):
        insp.set_weights("conv9", 0)
    with pytest.raises(ValueError, match="no bias"):
        ModelInspector(BNNet()).set_weights("features.0", 0, mode="bias")
    with pytest.raises(ValueError, match="shape"):
        insp.set_weights("conv1", _wider())
    with pytest.raises(TypeError):
        insp.set_weights("conv1", "zero")


def _wider():
    net = nn.Module()
    net.conv1 = nn.Conv2d(3, 8, 3)
    return net


def test_stream_over_loader_equals_one_big_batch(tiny_net):
    tiny_net.train()
    flags = [p.requires_grad for p in tiny_net.parameters()]
    images = torch.rand(10, 3, 6, 6)
    loader = DataLoader(TensorDataset(images, torch.arange(10)), batch_size=4)
    insp = ModelInspector(tiny_net)
    acts = insp.stream(loader, layers=["conv1", "relu2", tiny_net.fc])
    assert isinstance(acts, ActivationMap) and list(acts) == ["conv1", "relu2", "fc"]
    assert acts[tiny_net.fc] is acts["fc"] and insp.activations is acts
    with torch.no_grad():
        tiny_net.eval()
        c1 = tiny_net.conv1(images)
        r2 = tiny_net.relu2(tiny_net.conv2(tiny_net.relu1(c1)))
        logits = tiny_net(images)
        tiny_net.train()
    torch.testing.assert_close(acts["conv1"], c1)
    torch.testing.assert_close(insp.activations["relu2"], r2)
    torch.testing.assert_close(insp.neurons["fc"], logits)
    # the model is left as it was
    assert tiny_net.training and [p.requires_grad for p in tiny_net.parameters()] == flags
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in tiny_net.modules())
    # a tensor split into batches gives the same result; default layers are layer_info's
    acts2 = insp.stream(images, batch_size=3)
    assert set(acts2) == {"conv1", "conv2", "fc"}
    torch.testing.assert_close(acts2["fc"], logits)
    assert insp.stream(images, layers=["conv1"], batch_size=3, max_batches=2)["conv1"].shape[0] == 6
    with pytest.raises(KeyError, match="recorded"):
        insp.activations["conv2"]


def test_stream_follows_model_dtype(tiny_net):
    net = tiny_net.double()
    x = torch.rand(5, 3, 4, 4)
    acts = ModelInspector(net).stream(x, layers=["fc"], batch_size=2)
    assert acts["fc"].dtype == torch.float64 and acts["fc"].shape == (5, 5)
    with torch.no_grad():
        torch.testing.assert_close(acts["fc"], net(x.double()))  # batches of 2, 2, 1 put back in order


def test_stream_keeps_the_negative_values_of_a_conv_an_inplace_relu_overwrites():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(inplace=True), nn.Conv2d(6, 5, 3))
    images = torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    acts = ModelInspector(net).stream(images, layers=["0", net[2]], batch_size=4)
    with torch.no_grad():  # by hand, without hooks
        conv = net[0](images)
        top = net[2](torch.relu(conv))
    assert float(conv.min()) < -0.1
    torch.testing.assert_close(acts["0"], conv, rtol=1e-6, atol=1e-6)  # batches of 4, 4, 2 against one of 10
    torch.testing.assert_close(acts[net[2]], top, rtol=1e-6, atol=1e-6)
    assert list(acts) == ["0", "2"]


def test_stream_stop_early_false_reads_each_batch_at_its_own_last_call(looping_net):
    """looping_net's block runs 2x on the first batch and 3x on the second: by default the second batch is read at
    call 2 (the counts the first showed), with stop_early=False at its own last call."""
    batches = [torch.full((1, 4), 0.25), torch.full((1, 4), 0.5)]
    last = torch.cat([record_activations(looping_net, "block", b)["block"] for b in batches])
    quick = torch.cat([acts["block"] for acts in iter_activations(looping_net, "block", batches)])
    assert torch.equal(quick[:1], last[:1]) and not torch.equal(quick[1:], last[1:])
    insp = ModelInspector(looping_net)
    assert torch.equal(insp.stream(batches, layers=["block"], stop_early=False)["block"], last)
    assert torch.equal(insp.stream(batches, layers=["block"])["block"], quick)
    # a tensor split into batches of 1 goes the same way
    assert torch.equal(insp.stream(torch.cat(batches), layers=["block"], batch_size=1, stop_early=False)["block"],
                       last)


def test_stream_map_knows_the_model_so_losses_read_the_same_layout_as_record_activations():
    # a channels-last MLP (ConvNeXt / Swin style): without the model, a loss would guess NCHW for (N, H, W, C)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.GELU())
    x = torch.randn(2, 5, 5, 8)
    loss = opt.loss.ChannelActivation("1", 0)
    streamed = ModelInspector(model).stream(x, layers=["1"])
    assert streamed.model is model
    with torch.no_grad():
        by_hand = model(x)[..., 0]  # channel 0 of the last (channels) dim
    torch.testing.assert_close(loss(streamed), by_hand)
    torch.testing.assert_close(loss(streamed), loss(record_activations(model, ["1"], x)))
