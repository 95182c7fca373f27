"""CKA invariants, NumPy reference parity, minibatch accumulation and model-level comparison."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import optim as opt
from optim.activations import iter_activations, record_activations
from optim.analysis import (
    CKAMap, MinibatchCKA, cka_heatmap, gram_rbf, hsic, linear_cka, model_cka, plot_cka, rbf_cka,
)


# -- NumPy references written straight from the papers' formulas ------------------------------------------
def np_center(k):
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return h @ k @ h


def np_hsic_biased(k, l):
    n = k.shape[0]
    return np.trace(np_center(k) @ np_center(l)) / (n - 1) ** 2


def np_hsic_unbiased(k, l):
    # Song et al. (2012), eq. 5, with explicit matrix products.
    n = k.shape[0]
    kt = k - np.diag(np.diag(k))
    lt = l - np.diag(np.diag(l))
    one = np.ones(n)
    return (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3))


def np_cka(k, l, hsic_fn):
    return hsic_fn(k, l) / np.sqrt(hsic_fn(k, k) * hsic_fn(l, l))


def np_rbf(x, threshold=1.0):
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-sq / (2 * threshold**2 * np.median(sq)))


@pytest.fixture
def xy():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(60, 12, generator=g, dtype=torch.float64)
    y = torch.tanh(x[:, :8] @ torch.randn(8, 20, generator=g, dtype=torch.float64)) \
        + 0.5 * torch.randn(60, 20, generator=g, dtype=torch.float64)
    return x, y


def random_orthogonal(d, seed):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


@pytest.mark.parametrize("unbiased", [False, True])
def test_linear_cka_matches_numpy_reference(xy, unbiased):
    x, y = xy
    xn, yn = x.numpy(), y.numpy()
    ref = np_cka(xn @ xn.T, yn @ yn.T, np_hsic_unbiased if unbiased else np_hsic_biased)
    assert float(linear_cka(x, y, unbiased=unbiased)) == pytest.approx(ref, rel=1e-10)
    assert 0.2 < ref < 0.95  # a non-trivial value, so the parity check means something


@pytest.mark.parametrize("unbiased", [False, True])
def test_rbf_cka_matches_numpy_reference(xy, unbiased):
    x, y = xy
    xn, yn = x.numpy(), y.numpy()
    hsic_fn = np_hsic_unbiased if unbiased else np_hsic_biased
    ref = np_cka(np_rbf(xn, 0.5), np_rbf(yn, 0.5), hsic_fn)
    assert float(rbf_cka(x, y, threshold=0.5, unbiased=unbiased)) == pytest.approx(ref, rel=1e-10)
    np.testing.assert_allclose(gram_rbf(x, threshold=0.5).numpy(), np_rbf(xn, 0.5), rtol=1e-12)
    # a fixed sigma is an absolute bandwidth
    sq = ((xn[:, None] - xn[None]) ** 2).sum(-1)
    np.testing.assert_allclose(gram_rbf(x, sigma=2.0).numpy(), np.exp(-sq / 8.0), rtol=1e-12)


def test_hsic_matches_numpy_reference(xy):
    x, y = xy
    k, l = (x @ x.T), (y @ y.T)
    assert float(hsic(k, l)) == pytest.approx(np_hsic_biased(k.numpy(), l.numpy()), rel=1e-10)
    assert float(hsic(k, l, unbiased=True)) == pytest.approx(np_hsic_unbiased(k.numpy(), l.numpy()), rel=1e-10)


@pytest.mark.parametrize("fn", [linear_cka, rbf_cka, lambda a, b: linear_cka(a, b, unbiased=True)])
def test_cka_of_a_representation_with_itself_is_one(xy, fn):
    x, y = xy
    assert float(fn(x, x)) == pytest.approx(1.0, abs=1e-12)
    assert float(fn(y, y)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("fn", [linear_cka, rbf_cka, lambda a, b: linear_cka(a, b, unbiased=True)])
def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling(xy, fn):
    x, y = xy
    base = float(fn(x, y))
    q = random_orthogonal(y.shape[1], seed=3)
    assert float(fn(x, y @ q)) == pytest.approx(base, rel=1e-9)
    assert float(fn(7.5 * x, 0.01 * y)) == pytest.approx(base, rel=1e-9)
    assert float(fn(x @ random_orthogonal(x.shape[1], 4) * 3.0, y)) == pytest.approx(base, rel=1e-9)
    # but NOT invariant to an arbitrary invertible linear map (that is what separates CKA from CCA)
    a = torch.diag(torch.linspace(0.05, 5.0, y.shape[1], dtype=torch.float64))
    assert abs(float(fn(x, y @ a)) - base) > 1e-3


def test_cka_near_zero_for_independent_features():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(1500, 10, generator=g), torch.randn(1500, 10, generator=g)
    assert float(linear_cka(x, y)) < 0.03
    assert abs(float(linear_cka(x, y, unbiased=True))) < 0.01
    assert float(rbf_cka(x, y)) < 0.03
    # and clearly non-zero for dependent ones
    assert float(linear_cka(x, x + torch.randn(1500, 10, generator=g))) > 0.4


def test_minibatch_cka_single_batch_equals_full_unbiased(xy):
    x, y = xy
    m = MinibatchCKA()
    m.update(x, y)
    assert float(m.compute()) == pytest.approx(float(linear_cka(x, y, unbiased=True)), rel=1e-12)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_minibatch_cka_agrees_with_full_cka(kernel):
    g = torch.Generator().manual_seed(0)
    n = 1536
    x = torch.randn(n, 32, generator=g)
    y = x[:, :16] @ torch.randn(16, 24, generator=g) + 2 * torch.randn(n, 24, generator=g)
    full = float(linear_cka(x, y, unbiased=True) if kernel == "linear" else rbf_cka(x, y, unbiased=True))
    m = MinibatchCKA(kernel=kernel)
    for xb, yb in zip(x.split(256), y.split(256)):
        m.update(xb, yb)
    assert m.n_batches == 6 and m.n_examples == n
    assert 0.3 < full < 0.7
    assert float(m.compute()) == pytest.approx(full, abs=0.02)


def test_minibatch_cka_with_layer_lists_gives_matrix(xy):
    x, y = xy
    m = MinibatchCKA()
    for xb, yb in zip(x.split(20), y.split(20)):
        m.update([xb, yb], [yb, xb, 2 * xb])
    out = m.compute()
    assert out.shape == (2, 3)
    assert float(out[0, 1]) == pytest.approx(1.0) and float(out[1, 0]) == pytest.approx(1.0)
    assert float(out[0, 0]) == pytest.approx(float(out[1, 1]))
    assert float(out[0, 2]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="layers"):
        m.update([x[:10]], [y[:10]])


def test_cka_bad_input():
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(torch.randn(10, 3), torch.randn(11, 3))
    with pytest.raises(TypeError):
        linear_cka(np.zeros((10, 3)), torch.randn(10, 3))
    with pytest.raises(ValueError, match="at least 4"):
        MinibatchCKA().update(torch.randn(3, 2), torch.randn(3, 2))
    with pytest.raises(ValueError, match="kernel"):
        MinibatchCKA(kernel="cosine")
    with pytest.raises(ValueError, match="before any update"):
        MinibatchCKA().compute()


def _loader(n=48, batch=16):
    g = torch.Generator().manual_seed(2)
    images = torch.rand(n, 3, 8, 8, generator=g)
    return images, DataLoader(TensorDataset(images, torch.zeros(n)), batch_size=batch)


def test_model_cka_matches_cka_of_collected_activations(tiny_net):
    images, loader = _loader()
    torch.manual_seed(1)
    other = type(tiny_net)().train()
    flags = [p.requires_grad for p in other.parameters()]
    out = model_cka(tiny_net, other, loader, ["conv1", "relu2"], ["conv2", "fc", "conv1"], progress=False)
    assert out.shape == (2, 3)
    # reference: collect the activations by hand and accumulate the same minibatch estimator
    ref = MinibatchCKA()
    with torch.no_grad():
        for xb in images.split(16):
            a1 = [tiny_net.conv1(xb)]
            a1.append(tiny_net.relu2(tiny_net.conv2(tiny_net.relu1(a1[0]))))
            o = other.eval()
            b_conv1 = o.conv1(xb)
            b_conv2 = o.conv2(o.relu1(b_conv1))
            ref.update(a1, [b_conv2, o(xb), b_conv1])
    other.train()
    torch.testing.assert_close(out, ref.compute())
    # the model comes back in the mode and requires_grad state it had, and so does the grad mode
    assert other.training and [p.requires_grad for p in other.parameters()] == flags
    assert torch.is_grad_enabled()


def test_model_cka_on_a_tensor_joins_a_tail_too_short_for_unbiased_hsic_to_the_batch_before(tiny_net):
    torch.manual_seed(3)
    images = torch.rand(18, 3, 8, 8)
    ref = MinibatchCKA()
    with torch.no_grad():
        for xb in (images[:8], images[8:]):  # 8 + (8 + 2): the 2-example tail joins the second batch
            ref.update([tiny_net.conv1(xb)], [tiny_net(xb)])
    out = model_cka(tiny_net, tiny_net, images, ["conv1"], ["fc"], batch_size=8, progress=False)
    torch.testing.assert_close(out, ref.compute())
    loader = DataLoader(TensorDataset(images), batch_size=8)  # a loader's batches are its own: a clear error
    with pytest.raises(ValueError, match="at least 4 examples, got 2: use batch_size >= 4, and drop_last=True"):
        model_cka(tiny_net, tiny_net, loader, ["conv1"], ["fc"], progress=False)


def test_model_cka_of_two_models_that_share_modules(tiny_net):
    images, loader = _loader()
    backbone = type(tiny_net)().train()
    with_head = torch.nn.Sequential(backbone, torch.nn.Linear(5, 2)).train()
    out = model_cka(backbone, with_head, loader, ["conv1", "fc"], ["0.conv1", "0.fc"], progress=False)
    torch.testing.assert_close(out, model_cka(backbone, backbone, loader, ["conv1", "fc"], ["conv1", "fc"],
                                              progress=False))
    assert torch.is_grad_enabled() and all(p.requires_grad for p in with_head.parameters())
    assert all(m.training for m in with_head.modules())
    assert not any(m._forward_hooks for m in with_head.modules())
    # a module of the other model (the head is not in backbone) is refused before any batch runs
    with pytest.raises(ValueError, match="^layers1 holds a Linear module of the other model, not of TinyNet"):
        model_cka(backbone, with_head, loader, [with_head[1]], ["0.fc"], progress=False)


def test_model_cka_same_model_is_one_on_diagonal_and_paired(tiny_net):
    _, loader = _loader()
    layers = ["conv1", "conv2", "fc"]
    full = model_cka(tiny_net, tiny_net, loader, layers, layers, progress=False)
    torch.testing.assert_close(torch.diagonal(full), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(full, full.T)
    paired = model_cka(tiny_net, tiny_net, loader, layers, ["conv2", "fc", "conv1"], paired=True, progress=False)
    torch.testing.assert_close(paired, torch.stack([full[0, 1], full[1, 2], full[2, 0]]))
    with pytest.raises(ValueError, match="paired"):
        model_cka(tiny_net, tiny_net, loader, layers, ["fc"], paired=True, progress=False)
    with pytest.raises(ValueError, match="conv3"):
        model_cka(tiny_net, tiny_net, loader, ["conv3"], ["fc"], progress=False)


def _inplace_pair(inplace=True):
    """A torchvision-style pair of layers: conv -> ReLU(inplace) -> conv (the ReLU overwrites conv 0's output)."""
    torch.manual_seed(4)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU(inplace=inplace), torch.nn.Conv2d(6, 5, 3))


def test_model_cka_reads_a_conv_that_an_inplace_relu_overwrites():
    net = _inplace_pair()
    images, loader = _loader()
    # watched together: the conv's own output (with its negative values), not the ReLU's
    got = model_cka(net, net, loader, ["0", "2"], ["0", "2"], progress=False)
    ref = MinibatchCKA()
    relu_ref = MinibatchCKA()
    with torch.no_grad():  # by hand, without hooks
        for xb in images.split(16):
            conv = net[0](xb)
            top = net[2](torch.relu(conv))
            ref.update([conv, top], [conv, top])
            relu_ref.update([torch.relu(conv), top], [torch.relu(conv), top])
    torch.testing.assert_close(got, ref.compute(), rtol=1e-10, atol=1e-12)
    # what the old hook read (the ReLU's output) is a different, wrong number
    assert abs(float(got[0, 1]) - float(relu_ref.compute()[0, 1])) > 0.01
    # two models: the same numbers, and the same on a copy of the net without in-place ops
    plain = _inplace_pair(inplace=False)
    two = model_cka(net, plain, images, ["0", "2"], ["0", "2"], batch_size=16, progress=False)
    torch.testing.assert_close(two, got, rtol=1e-10, atol=1e-12)
    assert net[1].inplace and not any(m._forward_hooks for m in net.modules())


def test_model_cka_stop_early_false_reads_each_batch_at_its_own_last_call(looping_net):
    """looping_net's block runs 2x on the first batch and 3x on the second: by default the second batch is read at
    call 2 (the counts the first showed), with stop_early=False at its own last call; on both of model_cka's paths
    (one model: its loop and a later layer; two models) and through cka_heatmap."""
    g = torch.Generator().manual_seed(5)
    batches = [x * (total / x.sum()) for x, total in zip(torch.rand(2, 4, 4, generator=g), (1.5, 2.5))]
    torch.manual_seed(1)
    net = torch.nn.Sequential(looping_net, torch.nn.Linear(4, 3)).eval()
    other = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    last = [record_activations(net, "0.block", b)["0.block"] for b in batches]  # each batch's own last call
    quick = [acts["0.block"] for acts in iter_activations(net, "0.block", batches)]
    assert torch.equal(quick[0], last[0]) and not torch.equal(quick[1], last[1])
    for model2, layer2 in ((net, "1"), (other, "0")):
        exact, before = MinibatchCKA(), MinibatchCKA()
        for b, own, early in zip(batches, last, quick):
            theirs = record_activations(model2, layer2, b)[layer2]
            exact.update([own], [theirs])
            before.update([early], [theirs])
        got = model_cka(net, model2, batches, ["0.block"], [layer2], progress=False, stop_early=False)
        default = model_cka(net, model2, batches, ["0.block"], [layer2], progress=False)
        assert torch.equal(got, exact.compute()) and torch.equal(default, before.compute())
        assert abs(float(got[0, 0]) - float(default[0, 0])) > 1e-3
    heat = cka_heatmap(net, other, batches, ["0.block"], ["0"], progress=False, stop_early=False)
    assert torch.equal(heat.values, got)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())


def test_cka_heatmap_and_plot(tiny_net):
    import matplotlib
    matplotlib.use("Agg")
    images, _ = _loader()
    cmap = cka_heatmap(tiny_net, tiny_net, images, batch_size=16, progress=True)
    assert isinstance(cmap, CKAMap)
    assert cmap.layers1 == ["conv1", "conv2", "fc"] == cmap.layers2
    assert cmap.values.shape == (3, 3)
    fig = cmap.plot(title="self", annotate=True)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == cmap.layers1
    np.testing.assert_allclose(ax.images[0].get_array(), cmap.values.numpy())
    with pytest.raises(ValueError, match="labels"):
        plot_cka(cmap.values, layers1=["a"])
    import matplotlib.pyplot as plt
    plt.close("all")


def test_exported_from_package():
    assert opt.analysis.linear_cka is linear_cka
    assert "MinibatchCKA" in opt.analysis.__all__
