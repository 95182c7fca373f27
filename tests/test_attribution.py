"""Attribution: exact values on a tiny net, model state restored, overlays, and Grad-CAM on a real cat."""
import matplotlib
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import optim as opt
from optim.attribution import (
    METHODS, attribute, channel_attribution, channel_blocks, compare_methods, overlay, plot_channel_blocks,
)

pytest.importorskip("captum")
matplotlib.use("Agg")


def model_state(model):
    return (model.training, [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.fixture
def image():
    return torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_with_right_shape_and_leaves_model_alone(tiny_net, image, method):
    tiny_net.train()
    tiny_net.conv1.weight.requires_grad_(False)
    before = model_state(tiny_net)
    kwargs = {"nt_samples": 4} if "smooth" in method else {"n_steps": 8} if method == "integrated_gradients" else {}
    out = attribute(tiny_net, image, [1, 3], method=method, layer="conv2", **kwargs)
    expected = (2, 1, 8, 8) if method == "gradcam" else (2, 3, 8, 8)
    assert out.shape == expected and type(out) is torch.Tensor
    assert torch.isfinite(out).all() and out.abs().sum() > 0
    assert model_state(tiny_net) == before and hook_count(tiny_net) == 0


def test_saliency_is_the_input_gradient(tiny_net, image):
    x = image.clone().requires_grad_(True)
    tiny_net(x)[:, 2].sum().backward()
    torch.testing.assert_close(attribute(tiny_net, image, 2, method="saliency"), x.grad)
    torch.testing.assert_close(attribute(tiny_net, image, 2, method="saliency", abs=True), x.grad.abs())


class GuidedReLU(torch.autograd.Function):
    """Reference guided backprop: pass only positive gradients through positive inputs."""

    @staticmethod
    def forward(ctx, x, upper):
        ctx.save_for_backward(x)
        ctx.upper = upper
        return x.clamp(0, upper)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp_min(0) * ((x > 0) & (x < ctx.upper)), None


class Relu6Net(nn.Module):
    def __init__(self, guided=False):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 5, 3, padding=1), nn.Conv2d(5, 4, 3, padding=1)
        self.act1, self.act2 = nn.ReLU6(), nn.ReLU()
        self.fc = nn.Linear(4, 3)
        self.guided = guided

    def forward(self, x):
        a = self.conv1(x)
        a = GuidedReLU.apply(a, 6.0) if self.guided else self.act1(a)
        a = self.conv2(a)
        a = GuidedReLU.apply(a, float("inf")) if self.guided else self.act2(a)
        return self.fc(a.mean((2, 3)))


def test_guided_backprop_matches_reference_including_relu6(image):
    net = Relu6Net().eval()
    with torch.no_grad():
        net.conv1.weight.mul_(4)  # push some pre-activations above 6 so ReLU6's upper clamp matters
    ref = Relu6Net(guided=True).eval()
    ref.load_state_dict(net.state_dict())
    x = image.clone().requires_grad_(True)
    ref(x)[:, 1].sum().backward()
    guided = attribute(net, image, 1, method="guided_backprop")
    torch.testing.assert_close(guided, x.grad)
    assert not torch.allclose(guided, attribute(net, image, 1, method="saliency"))
    pos = attribute(net, image, 1, method="positive_saliency")
    neg = attribute(net, image, 1, method="negative_saliency")
    for part, sign in ((pos, 1), (neg, -1)):
        assert part.min() >= 0 and torch.allclose(part.flatten(1).amax(1), torch.ones(2))
        torch.testing.assert_close(part > 0, sign * x.grad > 0)


def test_smoothgrad_without_noise_is_the_plain_method(image):
    net = Relu6Net().eval()
    for smooth, plain in (("smoothgrad", "saliency"), ("guided_smoothgrad", "guided_backprop")):
        torch.testing.assert_close(attribute(net, image, 0, method=smooth, nt_samples=3, stdevs=1e-12),
                                   attribute(net, image, 0, method=plain))
    noisy = attribute(net, image, 0, method="smoothgrad", nt_samples=3)
    assert not torch.allclose(noisy, attribute(net, image, 0, method="saliency"))


def test_smoothgrad_noise_is_each_images_own(image):
    """Each image's noise is 0.15 of its own range (Smilkov et al.): its map is the same alone or in a batch with
    an image of ten times the range, and equals captum's NoiseTunnel given that image's stdev."""
    from captum.attr import NoiseTunnel, Saliency

    net = Relu6Net().eval()
    a, b = image[:1], image[1:] * 10
    for method in ("smoothgrad", "guided_smoothgrad"):
        torch.manual_seed(0)
        batched = attribute(net, torch.cat([a, b]), [0, 1], method=method, nt_samples=4)
        torch.manual_seed(0)
        alone = attribute(net, a, [0], method=method, nt_samples=4)
        torch.testing.assert_close(batched[:1], alone, atol=0, rtol=0)
    torch.manual_seed(0)
    ours = attribute(net, b, 1, method="smoothgrad", nt_samples=4)
    torch.manual_seed(0)
    reference = NoiseTunnel(Saliency(net)).attribute(b, target=1, nt_type="smoothgrad", nt_samples=4,
                                                     nt_samples_batch_size=8, stdevs=float(0.15 * (b.max() - b.min())),
                                                     abs=False)
    torch.testing.assert_close(ours, reference, atol=0, rtol=0)


def test_guided_gradcam_is_captums_with_bilinear_upsampling(image):
    from captum.attr import GuidedGradCam

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5)).eval()
    for mode in ("bilinear", "nearest"):
        reference = GuidedGradCam(net, net[2]).attribute(image, target=[1, 3], interpolate_mode=mode)
        kwargs = {} if mode == "bilinear" else {"interpolate_mode": mode}  # bilinear: optim's default
        ours = attribute(net, image, [1, 3], method="guided_gradcam", layer=net[2], **kwargs)
        torch.testing.assert_close(ours, reference, atol=1e-7, rtol=0)
    assert not torch.allclose(ours, attribute(net, image, [1, 3], method="guided_gradcam", layer=net[2]))


def test_gradcam_matches_manual_computation(tiny_net, image):
    acts = tiny_net.conv2(tiny_net.relu1(tiny_net.conv1(image))).detach().requires_grad_(True)
    logits = tiny_net.fc(torch.flatten(tiny_net.pool(tiny_net.relu2(acts)), 1))
    logits[:, 4].sum().backward()
    weights = acts.grad.mean(dim=(2, 3), keepdim=True)
    ref = F.relu((weights * acts).sum(1, keepdim=True)).detach()
    torch.testing.assert_close(attribute(tiny_net, image, 4, method="gradcam", layer=tiny_net.conv2), ref)
    # default layer: the deepest spatial map, relu2
    acts = tiny_net.relu2(acts.detach()).requires_grad_(True)
    tiny_net.fc(torch.flatten(tiny_net.pool(acts), 1))[:, 4].sum().backward()
    ref = F.relu((acts.grad.mean(dim=(2, 3), keepdim=True) * acts).sum(1, keepdim=True)).detach()
    torch.testing.assert_close(attribute(tiny_net, image, 4), ref)
    assert opt.attribution.default_gradcam_layer(tiny_net, image) is tiny_net.relu2
    # called on its own, the search pass leaves a training model (and its batch norm statistics) alone
    bn_net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    bn_net(image)
    before = model_state(bn_net), bn_net[1].running_mean.clone()
    assert opt.attribution.default_gradcam_layer(bn_net, image.double()) is bn_net[2]
    assert (model_state(bn_net), hook_count(bn_net)) == (before[0], 0)
    assert torch.equal(bn_net[1].running_mean, before[1])
    # a coarse layer gets bilinearly upsampled to the image size (the 1x1 pool output: a constant map)
    coarse = attribute(tiny_net, image, 4, layer="pool", upsample=False)
    assert coarse.shape == (2, 1, 1, 1)
    torch.testing.assert_close(attribute(tiny_net, image, 4, layer="pool"), coarse.expand(2, 1, 8, 8))


def test_integrated_gradients_completeness_and_occlusion(tiny_net, image):
    with torch.no_grad():
        gap = tiny_net(image)[:, 0] - tiny_net(torch.zeros_like(image))[:, 0]
    ig = attribute(tiny_net, image, 0, method="integrated_gradients", n_steps=64)
    torch.testing.assert_close(ig.sum((1, 2, 3)), gap, rtol=0.02, atol=0.02 * float(gap.abs().max()))
    # one window covering the whole image: every pixel gets the full output drop
    occ = attribute(tiny_net, image, 0, method="occlusion", window=8)
    torch.testing.assert_close(occ, gap.view(2, 1, 1, 1).expand(2, 3, 8, 8))


def test_follows_model_dtype_and_accepts_image_tensor(tiny_net, image):
    net = tiny_net.double()
    out = attribute(net, opt.images.ImageTensor(image[0]), 2, method="saliency")
    assert out.dtype == torch.float64 and type(out) is torch.Tensor and out.shape == (1, 3, 8, 8)
    x = image[:1].double().requires_grad_(True)
    net(x)[0, 2].backward()
    torch.testing.assert_close(out, x.grad)


def test_bad_input_and_model_restored_on_error(tiny_net, image):
    tiny_net.train()
    before = model_state(tiny_net)
    with pytest.raises(ValueError, match="gradcam.*occlusion"):
        attribute(tiny_net, image, 0, method="lrp")
    with pytest.raises(ValueError, match="conv3"):
        attribute(tiny_net, image, 0, method="gradcam", layer="conv3")
    with pytest.raises(ValueError, match="targets"):
        attribute(tiny_net, image, [0, 1, 2], method="saliency")
    with pytest.raises(ValueError, match="shape"):
        attribute(tiny_net, image[0, 0], 0)
    with pytest.raises(ValueError, match="target .* got 99"):
        attribute(tiny_net, image, 99, method="guided_backprop")  # target out of range
    assert model_state(tiny_net) == before and hook_count(tiny_net) == 0


def test_an_image_with_the_wrong_channel_count_gets_the_conversion(image):
    """An RGB image on a grayscale model: the renders' ValueError (both counts, a conversion), the model untouched."""
    gray = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    before = model_state(gray)
    advice = r"the image has 3 channels and the model reads 1: give a 1-channel image \(photo.mean\(-3, keepdim=True\)"
    for method in ("saliency", "gradcam", "integrated_gradients"):
        with pytest.raises(ValueError, match=advice) as info:
            attribute(gray, image, 0, method=method)
        assert isinstance(info.value.__cause__, RuntimeError)  # raised from torch's own message
    with pytest.raises(ValueError, match=advice):
        channel_attribution(gray, image, 0, "0")
    assert model_state(gray) == before and hook_count(gray) == 0
    gray_image = image.mean(-3, keepdim=True)  # the advice works
    assert attribute(gray, gray_image, 0, method="saliency").shape == gray_image.shape
    # a 1-channel image on an RGB model: the other conversion
    rgb_advice = r"the image has 1 channel and the model reads 3: .*repeat_interleave\(3, dim=-3\)"
    with pytest.raises(ValueError, match=rgb_advice):
        attribute(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(1)), gray_image, 0, method="saliency")
    # an inner layer that reads another count than the model's first: the model's fault, torch's error unchanged
    broken = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Conv2d(4, 2, 3), nn.Flatten(1))
    with pytest.raises(RuntimeError, match="to have 4 channels, but got 3 channels"):
        attribute(broken, image, 0, method="saliency")

    def gray_logits(x):
        return gray(x)

    with pytest.raises(ValueError, match=r"^gray_logits failed on a .*the model reads 1"):  # named by its name
        attribute(gray_logits, image, 0, method="saliency")


def test_a_tuple_target_is_captums_index_into_a_multi_dimensional_output():
    torch.manual_seed(0)

    class Grid(nn.Module):  # logits (N, 3, 5): a tuple (row, col) picks one of them for every image
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 15, 3)

        def forward(self, x):
            return self.conv(x).mean(dim=(2, 3)).view(-1, 3, 5)

    net, x = Grid().eval(), torch.rand(2, 3, 8, 8)
    grad = x.clone().requires_grad_(True)
    net(grad)[:, 1, 2].sum().backward()
    torch.testing.assert_close(attribute(net, x, (1, 2), method="saliency"), grad.grad)
    flat = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)).eval()
    with pytest.raises(ValueError, match=r"target=\(1, 2\) is a tuple.*shape \(2, 10\); pass a list"):
        attribute(flat, x, (1, 2), method="saliency")
    assert attribute(flat, x, [1, 2], method="saliency").shape == x.shape
    for bad in ((7, 0), (-1, 0), (0, 5)):  # each entry against its own dim (3, then 5)
        with pytest.raises(ValueError, match=r"target=\(.*\): entry \d must be an index from 0 to [24]"):
            attribute(net, x, bad, method="saliency")


def test_overlay_shape_range_and_blend():
    img = torch.rand(3, 10, 12)
    attr = torch.zeros(1, 1, 5, 6)
    attr[..., 2, 3] = 1.0
    out = overlay(img, attr, alpha=0.4)
    assert isinstance(out, opt.images.ImageTensor) and out.shape == (1, 3, 10, 12)
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    assert torch.allclose(overlay(img, attr, alpha=0.0), img[None])
    jet = matplotlib.colormaps["jet"]
    heat = overlay(img, torch.zeros(10, 12).index_put_((torch.tensor([4]), torch.tensor([7])), torch.tensor(2.0)),
                   alpha=1.0, outlier_perc=0.0)
    torch.testing.assert_close(heat[0, :, 4, 7], torch.tensor(jet(1.0)[:3], dtype=torch.float32))
    torch.testing.assert_close(heat[0, :, 0, 0], torch.tensor(jet(0.0)[:3], dtype=torch.float32))
    with pytest.raises(ValueError, match="alpha"):
        overlay(img, attr, alpha=2)
    with pytest.raises(ValueError, match="colormap"):
        overlay(img, attr, cmap="not-a-map")


def test_compare_methods_figure(tiny_net, image):
    import matplotlib.pyplot as plt

    fig = compare_methods(tiny_net, image, 1, methods=["saliency", "gradcam", "occlusion"],
                          method_kwargs={"occlusion": {"window": 4}})
    assert len(fig.axes) == 2 * 4
    assert [ax.get_title() for ax in fig.axes[:4]] == ["image", "saliency", "gradcam", "occlusion"]
    plt.close(fig)


def test_channel_attribution_is_activation_times_gradient(tiny_net, image):
    res = channel_attribution(tiny_net, image[:1], 3, "relu2", top_k=4)
    # after global average pooling, act x grad of channel c sums to fc.weight[3, c] * mean(relu2_c)
    with torch.no_grad():
        pooled = tiny_net.pool(tiny_net.relu2(tiny_net.conv2(tiny_net.relu1(tiny_net.conv1(image[:1]))))).flatten()
    expected = tiny_net.fc.weight[3].detach() * pooled
    torch.testing.assert_close(res.all_scores, expected)
    torch.testing.assert_close(res.channels, torch.argsort(expected, descending=True)[:4])
    assert res.maps.shape == (4, 8, 8) and res.scores[0] >= res.scores[-1]
    calls = []
    blocks = channel_blocks(tiny_net, image[:1], 3, tiny_net.relu2,
                            lambda layer, c: calls.append((layer, c)) or torch.full((3, 4, 4), c / 6), top_k=3)
    assert calls == [("relu2", int(c)) for c in res.channels[:3]]
    assert [b.channel for b in blocks] == res.channels[:3].tolist()
    fig = plot_channel_blocks(blocks, image[0])
    assert len(fig.axes) == 6
    import matplotlib.pyplot as plt

    plt.close(fig)


# -- a real network and a real photo --------------------------------------------------------------------
@pytest.fixture
def lite0(pretrained_lite0):
    assert pretrained_lite0.transform_input  # takes [0, 1] RGB, like the photo below
    return pretrained_lite0


@pytest.fixture(scope="module")
def chelsea():
    skimage_data = pytest.importorskip("skimage.data")
    cat = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1).float()[None] / 255  # 300 x 451
    return F.interpolate(cat, size=(160, 240), mode="bilinear", align_corners=False, antialias=True)


# Boxes picked by eye on the 451 x 300 original (x right, y down), scaled to the 240 x 160 test image.
# The head fills the photo from the left ear (x ~ 40) to the right ear (x ~ 380) and from top to bottom;
# outside it are background strips. The face (eyes at about (170, 115) and (320, 135), nose at (265, 240))
# is the inner box.
def scaled_box(x0, x1, y0, y1):
    return slice(y0 * 160 // 300, y1 * 160 // 300), slice(x0 * 240 // 451, x1 * 240 // 451)


HEAD = scaled_box(40, 380, 0, 300)
FACE = scaled_box(130, 350, 80, 280)


def box_mask(shape, box):
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[box] = True
    return mask


def test_gradcam_on_the_cat(lite0, chelsea):
    with torch.no_grad():
        assert int(lite0(chelsea).argmax()) == 285  # Egyptian cat
    cam = attribute(lite0, chelsea, 285, method="gradcam")[0, 0]
    assert opt._utils.module_name(lite0, opt.attribution.default_gradcam_layer(lite0, chelsea)) == "head"
    head = box_mask(cam.shape, HEAD)
    assert cam[head].mean() > 2.5 * cam[~head].mean()
    assert cam[head].sum() > 0.85 * cam.sum()  # the head box is 75% of the image but holds ~90% of the mass
    face = box_mask(cam.shape, FACE)
    assert cam[face].mean() > 1.5 * cam[~face].mean()


def test_every_method_on_lite0(lite0, chelsea):
    small = F.interpolate(chelsea, size=(64, 96), mode="bilinear", align_corners=False)
    before = model_state(lite0)
    results = {}
    for method in METHODS:
        kwargs = {"nt_samples": 2} if "smooth" in method else {"n_steps": 4} if method == "integrated_gradients" \
            else {"window": 32} if method == "occlusion" else {}
        out = attribute(lite0, small, 285, method=method, **kwargs)
        assert out.shape == ((1, 1, 64, 96) if method == "gradcam" else (1, 3, 64, 96)), method
        assert torch.isfinite(out).all(), method
        results[method] = out
    assert model_state(lite0) == before and hook_count(lite0) == 0
    # the guided rule reached the (redirected) ReLU6 layers: guided backprop is not the plain gradient
    assert not torch.allclose(results["guided_backprop"], results["saliency"])
    blend = overlay(small, attribute(lite0, small, 285))
    assert blend.shape == (1, 3, 64, 96) and 0 <= float(blend.min()) <= float(blend.max()) <= 1


def _manual_resnet_gradcam(net, x, target):
    """Grad-CAM at ``layer4`` computed by calling the ResNet's submodules by hand (no hooks, no captum)."""
    with torch.no_grad():
        feats = net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x)))))))
        feats = net.layer4(feats)
    feats = feats.clone().requires_grad_(True)
    logits = net.fc(torch.flatten(net.avgpool(feats), 1))
    logits[torch.arange(len(target)), target].sum().backward()
    weights = feats.grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * feats).sum(1, keepdim=True)).detach()
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_default_gradcam_layer_is_the_resnet_stage_output(arch):
    # A module called twice per block (torchvision's `relu`) used to count at its first call, which made the
    # search stop inside the last residual branch (layer4.1.bn2 / layer4.2.bn3); the stage output is layer4.
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)(weights=None).eval()
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    layer = opt.attribution.default_gradcam_layer(net, x)
    assert opt._utils.module_name(net, layer) == "layer4" and layer is net.layer4
    assert hook_count(net) == 0
    with torch.no_grad():
        target = [int(c) for c in net(x).argmax(1)]  # the predicted classes: a map with positive evidence
    cam = attribute(net, x, target)
    explicit = attribute(net, x, target, layer="layer4")
    torch.testing.assert_close(cam, explicit)
    torch.testing.assert_close(cam, _manual_resnet_gradcam(net, x, target), rtol=1e-4, atol=1e-6)
    assert (cam.flatten(1).amax(1) > 0).all()
    # the old choice inside the residual branch gives another map
    inner = "layer4.1.bn2" if arch == "resnet18" else "layer4.2.bn3"
    assert not torch.allclose(cam, attribute(net, x, target, layer=inner), atol=0.1 * float(cam.abs().max()))


@pytest.mark.parametrize("method", ["saliency", "guided_backprop", "gradcam", "occlusion"])
def test_target_out_of_range_is_a_value_error_naming_it(tiny_net, image, method):
    # tiny_net has 5 classes: 5 raised captum's raw IndexError; negative indices are refused too (an int -1
    # would count from the end, a list's -1 failed inside gather)
    tiny_net.train()
    before = model_state(tiny_net)
    expected = r"target must be a class index from 0 to 4 \(the model's output has 5 classes\), got "
    with pytest.raises(ValueError, match=expected + "5$"):
        attribute(tiny_net, image, 5, method=method)
    with pytest.raises(ValueError, match=expected + "-1$"):
        attribute(tiny_net, image, -1, method=method)
    with pytest.raises(ValueError, match=expected + r"7 in target=\[1, 7\]"):
        attribute(tiny_net, image, [1, 7], method=method)
    with pytest.raises(ValueError, match=expected + r"9 in target=tensor\(\[9, 0\]\)"):
        attribute(tiny_net, image, torch.tensor([9, 0]), method=method)
    assert model_state(tiny_net) == before and hook_count(tiny_net) == 0
    assert attribute(tiny_net, image, [4, 0], method=method).shape[0] == 2  # the last class is in range


def test_target_out_of_range_with_a_function_and_for_channel_attribution(tiny_net, image):
    with pytest.raises(ValueError, match=r"from 0 to 4 \(the model's output has 5 classes\), got 5$"):
        attribute(lambda x: tiny_net(x), image, 5, method="saliency")
    with pytest.raises(ValueError, match=r"from 0 to 4 \(the model's output has 5 classes\), got 1000$"):
        channel_attribution(tiny_net, image, 1000, "conv2")
    assert channel_attribution(tiny_net, image, 4, "conv2").all_scores.shape == (6,)
