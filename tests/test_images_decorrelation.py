"""ToRGB: NumPy parity for the klt / i1i2i3 / custom matrices, inverse, alpha, TorchScript."""
import numpy as np
import pytest
import torch

from optim.images import ToRGB

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

LUCID_SVD_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
KLT = LUCID_SVD_SQRT / np.max(np.linalg.norm(LUCID_SVD_SQRT, axis=0))
I1I2I3 = np.array([[1 / 3, 1 / 3, 1 / 3], [1 / 2, 0, -1 / 2], [-1 / 4, 1 / 2, -1 / 4]])


def numpy_to_rgb(x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Lucid's to_valid_rgb colour step on NCHW: rgb = x_flat @ C.T with channels last."""
    nhwc = np.moveaxis(x, 1, -1)
    return np.moveaxis(nhwc @ matrix.T, -1, 1)


def test_klt_matrix_is_lucids_normalized_svd_sqrt():
    np.testing.assert_allclose(ToRGB("klt").transform.numpy(), KLT, rtol=0, atol=1e-15)
    assert np.isclose(np.linalg.norm(KLT, axis=0).max(), 1.0)
    np.testing.assert_allclose(ToRGB("i1i2i3").transform.numpy(), I1I2I3, atol=1e-15)


@pytest.mark.parametrize("name,matrix", [("klt", KLT), ("i1i2i3", I1I2I3)])
def test_forward_and_inverse_match_numpy(name, matrix):
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    to_rgb = ToRGB(name)
    np.testing.assert_allclose(to_rgb(x).numpy(), numpy_to_rgb(x.numpy(), matrix), atol=1e-12)
    inverse = np.linalg.inv(matrix)
    np.testing.assert_allclose(to_rgb(x, inverse=True).numpy(), numpy_to_rgb(x.numpy(), inverse), atol=1e-12)
    np.testing.assert_allclose(to_rgb(to_rgb(x), inverse=True).numpy(), x.numpy(), atol=1e-12)


def test_chw_input_and_float32():
    x = torch.randn(3, 4, 6)
    out = ToRGB("klt")(x)
    assert out.shape == (3, 4, 6) and out.dtype == torch.float32
    expected = numpy_to_rgb(x.numpy()[None].astype(np.float64), KLT)[0]
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)


def test_custom_matrix():
    m = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 4.0]])
    x = torch.randn(1, 3, 3, 3, dtype=torch.float64)
    to_rgb = ToRGB(m)
    np.testing.assert_allclose(to_rgb(x).numpy(), numpy_to_rgb(x.numpy(), m.double().numpy()), atol=1e-12)
    np.testing.assert_allclose(to_rgb(to_rgb(x), True).numpy(), x.numpy(), atol=1e-12)


def test_alpha_channel_passes_through():
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    to_rgb = ToRGB("klt")
    for inverse in (False, True):
        out = to_rgb(x, inverse=inverse)
        assert torch.equal(out[:, 3], x[:, 3])
        assert torch.allclose(out[:, :3], to_rgb(x[:, :3], inverse=inverse))


def test_bad_arguments():
    with pytest.raises(ValueError, match="klt"):
        ToRGB("xyz")
    with pytest.raises(TypeError):
        ToRGB(3)
    with pytest.raises(ValueError, match="shape"):
        ToRGB(torch.eye(4))
    with pytest.raises(ValueError, match="invertible"):
        ToRGB(torch.ones(3, 3))
    with pytest.raises(ValueError, match="channels"):
        ToRGB()(torch.randn(1, 5, 2, 2))


def test_scripted_matches_eager():
    to_rgb = ToRGB("klt")
    scripted = torch.jit.script(to_rgb)
    x = torch.randn(2, 4, 6, 6)
    for inverse in (False, True):
        assert torch.equal(scripted(x, inverse), to_rgb(x, inverse=inverse))
    assert torch.equal(scripted(x[0, :3]), to_rgb(x[0, :3]))


def test_gradient_flows():
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    ToRGB()(x).sum().backward()
    # d(sum C x)/dx_k = sum_c C[c, k]
    expected = torch.tensor(KLT.sum(axis=0), dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    assert torch.allclose(x.grad, expected, atol=1e-6)
