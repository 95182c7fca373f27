"""Every loss on every reader's output: one mapping type (ActivationMap), whatever the key type.

Each reader of activations in optim (the activation core's own, the compatibility names, and those of
analysis / recipes) is asked for two layers of a tiny deterministic conv net; every Loss class exported by
``optim.loss`` that reads layers is then built twice, its targets given as modules and as dotted names, and both
must give the same value on the reader's output, equal to the value on a plain dict built by hand by calling the
submodules (no hooks).
"""
import inspect
from typing import Callable, Dict

import pytest
import torch
import torch.nn as nn

import optim as opt
import optim.loss as L
from optim.activations import ActivationMap, ActivationRecorder, iter_activations, record_activations
from optim.analysis import ModelInspector
from optim.analysis._data import stream_activations
from optim.recipes._common import reference_activations

# Loss classes of optim.loss that are not evaluated here, each with the reason.
NOT_LAYER_LOSSES = {
    "Loss": "the abstract base class",
    "BaseLoss": "the base class of single-objective losses (each subclass is tested)",
    "CompositeLoss": "built by the loss algebra from other losses (tested through ChannelActivation - DeepDream)",
    "Transparency": "reads the image parameterization's alpha channel ([N, 4, H, W] RGBA), not a layer",
    "ClassLogit": "reads a classifier's [batch, classes] output, which these conv layers are not (it refuses them); "
                  "tested on logits, dict and ModelOutput classifiers in test_inputs_outputs.py",
}

# Losses that differentiate one recorded activation with respect to another: they need a reader that keeps
# the autograd graph (requires_grad=True); on the detached readers they are not evaluated.
NEEDS_GRAPH = {"FacetLoss"}



def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _builders(conv1, conv2) -> Dict[str, Callable[[], L.Loss]]:
    """Each layer-reading loss with simple valid arguments; ``conv1``/``conv2`` are modules or dotted names."""
    vec6 = torch.randn(6, generator=_g(1))
    return {
        "LayerActivation": lambda: L.LayerActivation(conv2),
        "ChannelActivation": lambda: L.ChannelActivation(conv2, 1),
        "NeuronActivation": lambda: L.NeuronActivation(conv2, 2, x=1, y=2),
        "DeepDream": lambda: L.DeepDream(conv2),
        "ActivationInterpolation": lambda: L.ActivationInterpolation(conv1, 1, conv2, 2),
        "TotalVariation": lambda: L.TotalVariation(conv2),
        "L1": lambda: L.L1(conv2, constant=0.1),
        "L2": lambda: L.L2(conv2, constant=0.1),
        "L2Mean": lambda: L.L2Mean(conv2, channel_index=1),
        "Diversity": lambda: L.Diversity(conv2),
        "Alignment": lambda: L.Alignment(conv2),
        "Direction": lambda: L.Direction(conv2, vec6, cossim_pow=1.0),
        "NeuronDirection": lambda: L.NeuronDirection(conv2, vec6, x=1, y=1),
        "AngledNeuronDirection": lambda: L.AngledNeuronDirection(conv2, vec6, x=1, y=1),
        "TensorDirection": lambda: L.TensorDirection(conv2, torch.randn(1, 6, 3, 3, generator=_g(2))),
        "ActivationWeights": lambda: L.ActivationWeights(conv2, torch.randn(6, generator=_g(3))),
        "VectorLoss": lambda: L.VectorLoss(conv2, vec6),
        "FacetLoss": lambda: L.FacetLoss(conv2, conv1, vec6, torch.rand(4, generator=_g(4))),
        "StyleLoss": lambda: L.StyleLoss(conv2, torch.rand(1, 6, 8, 8, generator=_g(5))),
        "ContentLoss": lambda: L.ContentLoss(conv2, torch.rand(2, 6, 8, 8, generator=_g(6))),
        "ReferenceDistance": lambda: L.ReferenceDistance(conv2, torch.rand(2, 6, 8, 8, generator=_g(7))),
    }


def _exported_loss_classes():
    return sorted(
        name for name in L.__all__
        if inspect.isclass(getattr(L, name)) and issubclass(getattr(L, name), L.Loss)
    )


LOSSES = sorted(_builders("conv1", "conv2"))


def test_every_exported_loss_class_is_evaluated_or_listed_with_a_reason():
    assert set(LOSSES) | set(NOT_LAYER_LOSSES) == set(_exported_loss_classes())
    assert not set(LOSSES) & set(NOT_LAYER_LOSSES)


# -- the readers: name -> (function (net, targets, x) -> activations, keeps the autograd graph) ---------------------
def _recorder_run(net, targets, x):
    with ActivationRecorder(net, targets) as rec:
        return rec.run(x)


def _stream(net, targets, x):
    return ModelInspector(net).stream(x, layers=targets, batch_size=len(x))


READERS = {
    "models.collect_activations": (lambda net, t, x: opt.models.collect_activations(net, t, x), False),
    "models.collect_activations(requires_grad)": (
        lambda net, t, x: opt.models.collect_activations(net, t, x, requires_grad=True), True),
    "optimization.run_to_targets": (lambda net, t, x: opt.optimization.run_to_targets(net, t, x), True),
    "activations.record_activations": (lambda net, t, x: record_activations(net, t, x), False),
    "activations.record_activations(requires_grad)": (
        lambda net, t, x: record_activations(net, t, x, requires_grad=True), True),
    "activations.iter_activations": (lambda net, t, x: next(iter_activations(net, t, [(x, 0)])), False),
    "activations.ActivationRecorder.run": (_recorder_run, True),
    "analysis.ModelInspector.stream": (_stream, False),
    "analysis._data.stream_activations": (lambda net, t, x: next(stream_activations(net, t, x, len(x))), False),
    "recipes.reference_activations": (lambda net, t, x: reference_activations(net, t, x), False),
}


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
            self.relu1 = nn.ReLU(inplace=True)  # overwrites conv1's output, as in torchvision
            self.conv2 = nn.Conv2d(4, 6, 3, padding=1)

        def forward(self, x):
            return self.conv2(self.relu1(self.conv1(x)))

    return Tiny().eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=_g(0))


def _by_hand(net, x, graph):
    """The two activations by calling the submodules (no hooks); conv1's before the in-place ReLU."""
    with torch.set_grad_enabled(graph):
        c1 = net.conv1(x)
        c2 = net.conv2(torch.relu(c1))
    return c1, c2


@pytest.mark.parametrize("asked_by", ["name", "module"])
@pytest.mark.parametrize("reader", sorted(READERS))
def test_reader_returns_an_activation_map_of_the_true_outputs(net, x, reader, asked_by):
    read, graph = READERS[reader]
    targets = ["conv1", "conv2"] if asked_by == "name" else [net.conv1, net.conv2]
    acts = read(net, targets, x.clone().requires_grad_(graph))
    assert isinstance(acts, ActivationMap), type(acts)
    c1, c2 = _by_hand(net, x, False)
    for key, want in (("conv1", c1), (net.conv1, c1), ("conv2", c2), (net.conv2, c2)):
        assert torch.equal(acts[key].detach(), want), key
    assert float(acts["conv1"].detach().min()) < 0  # the conv's own output, not the in-place ReLU's
    assert acts["conv2"].requires_grad == graph
    assert not any(m._forward_hooks for m in net.modules())


@pytest.mark.parametrize("loss_name", LOSSES)
@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_loss_on_every_reader_by_module_and_by_name(net, x, reader, loss_name):
    read, graph = READERS[reader]
    if loss_name in NEEDS_GRAPH and not graph:
        pytest.skip(f"{loss_name} needs the autograd graph; {reader} returns detached activations")
    inp = x.clone().requires_grad_(graph)
    acts = read(net, ["conv1", "conv2"], inp)
    assert isinstance(acts, ActivationMap)
    by_module = _builders(net.conv1, net.conv2)[loss_name]()
    by_name = _builders("conv1", "conv2")[loss_name]()
    got_module, got_name = by_module(acts), by_name(acts)
    assert torch.equal(got_module, got_name)
    # the same number as on a plain dict built by hand, keyed like the loss's targets
    c1, c2 = _by_hand(net, inp, graph)
    assert torch.equal(by_module({net.conv1: c1, net.conv2: c2}).detach(), got_module.detach())
    assert torch.equal(by_name({"conv1": c1, "conv2": c2}).detach(), got_name.detach())


@pytest.mark.parametrize("reader", sorted(READERS))
def test_activation_losses_give_exact_numbers_on_every_reader(net, x, reader):
    read, graph = READERS[reader]
    acts = read(net, [net.conv2, "conv1"], x.clone().requires_grad_(graph))
    _, c2 = _by_hand(net, x, False)
    for conv2 in (net.conv2, "conv2"):
        assert torch.equal(L.LayerActivation(conv2)(acts).detach(), c2)
        assert torch.equal(L.ChannelActivation(conv2, 1)(acts).detach(), c2[:, 1])
        assert torch.equal(L.NeuronActivation(conv2, 2, x=1, y=2)(acts).detach(), c2[:, 2, 2:3, 1:2])  # x: column 1, y: row 2
        assert torch.equal(L.ChannelActivation(conv2, 4, batch_index=1)(acts).detach(), c2[1:2, 4])
        composite = L.ChannelActivation(conv2, 1) - L.DeepDream(conv2)
        assert torch.equal(composite(acts).detach(), c2[:, 1].mean() - c2.pow(2).mean())
