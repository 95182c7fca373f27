"""Tests of optim.transforms: crops, channel transforms, smoothing and symmetric padding."""
import math

import numpy as np
import pytest
import torch

import optim as opt
from optim import transforms as T
from _transform_checks import scripted_equal, seeded_gradcheck

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


# ---------------------------------------------------------------- center / random crop


def _np_center_crop(a: np.ndarray, out_h: int, out_w: int, offset_left: bool) -> np.ndarray:
    dh, dw = a.shape[-2] - out_h, a.shape[-1] - out_w
    top = math.ceil(dh / 2) if offset_left else dh // 2
    left = math.ceil(dw / 2) if offset_left else dw // 2
    return a[..., top : top + out_h, left : left + out_w]


@pytest.mark.parametrize("h,w", [(10, 10), (9, 12), (7, 5)])
@pytest.mark.parametrize("size", [(4, 4), (3, 5), (5, 2), (1, 1)])
@pytest.mark.parametrize("offset_left", [False, True])
def test_center_crop_matches_numpy(h, w, size, offset_left):
    x = torch.arange(2 * 3 * h * w, dtype=torch.float32).view(2, 3, h, w)
    out = T.center_crop(x, size, offset_left=offset_left)
    expected = _np_center_crop(x.numpy(), size[0], size[1], offset_left)
    np.testing.assert_array_equal(out.numpy(), expected)
    # CHW input and the module form agree with the function
    np.testing.assert_array_equal(T.center_crop(x[0], size, offset_left=offset_left).numpy(), expected[0])
    np.testing.assert_array_equal(T.CenterCrop(size, offset_left=offset_left)(x).numpy(), expected)


def test_center_crop_pixels_from_edges_and_int_size():
    x = torch.arange(11 * 8, dtype=torch.float32).view(1, 1, 11, 8)
    out = T.center_crop(x, (3, 2), pixels_from_edges=True)
    np.testing.assert_array_equal(out.numpy(), x.numpy()[..., 1:9, 1:7])
    np.testing.assert_array_equal(T.center_crop(x, 4).numpy(), x.numpy()[..., 3:7, 2:6])
    assert T.center_crop(x, [5]).shape[-2:] == (5, 5)


def test_center_crop_larger_than_image_pads():
    x = torch.ones(1, 1, 2, 3)
    out = T.center_crop(x, (5, 4), padding_value=-1.0)
    expected = np.full((1, 1, 5, 4), -1.0, dtype=np.float32)
    expected[..., 1:3, 0:3] = 1.0
    np.testing.assert_array_equal(out.numpy(), expected)


def test_random_crop_positions_and_content():
    x = torch.arange(6 * 7, dtype=torch.float32).view(1, 1, 6, 7)
    crop = T.RandomCrop((4, 3))
    corners = {tuple(crop.sample_params(x)) for _ in range(300)}
    assert corners == {(t, l) for t in range(3) for l in range(5)}
    for top, left in corners:  # every position drawn, each cropped once
        np.testing.assert_array_equal(
            crop.apply_params(x, top, left).numpy(), x.numpy()[..., top : top + 4, left : left + 3]
        )
    out = scripted_equal(crop, x)
    assert out.shape == (1, 1, 4, 3)


def test_crop_errors():
    with pytest.raises(TypeError, match="size"):
        T.CenterCrop("big")
    with pytest.raises(ValueError, match="non-negative"):
        T.center_crop(torch.rand(1, 1, 4, 4), -1)
    with pytest.raises(ValueError, match="larger than the image"):
        T.RandomCrop(8)(torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match="pixels away"):
        T.center_crop(torch.rand(1, 1, 4, 4), 5, pixels_from_edges=True)


# ---------------------------------------------------------------- channel transforms


def test_blend_alpha_fixed_and_random_background():
    torch.manual_seed(0)
    x = torch.rand(2, 4, 5, 5)
    background = torch.tensor([0.2, 0.4, 0.6]).view(3, 1, 1)
    out = T.BlendAlpha(background)(x)
    a = x[:, 3:4].numpy()
    expected = a * x[:, :3].numpy() + (1 - a) * background.numpy()
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-7)

    random_blend = T.BlendAlpha()
    torch.manual_seed(4)
    out = random_blend(x)
    torch.manual_seed(4)
    noise = torch.rand(2, 3, 5, 5)
    np.testing.assert_allclose(out.numpy(), (a * x[:, :3].numpy() + (1 - a) * noise.numpy()), rtol=1e-6)
    scripted_equal(random_blend, x)
    scripted_equal(T.BlendAlpha(background), x)
    seeded_gradcheck(random_blend, torch.rand(1, 4, 3, 3))


def test_ignore_alpha_rgb_to_bgr_scale_input_range():
    x = torch.rand(1, 4, 3, 3)
    np.testing.assert_array_equal(T.IgnoreAlpha()(x).numpy(), x[:, :3].numpy())
    rgb = torch.rand(2, 3, 4, 4)
    np.testing.assert_array_equal(T.RGBToBGR()(rgb).numpy(), rgb.numpy()[:, ::-1])
    np.testing.assert_allclose(T.ScaleInputRange(255.0)(rgb).numpy(), rgb.numpy() * 255.0, rtol=1e-6)
    for module, inp in ((T.IgnoreAlpha(), x), (T.RGBToBGR(), rgb), (T.ScaleInputRange(2.0), rgb)):
        scripted_equal(module, inp)
        seeded_gradcheck(module, inp[:, :, :2, :2])
    with pytest.raises(ValueError, match="N4HW"):
        T.IgnoreAlpha()(rgb)
    with pytest.raises(ValueError, match="N3HW"):
        T.RGBToBGR()(x)
    with pytest.raises(ValueError, match="N4HW"):
        T.BlendAlpha()(rgb)
    with pytest.raises(TypeError, match="background"):
        T.BlendAlpha([0.5, 0.5, 0.5])


def _np_hue(angle: float, warp: bool = True) -> np.ndarray:
    """Independent reference: piecewise-linear (optionally eased) blend of the 6 unit hue corners."""
    corners = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1], [1, 0, 1]], dtype=np.float64)
    corners /= np.linalg.norm(corners, axis=1, keepdims=True)
    angle = angle % 360.0
    n = int(angle // 60)
    d = (angle - 60 * n) / 60
    if warp:
        d = math.sin(d * math.pi / 2) if n % 2 == 0 else 1 - math.sin((1 - d) * math.pi / 2)
    v = (1 - d) * corners[n] + d * corners[(n + 1) % 6]
    return v / np.linalg.norm(v)


def test_hue_to_rgb_values():
    np.testing.assert_allclose(opt.hue_to_rgb(0.0).numpy(), [1, 0, 0], atol=1e-7)
    np.testing.assert_allclose(opt.hue_to_rgb(120.0).numpy(), [0, 1, 0], atol=1e-7)
    np.testing.assert_allclose(opt.hue_to_rgb(240.0).numpy(), [0, 0, 1], atol=1e-7)
    np.testing.assert_allclose(opt.hue_to_rgb(60.0).numpy(), [0.70710678, 0.70710678, 0], atol=1e-6)
    for angle in (10.0, 30.0, 95.0, 200.0, 333.0, -30.0, 390.0):
        for warp in (True, False):
            got = T.hue_to_rgb(angle, warp=warp).numpy()
            np.testing.assert_allclose(got, _np_hue(angle, warp), atol=1e-6)
            assert abs(np.linalg.norm(got) - 1) < 1e-6
    # warping pushes 30 degrees (between red and yellow) towards yellow's side differently than linear
    assert not np.allclose(T.hue_to_rgb(30.0, warp=True).numpy(), T.hue_to_rgb(30.0, warp=False).numpy())


def _np_channels_to_rgb(x: np.ndarray, warp: bool = True, eps: float = 1e-4) -> np.ndarray:
    """Lucid's channels_to_rgb on NHWC arrays."""
    if (x < 0).any():
        x = np.concatenate([np.maximum(0, x), np.maximum(0, -x)], axis=-1)
    k = x.shape[-1]
    rgb = np.zeros(x.shape[:-1] + (3,))
    for i in range(k):
        rgb += x[..., i, None] * _np_hue(360.0 * i / k, warp)
    rgb += (x.sum(-1) - x.max(-1))[..., None]
    rgb /= eps + np.linalg.norm(rgb, axis=-1, keepdims=True)
    return rgb * np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("channels", [1, 3, 5, 8])
@pytest.mark.parametrize("signed", [False, True])
def test_nchannels_to_rgb_matches_reference(channels, signed):
    torch.manual_seed(channels)
    x = torch.rand(2, channels, 4, 3, dtype=torch.float64)
    if signed:
        x = x - 0.5
    out = opt.nchannels_to_rgb(x)
    assert out.shape == (2, 3, 4, 3)
    expected = _np_channels_to_rgb(x.permute(0, 2, 3, 1).numpy()).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(T.NChannelsToRGB(warp=False)(x).numpy(),
                               _np_channels_to_rgb(x.permute(0, 2, 3, 1).numpy(), warp=False).transpose(0, 3, 1, 2),
                               rtol=1e-6, atol=1e-8)


def test_nchannels_to_rgb_script_and_grad():
    x = torch.rand(1, 6, 3, 3) + 0.1
    scripted_equal(T.NChannelsToRGB(), x)
    seeded_gradcheck(T.NChannelsToRGB(), x[:, :, :2, :2])
    with pytest.raises(ValueError, match="NCHW"):
        opt.nchannels_to_rgb(torch.rand(6, 3, 3))


# ---------------------------------------------------------------- gaussian smoothing


def _np_gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    g = np.exp(-0.5 * ((np.arange(size) - (size - 1) / 2) / sigma) ** 2)
    return g / g.sum()


def test_gaussian_smoothing_2d_matches_numpy():
    torch.manual_seed(0)
    x = torch.rand(1, 2, 9, 8, dtype=torch.float64)
    smooth = T.GaussianSmoothing(2, (5, 3), (1.5, 0.8))
    kernel = np.outer(_np_gaussian_kernel(5, 1.5), _np_gaussian_kernel(3, 0.8))
    windows = np.lib.stride_tricks.sliding_window_view(x.numpy(), (5, 3), axis=(2, 3))
    expected = (windows * kernel).sum(axis=(-2, -1))
    out = smooth(x)
    assert out.shape == (1, 2, 5, 6)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(float(smooth.weight[0].sum()), 1.0, rtol=1e-6)


@pytest.mark.parametrize("dim,shape", [(1, (1, 3, 12)), (2, (1, 3, 8, 9)), (3, (1, 3, 5, 6, 7))])
def test_gaussian_smoothing_same_padding_keeps_constant(dim, shape):
    smooth = T.GaussianSmoothing(3, 3, 1.0, dim=dim, padding_mode="reflect")
    x = torch.full(shape, 0.7)
    out = smooth(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x)
    scripted_equal(smooth, torch.rand(shape))
    # 4 samples per axis hold both reflected borders and an interior; gradcheck's cost grows with the size
    seeded_gradcheck(smooth, torch.rand((1, 3) + (4,) * dim))


def test_gaussian_smoothing_errors():
    with pytest.raises(ValueError, match="dim"):
        T.GaussianSmoothing(3, 3, 1.0, dim=4)
    with pytest.raises(ValueError, match="sigma"):
        T.GaussianSmoothing(3, 3, 0.0)
    with pytest.raises(ValueError, match="padding_mode"):
        T.GaussianSmoothing(3, 3, 1.0, padding_mode="mirror")
    with pytest.raises(ValueError, match=r"\(N, 3"):
        T.GaussianSmoothing(3, 3, 1.0)(torch.rand(1, 2, 8, 8))


# ---------------------------------------------------------------- symmetric padding


@pytest.mark.parametrize("pad_h,pad_w", [((1, 1), (2, 2)), ((0, 3), (2, 0)), ((4, 5), (1, 3))])
def test_symmetric_padding_matches_numpy(pad_h, pad_w):
    x = torch.rand(2, 3, 3, 4, dtype=torch.float64)
    padding = [[0, 0], [0, 0], list(pad_h), list(pad_w)]
    out = T.SymmetricPadding.apply(x, padding)
    np.testing.assert_array_equal(out.numpy(), np.pad(x.numpy(), padding, mode="symmetric"))
    # trailing-dimension pairs and the F.pad-ordered function agree
    np.testing.assert_array_equal(T.SymmetricPadding.apply(x, padding[2:]).numpy(), out.numpy())
    flat = [pad_w[0], pad_w[1], pad_h[0], pad_h[1]]
    np.testing.assert_array_equal(T.symmetric_pad(x, flat).numpy(), out.numpy())


def test_symmetric_padding_gradient_counts_mirrored_copies():
    # [a, b, c] padded (2, 1) -> [b, a, a, b, c, c]: weights w on the output give
    # d/da = w1 + w2, d/db = w0 + w3, d/dc = w4 + w5.
    x = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64, requires_grad=True)
    out = T.SymmetricPadding.apply(x, [[0, 0], [2, 1]])
    np.testing.assert_array_equal(out.detach().numpy(), [[2, 1, 1, 2, 3, 3]])
    weights = torch.tensor([[1.0, 10.0, 100.0, 1000.0, 1e4, 1e5]], dtype=torch.float64)
    (out * weights).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[110.0, 1001.0, 110000.0]])


def test_symmetric_padding_gradient_against_reference():
    torch.manual_seed(0)
    x = torch.rand(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(1, 2, 3 + 3, 4 + 5, dtype=torch.float64)
    (T.SymmetricPadding.apply(x, [[1, 2], [2, 3]]) * weights).sum().backward()
    ours = x.grad.clone()
    x.grad = None

    def reference(t: torch.Tensor) -> torch.Tensor:  # symmetric padding from flips and cat
        t = torch.cat([t[..., :1, :].flip(-2), t, t[..., -2:, :].flip(-2)], dim=-2)
        return torch.cat([t[..., :2].flip(-1), t, t[..., -3:].flip(-1)], dim=-1)

    (reference(x) * weights).sum().backward()
    torch.testing.assert_close(ours, x.grad, rtol=0, atol=1e-12)
    # the gradient is not a crop of the output gradient: border pixels collect their mirrored copies
    assert not torch.allclose(ours, weights[..., 1:4, 2:6])
    small = torch.rand(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: T.SymmetricPadding.apply(t, [[2, 1], [1, 4]]), (small,))
    assert torch.autograd.gradgradcheck(lambda t: T.SymmetricPadding.apply(t, [[2, 1], [1, 4]]), (small,))


def test_symmetric_pad2d_module_scripted():
    module = T.SymmetricPad2d((1, 2, 3, 1))
    x = torch.rand(1, 2, 4, 5, requires_grad=True)
    out = scripted_equal(module, x)
    assert out.shape == (1, 2, 8, 8)
    scripted = torch.jit.script(module)
    weights = torch.rand(out.shape)
    (scripted(x) * weights).sum().backward()
    grad_scripted = x.grad.clone()
    x.grad = None
    (module(x) * weights).sum().backward()
    torch.testing.assert_close(grad_scripted, x.grad)
    with pytest.raises(ValueError, match="padding"):
        T.SymmetricPad2d((1, 2))
    with pytest.raises(ValueError, match="pair"):
        T.SymmetricPadding.apply(x, [[1, -1]])


def test_top_level_reexports():
    assert opt.hue_to_rgb is T.hue_to_rgb
    assert opt.nchannels_to_rgb is T.nchannels_to_rgb
    for name in T.__all__:
        assert hasattr(T, name), name
