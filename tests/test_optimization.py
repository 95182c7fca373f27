"""InputOptimization: the loop, hooks, model state, early exit, target names and stop criteria."""
import pytest
import torch
import torch.nn as nn

import optim as opt
from optim.loss import ChannelActivation, L2, LayerActivation
from optim.optimization import InputOptimization, ModuleOutputsHook, n_steps, plateau, target_value


class Pixels(nn.Module):
    """A bare pixel parameterization, so these tests do not depend on opt.images."""

    def __init__(self, size=8, batch=1, fill=None):
        super().__init__()
        init = torch.full((batch, 3, size, size), fill) if fill is not None else 0.5 + 0.1 * torch.randn(batch, 3, size, size)
        self.image = nn.Parameter(init)

    def forward(self):
        return self.image


def weakest_live_channel(features):
    """The channel with the smallest positive mean (a dead one needs RedirectedReLU, tested with the models)."""
    means = features.mean(dim=(0, 2, 3))
    return int(torch.where(means > 0, means, torch.full_like(means, float("inf"))).argmin())


def no_hooks_anywhere(*roots):
    return all(not m._forward_hooks for r in roots for m in r.modules())


def test_exact_first_step_with_sgd(tiny_net):
    image = Pixels()
    loss = ChannelActivation(tiny_net.conv1, 2)
    obj = InputOptimization(tiny_net, loss, image, nn.Identity())
    x0 = image.image.detach().clone()  # a fixed start for the hand-computed step
    x = x0.clone().requires_grad_(True)
    ref_loss = -tiny_net.conv1(x)[:, 2].mean()
    (grad,) = torch.autograd.grad(ref_loss, x)
    history = obj.optimize(n_steps(1, show_progress=False), optimizer=torch.optim.SGD, lr=0.5)
    assert history.shape == (1,)
    assert torch.allclose(history[0], ref_loss.detach())
    assert torch.allclose(image.image.detach(), x0 - 0.5 * grad, atol=1e-7)


def test_render_raises_target_channel(tiny_net):
    image = Pixels(16)
    initial = tiny_net.relu2(tiny_net.conv2(tiny_net.relu1(tiny_net.conv1(image())))).detach()
    channel = weakest_live_channel(initial)
    loss = ChannelActivation(tiny_net.relu2, channel)
    before = float(initial[:, channel].mean())
    obj = InputOptimization(tiny_net, loss, image, nn.Identity())
    history = obj.optimize(n_steps(64, show_progress=False), lr=0.05)
    after = float(tiny_net.relu2(tiny_net.conv2(tiny_net.relu1(tiny_net.conv1(image())))).detach()[:, channel].mean())
    assert history.shape == (64,)
    # 4.8x (the default optimizer's weight decay pulls the pixels towards 0: 7.5x under plain Adam)
    assert after > 4 * max(before, 1e-3)
    assert float(history[-1]) < float(history[0])


def test_model_state_restored_and_no_grads_on_model(tiny_net):
    tiny_net.train()
    tiny_net.fc.weight.requires_grad_(False)
    seen = {}

    class Spy(nn.Module):
        def forward(self, x):
            seen["training"] = tiny_net.training
            seen["requires_grad"] = tiny_net.conv1.weight.requires_grad
            return x

    obj = InputOptimization(tiny_net, ChannelActivation("conv2", 0), Pixels(), Spy())
    obj.optimize(n_steps(2, show_progress=False))
    assert seen == {"training": False, "requires_grad": False}
    assert tiny_net.training and all(m.training for m in tiny_net.modules())
    assert tiny_net.conv1.weight.requires_grad and not tiny_net.fc.weight.requires_grad
    assert tiny_net.conv1.weight.grad is None
    assert no_hooks_anywhere(tiny_net)


class Boom(Exception):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_hooks_removed_when_loss_raises_mid_optimization(tiny_net, error):
    calls = {"n": 0}
    base = ChannelActivation(tiny_net.conv2, 1)

    class Exploding(opt.loss.Loss):
        targets = property(lambda self: [tiny_net.conv2, tiny_net.conv1])

        def __call__(self, acts):
            calls["n"] += 1
            if calls["n"] == 3:
                raise error()
            return base(acts)

    tiny_net.train()
    obj = InputOptimization(tiny_net, Exploding(), Pixels(), nn.Identity())
    with pytest.raises(error):
        obj.optimize(n_steps(10, show_progress=False))
    assert calls["n"] == 3
    assert no_hooks_anywhere(tiny_net)
    assert tiny_net.training
    assert all(p.requires_grad for p in tiny_net.parameters())


def test_early_exit_skips_the_rest_of_the_network():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)
            self.after = nn.Conv2d(2, 2, 1)
            self.after_calls = 0

        def forward(self, x):
            x = self.conv(x)
            self.after_calls += 1
            return self.after(x)

    net = Net()
    InputOptimization(net, ChannelActivation(net.conv, 0), Pixels(), nn.Identity()).optimize(
        n_steps(3, show_progress=False)
    )
    # only the first pass runs to the end: it learns how often each target is called (the last call counts)
    assert net.after_calls == 1
    InputOptimization(net, ChannelActivation(net.after, 0), Pixels(), nn.Identity()).optimize(
        n_steps(3, show_progress=False)
    )
    assert net.after_calls == 4  # 1 + 3 steps: `after` is the target now


def test_target_names_and_close_match_error(tiny_net):
    obj = InputOptimization(tiny_net, ChannelActivation("relu2", 1) + LayerActivation("conv1"), Pixels(), nn.Identity())
    history = obj.optimize(n_steps(2, show_progress=False))
    assert history.shape == (2,)
    obj = InputOptimization(tiny_net, ChannelActivation("relu_2", 1), Pixels(), nn.Identity())
    with pytest.raises(ValueError, match="closest names: relu2"):
        obj.optimize(n_steps(1, show_progress=False))
    assert no_hooks_anywhere(tiny_net)


def test_unknown_module_target_and_bad_channel(tiny_net):
    with pytest.raises(ValueError, match="not part of the model"):
        InputOptimization(tiny_net, ChannelActivation(nn.ReLU(), 0), Pixels(), nn.Identity()).optimize(1)
    with pytest.raises(ValueError, match="6 channels"):
        InputOptimization(tiny_net, ChannelActivation("conv2", 6), Pixels(), nn.Identity()).optimize(1)
    assert no_hooks_anywhere(tiny_net)
    with pytest.raises(TypeError):
        InputOptimization(tiny_net, "conv2:1", Pixels(), nn.Identity())


def test_targets_on_the_parameterization_without_model():
    image = Pixels()
    obj = InputOptimization(None, -L2(image, constant=0.7), image, nn.Identity())
    obj.optimize(n_steps(200, show_progress=False), lr=0.05)
    assert torch.allclose(image.image.detach(), torch.full_like(image.image, 0.7), atol=0.02)
    obj = InputOptimization(None, -L2("input_param", constant=0.2), image, nn.Identity())
    obj.optimize(n_steps(200, show_progress=False), lr=0.05)
    assert torch.allclose(image.image.detach(), torch.full_like(image.image, 0.2), atol=0.02)


def test_continue_keeps_optimizer_state(tiny_net):
    obj = InputOptimization(tiny_net, ChannelActivation("conv2", 0), Pixels(), nn.Identity())
    obj.optimize(n_steps(3, show_progress=False))
    first = obj._optimizer
    assert first.state[obj.parameters()[0]]["step"] == 3
    history = obj.optimize(n_steps(4, show_progress=False), lr=0.01)
    assert obj._optimizer is first and history.shape == (4,)
    assert first.state[obj.parameters()[0]]["step"] == 7
    # the rate of the call, decayed over the whole render: step 6 (the 7th) ran at 0.01 / sqrt(1 + 6 / 64)
    assert first.param_groups[0]["lr"] == pytest.approx(0.01 / (1 + 6 / 64) ** 0.5, rel=1e-12)
    obj.optimize(n_steps(2, show_progress=False), lr=0.01, lr_decay_steps=None)
    assert first.param_groups[0]["lr"] == 0.01
    before = first.param_groups[0]["lr"]
    with pytest.raises(ValueError, match="lr_decay_steps must be a finite number > 0 or None, got 0"):
        obj.optimize(n_steps(1, show_progress=False), lr=0.5, lr_decay_steps=0)
    assert first.param_groups[0]["lr"] == before  # refused before the optimizer was touched
    with pytest.raises(TypeError, match="lr_decay_steps must be a finite number > 0 or None, got '64'"):
        opt.optimization.defaults.scheduled_lr(0.1, 3, "64")


def test_learning_rate_decays_as_inverse_square_root(tiny_net):
    from optim.optimization.defaults import DEFAULT_LR_DECAY_STEPS

    seen = []
    obj = InputOptimization(tiny_net, ChannelActivation("conv2", 0), Pixels(), nn.Identity())
    obj.optimize(n_steps(3, show_progress=False), lr=0.02,
                 callback=lambda step, loss, images: seen.append(obj._optimizer.param_groups[0]["lr"]))
    obj.optimize(n_steps(2, show_progress=False), lr=0.02,
                 callback=lambda step, loss, images: seen.append(obj._optimizer.param_groups[0]["lr"]))
    expected = [0.02 / (1 + t / DEFAULT_LR_DECAY_STEPS) ** 0.5 for t in range(5)]  # counted across both calls
    assert seen == pytest.approx(expected, rel=1e-12)
    user = torch.optim.SGD(obj.parameters(), lr=0.3)  # an instance keeps its own rate
    obj.optimize(n_steps(2, show_progress=False), optimizer=user)
    assert user.param_groups[0]["lr"] == 0.3
    factory = lambda params: torch.optim.SGD(params, lr=0.2)  # and so does a factory (Lucent's optimizer=)
    obj.optimize(n_steps(3, show_progress=False), optimizer=factory, lr=0.01)
    assert obj._optimizer.param_groups[0]["lr"] == 0.2
    stray = torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    with pytest.raises(ValueError, match="does not hold the image's parameters"):
        obj.optimize(n_steps(1, show_progress=False), optimizer=stray)


def test_render_vis_keeps_a_factory_rate_and_refuses_a_stray_instance(tiny_net):
    rates = []

    class Spy(torch.optim.SGD):
        def step(self, closure=None):
            rates.append(self.param_groups[0]["lr"])
            return super().step(closure)

    opt.render_vis(tiny_net, "conv2:0", image=lambda: opt.render.default_image(16), thresholds=(2, 3),
                   progress=False, optimizer=lambda p: Spy(p, lr=0.1))
    assert rates == [0.1, 0.1, 0.1]
    rates.clear()
    opt.render_vis(tiny_net, "conv2:0", image=lambda: opt.render.default_image(16), thresholds=(3,), progress=False,
                   optimizer=Spy, lr=0.04)
    assert rates == pytest.approx([0.04 / (1 + t / 64) ** 0.5 for t in range(3)], rel=1e-12)
    stray = torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    with pytest.raises(ValueError, match="does not hold the image's parameters"):
        opt.render_vis(tiny_net, "conv2:0", image=lambda: opt.render.default_image(16), thresholds=(3,),
                       progress=False, optimizer=stray)


def test_parameterization_follows_model_dtype(tiny_net):
    tiny_net.double()
    image = Pixels()
    InputOptimization(tiny_net, ChannelActivation("conv2", 0), image, nn.Identity()).optimize(
        n_steps(1, show_progress=False)
    )
    assert image.image.dtype == torch.float64


def test_stop_criteria():
    image = Pixels()
    obj = InputOptimization(None, -L2(image, constant=0.5), image, nn.Identity())
    history = obj.optimize(target_value(0.05, max_steps=500, show_progress=False), lr=0.05)
    assert len(history) < 500 and float(history[-1]) <= 0.05 and float(history[-2]) > 0.05
    image2 = Pixels()
    obj = InputOptimization(None, -L2(image2, constant=0.5), image2, nn.Identity())
    history = obj.optimize(plateau(patience=5, min_delta=1e-3, max_steps=3000, show_progress=False), lr=0.05)
    assert len(history) < 3000
    with pytest.raises(ValueError):
        n_steps(-1)


def test_progress_bar_shows_objective(tiny_net, capsys):
    obj = InputOptimization(tiny_net, ChannelActivation("conv2", 0), Pixels(), nn.Identity())
    obj.optimize(n_steps(9))
    err = capsys.readouterr().err
    assert "9/9" in err and "objective=" in err


def test_module_outputs_hook_context():
    lin = nn.Linear(2, 2)
    with ModuleOutputsHook(lin, [lin]) as hook:
        out = lin(torch.ones(1, 2))
        assert torch.equal(hook.run(torch.ones(1, 2))[lin], out)
    assert not lin._forward_hooks


def test_end_to_end_natural_image_with_transformation_robustness():
    """The README pipeline on a random conv net: 64 steps raise a nearly silent channel by a large factor."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.ReLU()
    ).eval()
    torch.manual_seed(1)
    image = opt.images.NaturalImage((32, 32))
    with torch.no_grad():
        before = net(image()).mean(dim=(0, 2, 3))
    channel = 0  # 0.0044 on the initial image, against 0.05-0.2 for the busiest channels
    obj = opt.InputOptimization(
        net, ChannelActivation("3", channel), image, opt.transforms.TransformationRobustness()
    )
    history = obj.optimize(n_steps(64, show_progress=False), lr=0.05)
    with torch.no_grad():
        after = net(image()).mean(dim=(0, 2, 3))  # evaluated without the transforms
    assert isinstance(image(), opt.ImageTensor)
    assert history.shape == (64,)
    assert float(after[channel]) > 8 * float(before[channel])
    assert no_hooks_anywhere(net, image, obj.transform)


def test_partial_optimizer_class_takes_lr_and_interrupted_renders_continue_the_schedule(tiny_net):
    import functools

    obj = InputOptimization(tiny_net, ChannelActivation("conv2", 0), Pixels(), nn.Identity())
    obj.optimize(n_steps(2, show_progress=False), optimizer=functools.partial(torch.optim.SGD, momentum=0.9), lr=0.5)
    assert obj._optimizer.param_groups[0]["lr"] == pytest.approx(0.5 / (1 + 1 / 64) ** 0.5, rel=1e-12)
    assert obj._optimizer.param_groups[0]["momentum"] == 0.9

    obj = InputOptimization(tiny_net, ChannelActivation("conv2", 0), Pixels(), nn.Identity())

    def interrupt(step, loss, images):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        obj.optimize(n_steps(50, show_progress=False), lr=0.02, callback=interrupt)
    seen = []
    obj.optimize(n_steps(1, show_progress=False), lr=0.02,
                 callback=lambda step, loss, images: seen.append(obj._optimizer.param_groups[0]["lr"]))
    assert seen == [pytest.approx(0.02 / (1 + 5 / 64) ** 0.5, rel=1e-12)]  # 5 steps ran before the interrupt


def test_a_non_finite_loss_seen_at_a_later_check_names_the_step_it_first_appeared(monkeypatch):
    # Off the CPU the loss is read every 16 steps. A loss that turns NaN at step 3 (and makes the image NaN
    # through its gradient) is seen at step 16: the error must still name step 3, and not claim to know the
    # state of the image at that step.
    from optim.loss.base import BaseLoss
    import optim.optimization.input_optimization as io

    class NanAtStep3(BaseLoss):
        calls = 0

        def __call__(self, acts):
            NanAtStep3.calls += 1
            x = self._activation(acts)
            return x * float("nan") if NanAtStep3.calls == 4 else x

    image = Pixels(size=2, fill=0.5)
    obj = InputOptimization(None, NanAtStep3(image), image, nn.Identity())
    monkeypatch.setattr(io, "model_device_dtype", lambda model: (torch.device("cuda"), torch.float32))
    with pytest.raises(FloatingPointError) as err:
        obj.optimize(n_steps(20, show_progress=False), optimizer=torch.optim.SGD, lr=0.1)
    assert "at step 3:" in str(err.value)
    assert "image is finite" not in str(err.value) and "image itself" not in str(err.value)


def test_equal_image_keys_name_the_same_stream_whatever_their_python_type():
    # "equal keys give equal streams": a key read from a numpy array (np.str_, np.int64 inside a tuple, np.float64)
    # or a 0-d tensor equals the plain Python key, so it must seed the same generator
    import numpy as np
    from optim.optimization.streams import image_generators

    import enum

    class Animal(str, enum.Enum):  # equal to "cat", but str() names the member on some Python versions
        CAT = "cat"

    plain = ["cat", (1, 2), 0.5, 3, "cat"]
    other = [np.str_("cat"), (np.int64(1), 2), np.float64(0.5), torch.tensor(3), Animal.CAT]
    for a, b in zip(image_generators(7, plain), image_generators(7, other)):
        assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    # and different keys still give different streams
    x, y = image_generators(7, ["cat", "dog"])
    assert not torch.equal(torch.rand(4, generator=x), torch.rand(4, generator=y))


class _NetWithTransform(nn.Module):
    """A model with its own submodule called ``transform`` (as torchvision's detection models have)."""

    def __init__(self) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.transform(x))


def test_a_model_submodule_named_transform_is_the_models_not_the_render_transform():
    torch.manual_seed(0)
    net = _NetWithTransform().eval()
    image = opt.images.PixelImage(8)
    obj = InputOptimization(net, ChannelActivation("transform.0", 1), image, nn.Identity())
    before = float(obj.loss())
    obj.optimize(n_steps(8, show_progress=False), lr=0.05)
    with torch.no_grad():
        by_hand = net.transform[0](image())[:, 1].mean()
    assert float(obj.loss()) == pytest.approx(-float(by_hand), rel=1e-5)  # the model's conv, read by hand
    assert -float(obj.loss()) > -before + 0.05  # and the render raised it
    obj.cleanup()
    # compiled, and beside a render transform that has a module of the same name, the model's still wins
    compiled = torch.compile(net, backend="eager")
    obj = InputOptimization(compiled, ChannelActivation("transform.0", 1), image, nn.Sequential(nn.AvgPool2d(1)))
    obj.optimize(n_steps(2, show_progress=False))
    obj.cleanup()


def test_a_loss_on_a_module_of_the_render_transform_is_refused():
    net = nn.Sequential(nn.Conv2d(3, 2, 3)).eval()
    smooth = nn.Sequential(nn.Identity(), nn.AvgPool2d(3, 1, 1))
    for target in (smooth[1], "transform.1"):
        obj = InputOptimization(net, LayerActivation(target), opt.images.PixelImage(8), smooth)
        with pytest.raises(ValueError, match=r"the loss targets a module of the transform \(AvgPool2d\)"):
            obj.optimize(n_steps(1, show_progress=False))


def _flatten(x):
    return x.view(x.shape[0], -1)  # a channels-last map refuses this view (channels and pixels merged)


class _ViewHead(nn.Module):
    """A classic hand-written classifier: its feature map is flattened with .view."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(_flatten(torch.relu(self.conv(x))))


class _ViewMean(opt.loss.BaseLoss):
    """A hand-written loss that flattens what it reads with .view."""

    def __call__(self, activations):
        return _flatten(activations[self.target]).mean(1)


class _NormalizedGrad(torch.autograd.Function):
    """A ReLU whose backward pass normalizes each example's gradient, flattened with .view."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        flat = _flatten(grad)
        return (flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)).view(grad.shape)


class _ViewInBackward(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        return self.conv2(_NormalizedGrad.apply(self.conv(x)))


def _input_layouts(model):
    """Whether each call of ``model`` got a channels-last (and not also contiguous) input."""
    layouts = []

    def record(module, args):
        x = args[0]
        layouts.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())

    return layouts, model.register_forward_pre_hook(record)


def test_channels_last_renders_feed_the_model_channels_last_images_with_the_same_result(tiny_net):
    # model_input_layout, opt-in: oneDNN's convolutions skip their layout reorders; the render is the same up to
    # rounding; by default the model gets the transforms' output as it is
    renders, seen = [], []
    for kwargs in ({"channels_last": True}, {}):
        layouts, handle = _input_layouts(tiny_net)
        obj = InputOptimization(tiny_net, ChannelActivation(tiny_net.relu2, 1), opt.render.default_image(16),
                                seed=3, **kwargs)
        obj.optimize(n_steps(6, show_progress=False))
        handle.remove()
        renders.append(obj.input_param().detach())
        seen.append(layouts)
    assert seen == [[True] * 6, [False] * 6]
    torch.testing.assert_close(renders[0], renders[1], atol=2e-5, rtol=0)  # equal up to summation order
    # float64 keeps its layout (its convolutions are slower channels-last)
    layouts, handle = _input_layouts(tiny_net)
    obj = InputOptimization(tiny_net.double(), ChannelActivation(tiny_net.relu2, 1), opt.render.default_image(16),
                            channels_last=True)
    obj.optimize(n_steps(2, show_progress=False))
    handle.remove()
    tiny_net.float()
    assert layouts == [False, False]


@pytest.mark.parametrize("refuses", ["model", "loss", "backward"])
def test_where_the_layout_is_refused_the_step_runs_again_without_it(refuses):
    # a .view over a channels-last feature map, in the model, the loss or a backward function: the first step runs
    # again with the transforms' output as it is, with the same transform draws, and so does every later step, so
    # the render is bit for bit the one made without channels-last
    torch.manual_seed(0)
    if refuses == "model":
        net = _ViewHead().eval()
        loss = ChannelActivation(net.fc, 2)
    elif refuses == "loss":
        net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).eval()
        loss = _ViewMean(net[0])
    else:
        net = _ViewInBackward().eval()
        loss = ChannelActivation(net.conv2, 1)
    renders, seen = [], []
    for channels_last in (True, False):
        layouts, handle = _input_layouts(net)
        obj = InputOptimization(net, loss, opt.render.default_image(8), seed=5, channels_last=channels_last)
        history = obj.optimize(n_steps(4, show_progress=False))
        handle.remove()
        renders.append(obj.input_param().detach())
        seen.append(layouts)
        assert float(history[-1]) < float(history[0]) and no_hooks_anywhere(net)
    assert seen == [[True] + [False] * 4, [False] * 4]
    assert torch.equal(renders[0], renders[1])


def test_a_model_error_that_is_not_the_layout_is_raised_once_as_it_was():
    broken = _Refuses()
    obj = InputOptimization(broken, ChannelActivation(broken.conv, 0), opt.images.PixelImage(8), nn.Identity(),
                            channels_last=True)
    with pytest.raises(RuntimeError, match="^no weights loaded$"):
        obj.optimize(n_steps(1, show_progress=False))
    assert broken.calls == 1 and no_hooks_anywhere(broken)
    # a loss on a 1x1 map, or one that merges only the pixels, reads a channels-last map without a copy or a rerun
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1))
    for target, read in ((net[1], _flatten), (net[0], lambda a: a.view(a.shape[0], a.shape[1], -1))):
        layouts, handle = _input_layouts(net)
        obj = InputOptimization(net, _Read(target, read), opt.render.default_image(8), channels_last=True)
        obj.optimize(n_steps(3, show_progress=False))
        handle.remove()
        assert layouts == [True] * 3


class _Read(opt.loss.BaseLoss):
    def __init__(self, target, read):
        super().__init__(target)
        self.read = read

    def __call__(self, activations):
        return self.read(activations[self.target]).flatten(1).mean(1)


class _Refuses(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        raise RuntimeError("no weights loaded")


def _branch_hooks(model, factor):
    """SGM by hand: each residual block's branch output (its ``project``) gets its gradient times ``factor``."""
    def hook(module, inputs, out):
        out.register_hook(lambda g: g * factor)
    return [b.project.register_forward_hook(hook) for b in model.blocks if b.use_residual]


def test_renders_from_noise_weaken_the_residual_branches_and_photo_starts_do_not():
    """A render from noise is exactly the true-gradient render of a model whose residual branches' gradient is
    multiplied by DEFAULT_RESIDUAL_GRADIENT by hand; from a photo it is the true-gradient render; the model's
    blocks are left at 1 (the true gradient), also when a callback interrupts the render."""
    from optim.optimization import DEFAULT_RESIDUAL_GRADIENT
    torch.manual_seed(0)
    model = opt.models.efficientnet_lite0(num_classes=10).eval()
    objective = opt.loss.ChannelActivation("blocks.12", 5)

    def render(image=None, **kwargs):
        image = image or opt.render.default_image(48)
        return opt.render_vis(model, objective, image=image, thresholds=4, progress=False, seed=0, **kwargs)[0]

    default, true = render(), render(residual_gradient=1.0)
    handles = _branch_hooks(model, DEFAULT_RESIDUAL_GRADIENT)
    by_hand = render(residual_gradient=1.0)
    for handle in handles:
        handle.remove()
    assert DEFAULT_RESIDUAL_GRADIENT == 0.25 and torch.equal(default, by_hand) and not torch.equal(default, true)
    assert torch.equal(render(residual_gradient=0.25), default)
    photo = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(1))
    from_photo = [render(opt.render.default_image(init=photo), **kw) for kw in ({}, {"residual_gradient": 1.0})]
    assert torch.equal(*from_photo)
    assert opt.InputOptimization(model, objective, opt.render.default_image(init=photo)).residual_gradient == 1.0

    def interrupt(step, loss, images):
        assert {b.residual_gradient for b in model.blocks} == {0.25}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render(callback=interrupt)
    assert {b.residual_gradient for b in model.blocks} == {1.0} and no_hooks_anywhere(model)


@pytest.mark.parametrize("bad, error", [(1.5, ValueError), (-0.1, ValueError), (float("nan"), ValueError),
                                        ("0.5", TypeError), (True, TypeError)])
def test_a_bad_residual_gradient_is_refused_before_any_work(bad, error):
    net = nn.Sequential(nn.Conv2d(3, 4, 3))
    calls = []
    net.register_forward_pre_hook(lambda *a: calls.append(1))
    match = r"residual_gradient must be a number in \[0, 1\] \(1: the true gradient\) or None, got "
    with pytest.raises(error, match=match):
        opt.render_vis(net, "0:1", image=opt.render.default_image(8), thresholds=2, progress=False,
                       residual_gradient=bad)
    with pytest.raises(error, match=match):
        opt.render_layer(net, "0", channels=[0], steps=2, size=8, progress=False, residual_gradient=bad)
    with pytest.raises(error, match=match):
        InputOptimization(net, ChannelActivation(net[0], 0), opt.render.default_image(8), residual_gradient=bad)
    assert calls == []
