"""ChannelReducer and posneg: real scikit-learn / umap-learn runs on small data, parity with direct use."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.decomposition import NMF, PCA, FastICA, IncrementalPCA, MiniBatchNMF

import optim as opt
from optim.reducer import ChannelReducer, posneg


def _flat(x: torch.Tensor) -> np.ndarray:
    """NCHW -> [N*H*W, C], the sample layout sklearn sees."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.size(1)).numpy()


def _unflat(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    n, _, h, w = like.shape
    return torch.as_tensor(a).reshape(n, h, w, -1).permute(0, 3, 1, 2)


def test_nmf_matches_sklearn_and_keeps_layout() -> None:
    x = torch.rand(2, 6, 4, 5)
    reducer = ChannelReducer(3, "NMF", init="nndsvd", max_iter=400)
    out = reducer.fit_transform(x)
    ref = NMF(3, init="nndsvd", max_iter=400)
    expected = _unflat(ref.fit_transform(_flat(x)), x)
    assert out.shape == (2, 3, 4, 5) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected.float(), rtol=1e-3, atol=1e-4)
    assert reducer.components.shape == (3, 6)
    torch.testing.assert_close(reducer.components, torch.as_tensor(ref.components_).float(), rtol=1e-3, atol=1e-4)
    # The factorization reconstructs the input reasonably (rank 3 of 6 random channels).
    recon = torch.einsum("nkhw,kc->nchw", out, reducer.components)
    assert (recon - x).norm() / x.norm() < 0.5


def test_pca_transform_inverse_and_fitted_attributes() -> None:
    x = torch.randn(3, 5, 4, 4)
    reducer = ChannelReducer(2, "PCA").fit(x)
    ref = PCA(2).fit(_flat(x))
    torch.testing.assert_close(reducer.transform(x), _unflat(ref.transform(_flat(x)), x).float())
    expected_ratio = torch.as_tensor(ref.explained_variance_ratio_).float()
    torch.testing.assert_close(reducer.explained_variance_ratio, expected_ratio)
    y = reducer.transform(x)
    recon = _unflat(ref.inverse_transform(ref.transform(_flat(x))), x).float()
    torch.testing.assert_close(reducer.inverse_transform(y), recon)
    assert "components" in dir(reducer)
    with pytest.raises(AttributeError, match="noise_varianc"):
        reducer.noise_varianc  # noqa: B018  (a typo'd attribute must not silently pass)


def test_channels_last_and_other_ranks() -> None:
    x = torch.randn(40, 6)
    out2d = ChannelReducer(2, "PCA").fit_transform(x)
    np.testing.assert_allclose(np.abs(out2d.numpy()), np.abs(PCA(2).fit_transform(x.numpy())), rtol=1e-4, atol=1e-5)
    x3 = torch.randn(4, 6, 10)  # [N, C, L]
    out3 = ChannelReducer(2, "PCA").fit_transform(x3)
    assert out3.shape == (4, 2, 10)
    last = ChannelReducer(2, "PCA").fit_transform(x3.movedim(1, -1), channels_last=True)
    assert last.shape == (4, 10, 2)
    torch.testing.assert_close(last.movedim(-1, 1), out3)


def test_fastica_matches_sklearn() -> None:
    rng = np.random.RandomState(0)
    sources = np.c_[np.sign(np.sin(np.linspace(0, 20, 200))), rng.laplace(size=200)]
    mixed = torch.as_tensor(sources @ rng.rand(2, 4), dtype=torch.float32)  # [200, 4]
    out = ChannelReducer(2, "FastICA", random_state=0, whiten="unit-variance").fit_transform(mixed)
    ref = FastICA(2, random_state=0, whiten="unit-variance").fit_transform(mixed.numpy())
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-4)


def test_tsne_fit_transform_only() -> None:
    x = torch.cat([torch.randn(15, 5), torch.randn(15, 5) + 8.0])
    reducer = ChannelReducer(2, "TSNE", perplexity=5.0, random_state=0, init="pca")
    out = reducer.fit_transform(x)
    assert out.shape == (30, 2)
    # Two well separated clusters stay separated in the embedding.
    a, b = out[:15].mean(0), out[15:].mean(0)
    assert (a - b).norm() > 2 * max(out[:15].std(0).norm(), out[15:].std(0).norm())
    with pytest.raises(TypeError, match="fit_transform"):
        reducer.transform(x)


_UMAP_PARITY = """
import warnings
import numpy as np, torch, umap
from optim.reducer import ChannelReducer
warnings.simplefilter("ignore")
torch.manual_seed(0)
x = torch.cat([torch.rand(30, 5), torch.rand(30, 5) + 4.0])  # two well separated clusters
kwargs = dict(n_neighbors=8, random_state=0, n_epochs=50)
out = ChannelReducer(2, "UMAP", **kwargs).fit_transform(x)
ref = umap.UMAP(n_components=2, **kwargs).fit_transform(x.numpy())
assert out.shape == (60, 2) and out.dtype == torch.float32, (out.shape, out.dtype)
np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)
a, b = out[:30], out[30:]
gap = (a.mean(0) - b.mean(0)).norm()
assert gap > 2 * max(a.std(0).norm(), b.std(0).norm()), gap
"""


def test_umap_matches_umap_learn() -> None:
    pytest.importorskip("umap")
    # A real umap-learn fit through ChannelReducer, compared with umap-learn called directly. umap's numba
    # kernels cost ~40 s of compilation per process; with NUMBA_DISABLE_JIT the very same umap-learn code
    # runs as plain Python, which on 60 points takes about a second (in a fresh process, since the flag
    # is read when numba is imported).
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    result = subprocess.run([sys.executable, "-c", _UMAP_PARITY], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_class_and_instance_algorithms() -> None:
    x = torch.rand(30, 6)
    by_class = ChannelReducer(2, PCA, svd_solver="full").fit_transform(x)
    instance = PCA(2, svd_solver="full")
    reducer = ChannelReducer(reduction_alg=instance)
    assert reducer.reducer is instance and reducer.n_components == 2
    torch.testing.assert_close(reducer.fit_transform(x), by_class)
    with pytest.raises(ValueError, match="svd_solver"):
        ChannelReducer(reduction_alg=PCA(2), svd_solver="full")
    with pytest.raises(ValueError, match="NotAnAlgorithm"):
        ChannelReducer(2, "NotAnAlgorithm")
    with pytest.raises(TypeError, match="int"):
        ChannelReducer(2, 5)
    with pytest.raises(ValueError, match="rank >= 2"):
        ChannelReducer(2, "PCA").fit(torch.rand(10))


def test_nmf_rejects_negative_input_and_posneg_fixes_it() -> None:
    w = torch.tensor([[1.0, -2.0, 0.5], [-0.5, 3.0, 0.0]])
    with pytest.raises(ValueError, match="posneg"):
        ChannelReducer(1, "NMF").fit(w)
    split = posneg(w, dim=1)
    torch.testing.assert_close(split, torch.tensor([[1.0, 0.0, 0.5, 0.0, 2.0, 0.0], [0.0, 3.0, 0.0, 0.5, 0.0, 0.0]]))
    torch.testing.assert_close(posneg(w)[:2] - posneg(w)[2:], w)  # positive half minus negative half is x
    out = ChannelReducer(1, "NMF", max_iter=500).fit_transform(split)
    assert out.shape == (2, 1) and bool((out >= 0).all())
    with pytest.raises(TypeError, match="list"):
        posneg([1.0, -1.0])


def test_partial_fit_over_batches_matches_sklearn() -> None:
    batches = [torch.randn(2, 6, 4, 4) for _ in range(3)]
    reducer = ChannelReducer(3, "IncrementalPCA").partial_fit(iter(batches))
    ref = IncrementalPCA(3)
    for b in batches:
        ref.partial_fit(_flat(b))
    torch.testing.assert_close(reducer.components, torch.as_tensor(ref.components_).float())
    expected = _unflat(ref.transform(_flat(batches[0])), batches[0]).float()
    torch.testing.assert_close(reducer.transform(batches[0]), expected)

    nmf = ChannelReducer(2, "MiniBatchNMF", random_state=0, batch_size=16)
    ref_nmf = MiniBatchNMF(2, random_state=0, batch_size=16)
    for b in batches:
        nmf.partial_fit(b.abs())
        ref_nmf.partial_fit(_flat(b.abs()))
    torch.testing.assert_close(nmf.components, torch.as_tensor(ref_nmf.components_).float())
    with pytest.raises(ValueError, match="non-negative"):
        nmf.partial_fit(batches[0])
    with pytest.raises(TypeError, match="IncrementalPCA"):
        ChannelReducer(2, "PCA").partial_fit(batches)


def test_import_stays_light(heavy_modules_after_import) -> None:
    # optim.reducer, circuits, dataset and atlas (with the rest of the library) load no sklearn, umap, ...
    assert heavy_modules_after_import == set()
    assert opt.reducer.ChannelReducer is ChannelReducer


def test_opentsne_through_channel_reducer() -> None:
    pytest.importorskip("openTSNE")
    from openTSNE import TSNE

    x = torch.cat([torch.rand(1, 5, 6, 5), torch.rand(1, 5, 6, 5) + 4.0])  # 60 positions in two clusters
    reducer = ChannelReducer(2, "openTSNE", perplexity=8, random_state=0)
    assert isinstance(reducer.reducer, opt.reducer.OpenTSNE)
    out = reducer.fit_transform(x)
    ref = np.asarray(TSNE(2, perplexity=8, random_state=0).fit(_flat(x)))
    assert out.shape == (2, 2, 6, 5)
    torch.testing.assert_close(out, _unflat(ref, x).float())
    torch.testing.assert_close(reducer.embedding, torch.as_tensor(ref).float())
    # new points are placed next to the cluster they come from
    placed = reducer.transform(x[:1] + 0.01)
    a, b = out[0].flatten(1), out[1].flatten(1)
    near = (placed[0].flatten(1) - a).norm(dim=0).mean()
    assert near < 0.5 * (a.mean(1) - b.mean(1)).norm(), near
    with pytest.raises(AttributeError, match="fit first"):
        opt.reducer.OpenTSNE().transform(_flat(x))


def test_opentsne_missing_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openTSNE", None)  # import openTSNE now raises ImportError
    reducer = ChannelReducer(2, "openTSNE")  # built without openTSNE: imported when fitted
    with pytest.raises(ImportError, match=r'pip install "optim-vis\[tsne\]"'):
        reducer.fit(torch.rand(10, 3))
    with pytest.raises(ValueError, match="'openTSNE'"):
        ChannelReducer(2, "NoSuchAlgorithm")
