"""Dataset statistics: channel covariance, KLT matrices from real photos, mean spectrum."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import optim as opt
from optim.dataset import cov_matrix_to_klt, dataset_cov_matrix, dataset_klt_matrix, dataset_spectrum, image_cov


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """Eight 64x64 crops (two per photo) of skimage's bundled photos, NCHW in [0, 1]."""
    data = pytest.importorskip("skimage.data")
    crops = []
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        img = torch.as_tensor(getattr(data, name)()).permute(2, 0, 1).float() / 255
        crops += [img[:, 40:104, 60:124], img[:, 150:214, 200:264]]
    return torch.stack(crops)


def _pixels(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).reshape(-1, x.size(1)).double().numpy()


def test_constant_colour_dataset_has_zero_covariance() -> None:
    images = torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1).expand(6, 3, 8, 8).contiguous()
    torch.testing.assert_close(image_cov(images), torch.zeros(3, 3), atol=1e-7, rtol=0)
    loader = DataLoader(TensorDataset(images, torch.zeros(6)), batch_size=4)
    torch.testing.assert_close(dataset_cov_matrix(loader), torch.zeros(3, 3), atol=1e-7, rtol=0)
    # Different constant colours per image do vary across the dataset.
    varied = torch.rand(6, 3, 1, 1).expand(6, 3, 8, 8)
    assert dataset_cov_matrix([varied]).diagonal().min() > 0


def test_image_cov_matches_numpy_for_any_channel_count() -> None:
    x = torch.rand(2, 4, 5, 6, dtype=torch.float64)
    x[:, 1] = 2 * x[:, 0] + 0.1 * x[:, 1]  # correlated channels
    np.testing.assert_allclose(image_cov(x).numpy(), np.cov(_pixels(x), rowvar=False), rtol=1e-10)
    with pytest.raises(ValueError, match=r"NCHW.*\(4, 5, 6\)"):
        image_cov(x[0])


def test_dataset_cov_pools_all_pixels_over_uneven_batches(photos: torch.Tensor) -> None:
    loader = DataLoader(TensorDataset(photos, torch.arange(len(photos))), batch_size=3)  # batches 3, 3, 2
    expected = np.cov(_pixels(photos), rowvar=False)
    np.testing.assert_allclose(dataset_cov_matrix(loader).numpy(), expected, rtol=1e-5, atol=1e-7)
    # Bare tensors work as loader items too.
    np.testing.assert_allclose(dataset_cov_matrix([photos[:5], photos[5:]]).numpy(), expected, rtol=1e-5, atol=1e-7)


def test_klt_from_real_photos_matches_numpy_eigendecomposition(photos: torch.Tensor) -> None:
    loader = DataLoader(TensorDataset(photos), batch_size=4)
    klt = dataset_klt_matrix(loader).double()
    cov = np.cov(_pixels(photos), rowvar=False)
    eigvals, eigvecs = np.linalg.eigh(cov)
    eigvals, eigvecs = eigvals[::-1], eigvecs[:, ::-1]
    col_norms = klt.norm(dim=0).numpy()
    np.testing.assert_allclose(col_norms, np.sqrt(eigvals), rtol=1e-4)
    # Columns are the eigenvectors up to sign; the sign convention makes each column sum >= 0.
    unit = klt.numpy() / col_norms
    signs = np.sign((unit * eigvecs).sum(0))
    np.testing.assert_allclose(unit, eigvecs * signs, atol=1e-4)
    assert (unit.sum(0) >= 0).all() and (unit[:, 0] > 0).all()  # first component: luminance
    np.testing.assert_allclose((klt @ klt.T).numpy(), cov, rtol=1e-4, atol=1e-7)

    normalized = dataset_klt_matrix(loader, normalize=True).double()
    assert normalized.norm(dim=0).max().item() == pytest.approx(1.0)
    torch.testing.assert_close(normalized * klt.norm(dim=0).max(), klt, rtol=1e-5, atol=1e-7)

    # Usable as a colour recorrelation matrix: ToRGB applies it at every pixel.
    to_rgb = opt.images.ToRGB(transform=klt.float())
    x = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(to_rgb(x), torch.einsum("ij,njhw->nihw", klt.float(), x), rtol=1e-5, atol=1e-5)


def test_cov_matrix_to_klt_validates_input() -> None:
    cov = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    klt = cov_matrix_to_klt(cov, epsilon=0.0)
    torch.testing.assert_close(klt @ klt.T, cov)
    with pytest.raises(ValueError, match="square"):
        cov_matrix_to_klt(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="symmetric"):
        cov_matrix_to_klt(torch.tensor([[1.0, 0.9], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="at least two pixels"):
        dataset_cov_matrix([])


def test_dataset_spectrum_matches_numpy_and_feeds_phase_image(photos: torch.Tensor) -> None:
    spectrum = dataset_spectrum(DataLoader(TensorDataset(photos), batch_size=3), 64)
    expected = np.abs(np.fft.rfft2(photos.double().numpy(), norm="ortho")).mean(0)
    assert spectrum.shape == (3, 64, 33)
    np.testing.assert_allclose(spectrum.numpy(), expected, rtol=1e-5, atol=1e-6)
    # Natural images: low frequencies dominate.
    assert spectrum[:, 1, 1].min() > spectrum[:, 32, 32].max()

    # Resizing to another size, and a constant image whose only frequency is DC.
    flat = dataset_spectrum([torch.full((2, 3, 20, 30), 0.5)], (16, 24))
    assert flat.shape == (3, 16, 13)
    torch.testing.assert_close(flat[:, 0, 0], torch.full((3,), 0.5 * (16 * 24) ** 0.5))
    assert flat.flatten(1)[:, 1:].abs().max() < 1e-5

    image = opt.images.PhaseImage((64, 64), magnitude=spectrum)
    assert image().shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="size"):
        dataset_spectrum([photos], (0, 4))
    with pytest.raises(ValueError, match="at least one image"):
        dataset_spectrum([], 8)
