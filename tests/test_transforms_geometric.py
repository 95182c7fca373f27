"""Tests of optim.transforms' geometric transforms and the fused TransformationRobustness."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from optim import transforms as T
from optim.transforms._affine import affine_grid
from optim.transforms.robustness import DEFAULT_DEGREES, DEFAULT_SCALE, DEFAULT_TRANSLATE
from _transform_checks import scripted_equal, seeded_gradcheck

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


def _smooth_image(h: int, w: int, pad_value: float = 0.5) -> torch.Tensor:
    """A smooth image that fades to ``pad_value`` at its border (so resampling twice ~ resampling once)."""
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float64) + 0.5 - h / 2,
        torch.arange(w, dtype=torch.float64) + 0.5 - w / 2,
        indexing="ij",
    )
    bump = torch.exp(-(xx**2 + yy**2) / (2 * (min(h, w) / 5) ** 2))
    channels = [bump * torch.cos(xx / 5), bump * torch.sin(yy / 4), bump]
    return (pad_value + 0.4 * torch.stack(channels))[None]


# ---------------------------------------------------------------- jitter


@pytest.mark.parametrize("shift", [(0, 0), (2, -3), (-4, 1), (5, 6)])
def test_spatial_jitter_circular_is_numpy_roll(shift):
    x = torch.arange(2 * 3 * 7 * 8, dtype=torch.float32).view(2, 3, 7, 8)
    out = T.spatial_jitter(x, shift[0], shift[1], padding_mode="circular")
    np.testing.assert_array_equal(out.numpy(), np.roll(x.numpy(), shift, axis=(2, 3)))


@pytest.mark.parametrize("mode,np_mode", [("reflect", "reflect"), ("replicate", "edge"), ("constant", "constant")])
def test_spatial_jitter_padding_modes_match_numpy(mode, np_mode):
    x = torch.rand(1, 2, 6, 7)
    for sy, sx in [(2, -3), (-1, 4), (0, 0)]:
        out = T.spatial_jitter(x, sy, sx, padding_mode=mode, value=0.25)
        pad = ((0, 0), (0, 0), (abs(sy), abs(sy)), (abs(sx), abs(sx)))
        kwargs = {"constant_values": 0.25} if np_mode == "constant" else {}
        padded = np.pad(x.numpy(), pad, mode=np_mode, **kwargs)
        top, left = abs(sy) - sy, abs(sx) - sx
        np.testing.assert_array_equal(out.numpy(), padded[..., top : top + 6, left : left + 7])


def test_random_spatial_jitter_draws_every_shift_and_scripts():
    jitter = T.RandomSpatialJitter(2)
    draws = {tuple(jitter.sample_params()) for _ in range(400)}
    assert draws == {(y, x) for y in range(-2, 3) for x in range(-2, 3)}
    x = torch.rand(1, 3, 9, 9)
    torch.manual_seed(1)
    shift = jitter.sample_params()
    torch.manual_seed(1)
    torch.testing.assert_close(jitter(x), T.spatial_jitter(x, shift[0], shift[1], "reflect"), rtol=0, atol=0)
    assert scripted_equal(jitter, x).shape == x.shape
    seeded_gradcheck(jitter, torch.rand(1, 2, 5, 5))


# ---------------------------------------------------------------- scale and rotation


def test_random_scale_resizes_like_interpolate():
    x = torch.rand(1, 3, 20, 16)
    scale = T.RandomScale([0.5, 1.5])
    assert scale.apply_params(x, 0.5).shape == (1, 3, 10, 8)
    expected = F.interpolate(x, scale_factor=1.5, mode="bilinear", align_corners=False, recompute_scale_factor=False)
    torch.testing.assert_close(scale.apply_params(x, 1.5), expected)
    assert {scale.sample_params() for _ in range(100)} == {0.5, 1.5}
    ranged = T.RandomScale((0.8, 1.2))
    draws = [ranged.sample_params() for _ in range(200)]
    assert 0.8 <= min(draws) < 0.85 and 1.15 < max(draws) <= 1.2
    assert scripted_equal(ranged, x).shape[1] == 3
    seeded_gradcheck(T.RandomScale([0.75, 1.5]), torch.rand(1, 2, 4, 4))


def test_random_scale_affine_magnifies_about_centre():
    # f(x, y) = x + 2y in centred pixel coordinates; magnifying by 2 gives f(q / 2): half the slopes.
    h = w = 12
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5 - h / 2, torch.arange(w) + 0.5 - w / 2, indexing="ij")
    ramp = (xx + 2 * yy).double()[None, None]
    out = T.RandomScaleAffine([2.0]).apply_params(ramp, 2.0)
    torch.testing.assert_close(out[..., 3:9, 3:9], ramp[..., 3:9, 3:9] / 2, rtol=0, atol=1e-9)
    identity = T.RandomScaleAffine([1.0])(ramp)
    torch.testing.assert_close(identity, ramp, rtol=0, atol=1e-9)
    # shrinking exposes the canvas, filled with the constant
    shrunk = T.RandomScaleAffine([0.5], value=0.25).apply_params(torch.ones(1, 1, 8, 8), 0.5)
    assert float(shrunk[0, 0, 0, 0]) == 0.25 and float(shrunk[0, 0, 4, 4]) == 1.0


def test_random_rotation_matches_rot90_and_flips():
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    rotation = T.RandomRotation([90.0])
    # counter-clockwise as displayed, like numpy.rot90 on the (H, W) axes
    torch.testing.assert_close(rotation(x), torch.rot90(x, 1, dims=(2, 3)), rtol=0, atol=1e-9)
    rect = torch.rand(1, 2, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(rotation.apply_params(rect, 180.0), rect.flip(2, 3), rtol=0, atol=1e-9)
    corners = T.RandomRotation([45.0], value=0.5)(torch.zeros(1, 1, 9, 9))
    assert float(corners[0, 0, 0, 0]) == 0.5 and float(corners[0, 0, 4, 4]) == 0.0


@pytest.mark.parametrize(
    "module",
    [
        T.RandomScaleAffine((0.8, 1.25)),
        T.RandomScaleAffine([0.9, 1.1], padding_mode="reflection"),
        T.RandomRotation((-30.0, 30.0)),
        T.RandomRotation([10.0], mode="nearest", padding_mode="border"),
        T.RandomRotation([-15.0, 15.0], mode="bicubic", value=0.5),
    ],
)
def test_affine_modules_script_and_gradcheck(module):
    x = torch.rand(2, 3, 10, 12)
    assert scripted_equal(module, x).shape == x.shape
    seeded_gradcheck(module, torch.rand(1, 2, 5, 6))


def test_geometric_errors():
    with pytest.raises(ValueError, match="translate"):
        T.RandomSpatialJitter(-1)
    with pytest.raises(ValueError, match="padding_mode"):
        T.RandomSpatialJitter(2, padding_mode="mirror")
    with pytest.raises(ValueError, match=r"\(min, max\) range"):
        T.RandomRotation((1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="min > max"):
        T.RandomScaleAffine((1.2, 0.8))
    with pytest.raises(ValueError, match="positive"):
        T.RandomScale([1.0, 0.0])
    with pytest.raises(TypeError, match="degrees"):
        T.RandomRotation(15.0)
    with pytest.raises(ValueError, match="at least one"):
        T.RandomRotation([])
    with pytest.raises(ValueError, match="padding_mode"):
        T.RandomRotation([1.0], padding_mode="wrap")
    with pytest.raises(ValueError, match="'zeros' fills with 0"):
        T.RandomRotation([1.0], padding_mode="zeros", value=0.5)
    with pytest.raises(ValueError, match="NCHW"):
        T.RandomRotation([1.0])(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="smaller than the image"):
        T.spatial_jitter(torch.rand(1, 1, 4, 4), 4, 0)


# ---------------------------------------------------------------- TransformationRobustness


def test_transformation_robustness_defaults_are_captums():
    tr = T.TransformationRobustness()
    captum_scale = [0.995**n for n in range(-5, 80)] + [0.998**n for n in 2 * list(range(20, 40))]
    captum_degrees = list(range(-20, 20)) + list(range(-10, 10)) + list(range(-5, 5)) + 5 * [0]
    assert tr.padding == 2 and tr.pad_value == 0.5
    assert [j.translate for j in tr.jitters] == [4] * 10 == DEFAULT_TRANSLATE
    np.testing.assert_allclose(tr.random_scale.values, captum_scale, rtol=1e-12)
    assert not tr.random_scale.is_range and len(DEFAULT_SCALE) == 125
    assert tr.random_rotation.values == [float(d) for d in captum_degrees] == DEFAULT_DEGREES
    assert tr.final_jitter.translate == 2
    assert tr.crop_or_pad_output is False
    x = torch.rand(1, 3, 20, 24)
    assert tr(x).shape == (1, 3, 24, 28)
    assert T.TransformationRobustness(crop_or_pad_output=True)(x).shape == x.shape


def test_transformation_robustness_parameter_ranges():
    tr = T.TransformationRobustness(translate=[1, 3], scale=(0.5, 0.6), degrees=[5.0, 7.0], final_translate=1)
    seen_y = set()
    for _ in range(300):
        jitters, scale, angle, final = tr.sample_params()
        assert abs(jitters[0][0]) <= 1 and abs(jitters[0][1]) <= 1
        assert abs(jitters[1][0]) <= 3 and abs(jitters[1][1]) <= 3
        assert 0.5 <= scale <= 0.6 and angle in (5.0, 7.0)
        assert abs(final[0]) <= 1 and abs(final[1]) <= 1
        seen_y.add(jitters[1][0])
    assert seen_y == set(range(-3, 4))


def test_fused_equals_sequential_integer_steps_exactly():
    # Jitters and padding only: the fused map must equal the modules one after another, on a canvas big
    # enough that no intermediate step pushes content off its frame.
    tr = T.TransformationRobustness(padding=3, pad_value=0.3, translate=[2, 4, 1], scale=None, degrees=None)
    x = torch.rand(2, 3, 10, 13, dtype=torch.float64)
    margin = 12
    big = F.pad(x, [margin] * 4, value=0.3)
    for _ in range(5):
        params = tr.sample_params()
        fused = tr.apply_fused(x, *params)
        sequential = tr.apply_sequential(big, *params)[..., margin:-margin, margin:-margin]
        assert fused.shape == (2, 3, 16, 19)
        torch.testing.assert_close(fused, sequential, rtol=0, atol=1e-6)


@pytest.mark.parametrize("crop", [False, True])
def test_fused_equals_sequential_with_scale_and_rotation(crop):
    tr = T.TransformationRobustness(translate=[3, 3], final_translate=2, crop_or_pad_output=crop)
    x = _smooth_image(36, 40)
    margin = 10
    big = F.pad(x, [margin] * 4, value=0.5)
    for params in [([[1, -2], [3, 2]], 0.8, 13.0, [-1, 2]), ([[0, 0], [-3, 1]], 1.02, -20.0, [2, 0])]:
        fused = tr.apply_fused(x, *params)
        sequential = tr.apply_sequential(big, *params)[..., margin:-margin, margin:-margin]
        assert fused.shape == ((1, 3, 36, 40) if crop else (1, 3, 40, 44))
        # the only difference left is resampling twice (scale, then rotation) instead of once
        torch.testing.assert_close(fused, sequential, rtol=0, atol=1e-2)
        assert float((fused - 0.5).abs().max()) > 0.3  # the content is really there


def test_fused_forward_matches_sequential_forward_for_a_seed():
    x = _smooth_image(48, 48)
    fused, sequential = T.TransformationRobustness(), T.TransformationRobustness(fused=False)
    for seed in range(3):
        torch.manual_seed(seed)
        a = fused(x)
        torch.manual_seed(seed)
        b = sequential(x)
        # same draws; away from the frame border no content was lost by the sequential path
        torch.testing.assert_close(a[..., 12:-12, 12:-12], b[..., 12:-12, 12:-12], rtol=0, atol=1e-2)


def test_affine_matrix_composes_the_steps():
    tr = T.TransformationRobustness()
    theta = tr.affine_matrix([[1, 2], [3, -4]], 2.0, 90.0, [5, 6], [20, 30], [24, 34])
    # inverse map in centred pixels: p = R(90)^T / 2 (q - (6, 5)) - (-2, 4)  [(x, y) order]
    expected = torch.tensor(
        [[0.0, -0.5 * 24 / 30, 2 * (-(0 * 6 - 0.5 * 5) + 2) / 30], [0.5 * 34 / 20, 0.0, 2 * (-(0.5 * 6) - 4) / 20]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(theta[0], expected, rtol=0, atol=1e-12)


def test_transformation_robustness_uses_one_resampling(monkeypatch):
    calls = []
    grid_sample = F.grid_sample

    def counting_grid_sample(*args, **kwargs):
        calls.append(args[1].shape)
        return grid_sample(*args, **kwargs)

    monkeypatch.setattr(F, "grid_sample", counting_grid_sample)
    x = torch.rand(1, 3, 16, 16)
    T.TransformationRobustness()(x)
    assert calls == [(1, 20, 20, 2)]
    T.TransformationRobustness(fused=False)(x)
    assert len(calls) == 3  # scale, then rotation


@pytest.mark.parametrize("batch,hw", [(1, [5, 7]), (3, [8, 8]), (2, [1, 4])])
def test_affine_grid_matches_torch(batch, hw):
    theta = torch.randn(2, 3, dtype=torch.float64)
    ours = affine_grid(theta.flatten().tolist(), batch, hw, torch.device("cpu"), torch.float64)
    expected = F.affine_grid(theta.expand(batch, 2, 3), [batch, 1, hw[0], hw[1]], align_corners=False)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)


def test_transformation_robustness_reproducible_scripted_and_differentiable():
    x = torch.rand(2, 3, 16, 16)
    tr = T.TransformationRobustness()
    torch.manual_seed(7)
    a = tr(x)
    torch.manual_seed(7)
    b = tr(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.manual_seed(8)
    assert not torch.allclose(a, tr(x))
    for module in (tr, T.TransformationRobustness(fused=False, crop_or_pad_output=True),
                   T.TransformationRobustness(translate=2, scale=(0.9, 1.1), degrees=None, final_translate=None)):
        scripted_equal(module, x)
    seeded_gradcheck(T.TransformationRobustness(), torch.rand(1, 2, 6, 6))
    seeded_gradcheck(T.TransformationRobustness(fused=False, translate=[1, 1]), torch.rand(1, 2, 6, 6))
    # every output pixel outside the image reads the pad value; the gradient reaches the input
    x = torch.rand(1, 3, 12, 12, requires_grad=True)
    torch.manual_seed(0)
    out = T.TransformationRobustness(scale=[0.5], degrees=[0.0], translate=None, final_translate=None)(x)
    assert torch.all(out[..., :4, :] == 0.5)
    out.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_transformation_robustness_takes_image_tensors_as_plain_tensors():
    from optim.images import ImageTensor

    x = torch.rand(1, 3, 10, 10)
    for tr in (T.TransformationRobustness(), T.TransformationRobustness(fused=False, crop_or_pad_output=True)):
        torch.manual_seed(2)
        plain = tr(x)
        torch.manual_seed(2)
        wrapped = tr(ImageTensor(x))
        assert type(wrapped) is torch.Tensor  # no subclass dispatch downstream, in the model
        torch.testing.assert_close(wrapped, plain, rtol=0, atol=0)


def test_transformation_robustness_errors():
    with pytest.raises(ValueError, match="padding"):
        T.TransformationRobustness(padding=-1)
    with pytest.raises(ValueError, match="translate"):
        T.TransformationRobustness(translate="4")
    with pytest.raises(ValueError, match="final_translate"):
        T.TransformationRobustness(final_translate=-2)
    with pytest.raises(ValueError, match="mode"):
        T.TransformationRobustness(mode="area")
    with pytest.raises(ValueError, match="NCHW"):
        T.TransformationRobustness()(torch.rand(3, 8, 8))
