"""reset_parameters(generators): per-image random streams, init restoration, errors; the shared signature."""
import functools
import inspect

import pytest
import torch
import torch.nn as nn

import optim.images as images
from optim.images import (
    CPPNImage,
    FFTImage,
    ImageParameterization,
    LaplacianImage,
    NaturalImage,
    PhaseImage,
    PixelImage,
    SharedImage,
    StackImage,
)

SIZE = (12, 10)


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def look(image: nn.Module) -> torch.Tensor:
    """The image, with a CPPN's (zero-initialized) output layer set to a constant so the hidden weights show."""
    with torch.no_grad():
        for m in image.modules():
            if isinstance(m, CPPNImage):
                m.output.weight.fill_(0.1)
        return image().as_subclass(torch.Tensor).clone()


# every parameterization built from (size, channels, batch): name -> factory(batch)
FACTORIES = {
    "pixel": lambda b: PixelImage(SIZE, 3, b),
    "fft": lambda b: FFTImage(SIZE, 3, b, decay_power=1.5),
    "laplacian": lambda b: LaplacianImage(SIZE, 3, b, scales=(1, 2, 4)),
    "phase": lambda b: PhaseImage(SIZE, 3, b),
    "cppn": lambda b: CPPNImage(SIZE, 3, b, num_hidden=4, num_layers=2),
    "natural": lambda b: NaturalImage(SIZE, 3, b),
    "natural_pixel": lambda b: NaturalImage(SIZE, 4, b, parameterization=PixelImage),
    "natural_laplacian": lambda b: NaturalImage(SIZE, 3, b, parameterization=LaplacianImage),
    "natural_phase": lambda b: NaturalImage(SIZE, 3, b, parameterization=PhaseImage),
    "natural_cppn": lambda b: NaturalImage(SIZE, 3, b, parameterization=CPPNImage),
    # a stack split 1 + (b - 1): image i of the stack is image i - 1 of its FFT part
    "stack": lambda b: StackImage([PixelImage(SIZE, 3, 1), FFTImage(SIZE, 3, b - 1)]) if b > 1 else FFTImage(SIZE),
    "stack_channels": lambda b: StackImage([PixelImage(SIZE, 2, b), FFTImage(SIZE, 1, b)], dim=1),
}
NAMES = list(FACTORIES)


def image_state(image: nn.Module, i: int, batch: int):
    """Image ``i``'s slice of every parameter (a CPPN's image ``i`` is group ``i`` of each grouped conv)."""
    return [p.detach().chunk(batch)[i] for p in image.parameters()]


# forwards made of exact arithmetic and gathers only; the others go through CPU kernels whose result for one
# image depends on the batch around it by an ulp (MKL/pocketfft irfft2 groups transforms into SIMD lanes,
# sigmoid/atan take a scalar path for the last elements of a tensor, a grouped conv is another kernel)
EXACT_FORWARD = {"pixel", "laplacian"}


@pytest.mark.parametrize("name", [n for n in NAMES if n != "stack"])
def test_image_in_a_batch_equals_the_image_alone(name):
    batch = FACTORIES[name](3)
    batch.reset_parameters(gens(11, 22, 33))
    alone = FACTORIES[name](1)
    alone.reset_parameters(gens(22))
    # the random state of image 1 is the state of the image built alone, bit for bit
    for a, b in zip(image_state(batch, 1, 3), image_state(alone, 0, 1)):
        assert torch.equal(a, b)
    for a, b in zip(image_state(batch, 0, 3), image_state(batch, 1, 3)):
        assert a.numel() == 0 or not torch.equal(a, b) or (a == 0).all()  # CPPN biases and output start at 0
    out, single = look(batch), look(alone)
    assert out.shape[0] == 3 and single.shape[0] == 1
    if name in EXACT_FORWARD:
        assert torch.equal(out[1], single[0])
    else:
        torch.testing.assert_close(out[1], single[0], rtol=0, atol=1e-6)
    assert (out[0] - out[1]).abs().max() > 1e-3 and (out[1] - out[2]).abs().max() > 1e-3


def test_stack_hands_each_part_its_slice_of_the_generators():
    stack = FACTORIES["stack"](3)  # PixelImage batch 1 + FFTImage batch 2
    stack.reset_parameters(gens(11, 22, 33))
    fft = FFTImage(SIZE)
    fft.reset_parameters(gens(22))
    pixel = PixelImage(SIZE)
    pixel.reset_parameters(gens(11))
    out = stack()
    assert torch.equal(stack.parameterizations[1].spectrum[0], fft.spectrum[0])
    assert torch.equal(out[0], pixel()[0])
    torch.testing.assert_close(out[1], fft()[0], rtol=0, atol=1e-6)
    # a fixed tensor takes its image's slot and draws nothing
    fixed = torch.rand(1, 3, *SIZE)
    with_fixed = StackImage([fixed, FFTImage(SIZE, 3, 2)])
    with_fixed.reset_parameters(gens(11, 22, 33))
    assert torch.equal(with_fixed()[0], fixed[0])
    assert torch.equal(with_fixed.parameterizations[1].spectrum[0], fft.spectrum[0])


@pytest.mark.parametrize("name", NAMES)
def test_equal_generators_give_equal_images_and_no_generators_a_new_one(name):
    a, b = FACTORIES[name](3), FACTORIES[name](3)
    a.reset_parameters(gens(1, 2, 3))
    b.reset_parameters(gens(1, 2, 3))
    first = look(a)
    assert torch.equal(first, look(b))
    a.reset_parameters()  # torch's global generator
    redrawn = look(a)
    assert redrawn.shape == first.shape and not torch.equal(redrawn, first)
    assert (redrawn - first).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["pixel", "fft", "laplacian", "phase", "cppn", "natural"])
def test_reset_keeps_the_parameter_objects_and_draws_float32_noise_on_the_cpu(name):
    image = FACTORIES[name](2)
    params = list(image.parameters())
    image.reset_parameters(gens(5, 6))
    assert [id(p) for p in image.parameters()] == [id(p) for p in params]
    double = FACTORIES[name](2).double()
    double.reset_parameters(gens(5, 6))
    for p32, p64 in zip(image.parameters(), double.parameters()):
        assert p64.dtype == torch.float64 and torch.equal(p64, p32.double())


def test_global_generator_draws_keep_todays_distribution():
    torch.manual_seed(3)
    pixel = PixelImage((6, 5), 2, 2)
    torch.manual_seed(3)
    assert torch.equal(pixel.image, torch.randn(2, 2, 6, 5) / 10 + 0.5)
    torch.manual_seed(3)
    fft = FFTImage((6, 5), 3, 2)
    torch.manual_seed(3)
    assert torch.equal(fft.spectrum, torch.randn(2, 3, 6, 3, 2) * 0.01)
    torch.manual_seed(3)
    lap = LaplacianImage((6, 5), 1, 1, scales=(1, 2))
    torch.manual_seed(3)
    expected = [torch.randn(1, 1, 6, 5) / 10 * 0.5**0.1, torch.randn(1, 1, 3, 3) / 10]
    assert all(torch.equal(p, e) for p, e in zip(lap.levels, expected))
    torch.manual_seed(3)
    phase = PhaseImage((6, 5), 3, 1)
    torch.manual_seed(3)
    assert torch.equal(phase.phase, torch.randn(1, 3, 6, 3))


INIT = torch.rand(2, 3, *SIZE, dtype=torch.float64) * 0.8 + 0.1
INIT_STARTED = {
    "pixel": lambda: PixelImage(init=INIT),
    "fft": lambda: FFTImage(init=INIT, decay_power=1.5),
    "laplacian": lambda: LaplacianImage(init=INIT),
    "phase": lambda: PhaseImage(init=INIT),
    "natural": lambda: NaturalImage(init=INIT),
    "natural_laplacian": lambda: NaturalImage(init=INIT, parameterization=LaplacianImage),
    "shared": lambda: SharedImage(init=INIT, shapes=[(1, 3, 4, 4)], parameterization=PixelImage),
    "stack": lambda: StackImage([PixelImage(init=INIT[:1]), INIT[1:]]),
}


@pytest.mark.parametrize("name", list(INIT_STARTED))
def test_init_started_images_go_back_to_their_init(name):
    image = INIT_STARTED[name]()
    start = image().detach().clone()
    if name not in ("phase",):  # PhaseImage keeps init's phase only
        assert (start - INIT).abs().max() < 1e-4
    with torch.no_grad():
        for p in image.parameters():
            p.add_(1.0)
    assert not torch.equal(image().detach(), start)
    generators = gens(1, 2)
    image.reset_parameters(generators)
    assert torch.equal(image().detach(), start)
    assert torch.equal(torch.rand(3, generator=generators[0]), torch.rand(3, generator=gens(1)[0]))  # nothing drawn
    with torch.no_grad():
        for p in image.parameters():
            p.mul_(-2.0)
    image.reset_parameters()
    assert torch.equal(image().detach(), start)


def test_shared_image_streams():
    shapes = [(1, 3, 3, 3), (1, 1, 4, 5)]
    batch = SharedImage(SIZE, 3, 3, shapes=shapes)
    batch.reset_parameters(gens(11, 22, 33))
    first = SharedImage(SIZE, 3, 1, shapes=shapes)
    first.reset_parameters(gens(11))
    # the shared tensors come from generators[0], after the inner image 0: image 0 is the same alone
    assert all(torch.equal(a, b) for a, b in zip(batch.shared, first.shared))
    assert torch.equal(batch.parameterization.spectrum[0], first.parameterization.spectrum[0])
    torch.testing.assert_close(batch()[0], first()[0], rtol=0, atol=1e-6)
    # image 1's own part is the inner image built alone
    alone = FFTImage(SIZE)
    alone.reset_parameters(gens(22))
    assert torch.equal(batch.parameterization.spectrum[1], alone.spectrum[0])
    with pytest.raises(ValueError, match="generators"):
        batch.reset_parameters(gens(1, 2))


@pytest.mark.parametrize("name", NAMES + ["shared"])
def test_bad_generators_raise(name):
    image = FACTORIES[name](3) if name != "shared" else SharedImage(SIZE, 3, 3, shapes=(4, 4))
    with pytest.raises(ValueError, match=r"generators must hold one torch.Generator per image \(3\), got 2"):
        image.reset_parameters(gens(1, 2))
    with pytest.raises(TypeError, match=r"generators\[1\] must be a torch.Generator, got int"):
        image.reset_parameters([torch.Generator(), 7, torch.Generator()])
    with pytest.raises(TypeError, match="generators must be a sequence"):
        image.reset_parameters(torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_cpu_and_cuda_start_identically(name):
    cpu = FACTORIES[name](3)
    cuda = FACTORIES[name](3).cuda()
    cpu.reset_parameters(gens(4, 5, 6))
    cuda.reset_parameters(gens(4, 5, 6))
    for a, b in zip(cpu.parameters(), cuda.parameters()):
        assert b.is_cuda and torch.equal(a, b.cpu())
    with pytest.raises(ValueError, match="CPU torch.Generator"):
        cpu.reset_parameters([torch.Generator(device="cuda")] * 3)


class _NoReset(ImageParameterization):
    def __init__(self):
        super().__init__()
        self.image = nn.Parameter(torch.zeros(1, 3, 4, 4))

    def forward(self):
        return self.image


class _ConvImage(nn.Module):
    """A plain module (not an ImageParameterization) returning NCHW."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.register_buffer("x", torch.ones(1, 3, 4, 4))

    def forward(self):
        return self.conv(self.x)


def test_a_subclass_without_reset_parameters_says_what_to_implement():
    with pytest.raises(NotImplementedError, match=r"_NoReset does not implement reset_parameters\(generators=None\)"):
        _NoReset().reset_parameters()
    wrapped = NaturalImage(parameterization=_NoReset())  # construction does not reset a ready instance
    with pytest.raises(NotImplementedError, match="_NoReset"):
        wrapped.reset_parameters(gens(1))
    with pytest.raises(NotImplementedError, match="StackImage cannot reset its inner _ConvImage"):
        StackImage([_ConvImage()]).reset_parameters()
    # a plain module that implements reset_parameters(generators) is delegated to
    duck = _ConvImage()
    duck.reset_parameters = lambda generators=None: duck.x.fill_(float(len(generators or [])))
    StackImage([duck]).reset_parameters(gens(3))
    assert (duck.x == 1).all()


# --- what each parameterization can and cannot honour -----------------------------------------------------
def test_rejects_what_it_cannot_honour():
    with pytest.raises(ValueError, match="CPPNImage cannot start from init"):
        CPPNImage(init=torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="keyword-only"):
        CPPNImage((8, 8), 3, 1, 24)  # the old positional num_hidden
    with pytest.raises(ValueError, match="channels must be 3 .* got 5"):
        NaturalImage((8, 8), 5)
    with pytest.raises(ValueError, match="channels must be 3 .* got 2"):
        NaturalImage(init=torch.rand(2, 8, 8))
    assert NaturalImage((8, 8), 5, decorrelation_module=None)().shape == (1, 5, 8, 8)
    ready = FFTImage((8, 8), 3, 2)
    assert NaturalImage(parameterization=ready)().shape == (2, 3, 8, 8)
    assert NaturalImage((8, 8), 3, 2, parameterization=ready)().shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="batch 4 disagrees .* 2 images"):
        NaturalImage((8, 8), 3, 4, parameterization=ready)
    with pytest.raises(ValueError, match="channels 4 disagrees"):
        NaturalImage(channels=4, parameterization=ready)
    with pytest.raises(TypeError, match="decay_power must be a number"):
        PhaseImage((8, 8), decay_power="1")
    with pytest.raises(TypeError, match="positional"):
        FFTImage((8, 8), 3, 1, None, 1.5)


# --- the shared signature -----------------------------------------------------------------------------------
def _parameterization_classes():
    return [
        getattr(images, name)
        for name in images.__all__
        if isinstance(getattr(images, name), type)
        and issubclass(getattr(images, name), ImageParameterization)
        and getattr(images, name) is not ImageParameterization
    ]


def test_every_exported_parameterization_is_covered():
    names = sorted(c.__name__ for c in _parameterization_classes())
    assert names == sorted(
        ["PixelImage", "FFTImage", "LaplacianImage", "PhaseImage", "CPPNImage", "NaturalImage", "SharedImage",
         "StackImage", "SimpleTensorParameterization"]
    )


@pytest.mark.parametrize("cls", _parameterization_classes(), ids=lambda c: c.__name__)
def test_signature_is_size_channels_batch_init_then_keyword_only(cls):
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    positional = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    others = [p for p in params if p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in others), others
    if cls is StackImage:  # built from ready parts: the geometry is theirs
        assert positional == ["parameterizations"]
    elif cls.__name__ == "SimpleTensorParameterization":  # captum's: one given tensor
        assert positional == ["tensor"]
    else:
        assert positional == ["size", "channels", "batch", "init"]
        defaults = [params[i].default for i in range(4)]
        assert defaults == [(224, 224), 3, 1, None]
    # and reset_parameters(generators=None) is its own
    assert "reset_parameters" in vars(cls)
    reset = inspect.signature(cls.reset_parameters).parameters
    assert list(reset) == ["self", "generators"] and reset["generators"].default is None


def test_positional_construction_matches_keywords():
    torch.manual_seed(1)
    a = LaplacianImage((9, 7), 2, 3)
    torch.manual_seed(1)
    b = LaplacianImage(size=(9, 7), channels=2, batch=3, init=None)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    steep = functools.partial(FFTImage, decay_power=2.0)
    assert NaturalImage((8, 8), parameterization=steep).parameterization.decay_power == 2.0
