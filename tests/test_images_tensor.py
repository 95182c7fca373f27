"""ImageTensor (subclass behaviour, open/export round trips) and the display helpers."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from optim.images import ImageTensor, NaturalImage, make_grid_image, save_tensor_as_image, show


def write_png(path, array: np.ndarray, mode: str) -> None:
    Image.fromarray(array, mode=mode).save(path)


def test_image_tensor_is_a_tensor_subclass_keeping_autograd():
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    image = ImageTensor(x * 2)
    assert isinstance(image, torch.Tensor) and type(image) is ImageTensor
    # moves, slices and elementwise arithmetic stay ImageTensor; model-like ops give plain tensors
    assert type(image[0]) is ImageTensor and type(image * 0.5 + 1) is ImageTensor
    assert type(image.to(torch.float64)) is ImageTensor and image.double().dtype == torch.float64
    assert type(F.conv2d(image, torch.ones(1, 3, 1, 1))) is torch.Tensor
    assert type(image.sum()) is torch.Tensor
    image.sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 2.0))
    assert repr(ImageTensor([[[0.5]]])) == "ImageTensor([[[0.5000]]])"
    clone = copy.deepcopy(image.detach())
    assert type(clone) is ImageTensor and torch.equal(clone, image) and clone.data_ptr() != image.data_ptr()


def test_natural_image_output_gradient_reaches_the_spectrum():
    image = NaturalImage((8, 8))
    out = image()
    assert type(out) is ImageTensor
    out.mean().backward()
    assert image.parameterization.spectrum.grad.abs().sum() > 0


def test_open_rgb_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    write_png(tmp_path / "in.png", array, "RGB")
    image = ImageTensor.open(tmp_path / "in.png")
    assert type(image) is ImageTensor and image.shape == (3, 5, 7) and image.dtype == torch.float32
    np.testing.assert_allclose(image.numpy(), array.transpose(2, 0, 1) / 255.0, atol=1e-7)
    assert torch.allclose(ImageTensor.open(str(tmp_path / "in.png"), scale=255.0), image * 255, atol=1e-4)
    written = image.export(tmp_path / "out.png")
    assert written == [tmp_path / "out.png"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), array)


def test_open_rgba_keeps_alpha_and_grey_becomes_rgb(tmp_path):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, size=(4, 6, 4), dtype=np.uint8)
    write_png(tmp_path / "a.png", rgba, "RGBA")
    image = ImageTensor.open(tmp_path / "a.png")
    assert image.shape == (4, 4, 6)
    image.export(tmp_path / "b.png")
    back = Image.open(tmp_path / "b.png")
    assert back.mode == "RGBA" and np.array_equal(np.asarray(back), rgba)
    grey = rng.integers(0, 256, size=(3, 3), dtype=np.uint8)
    write_png(tmp_path / "g.png", grey, "L")
    rgb = ImageTensor.open(tmp_path / "g.png")
    assert rgb.shape == (3, 3, 3) and torch.equal(rgb[0], rgb[2])
    assert ImageTensor.open(tmp_path / "g.png", mode="L").shape == (1, 3, 3)


def test_export_batch_as_grid_and_separate_files(tmp_path):
    batch = ImageTensor(torch.randint(0, 256, (3, 3, 4, 5)).float() / 255)
    batch.export(tmp_path / "grid.png", images_per_row=2)
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (2 * 6 + 2, 2 * 7 + 2, 3)
    expected = (make_grid_image(batch, images_per_row=2)[0] * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(grid, expected)
    paths = batch.export(tmp_path / "img.png", separate=True)
    assert [p.name for p in paths] == ["img_0.png", "img_1.png", "img_2.png"]
    for i, p in enumerate(paths):
        assert np.array_equal(np.asarray(Image.open(p)), expected_tile(batch[i]))


def expected_tile(image: torch.Tensor) -> np.ndarray:
    return (image * 255).round().byte().permute(1, 2, 0).numpy()


def test_save_tensor_as_image_scale_and_errors(tmp_path):
    x = torch.full((1, 2, 2), 100.0)
    save_tensor_as_image(x, tmp_path / "grey.png", scale=1.0)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "grey.png")), np.full((2, 2), 100, np.uint8))
    with pytest.raises(ValueError, match="channels"):
        save_tensor_as_image(torch.rand(5, 2, 2), tmp_path / "x.png")
    with pytest.raises(ValueError, match="separate"):
        save_tensor_as_image([torch.rand(3, 2, 2), torch.rand(3, 3, 3)], tmp_path / "x.png")


def test_make_grid_image_exact():
    tiles = torch.arange(5 * 2 * 2 * 3, dtype=torch.float32).view(5, 2, 2, 3)
    grid = make_grid_image(tiles, images_per_row=3, padding=1, pad_value=-1.0)
    assert grid.shape == (1, 2, 2 * 3 + 1, 3 * 4 + 1)
    expected = np.full((2, 7, 13), -1.0, dtype=np.float32)
    for i in range(5):
        r, c = divmod(i, 3)
        expected[:, 1 + r * 3 : 1 + r * 3 + 2, 1 + c * 4 : 1 + c * 4 + 3] = tiles[i].numpy()
    assert np.array_equal(grid[0].numpy(), expected)
    assert torch.equal(make_grid_image(tiles[:2], images_per_row=4, padding=0)[0], torch.cat([tiles[0], tiles[1]], 2))
    with pytest.raises(ValueError):
        make_grid_image(torch.rand(2, 3), images_per_row=2)
    with pytest.raises(ValueError):
        make_grid_image(tiles, images_per_row=0)


def test_show_labelled_grid():
    import matplotlib.pyplot as plt

    images = torch.rand(5, 3, 6, 6)
    fig = show(images, labels=["a", "b", "c", "d", "e"], images_per_row=3)
    axes = fig.axes
    assert len(axes) == 6
    assert [ax.get_title() for ax in axes[:5]] == ["a", "b", "c", "d", "e"]
    shown = axes[1].get_images()[0].get_array()
    assert np.array_equal(np.asarray(shown), expected_tile(images[1]))
    assert not axes[5].get_images()
    plt.close(fig)
    with pytest.raises(ValueError, match="labels"):
        show(images, labels=["a"])


def test_image_tensor_show_draws_the_grid():
    import matplotlib.pyplot as plt

    batch = ImageTensor(torch.rand(4, 3, 5, 5))
    batch.show(images_per_row=2)
    fig = plt.gcf()
    shown = np.asarray(fig.axes[0].get_images()[0].get_array())
    assert shown.shape == (2 * 7 + 2, 2 * 7 + 2, 3)
    assert np.array_equal(shown, expected_tile(make_grid_image(batch, images_per_row=2)[0]))
    plt.close(fig)


def test_import_stays_light(heavy_modules_after_import):
    # optim.images (with every other library subpackage) loads neither matplotlib nor PIL, nor any other
    # heavy optional dependency
    assert heavy_modules_after_import == set()
