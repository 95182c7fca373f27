"""Activation atlas: grid binning, cell averages, exact tile placement, and a tiny end-to-end render."""
import pytest
import torch
import torch.nn as nn

import optim as opt
from optim.atlas import (
    activation_atlas,
    atlas_layout,
    calc_grid_indices,
    compute_avg_cell_samples,
    create_atlas,
    create_atlas_vectors,
    normalize_grid,
    render_atlas,
)


def test_normalize_grid_rescales_and_clips_outliers() -> None:
    xy = torch.tensor([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    out = normalize_grid(xy, min_percentile=0.0, max_percentile=1.0, relative_margin=0.0)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0], [1 / 3, 1 / 3], [2 / 3, 2 / 3], [1.0, 1.0]]))
    spread = torch.cat([torch.linspace(0, 1, 101).unsqueeze(1).repeat(1, 2), torch.tensor([[1000.0, 0.5]])])
    clipped = normalize_grid(spread)
    assert clipped.min() == 0 and clipped.max() == 1
    # The outlier is clipped to the 99th percentile (0.9999) plus 10% of the 1st-99th spread (0.9898),
    # instead of squashing everything else towards 0.
    upper = 0.9999 + 0.1 * (0.9999 - 0.0101)
    assert clipped[50, 0].item() == pytest.approx(0.5 / upper, rel=1e-4)
    assert clipped[101, 0] == 1
    with pytest.raises(ValueError, match="percentile"):
        normalize_grid(xy, min_percentile=0.9, max_percentile=0.1)
    with pytest.raises(ValueError, match=r"\[n_points, 2\]"):
        normalize_grid(torch.zeros(4, 3))


def test_calc_grid_indices_exact_cells() -> None:
    xy = torch.tensor([[0.1, 0.9], [0.8, 0.2], [1.0, 1.0], [0.5, 0.5], [1.2, 0.3], [0.05, 0.6], [0.0, 0.0]])
    idx = calc_grid_indices(xy, (2, 2))
    as_lists = [[t.tolist() for t in column] for column in idx]
    # Point 4 lies outside the extent; the upper edge (point 2) belongs to the last cell; 0.5 to the upper cell.
    assert as_lists == [[[6], [0, 5]], [[1], [2, 3]]]
    wide = calc_grid_indices(xy * 4, (3, 1), x_extent=(0.0, 3.0), y_extent=(0.0, 4.0))
    # x * 4 = [0.4, 3.2, 4.0, 2.0, 4.8, 0.2, 0.0]: three unit-wide cells over [0, 3], so 1, 2, 4 are outside.
    assert [c[0].tolist() for c in wide] == [[0, 5, 6], [], [3]]
    with pytest.raises(ValueError, match="grid_size"):
        calc_grid_indices(xy, (2, 0))
    with pytest.raises(ValueError, match="x_extent"):
        calc_grid_indices(xy, 2, x_extent=(1.0, 1.0))


def test_compute_avg_cell_samples_and_atlas_vectors() -> None:
    xy = torch.tensor([[0.1, 0.1], [0.2, 0.3], [0.9, 0.8], [0.7, 0.9], [0.6, 0.6], [0.9, 0.1]])
    acts = torch.arange(12, dtype=torch.float32).view(6, 2)
    vecs, coords = compute_avg_cell_samples(calc_grid_indices(xy, 2), acts, 2, min_density=2)
    assert coords == [(0, 0, 2), (1, 1, 3)]
    torch.testing.assert_close(vecs, torch.stack([acts[:2].mean(0), acts[2:5].mean(0)]))
    same = create_atlas_vectors(xy, acts, 2, min_density=2, normalize=False)
    torch.testing.assert_close(same[0], vecs)
    assert same[1] == coords
    with pytest.raises(ValueError, match="min_density"):
        compute_avg_cell_samples(calc_grid_indices(xy, 2), acts, 2, min_density=4)
    with pytest.raises(ValueError, match="6 points but raw_activations has 5"):
        create_atlas_vectors(xy, acts[:5], 2)


def test_create_atlas_places_tiles_exactly() -> None:
    cells = torch.stack([torch.full((2, 2, 3), v) for v in (0.1, 0.2, 0.3)])  # 3 cells, C=2, h=2, w=3
    coords = [(0, 0, 9), (2, 1, 4), (1, 0, 5)]
    atlas = create_atlas(cells, coords, (3, 2))
    assert atlas.shape == (1, 2, 4, 9)
    expected = torch.ones(1, 2, 4, 9)
    expected[..., 2:4, 0:3] = 0.1  # (x=0, y=0): bottom-left
    expected[..., 0:2, 6:9] = 0.2  # (x=2, y=1): top-right
    expected[..., 2:4, 3:6] = 0.3  # (x=1, y=0): bottom-middle
    torch.testing.assert_close(atlas, expected)
    # Image content keeps its orientation inside the tile.
    ramp = torch.arange(6.0).view(1, 1, 2, 3)
    tile = create_atlas([ramp], [(1, 0)], (2, 1), base_tensor=torch.zeros)
    torch.testing.assert_close(tile[..., 3:6], ramp)
    assert tile[..., :3].abs().sum() == 0
    with pytest.raises(ValueError, match="outside"):
        create_atlas(cells, [(0, 0), (3, 0), (1, 1)], (3, 2))
    with pytest.raises(ValueError, match="2 coords"):
        create_atlas(cells, coords[:2], (3, 2))


def test_atlas_layout_with_tsne() -> None:
    samples = torch.cat([torch.rand(12, 4), torch.rand(12, 4) + 5.0])
    xy = atlas_layout(samples, "TSNE", perplexity=4.0, random_state=0)
    assert xy.shape == (24, 2)
    a, b = xy[:12], xy[12:]  # the two clusters stay apart in the layout
    assert (a.mean(0) - b.mean(0)).norm() > 2 * max(a.std(0).norm(), b.std(0).norm())
    reducer = opt.reducer.ChannelReducer(2, "PCA")
    torch.testing.assert_close(atlas_layout(samples, reducer), reducer.transform(samples))
    with pytest.raises(ValueError, match="reducer_kwargs"):
        atlas_layout(samples, reducer, whiten=True)


def test_tiny_end_to_end_atlas(tiny_net: nn.Module) -> None:
    # Two clusters of conv2 activations: one driven by channel 0, one by channel 1.
    acts = torch.zeros(20, 6)
    acts[:10, 0], acts[10:, 1] = 1.0, 1.0
    acts += 0.05 * torch.rand(20, 6)
    layout = torch.cat([torch.rand(10, 2) * 0.4, 0.6 + torch.rand(10, 2) * 0.4])  # bottom-left, top-right
    calls = []

    def loss_fn(layer, vec, batch_index):
        calls.append((vec.clone(), batch_index))
        return opt.loss.Direction(layer, vec, batch_index=batch_index)

    tiny_net.train()
    atlas = activation_atlas(
        tiny_net, "conv2", acts, grid_size=2, layout=layout, min_density=3, image_size=12, batch_size=1,
        steps=25, lr=0.1, transforms=nn.Identity(), loss_fn=loss_fn, progress=False,
    )
    assert isinstance(atlas, opt.ImageTensor) and atlas.shape == (1, 3, 24, 24)
    assert tiny_net.training and all(p.requires_grad for p in tiny_net.parameters())
    assert [i for _, i in calls] == [0, 0]  # batch_size=1: two separate renders
    torch.testing.assert_close(calls[0][0], acts[:10].mean(0))
    torch.testing.assert_close(calls[1][0], acts[10:].mean(0))
    torch.testing.assert_close(atlas[..., :12, :12], torch.ones(1, 3, 12, 12))  # empty top-left
    torch.testing.assert_close(atlas[..., 12:, 12:], torch.ones(1, 3, 12, 12))  # empty bottom-right
    low, high = atlas[..., 12:, :12], atlas[..., :12, 12:]  # cluster 0 bottom-left, cluster 1 top-right
    assert 0 <= atlas.min() and atlas.max() <= 1 and (low - 1).abs().max() > 0

    # Each render moves its own direction more than the other cluster's render does.
    with torch.no_grad():
        conv2 = tiny_net.conv2(tiny_net.relu1(tiny_net.conv1(torch.cat([low, high]))))
    per_channel = conv2.mean((2, 3))
    assert per_channel[0, 0] - per_channel[0, 1] > per_channel[1, 0] - per_channel[1, 1]


def test_atlas_arguments_are_checked_before_the_layout_and_the_renders(tiny_net: nn.Module, monkeypatch) -> None:
    """A typo must not cost a UMAP fit or a whole atlas of renders: the layer, grid_size, min_density and the cells'
    coordinates are refused first."""
    import numpy as np

    import optim.atlas._recipe as recipe

    def never(*args, **kwargs):
        raise AssertionError("reached the expensive part")

    monkeypatch.setattr(recipe, "atlas_layout", never)
    monkeypatch.setattr(recipe, "create_atlas_vectors", never)
    acts = torch.rand(20, 6)
    with pytest.raises(ValueError, match="conv9"):
        activation_atlas(tiny_net, "conv9", acts, grid_size=2, progress=False)
    for bad in (0, 2.0, (2, 0), "2"):
        with pytest.raises(ValueError, match=f"^grid_size must be a positive int or a \\(width, height\\) pair"):
            activation_atlas(tiny_net, "conv2", acts, grid_size=bad, progress=False)
    assert create_atlas_vectors(torch.rand(20, 2), acts, 2, min_density=np.int64(1))[0].shape[1] == 6
    with pytest.raises(ValueError, match="^min_density must be a positive int, got 0"):
        activation_atlas(tiny_net, "conv2", acts, grid_size=2, min_density=0, progress=False)
    monkeypatch.setattr("optim.optimization.batched.render_batches", never)
    with pytest.raises(ValueError, match=r"^cell coordinate \(9, 9\) is outside the 2x2 grid"):
        render_atlas(tiny_net, "conv2", torch.rand(2, 6), [(0, 0), (9, 9)], 2, image_size=8, progress=False)
    assert opt.atlas.grid_shape(np.int64(3)) == (3, 3) and opt.atlas.grid_shape([np.int64(2), 4]) == (2, 4)
    # the render's own names ("input_param", "transform.*") are left to the render, as Transparency uses them
    recipe._check_layer(tiny_net, "input_param")
    with pytest.raises(ValueError, match="inputparam"):
        recipe._check_layer(tiny_net, "inputparam")
    with pytest.raises(ValueError, match=r"^layout must be an \[n_samples, 2\] tensor \(torch.from_numpy"):
        activation_atlas(tiny_net, "conv2", acts, grid_size=2, layout=np.zeros((20, 2)), progress=False)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="^reducer_kwargs cannot set n_components \\(got 3\\): an atlas layout is 2-D"):
        atlas_layout(acts, "PCA", n_components=3)


def test_batched_atlas_with_tsne_layout(tiny_net: nn.Module) -> None:
    acts = torch.rand(3, 6, 4, 4)  # spatial positions are samples: 48 of them
    atlas = activation_atlas(
        tiny_net, tiny_net.conv2, acts, grid_size=(2, 1), reducer="TSNE", reducer_kwargs={"perplexity": 5.0},
        min_density=1, image_size=(8, 10), batch_size=4, steps=2, transforms=nn.Identity(), progress=False,
    )
    assert atlas.shape == (1, 3, 8, 20)
    # The normalized layout spans [0, 1] on x, so both cells hold samples and both tiles are rendered.
    assert all((atlas[..., x * 10 : (x + 1) * 10] != 1).any() for x in range(2))
    with pytest.raises(ValueError, match="batch_size"):
        activation_atlas(tiny_net, "conv2", acts, batch_size=0)
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        activation_atlas(tiny_net, "conv2", torch.rand(3, 6, 4))


def test_atlas_renders_through_the_render_core(tiny_net: nn.Module, capsys) -> None:
    # three cells in a 3 x 1 grid, one cluster of samples per cell
    acts = torch.zeros(30, 6)
    for k in range(3):
        acts[10 * k : 10 * (k + 1), k] = 1.0
    acts += 0.05 * torch.rand(30, 6, generator=torch.Generator().manual_seed(0))
    layout = torch.cat([torch.stack([torch.full((10,), (k + 0.5) / 3), torch.full((10,), 0.5)], 1) for k in range(3)])
    kw = dict(grid_size=(3, 1), layout=layout, min_density=3, image_size=8, steps=3)
    # one progress bar over all batches (2 batches of 3 steps)
    batched = activation_atlas(tiny_net, "conv2", acts, batch_size=2, seed=4, **kw)
    err = capsys.readouterr().err
    assert "6/6" in err and "3/3" not in err
    # a cell's render depends on the seed and the cell, not on the batch it was rendered in
    with torch.backends.mkldnn.flags(enabled=False):
        one = activation_atlas(tiny_net, "conv2", acts, batch_size=1, seed=4, progress=False, **kw)
        three = activation_atlas(tiny_net, "conv2", acts, batch_size=3, seed=4, progress=False, **kw)
    assert torch.equal(one, three)
    assert (batched - one).abs().max() < 1e-4  # oneDNN's batch-size-dependent kernels: float rounding only
    other = activation_atlas(tiny_net, "conv2", acts, batch_size=3, seed=5, progress=False, **kw)
    assert (other - one).abs().max() > 0.01
    # the callback sees every step of every batch
    seen = []
    activation_atlas(tiny_net, "conv2", acts, batch_size=2, seed=4, progress=False,
                     callback=lambda step, loss, images: seen.append((step, tuple(images.shape))), **kw)
    assert seen == [(0, (2, 3, 8, 8)), (1, (2, 3, 8, 8)), (2, (2, 3, 8, 8)),
                    (3, (1, 3, 8, 8)), (4, (1, 3, 8, 8)), (5, (1, 3, 8, 8))]


def test_atlas_uses_the_render_core_defaults() -> None:
    import inspect

    from optim.optimization import defaults

    params = inspect.signature(activation_atlas).parameters
    # None: the model's native size, else DEFAULT_SIZE (render_inputs, as render_vis and render_layer)
    assert params["image_size"].default is None
    assert inspect.signature(opt.atlas.render_atlas).parameters["image_size"].default is None
    assert params["lr"].default == defaults.DEFAULT_LR and params["steps"].default == defaults.DEFAULT_STEPS
    assert params["transforms"].default is None  # render_batches' default_transforms()
    assert {"seed", "callback", "optimizer", "preprocess"} <= set(params)


class _Declared(nn.Sequential):
    """A fixed-size model declaring timm's pretrained_cfg: 24 x 24 input, ImageNet mean and std."""

    pretrained_cfg = {"input_size": (3, 24, 24), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (24, 24):  # a ViT's position embeddings: only its own size
            raise ValueError(f"Input image size {tuple(x.shape[-2:])} doesn't match model (24, 24)")
        return super().forward(x)


def test_atlas_takes_the_models_size_and_normalization() -> None:
    from optim.optimization import default_image, render_batches

    torch.manual_seed(0)
    net = _Declared(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 4, 3)).eval()
    vectors = torch.rand(2, 4, generator=torch.Generator().manual_seed(1))
    coords = [(0, 0), (1, 1)]
    kw = dict(steps=2, transforms=[], seed=3, progress=False)
    atlas = opt.atlas.render_atlas(net, "2", vectors, coords, 2, **kw)
    assert atlas.shape == (1, 3, 48, 48)  # 24 x 24 cells: the model's size, not DEFAULT_SIZE (its forward would fail)
    cfg = _Declared.pretrained_cfg

    def explicit(preprocess):
        return render_batches(
            net, [lambda i, v=v: opt.loss.Direction("2", v, batch_index=i) for v in vectors], coords,
            lambda n: default_image(24, batch=n), preprocess=preprocess, **kw,
        )

    normalized = explicit(opt.transforms.Normalize(cfg["mean"], cfg["std"]))
    # y up: cell (0, 0) is the bottom-left tile, (1, 1) the top-right
    assert torch.equal(atlas[0, :, 24:, :24], normalized[0]) and torch.equal(atlas[0, :, :24, 24:], normalized[1])
    assert (explicit(nn.Identity())[0] - normalized[0]).abs().max() > 1e-3  # the model saw normalized input
    # a caller's size and preprocess win; activation_atlas reads the same defaults
    same = opt.atlas.render_atlas(net, "2", vectors, coords, 2, preprocess=nn.Identity(), **kw)
    assert torch.equal(same[0, :, 24:, :24], explicit(nn.Identity())[0])
    acts = torch.zeros(20, 4)
    acts[:10, 0], acts[10:, 1] = 1.0, 1.0
    layout = torch.cat([torch.full((10, 2), 0.2), torch.full((10, 2), 0.8)])
    full = activation_atlas(net, "2", acts, grid_size=2, layout=layout, min_density=3, **kw)
    assert full.shape == (1, 3, 48, 48)
    assert not net.training and not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())


def test_atlas_renders_as_many_channels_as_the_model_reads() -> None:
    torch.manual_seed(0)
    gray = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()).eval()
    atlas = opt.atlas.render_atlas(gray, "0", torch.rand(1, 4), [(0, 0)], 1, image_size=8, steps=2, progress=False)
    assert atlas.shape == (1, 1, 8, 8)
