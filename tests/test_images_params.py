"""Image parameterizations: NumPy parity, exact init inversion, gradients, dtype, batches, TorchScript."""
import functools
import numpy as np
import pytest
import torch

from optim.images import (
    CPPNImage,
    FFTImage,
    ImageTensor,
    LaplacianImage,
    NaturalImage,
    PhaseImage,
    PixelImage,
    SharedImage,
    StackImage,
    ToRGB,
    rfft2d_freqs,
)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


def lucid_rfft2d_freqs(h: int, w: int) -> np.ndarray:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + 1]
    return np.sqrt(fx * fx + fy * fy)


def build(name: str, batch: int = 2, size=(12, 10)):
    """One instance of every parameterization, small."""
    if name == "shared":
        return SharedImage(size, 3, batch, shapes=[(1, 3, 3, 3), (2, 3, 4, 5)], offset=(0, 0, 1, 2))
    if name == "stack":
        return StackImage([PixelImage(size, batch=batch - 1), FFTImage(size)])
    if name == "natural":
        return NaturalImage(size, batch=batch)
    if name == "cppn":
        image = CPPNImage(size, batch=batch, num_hidden=4, num_layers=2)
        with torch.no_grad():  # leave Lucid's zero output layer so every weight gets a gradient
            image.output.weight.normal_()
        return image
    classes = {"pixel": PixelImage, "fft": FFTImage, "laplacian": LaplacianImage, "phase": PhaseImage}
    return classes[name](size, batch=batch)


ALL = ["pixel", "fft", "laplacian", "shared", "stack", "natural", "phase", "cppn"]


# --- FFTImage ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("h,w", [(8, 8), (7, 10), (6, 9)])
def test_rfft2d_freqs_match_lucid(h, w):
    np.testing.assert_allclose(rfft2d_freqs(h, w, dtype=torch.float64).numpy(), lucid_rfft2d_freqs(h, w), atol=1e-15)


@pytest.mark.parametrize("h,w,decay", [(8, 8, 1.0), (7, 10, 1.0), (6, 9, 1.5), (5, 4, 0.0)])
def test_fft_image_matches_numpy_irfft2(h, w, decay):
    image = FFTImage((h, w), channels=3, batch=2, decay_power=decay).double()
    spectrum = image.spectrum.detach().numpy()
    scale = np.sqrt(h * w) / np.maximum(lucid_rfft2d_freqs(h, w), 1.0 / max(h, w)) ** decay
    expected = np.fft.irfft2(scale * (spectrum[..., 0] + 1j * spectrum[..., 1]), s=(h, w))
    out = image()
    assert out.shape == (2, 3, h, w)
    np.testing.assert_allclose(out.detach().numpy(), expected, atol=1e-12)


def test_fft_spectrum_is_a_real_parameter():
    image = FFTImage((6, 8), channels=4, batch=3)
    assert image.spectrum.shape == (3, 4, 6, 5, 2) and not image.spectrum.is_complex()
    assert [n for n, _ in image.named_parameters()] == ["spectrum"]
    assert abs(image.spectrum.std().item() - 0.01) < 0.003  # Lucid's initial sd


@pytest.mark.parametrize("shape", [(3, 9, 7), (2, 3, 8, 8), (1, 4, 5, 6)])
def test_fft_init_inverts_exactly(shape):
    init = torch.rand(shape, dtype=torch.float64)
    out = FFTImage(init=init)()
    assert torch.allclose(out, init.view(-1, *init.shape[-3:]), atol=1e-12)
    out32 = FFTImage(init=init.float())()
    assert out32.dtype == torch.float32 and torch.allclose(out32, init.float().view_as(out32), atol=1e-5)


# --- Pixel / Laplacian --------------------------------------------------------------------------------
def test_pixel_image_init_and_default():
    init = torch.rand(3, 5, 4)
    assert torch.equal(PixelImage(init=init)(), init[None])
    batched = PixelImage(init=init, batch=3)()
    assert batched.shape == (3, 3, 5, 4) and torch.equal(batched[2], init)
    default = PixelImage((5, 6), channels=2)()
    assert default.shape == (1, 2, 5, 6) and abs(default.mean().item() - 0.5) < 0.1


def test_laplacian_init_inverts_exactly_and_levels_are_blocky():
    init = torch.rand(2, 3, 37, 50, dtype=torch.float64)
    image = LaplacianImage(init=init)
    assert torch.allclose(image(), init, atol=1e-12)
    shapes = [tuple(p.shape[2:]) for p in image.levels]
    assert shapes == [(37, 50), (19, 25), (10, 13), (5, 7), (3, 4), (2, 2)]
    # a coarse level alone changes the image in blocks of its scale
    with torch.no_grad():
        for p in image.levels:
            p.zero_()
        image.levels[2][0, 0, 0, 0] = 1.0
    out = image()[0, 0] - 0.5
    assert torch.equal(out[:4, :4], torch.ones(4, 4, dtype=torch.float64))
    assert out.sum().item() == 16.0


def test_laplacian_small_image_drops_large_scales():
    image = LaplacianImage((10, 6))
    assert image.scales == [1, 2, 4, 8]
    assert image().shape == (1, 3, 10, 6)


# --- SharedImage ----------------------------------------------------------------------------------------
def test_shared_image_interpolates_over_batch_like_numpy():
    base = PixelImage(init=torch.zeros(5, 1, 2, 2, dtype=torch.float64))
    image = SharedImage(shapes=(2, 1, 1, 1), parameterization=base).double()
    with torch.no_grad():
        image.shared[0].copy_(torch.tensor([0.0, 1.0]).view(2, 1, 1, 1))
    out = image()
    # linear interpolation with half-pixel centres from 2 to 5 samples
    centres = (np.arange(5) + 0.5) * 2 / 5 - 0.5
    expected = np.interp(centres, [0, 1], [0.0, 1.0])
    np.testing.assert_allclose(out[:, 0, 0, 0].detach().numpy(), expected, atol=1e-12)
    assert torch.equal(out[:, :, 0, 0], out[:, :, 1, 1])


def test_shared_image_adds_the_same_upsampled_tensor_to_every_image():
    base = FFTImage((8, 8), batch=3)
    image = SharedImage(shapes=[(4, 4)], parameterization=base)
    diff = image() - base()
    assert torch.allclose(diff[0], diff[2]) and torch.allclose(diff[0, 0], diff[0, 2])
    low = image.shared[0].detach()
    up = torch.nn.functional.interpolate(low, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(diff[0, 0], up[0, 0], atol=1e-6)


def test_shared_image_offset_matches_numpy_symmetric_pad():
    base = PixelImage(init=torch.zeros(1, 1, 6, 6, dtype=torch.float64))
    image = SharedImage(shapes=(1, 1, 6, 6), parameterization=base, offset=(0, 0, 2, 1)).double()
    shared = image.shared[0].detach().numpy()
    padded = np.pad(shared, [(0, 0), (0, 0), (2, 0), (1, 0)], mode="symmetric")[:, :, :6, :6]
    np.testing.assert_allclose(image().detach().numpy(), padded, atol=1e-12)


def test_shared_image_bad_arguments():
    base = FFTImage((8, 8))
    with pytest.raises(ValueError, match="2 to 4"):
        SharedImage(shapes=[(1, 2, 3, 4, 5)], parameterization=base)
    with pytest.raises(ValueError, match="offsets"):
        SharedImage(shapes=[(4, 4), (2, 2)], parameterization=base, offset=[(1, 1)])
    with pytest.raises(ValueError, match="exceeds"):
        SharedImage(shapes=(4, 4), parameterization=base, offset=9)
    with pytest.raises(TypeError, match="parameterization must be"):
        SharedImage((8, 8), shapes=(4, 4), parameterization=int)
    with pytest.raises(TypeError, match="shapes="):
        SharedImage((8, 8))
    with pytest.raises(ValueError, match="init can only be used"):
        SharedImage(init=torch.rand(3, 8, 8), shapes=(4, 4), parameterization=base)
    with pytest.raises(ValueError, match=r"size \(16, 16\) disagrees .* 8x8"):
        SharedImage((16, 16), shapes=(4, 4), parameterization=base)
    # captum's positional form SharedImage(shapes, parameterization, offset) works as written
    legacy = SharedImage((4, 4), base, offset=1)
    assert legacy.parameterization is base and legacy.offsets == [[1, 1, 1, 1]] and legacy().shape == (1, 3, 8, 8)
    positional = SharedImage((4, 4), base, (0, 0, 1, 2))
    assert positional.offsets == [[0, 0, 1, 2]]
    with pytest.raises(TypeError, match="offset twice"):
        SharedImage((4, 4), base, (0, 0, 1, 1), offset=2)


# --- StackImage -------------------------------------------------------------------------------------------
def test_stack_image_concatenates_parameterizations_and_tensors():
    fixed = torch.rand(3, 6, 6)
    first = PixelImage((6, 6), batch=2)
    image = StackImage([first, fixed])
    out = image()
    assert out.shape == (3, 3, 6, 6)
    assert torch.equal(out[:2], first()) and torch.equal(out[2], fixed)
    assert torch.equal(StackImage([fixed, fixed], dim=1)().squeeze(0), torch.cat([fixed, fixed]))
    with pytest.raises(ValueError, match="differ"):
        StackImage([PixelImage((6, 6)), PixelImage((6, 7))])
    with pytest.raises(ValueError, match="non-empty"):
        StackImage([])


# --- PhaseImage / CPPNImage ---------------------------------------------------------------------------------
def test_phase_image_keeps_the_magnitude_and_unit_std():
    h, w = 10, 12
    magnitude = torch.rand(3, h, w // 2 + 1, dtype=torch.float64) + 0.1
    image = PhaseImage((h, w), batch=2, magnitude=magnitude).double()
    assert [n for n, _ in image.named_parameters()] == ["phase"]
    out = image()
    assert torch.allclose(out.mean(dim=(2, 3)), torch.zeros(2, 3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(out.std(dim=(2, 3), unbiased=False), torch.ones(2, 3, dtype=torch.float64), atol=1e-9)
    # standardization is affine: away from DC (and the self-conjugate columns irfft2 symmetrizes) the
    # output spectrum is the given magnitude divided by one factor per image and channel
    ratio = torch.fft.rfft2(out).abs()[..., 1:, 1 : w // 2] / magnitude[None, :, 1:, 1 : w // 2]
    spread = ratio.amax(dim=(2, 3)) / ratio.amin(dim=(2, 3))
    assert torch.allclose(spread, torch.ones_like(spread), atol=1e-9)


def test_phase_image_default_magnitude_is_a_power_law_and_bad_shape_raises():
    image = PhaseImage((8, 8), channels=3)
    freqs = rfft2d_freqs(8, 8, dtype=torch.float64)
    assert torch.allclose(image.magnitude[1] * torch.clamp(freqs, min=1 / 8), torch.full_like(freqs, 8.0))
    with pytest.raises(ValueError, match="magnitude"):
        PhaseImage((8, 8), magnitude=torch.rand(3, 8, 8))


def test_cppn_image_starts_uniform_and_batches_are_independent():
    image = CPPNImage((9, 7), channels=3, batch=2, num_hidden=5, num_layers=3)
    out = image()
    assert out.shape == (2, 3, 9, 7) and torch.count_nonzero(out) == 0
    assert len(image.hidden) == 3 and image.hidden[1].in_channels == 2 * 10  # composite doubles the width
    with torch.no_grad():
        image.output.weight.normal_()
    out = image()
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(ValueError, match="activation"):
        CPPNImage((4, 4), activation="swish")


# --- NaturalImage ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("parameterization", [FFTImage, PixelImage, LaplacianImage])
def test_natural_image_reproduces_init(parameterization):
    img = torch.rand(2, 3, 11, 13)
    out = NaturalImage(init=img, parameterization=parameterization)()
    assert isinstance(out, ImageTensor) and out.shape == img.shape
    assert (out - img).abs().max().item() < 1e-4


def test_natural_image_init_pipeline_and_alpha():
    img = torch.rand(4, 8, 8, dtype=torch.float64)
    image = NaturalImage(init=img, channels=4)
    spatial = image.parameterization()
    # the parameterization holds the decorrelated logits, with alpha only passed through the logit
    logits = torch.logit(img.clamp(1e-6, 1 - 1e-6))
    assert torch.allclose(spatial[0, 3], logits[3], atol=1e-9)
    assert torch.allclose(spatial[0], ToRGB("klt")(logits, inverse=True), atol=1e-9)
    assert torch.allclose(image()[0], img, atol=1e-9)
    plain = NaturalImage(init=img, decorrelate_init=False)()
    assert not torch.allclose(plain[0], img, atol=1e-2)


def test_natural_image_defaults_and_argument_checks():
    a, b = NaturalImage((8, 8)), NaturalImage((8, 8))
    assert a.decorrelate is not b.decorrelate
    out = a()
    assert out.shape == (1, 3, 8, 8) and 0.45 < out.mean().item() < 0.55
    with pytest.raises(ValueError, match="instance"):
        NaturalImage(init=torch.rand(3, 8, 8), parameterization=FFTImage((8, 8)))
    with pytest.raises(TypeError, match="must return an nn.Module, got Tensor"):
        NaturalImage((8, 8), parameterization=lambda size, channels, batch: torch.rand(batch, channels, *size))
    with pytest.raises(TypeError, match="ImageParameterization class, a factory"):
        NaturalImage(parameterization=int)
    with pytest.raises(TypeError, match="ImageParameterization class, a factory"):
        NaturalImage(parameterization="fft")
    # a factory called like a class, with or without init
    steep = functools.partial(FFTImage, decay_power=2.0)
    assert NaturalImage((8, 8), parameterization=steep).parameterization.decay_power == 2.0
    img = torch.rand(3, 8, 8) * 0.8 + 0.1
    torch.testing.assert_close(NaturalImage(init=img, parameterization=steep)()[0], img, atol=1e-4, rtol=0)
    wrapped = NaturalImage(parameterization=StackImage([FFTImage((8, 8)), FFTImage((8, 8))]))
    assert wrapped().shape == (2, 3, 8, 8)


# --- every parameterization ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_gradients_reach_every_parameter(name):
    image = build(name)
    out = image()
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in image.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", ALL)
def test_float64_and_batch_shapes(name):
    image = build(name, batch=3).double()
    out = image()
    assert out.dtype == torch.float64 and out.shape == (3, 3, 12, 10)
    out.sum().backward()
    assert all(p.grad.dtype == torch.float64 for p in image.parameters())


@pytest.mark.parametrize("name", ALL + ["natural_phase", "natural_cppn", "natural_alpha"])
def test_torchscript_matches_eager(name):
    if name.startswith("natural_"):
        kind = name.split("_")[1]
        image = {
            "phase": lambda: NaturalImage((8, 8), parameterization=PhaseImage),
            "cppn": lambda: NaturalImage((8, 8), parameterization=CPPNImage),
            "alpha": lambda: NaturalImage((8, 8), channels=4, parameterization=LaplacianImage),
        }[kind]()
    else:
        image = build(name)
    scripted = torch.jit.script(image)
    eager = image()
    assert torch.equal(scripted(), eager.as_subclass(torch.Tensor))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ALL)
def test_runs_on_cuda(name):
    image = build(name).cuda()
    out = image()
    assert out.is_cuda and out.shape == (2, 3, 12, 10)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.is_cuda for p in image.parameters())
