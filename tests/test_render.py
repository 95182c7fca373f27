"""render_vis and render_layer on the tiny conv net: snapshots, strings, errors, model left untouched."""
import matplotlib

matplotlib.use("Agg")

import math
import re

import numpy as np
import pytest
import torch
import torch.nn as nn

import optim as opt


def _channel_mean(model, layer, images):
    out = opt.optimization.run_to_targets(model, [layer], images.as_subclass(torch.Tensor))[layer]
    return out.mean(dim=(2, 3))


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_render_vis_snapshots_raise_the_objective(tiny_net):
    images = opt.render_vis(tiny_net, "conv2:3", image=opt.images.NaturalImage((24, 24)), thresholds=(0, 10, 40),
                            lr=0.1, progress=False, seed=0)
    assert len(images) == 3
    for img in images:
        assert isinstance(img, opt.ImageTensor) and img.shape == (1, 3, 24, 24) and not img.requires_grad
        assert 0.0 <= img.min().item() and img.max().item() <= 1.0
    with torch.no_grad():
        acts = [_channel_mean(tiny_net, tiny_net.conv2, img)[0, 3].item() for img in images]
    assert acts[0] < acts[1] < acts[2]
    # 0.020 (0.034 under plain Adam: the default weight decay trades some of the objective for a calmer image)
    assert acts[2] - acts[0] > 0.015


def test_seed_reproduces_and_restores_the_global_state(tiny_net):
    state = torch.get_rng_state()
    first = opt.render_vis(tiny_net, "conv2:1", image=lambda: opt.images.NaturalImage((16, 16)), thresholds=5,
                           progress=False, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    second = opt.render_vis(tiny_net, "conv2:1", image=lambda: opt.images.NaturalImage((16, 16)), thresholds=5,
                            progress=False, seed=7)
    third = opt.render_vis(tiny_net, "conv2:1", image=lambda: opt.images.NaturalImage((16, 16)), thresholds=5,
                           progress=False, seed=8)
    assert torch.equal(first[0], second[0])
    assert not torch.equal(first[0], third[0])


def test_string_objectives_neuron_and_deepdream(tiny_net):
    image = opt.images.NaturalImage((16, 16))
    start = image().detach()
    (out,) = opt.render_vis(tiny_net, "conv2:2:3:4", image=image, transforms=[], thresholds=20, lr=0.1,
                            progress=False)
    with torch.no_grad():
        before = tiny_net.conv2(tiny_net.relu1(tiny_net.conv1(start)))[0, 2, 4, 3]
        after = tiny_net.conv2(tiny_net.relu1(tiny_net.conv1(out)))[0, 2, 4, 3]
    assert after > before + 0.3
    image = opt.images.NaturalImage((16, 16))
    start = image().detach()
    (dream,) = opt.render_vis(tiny_net, "relu1", image=image, transforms=[], thresholds=20, progress=False)
    with torch.no_grad():
        energy = [(tiny_net.relu1(tiny_net.conv1(x)) ** 2).mean().item() for x in (start, dream)]
    assert energy[1] > energy[0]


def test_model_is_left_as_it_was_even_on_error(tiny_net):
    tiny_net.train()
    tiny_net.fc.weight.requires_grad_(False)
    opt.render_vis(tiny_net, "conv2:0", image=opt.images.NaturalImage((16, 16)), thresholds=2, progress=False)
    with pytest.raises(ValueError, match=r"channel_index 9 .* 6 channels"):
        opt.render_vis(tiny_net, "conv2:9", image=opt.images.NaturalImage((16, 16)), thresholds=2, progress=False)
    assert all(m.training for m in tiny_net.modules())
    assert not tiny_net.fc.weight.requires_grad and tiny_net.conv1.weight.requires_grad
    assert _hooks(tiny_net) == 0


def test_bad_arguments_are_explained(tiny_net):
    with pytest.raises(ValueError, match="no module named 'conv3'.*conv2"):
        opt.render_vis(tiny_net, "conv3:0", progress=False)
    with pytest.raises(ValueError, match="strictly increasing"):
        opt.render_vis(tiny_net, "conv2:0", thresholds=(8, 4), progress=False)
    with pytest.raises(ValueError, match="non-negative"):
        opt.render_vis(tiny_net, "conv2:0", thresholds=(-1,), progress=False)
    with pytest.raises(TypeError, match="objective"):
        opt.render_vis(tiny_net, 3, progress=False)
    with pytest.raises(TypeError, match="transforms"):
        opt.render_vis(tiny_net, "conv2:0", transforms="jitter", progress=False)
    with pytest.raises(TypeError, match="optimizer"):
        opt.render_vis(tiny_net, "conv2:0", optimizer="adam", thresholds=1, progress=False)


@pytest.mark.parametrize("kind", ["class", "instance", "factory"])
def test_optimizer_forms(tiny_net, kind):
    image = opt.images.NaturalImage((16, 16))
    if kind == "class":
        optimizer = torch.optim.SGD
    elif kind == "instance":
        optimizer = torch.optim.SGD(image.parameters(), lr=0.0)
    else:
        optimizer = lambda params: torch.optim.SGD(params, lr=0.0)  # noqa: E731
    start = image().detach().clone()
    (out,) = opt.render_vis(tiny_net, "conv2:0", image=image, transforms=[], optimizer=optimizer, lr=0.0,
                            thresholds=3, progress=False, average=0)  # the last image: bit for bit
    # lr 0 everywhere: the optimizer really is the one given (Adam at lr 0 would also not move, so the
    # class form is also checked below with a real step size)
    assert torch.equal(out, start)
    if kind == "class":
        (moved,) = opt.render_vis(tiny_net, "conv2:0", image=image, transforms=[], optimizer=torch.optim.SGD,
                                  lr=1.0, thresholds=1, progress=False)
        assert not torch.equal(moved, start)


@pytest.mark.parametrize("kind", ["class", "instance", "factory"])
def test_an_optimizer_that_needs_a_closure_is_refused_naming_it(tiny_net, kind):
    image = opt.images.NaturalImage((16, 16))
    optimizer = {"class": torch.optim.LBFGS, "instance": torch.optim.LBFGS(image.parameters()),
                 "factory": lambda params: torch.optim.LBFGS(params, lr=0.5)}[kind]
    modes = [m.training for m in tiny_net.modules()]
    with pytest.raises(TypeError, match=r"optimizer LBFGS needs a closure in step\(closure\)"):
        opt.render_vis(tiny_net, "conv2:0", image=image, optimizer=optimizer, thresholds=2, progress=False)
    assert [m.training for m in tiny_net.modules()] == modes and not any(m._forward_hooks for m in tiny_net.modules())


def test_transforms_list_and_preprocess_run_every_step(tiny_net):
    calls = []

    class Count(nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, x):
            calls.append(self.name)
            return x

    opt.render_vis(tiny_net, "conv2:0", image=opt.images.NaturalImage((16, 16)),
                   transforms=[Count("t1"), Count("t2")], preprocess=lambda x: (calls.append("pre"), x)[1],
                   thresholds=(1, 3), progress=False)
    assert calls == ["t1", "t2", "pre"] * 3


def test_render_layer_gives_each_tile_its_own_channel(tiny_net):
    tiles = opt.render_layer(tiny_net, "conv2", batch_size=4, steps=30, size=16, lr=0.1, progress=False, seed=0)
    assert isinstance(tiles, opt.ImageTensor) and tiles.shape == (6, 3, 16, 16)
    with torch.no_grad():
        means = _channel_mean(tiny_net, tiny_net.conv2, tiles)  # [tile, channel]
    # each channel is above its median over the tiles on its own tile (the second batch of 2 as well as the first
    # of 4); tiny_net's channels 1, 4 and 5 are correlated, so "strongest on its own tile" depends on the seed
    assert bool((means.diagonal() > means.median(dim=0).values).all())
    chosen = opt.render_layer(tiny_net, tiny_net.conv2, channels=[5, 1], steps=2, size=8, progress=False)
    assert chosen.shape == (2, 3, 8, 8)
    grid = opt.make_grid_image(tiles, images_per_row=3)
    assert grid.shape == (1, 3, 2 * 18 + 2, 3 * 18 + 2)


def test_render_layer_errors(tiny_net):
    with pytest.raises(ValueError, match="out of range .* 6 channels"):
        opt.render_layer(tiny_net, "conv2", channels=[6], steps=1, size=8, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        opt.render_layer(tiny_net, "conv2", batch_size=0, progress=False)
    with pytest.raises(ValueError, match="no module named"):
        opt.render_layer(tiny_net, "conv9", steps=1, size=8, progress=False)


def test_show_labels_render_outputs(tiny_net):
    images = opt.render_vis(tiny_net, "conv2:0", image=opt.images.NaturalImage((16, 16), batch=2), thresholds=(1, 2),
                            progress=False)
    fig = opt.show(torch.cat(images), labels=["a", "b", "c", "d"])
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c", "d"]


def test_default_image_decay_power_from_noise_and_from_a_photo():
    from optim.render import DEFAULT_DECAY_POWER, default_image

    assert DEFAULT_DECAY_POWER == 1.5 and opt.render.DEFAULT_LR == 0.025
    noise = default_image(16, batch=2)
    assert noise.parameterization.decay_power == DEFAULT_DECAY_POWER and noise().shape == (2, 3, 16, 16)
    # from a photo the spectrum keeps Lucid's 1/f scaling (a steeper one washes the photo out), and the
    # start is the photo itself
    photo = torch.rand(3, 12, 20) * 0.8 + 0.1
    start = default_image(init=photo)
    assert start.parameterization.decay_power == 1.0
    torch.testing.assert_close(start()[0].as_subclass(torch.Tensor), photo, atol=1e-4, rtol=0)
    assert default_image(16, decay_power=2.0).parameterization.decay_power == 2.0
    # the steeper default puts more of a step's change into low frequencies: one equal-size Adam step on a
    # random gradient moves the image's low-pass part more, relative to the rest, at 1.5 than at 1
    def low_share(decay):
        torch.manual_seed(0)
        image = default_image(32, decay_power=decay)
        before = image().detach()
        optimizer = torch.optim.Adam(image.parameters(), lr=0.05)
        (image() * torch.randn(1, 3, 32, 32)).sum().backward()
        optimizer.step()
        delta = (image().detach() - before).as_subclass(torch.Tensor)
        low = torch.nn.functional.avg_pool2d(delta, 8)
        return (low.norm() * 8 / delta.norm()).item()

    assert low_share(1.5) > 1.3 * low_share(1.0)  # 0.73 against 0.51


def test_bad_arguments_name_themselves(tiny_net):
    image = opt.optimization.default_image(8)
    for bad in (torch.rand(8, 8), torch.rand(0, 3, 8, 8)):
        expected = f"image must be a non-empty CHW or NCHW tensor, got shape {tuple(bad.shape)}"
        with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
            opt.render_vis(tiny_net, "conv2:0", image=bad, thresholds=1, progress=False)
    for size in (0, -1, (0, 32)):
        with pytest.raises(ValueError, match="size must be a positive int"):
            opt.render_layer(tiny_net, "conv2", size=size, steps=1, progress=False)
    with pytest.raises(TypeError, match="size must be an int or"):
        opt.render_layer(tiny_net, "conv2", size=1.5, steps=1, progress=False)
    with pytest.raises(TypeError, match="patience must be an int >= 1, got 'a'"):
        opt.optimization.plateau(patience="a")
    with pytest.raises(TypeError, match="value must be a finite number"):
        opt.optimization.target_value(float("nan"))
    with pytest.raises(TypeError, match="callback must be a function"):
        opt.render_vis(tiny_net, "conv2:0", image=image, thresholds=1, progress=False, callback=3)


def test_seeded_render_restores_the_callers_random_state(tiny_net):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    opt.render_vis(tiny_net, "conv2:0", image=lambda: opt.optimization.default_image(8), thresholds=2,
                   progress=False, seed=5)
    assert torch.equal(torch.get_rng_state(), state)


def test_integer_start_images_are_scaled_and_huge_or_non_finite_ones_refused(tiny_net):
    grey = torch.full((3, 8, 8), 128, dtype=torch.uint8)
    (out,) = opt.render_vis(tiny_net, "conv2:0", image=grey, thresholds=0, progress=False)
    assert torch.allclose(out, torch.full_like(out, 128 / 255), atol=1e-4)  # mid-grey stays mid-grey
    with pytest.raises(ValueError, match=r"integer image is read as 0\.\.255.*got values in 0\.\.300"):
        opt.render_vis(tiny_net, "conv2:0", image=torch.tensor([[[0, 300]]] * 3), thresholds=0, progress=False)
    # a photo as NumPy or torch hold it after reading (channels last) is refused with the permute that fixes it
    with pytest.raises(ValueError, match=r"image of shape \(24, 32, 3\) looks channels-last.*\.permute\(2, 0, 1\)"):
        opt.render_vis(tiny_net, "conv2:0", image=torch.rand(24, 32, 3), thresholds=0, progress=False)
    with pytest.raises(ValueError, match=r"init\.permute\(0, 3, 1, 2\)"):
        opt.optimization.default_image(init=torch.rand(2, 24, 32, 4))
    with pytest.raises(TypeError, match=r"got ndarray \(a NumPy image is HWC: torch\.from_numpy\(image\)\.permute"):
        opt.render_vis(tiny_net, "conv2:0", image=np.zeros((24, 32, 3)), thresholds=0, progress=False)
    with pytest.raises(TypeError, match=r"init must be a torch.Tensor.*got ndarray \(torch\.from_numpy\(array\)"):
        opt.optimization.default_image(init=np.zeros((3, 24, 32)))
    # the photo recipes take their images through the same check, and read a uint8 photo as 0..255
    with pytest.raises(ValueError, match=r"content of shape \(24, 32, 3\) looks channels-last"):
        opt.recipes.style_transfer(tiny_net, torch.rand(24, 32, 3), torch.rand(3, 24, 32), "conv2", ["conv1"], steps=1,
                                   progress=False)
    grey = torch.full((3, 16, 16), 128, dtype=torch.uint8)
    kept = opt.recipes.deep_dream(tiny_net, grey, "conv2", steps=0, progress=False)
    torch.testing.assert_close(kept.as_subclass(torch.Tensor), torch.full((1, 3, 16, 16), 128 / 255), atol=1e-4,
                               rtol=0)
    # small feature-map-like starts with many channels are CHW, not channels last
    assert opt.optimization.default_image(init=torch.rand(8, 4, 4))().shape == (1, 8, 4, 4)
    assert opt.images.PixelImage(init=torch.rand(2, 512, 4, 4))().shape == (2, 512, 4, 4)
    with pytest.raises(TypeError, match="image must be an nn.Module.*got Tensor"):
        opt.optimization.starts_from_photo(torch.rand(3, 8, 8))
    assert opt.optimization.default_image(init=torch.rand(4, 3, 3))().shape == (1, 4, 3, 3)  # RGBA, 3 px: CHW
    nan = torch.full((3, 8, 8), float("nan"))
    with pytest.raises(ValueError, match="NaN or infinite"):
        opt.render_vis(tiny_net, "conv2:0", image=nan, thresholds=1, progress=False)
    with pytest.raises(ValueError, match=r"more than the limit of 268435456.*MAX_IMAGE_ELEMENTS"):
        opt.render_layer(tiny_net, "conv2", size=100000, steps=1, progress=False)
    with pytest.raises(FloatingPointError, match=r"at step 0: the image itself is not finite"):
        # no transforms: the default jitters can move all of an 8 px image out of its frame, and the model then
        # sees only the finite canvas
        opt.render_vis(tiny_net, "conv2:0", image=_nan_image(), transforms=[], thresholds=2, progress=False)


def _nan_image():
    image = opt.images.PixelImage((8, 8))
    with torch.no_grad():
        next(image.parameters()).fill_(float("nan"))
    return image


def test_default_image_refuses_a_size_that_is_not_an_int_or_a_sequence():
    from optim.render import default_image

    with pytest.raises(TypeError, match=r"size must be an int or \(height, width\), got '64' \(str\)"):
        default_image("64")
    with pytest.raises(TypeError, match=r"size must be an int or \(height, width\), got 8\.0 \(float\)"):
        default_image(8.0)
    assert default_image(8)().shape == (1, 3, 8, 8)
    assert default_image([8, 6])().shape == (1, 3, 8, 6)


def _polynomial_average(images, window):
    """Polynomial-decay averaging in closed form (Shamir & Zhang 2013): the i-th of the images (from 1) weighs
    Gamma(i + eta) / Gamma(i), eta = 1 / window - 1 (ImageAverage computes it as a running update)."""
    eta = 1 / window - 1
    logs = [math.lgamma(i + eta) - math.lgamma(i) for i in range(1, len(images) + 1)]
    weights = [math.exp(v - max(logs)) for v in logs]  # normalised in float64 before they meet a float32 image
    return sum(w / sum(weights) * x for w, x in zip(weights, images))


def test_image_average_weights_and_edges() -> None:
    from optim.optimization.averaging import MAX_AVERAGE, ImageAverage

    images = [torch.full((1, 1, 2, 2), float(i)) for i in range(1, 9)]
    for window in (MAX_AVERAGE, 1 / 6, 0.01, 1e-320, 0.0):  # 1e-320: eta overflows a float; the weights do not
        avg = ImageAverage(window)
        assert torch.equal(avg.value(images[0]), images[0])  # before any update: the current image
        for x in images[:-1]:
            avg.update(x)
        got = avg.value(images[-1])
        expected = images[-1] if window < 1e-300 else _polynomial_average(images, window)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    assert ImageAverage(0.0).then(None) is None and ImageAverage(0.0)._average is None  # no buffer, no callback
    for bad in (MAX_AVERAGE + 1e-9, -1e-9, float("inf")):
        with pytest.raises(ValueError, match=r"average must be a fraction in \[0, 0.5\]: the render returns"):
            ImageAverage(bad)


def test_average_returns_the_polynomial_average_of_the_optimized_images(tiny_net):
    """render_vis and render_layer with average=f return the polynomial-decay average of the images the steps
    optimized and the last one; average=0 is the last image, the default DEFAULT_AVERAGE (1/6); a photo start never
    averages unless told to."""
    seen = []

    def record(step, loss, images):
        seen.append(images.detach().clone())

    kwargs = dict(image=lambda: opt.render.default_image(8), thresholds=(0, 3, 5), progress=False, seed=0)
    start, at3, at5 = opt.render_vis(tiny_net, "conv2:1", callback=record, average=0.5, **kwargs)
    last = opt.render_vis(tiny_net, "conv2:1", average=0, **kwargs)  # the same trajectory, its last images
    assert len(seen) == 5 and torch.equal(start, last[0])  # a snapshot at step 0 is the starting image
    assert torch.allclose(at3, _polynomial_average(seen[:3] + [last[1]], 0.5), atol=1e-6)
    # eta = 1: the weights are 1, 2, ..., 6
    torch.testing.assert_close(at5, sum((i + 1) * x for i, x in enumerate(seen + [last[2]])) / 21, atol=1e-6, rtol=0)
    assert (at5 - last[2]).abs().max() > 1e-3  # not the last image
    default = opt.render_vis(tiny_net, "conv2:1", **kwargs)
    assert opt.optimization.DEFAULT_AVERAGE == 1 / 6  # measured in optimization/defaults.py
    assert torch.allclose(default[2], _polynomial_average(seen + [last[2]], 1 / 6), atol=1e-6)
    assert torch.equal(default[2], opt.render_vis(tiny_net, "conv2:1", average=1 / 6, **kwargs)[2])
    photo = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    from_photo = dict(kwargs, image=photo)
    photo_last = opt.render_vis(tiny_net, "conv2:1", average=0, **from_photo)[2]
    assert torch.equal(opt.render_vis(tiny_net, "conv2:1", **from_photo)[2], photo_last)
    assert (opt.render_vis(tiny_net, "conv2:1", average=0.5, **from_photo)[2] - photo_last).abs().max() > 1e-3
    start_from = lambda n: opt.optimization.default_image(init=photo.unsqueeze(0).repeat(n, 1, 1, 1))  # noqa: E731
    objectives = [lambda i: opt.loss.ChannelActivation("conv2", 0, batch_index=i)]
    batched = [opt.optimization.render_batches(tiny_net, objectives, [0], start_from, steps=3, progress=False,
                                               seed=0, average=a) for a in (None, 0, 0.5)]
    assert torch.equal(batched[0], batched[1])  # the same rule in the batched renders: a photo's last image
    assert (batched[2] - batched[1]).abs().max() > 1e-4  # and an average when asked
    seen.clear()
    layer = dict(channels=[0, 1, 2], batch_size=2, steps=3, size=8, progress=False, seed=0)
    tiles = opt.render_layer(tiny_net, "conv2", callback=record, average=0.25, **layer)
    ends = opt.render_layer(tiny_net, "conv2", average=0, **layer)
    assert torch.allclose(tiles[:2], _polynomial_average(seen[:3] + [ends[:2]], 0.25), atol=1e-6)  # first batch
    assert torch.allclose(tiles[2:], _polynomial_average(seen[3:] + [ends[2:]], 0.25), atol=1e-6)  # its own
    assert torch.equal(opt.render_layer(tiny_net, "conv2", **layer), opt.render_layer(tiny_net, "conv2",
                                                                                      average=1 / 6, **layer))
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    for bad, error in ((0.9, ValueError), (-0.1, ValueError), (float("nan"), ValueError), (True, TypeError),
                       ("0.25", TypeError)):
        with pytest.raises(error, match="average must be"):
            opt.render_vis(tiny_net, "conv2:1", average=bad, **kwargs)
        with pytest.raises(error, match="average must be"):
            opt.render_layer(tiny_net, "conv2", channels=[0], steps=1, size=8, progress=False, average=bad)
    assert all(torch.equal(v, before[k]) for k, v in tiny_net.state_dict().items())


@pytest.mark.parametrize("pixel", [True, False])
def test_the_step_callback_sees_the_image_the_step_read(tiny_net, pixel):
    """A PixelImage returns its own parameter, which opt.step() moves in place: the callback still gets the
    image before the step (a copy), as it does for a parameterization that builds a new tensor."""
    image = opt.images.PixelImage((16, 16)) if pixel else opt.render.default_image(16)
    before = image().detach().clone()
    seen = []
    obj = opt.InputOptimization(tiny_net, opt.loss.ChannelActivation("conv2", 1), image, nn.Identity())
    obj.optimize(opt.optimization.n_steps(1, False), callback=lambda step, loss, images: seen.append(images))
    assert torch.equal(seen[0], before) and not torch.equal(image().detach(), before)
