"""Atlases at scale: activations streamed to disk in chunks, reducers fitted incrementally or on a sample and
applied chunk by chunk, grid cells averaged in one streaming pass, and an atlas rendered from a store."""
import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn as nn
from sklearn.decomposition import PCA, IncrementalPCA, MiniBatchNMF

import optim as opt
from optim.activations import iter_activations, record_activations
from optim.atlas import (
    ActivationStore,
    CellAccumulator,
    activation_atlas,
    atlas_layout,
    calc_grid_indices,
    create_atlas_vectors,
    normalize_grid,
    render_atlas,
    stream_activations,
)
from optim.reducer import ChannelReducer


def _positions(acts: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N*H*W, C], every spatial position a vector (image, row, column order)."""
    return acts.permute(0, 2, 3, 1).reshape(-1, acts.size(1))


def test_streamed_chunks_equal_the_in_memory_activations(tiny_net: nn.Module, tmp_path) -> None:
    images = torch.rand(13, 3, 8, 8)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, torch.zeros(13)), batch_size=4)
    store = stream_activations(tiny_net, "conv2", loader, tmp_path / "s", chunk_size=100)
    # in memory: the same batches through record_activations, every position a vector
    expected = torch.cat([_positions(record_activations(tiny_net, "conv2", x)["conv2"]) for x, _ in loader])
    assert expected.shape == (13 * 64, 6)
    assert store.shape == (832, 6) and store.chunk_rows == [100] * 8 + [32]
    assert torch.equal(store.read(), expected)
    chunks = list(ActivationStore(tmp_path / "s").chunks())  # reopened from disk
    assert [c.shape[0] for c in chunks] == store.chunk_rows
    assert all(torch.equal(c, expected[100 * i : 100 * i + len(c)]) for i, c in enumerate(chunks))
    # plain NumPy reads the chunks; the manifest says what they are
    manifest = json.loads((tmp_path / "s" / "store.json").read_text())
    assert manifest["rows"] == 832 and manifest["channels"] == 6 and manifest["dtype"] == "float32"
    assert manifest["metadata"] == {"layer": "conv2", "model": "TinyNet", "positions_per_image": None, "seed": 0,
                                    "images": 13, "activation_shape": [6, 8, 8]}
    np.testing.assert_array_equal(np.load(tmp_path / "s" / "chunk_000008.npy"), expected[800:].numpy())
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [f"chunk_{i:06d}.npy" for i in range(9)] + ["store.json"]
    # by module, from a dict batch
    by_module = stream_activations(tiny_net, tiny_net.conv2, [{"pixel_values": images}], tmp_path / "m")
    assert by_module.metadata["layer"] == "conv2" and by_module.chunk_rows == [832]


def test_random_positions_per_image_do_not_depend_on_the_batch_size(tmp_path) -> None:
    net = nn.Sequential(nn.Identity())  # the activation is the input itself: exact values to compare
    images = torch.randn(7, 5, 3, 4)  # 12 positions per image
    a = stream_activations(net, "0", torch.split(images, 3), tmp_path / "a", positions_per_image=4, seed=9)
    b = stream_activations(net, "0", torch.split(images, 2), tmp_path / "b", positions_per_image=4, seed=9,
                           chunk_size=5)
    picks = [np.sort(np.random.default_rng([9, i]).choice(12, 4, replace=False)) for i in range(7)]
    expected = torch.cat([_positions(images[i : i + 1])[torch.as_tensor(p)] for i, p in enumerate(picks)])
    assert a.shape == (28, 5) and torch.equal(a.read(), expected) and torch.equal(b.read(), expected)
    other = stream_activations(net, "0", [images], tmp_path / "c", positions_per_image=4, seed=10)
    assert not torch.equal(other.read(), expected)
    # as many positions as the map has (or more): every position, in order
    every = stream_activations(net, "0", [images], tmp_path / "d", positions_per_image=12)
    assert torch.equal(every.read(), _positions(images))
    # [N, C] outputs: one vector per image
    flat = stream_activations(nn.Sequential(nn.Flatten()), "0", [images], tmp_path / "e")
    assert torch.equal(flat.read(), images.flatten(1))


def test_stop_early_false_streams_each_batch_at_its_own_calls(looping_net: nn.Module, tmp_path) -> None:
    """looping_net's block runs 2x on the first batch and 3x on the second: by default the second batch is read at
    the call counts the first showed, with stop_early=False at its own calls (the last, and call=-2)."""
    batches = [torch.full((1, 4), 0.25), torch.full((1, 4), 0.5)]
    for call in (-1, -2):
        own = torch.cat([record_activations(looping_net, "block", b, call=call)["block"] for b in batches])
        quick = torch.cat([a["block"] for a in iter_activations(looping_net, "block", batches, call=call)])
        assert torch.equal(quick[:1], own[:1]) and not torch.equal(quick[1:], own[1:])
        exact = stream_activations(looping_net, "block", batches, tmp_path / f"exact{call}", call=call,
                                   stop_early=False)
        default = stream_activations(looping_net, "block", batches, tmp_path / f"default{call}", call=call)
        assert torch.equal(exact.read(), own) and torch.equal(default.read(), quick)


def test_store_errors_and_reading(tmp_path) -> None:
    data = torch.arange(40.0).view(20, 2)
    store = ActivationStore.write(tmp_path / "s", [data[:7], data[7:8], data[8:].numpy()], chunk_size=6)
    assert store.chunk_rows == [6, 6, 6, 2] and store.nbytes == 20 * 2 * 4
    assert torch.equal(store.take([19, 0, 6, 6]), data[[19, 0, 6, 6]])
    sample = store.sample(5, seed=3)
    assert torch.equal(sample, store.sample(5, seed=3)) and not torch.equal(sample, store.sample(5, seed=4))
    rows = (sample[:, 0] / 2).long()
    assert torch.equal(sample, data[rows]) and bool((rows.diff() > 0).all())  # distinct rows, in store order
    assert torch.equal(store.sample(50), data)
    with pytest.raises(IndexError, match=r"\[0, 20\)"):
        store.take([20])
    with pytest.raises(ValueError, match="already holds an activation store"):
        ActivationStore.write(tmp_path / "s", [data])
    again = ActivationStore.write(tmp_path / "s", [data[:3]], overwrite=True)
    assert again.chunk_rows == [3] and sorted(p.name for p in (tmp_path / "s").iterdir()) == ["chunk_000000.npy", "store.json"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an activation store"):
        ActivationStore.write(tmp_path / "other", [data], overwrite=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    with pytest.raises(FileNotFoundError, match="store.json"):
        ActivationStore(tmp_path / "other")
    np.save(tmp_path / "outside.npy", np.full((3, 2), 42, dtype=np.float32))
    manifest = json.loads((tmp_path / "s" / "store.json").read_text())
    for bad in ("../outside.npy", str(tmp_path / "outside.npy"), "", None):  # a manifest pointing out of the store
        (tmp_path / "s" / "store.json").write_text(json.dumps({**manifest, "chunks": [{"file": bad, "rows": 3}]}))
        with pytest.raises(ValueError, match="chunk files must be plain file names inside the store"):
            ActivationStore(tmp_path / "s")
    with pytest.raises(ValueError, match="no rows"):
        ActivationStore.write(tmp_path / "empty", [])
    with pytest.raises(ValueError, match="3 channels follows blocks of 2"):
        ActivationStore.write(tmp_path / "mixed", [data, torch.zeros(1, 3)])
    with pytest.raises(ValueError, match="chunk_size must be a positive int, got 0"):
        ActivationStore.write(tmp_path / "zero", [data], chunk_size=0)
    with pytest.raises(ValueError, match="positions_per_image must be a positive int, got 0"):
        stream_activations(nn.Sequential(nn.Identity()), "0", [torch.zeros(1, 2, 2, 2)], tmp_path / "p",
                           positions_per_image=0)
    with pytest.raises(ValueError, match=r"\[N, C\] or \[N, C, H, W\], got \(1, 2, 2\)"):
        stream_activations(nn.Sequential(nn.Identity()), "0", [torch.zeros(1, 2, 2)], tmp_path / "r")


def test_the_stream_holds_one_chunk(tiny_net: nn.Module, tmp_path) -> None:
    chunk_size = 16384  # rows of 6 float32 channels: 384 KiB
    folder = tmp_path / "s"
    seen = []  # (rows the loader has handed out, chunk files on disk) whenever the next batch is asked for

    def counting_loader():
        rows = 0
        for _ in range(60):
            seen.append((rows, len(list(folder.glob("chunk_*.npy"))) if folder.exists() else 0))
            yield torch.rand(2, 3, 64, 64)  # 8192 rows a batch; 60 batches: 480 K rows, 11.25 MiB
            rows += 2 * 64 * 64

    tracemalloc.start()  # NumPy reports its buffers to tracemalloc: the chunk buffer and every loaded chunk
    try:
        store = stream_activations(tiny_net, "conv2", counting_loader(), folder, chunk_size=chunk_size)
        _, peak_write = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        total = 0.0
        for chunk in store.chunks():
            total += float(chunk.double().sum())
            del chunk  # the caller's reference: otherwise the previous chunk lives while the next one loads
        _, peak_read = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    chunk_bytes = chunk_size * 6 * 4
    assert store.nbytes == 60 * 8192 * 6 * 4 == 30 * chunk_bytes
    # every full chunk is on disk before the next batch is read: at most one chunk is ever held
    assert all(files == rows // chunk_size for rows, files in seen), seen
    # one chunk (the write buffer; the chunk being read) plus a few KiB of Python objects, never two
    assert peak_write < 1.25 * chunk_bytes and peak_read < 1.25 * chunk_bytes, (peak_write, peak_read, chunk_bytes)
    assert total == pytest.approx(float(store.read().double().sum()), rel=1e-12)


def test_incremental_pca_over_chunks_matches_pca(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    scales = torch.cat([torch.tensor([5.0, 3.0]), torch.linspace(0.3, 0.1, 14)])  # two dominant axes
    data = torch.randn(1025, 16, generator=g) * scales
    data = data @ torch.linalg.qr(torch.randn(16, 16, generator=g))[0] + 3.0
    store = ActivationStore.write(tmp_path / "s", [data], chunk_size=128)  # 8 chunks of 128 and one of 1 row
    full = ChannelReducer(16, "IncrementalPCA").partial_fit(store.chunks())  # all components: exact
    pca = PCA(16, svd_solver="full").fit(data.numpy())
    signs = torch.sign((full.components * torch.as_tensor(pca.components_)).sum(1, keepdim=True))
    torch.testing.assert_close(full.components * signs, torch.as_tensor(pca.components_).float(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(full.mean, torch.as_tensor(pca.mean_).float())
    # the 2-D layout of the store: partial_fit over the chunks (the 1-row chunk joined to the one before),
    # then transform chunk by chunk; equal to PCA on all the data up to the sign of each axis
    layout = atlas_layout(store, "IncrementalPCA")
    expected = torch.as_tensor(PCA(2, svd_solver="full").fit_transform(data.numpy())).float()
    signs = torch.sign((layout * expected).sum(0))
    assert layout.shape == (1025, 2) and layout.dtype == torch.float32
    torch.testing.assert_close(layout * signs, expected, atol=1e-4, rtol=1e-4)  # |layout| up to 19
    # and exactly what scikit-learn's IncrementalPCA gives fed the same blocks by hand
    ref = IncrementalPCA(2)
    for lo, hi in [(i * 128, (i + 1) * 128) for i in range(7)] + [(896, 1025)]:
        ref.partial_fit(data[lo:hi].numpy())
    torch.testing.assert_close(layout, torch.as_tensor(ref.transform(data.numpy())).float())


def test_minibatch_nmf_and_fit_on_a_sample(tmp_path) -> None:
    data = torch.rand(600, 8, generator=torch.Generator().manual_seed(1))
    store = ActivationStore.write(tmp_path / "s", [data], chunk_size=100)
    layout = atlas_layout(store, "MiniBatchNMF", random_state=0, batch_size=50)
    ref = MiniBatchNMF(2, random_state=0, batch_size=50)
    for chunk in data.split(100):
        ref.partial_fit(chunk.numpy())
    # NMF's transform is itself iterative (it stops on the whole input's tolerance): compare chunk by chunk
    expected = np.concatenate([ref.transform(chunk.numpy()) for chunk in data.split(100)])
    torch.testing.assert_close(layout, torch.as_tensor(expected).float())
    # fit_sample: fit on that many rows of the store (store.sample), transform all of it
    sampled = atlas_layout(store, "PCA", fit_sample=150, sample_seed=3)
    pca = PCA(2).fit(store.sample(150, seed=3).numpy())
    torch.testing.assert_close(sampled, torch.as_tensor(pca.transform(data.numpy())).float())
    # the same on a tensor
    in_memory = atlas_layout(data, "PCA", fit_sample=150, sample_seed=3)
    rows = torch.randperm(600, generator=torch.Generator().manual_seed(3))[:150].sort().values
    torch.testing.assert_close(in_memory, torch.as_tensor(PCA(2).fit(data[rows].numpy()).transform(data.numpy())).float())
    with pytest.raises(TypeError, match="TSNE cannot embed new points"):
        atlas_layout(store, "TSNE")
    with pytest.raises(ValueError, match="fit_sample must be a positive int or None, got 0"):
        atlas_layout(store, "PCA", fit_sample=0)
    with pytest.raises(ValueError, match="non-negative"):
        atlas_layout(ActivationStore.write(tmp_path / "neg", [data - 0.5]), "MiniBatchNMF")


def test_opentsne_fits_a_sample_and_places_the_rest(tmp_path) -> None:
    pytest.importorskip("openTSNE")
    g = torch.Generator().manual_seed(2)
    data = torch.cat([torch.rand(150, 6, generator=g), torch.rand(150, 6, generator=g) + 4.0])
    store = ActivationStore.write(tmp_path / "s", [data[torch.randperm(300, generator=g)]], chunk_size=64)
    layout = atlas_layout(store, "openTSNE", fit_sample=100, perplexity=10, random_state=0)
    assert layout.shape == (300, 2) and torch.isfinite(layout).all()
    vectors = store.read()
    a, b = layout[vectors[:, 0] < 2], layout[vectors[:, 0] >= 2]  # the two clusters
    assert len(a) == len(b) == 150
    assert (a.mean(0) - b.mean(0)).norm() > 2 * max(a.std(0).norm(), b.std(0).norm())


_UMAP_STORE = """
import sys, warnings
import torch
from optim.atlas import ActivationStore, atlas_layout
warnings.simplefilter("ignore")
g = torch.Generator().manual_seed(0)
data = torch.cat([torch.rand(40, 5, generator=g), torch.rand(40, 5, generator=g) + 4.0])
store = ActivationStore.write(sys.argv[1], [data], chunk_size=16)
layout = atlas_layout(store, "UMAP", fit_sample=30, n_neighbors=8, n_epochs=30, random_state=0, metric="euclidean")
assert layout.shape == (80, 2), layout.shape
a, b = layout[:40], layout[40:]
gap = (a.mean(0) - b.mean(0)).norm()
assert gap > 2 * max(a.std(0).norm(), b.std(0).norm()), gap
"""


def test_umap_fits_a_sample_and_transforms_the_chunks(tmp_path) -> None:
    pytest.importorskip("umap")
    # as in test_reducer: umap-learn's own code with numba's JIT off (seconds instead of ~40 s of compiling)
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    result = subprocess.run([sys.executable, "-c", _UMAP_STORE, str(tmp_path / "s")], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_streamed_cell_means_equal_the_in_memory_ones(tmp_path) -> None:
    g = torch.Generator().manual_seed(3)
    acts = torch.randn(1000, 7, generator=g) * 10.0  # general float32 values, not exactly summable
    layout = torch.randn(1000, 2, generator=g)
    store = ActivationStore.write(tmp_path / "s", [acts], chunk_size=37)
    streamed, coords = create_atlas_vectors(layout, store, (5, 4), min_density=3)
    in_memory, coords_in_memory = create_atlas_vectors(layout, acts, (5, 4), min_density=3)
    assert coords == coords_in_memory and len(coords) >= 15
    assert torch.equal(streamed, in_memory)  # bit for bit
    # and they are the cell means: the points of each cell averaged
    idx = calc_grid_indices(normalize_grid(layout), (5, 4))
    expected = torch.stack([acts[idx[x][y]].double().mean(0) for x, y, _ in coords]).float()
    assert [len(idx[x][y]) for x, y, _ in coords] == [n for _, _, n in coords]
    torch.testing.assert_close(streamed, expected, atol=0, rtol=1e-6)
    # any split into chunks gives the same sums, the counts are exact
    acc = CellAccumulator((5, 4))
    xy = normalize_grid(layout)
    for lo, hi in [(0, 1), (1, 500), (500, 999), (999, 1000)]:
        acc.add(xy[lo:hi], acts[lo:hi])
    assert torch.equal(acc.means(3)[0], in_memory) and int(acc.counts.sum()) == 1000
    with pytest.raises(ValueError, match="999 points but raw_activations has 1000 rows"):
        create_atlas_vectors(layout[:999], store, 2)
    with pytest.raises(ValueError, match="3 channels follow samples of 7"):
        acc.add(xy[:2], torch.zeros(2, 3))


def test_end_to_end_atlas_from_a_streamed_store(tiny_net: nn.Module, tmp_path) -> None:
    images = torch.rand(24, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    loader = torch.utils.data.DataLoader(images, batch_size=5)
    store = stream_activations(tiny_net, "conv2", loader, tmp_path / "s", chunk_size=256, positions_per_image=16)
    assert store.shape == (24 * 16, 6) and store.chunk_rows == [256, 128]
    kw = dict(grid_size=3, min_density=4, image_size=12, batch_size=4, steps=3, transforms=nn.Identity(),
              progress=False, seed=0)
    atlas = activation_atlas(tiny_net, "conv2", store, reducer="IncrementalPCA", **kw)
    assert isinstance(atlas, opt.ImageTensor) and atlas.shape == (1, 3, 36, 36)
    # the same atlas as from the activations in memory, laid out by the same reducer
    layout = atlas_layout(store, "IncrementalPCA")
    in_memory = activation_atlas(tiny_net, "conv2", store.read(), layout=layout, **kw)
    assert torch.equal(atlas, in_memory)
    vectors, coords = create_atlas_vectors(layout, store, 3, min_density=4)
    # its last step alone: the cell vectors rendered and pasted
    render_kw = {k: v for k, v in kw.items() if k not in ("grid_size", "min_density")}
    assert torch.equal(render_atlas(tiny_net, "conv2", vectors, coords, 3, **render_kw), atlas)
    with pytest.raises(ValueError, match="vectors but"):
        render_atlas(tiny_net, "conv2", vectors[:1], coords, 3, **render_kw)
    rendered = [(x, y) for x, y, _ in coords]
    for x in range(3):
        for y in range(3):
            tile = atlas[..., (2 - y) * 12 : (3 - y) * 12, x * 12 : (x + 1) * 12]
            assert bool((tile == 1).all()) == ((x, y) not in rendered)  # empty cells stay white
    assert 2 <= len(rendered) <= 9 and 0 <= float(atlas.min()) and float(atlas.max()) <= 1
