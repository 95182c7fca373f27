"""Write the tutorial notebooks from the cell sources below: ``python tutorials/_make_notebooks.py``.

The notebooks are kept as generated files so that a change to a tutorial is one reviewable diff here.
Every notebook reads ``OPTIM_TUTORIAL_STEPS`` (optimization steps) and ``OPTIM_TUTORIAL_SIZE`` (image side),
so the test suite runs them all in seconds with tiny values.
"""
from pathlib import Path
from typing import Dict, List, Tuple

import nbformat

__all__ = ["NOTEBOOKS", "build"]

HERE = Path(__file__).resolve().parent

SETUP = '''import os
import torch
import optim as opt

STEPS = int(os.environ.get("OPTIM_TUTORIAL_STEPS", "256"))  # optimization steps (CI uses a handful)
SIZE = int(os.environ.get("OPTIM_TUTORIAL_SIZE", "128"))    # image side in pixels
PHOTO = int(os.environ.get("OPTIM_TUTORIAL_PHOTO", "224"))  # side of the sample photos
torch.manual_seed(0)
model = opt.models.efficientnet_lite0(pretrained=True).eval()  # offline weights (the "zoo" extra)'''

IMAGES = '''import skimage.data
from torch.nn.functional import interpolate

def photo(array, size=PHOTO):
    """An skimage sample photo as a [1, 3, size, size] tensor in [0, 1]."""
    x = torch.as_tensor(array).permute(2, 0, 1)[None].float() / 255
    return interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

photos = torch.cat([photo(f()) for f in (skimage.data.astronaut, skimage.data.chelsea, skimage.data.coffee,
                                          skimage.data.rocket)])
photos.shape'''

Cells = List[Tuple[str, str]]  # ("md" | "code", source)

NOTEBOOKS: Dict[str, Tuple[str, Cells]] = {}

NOTEBOOKS["01_getting_started"] = ("Getting started: feature visualization in a few lines", [
    ("md", "This notebook renders what single channels of EfficientNet-Lite0 respond to. The pretrained weights "
           "ship as a pip package, so nothing is downloaded. `STEPS` and `SIZE` come from environment "
           "variables so that the test suite can run the notebook quickly; the defaults give good images."),
    ("code", SETUP),
    ("md", "## The model zoo and the layers of a model\n`list_models` shows the registry; `layer_info` runs one "
           "forward pass and lists every layer that ran with its output shape: the names are the targets of "
           "objectives."),
    ("code", 'print(opt.models.list_models(offline_only=True))\n'
             'rows = opt.models.layer_info(model, (1, 3, 224, 224))\n'
             'for row in rows:\n'
             '    if row.name.count(".") == 1 and row.name.startswith("blocks."):\n'
             '        print(f"{row.name:10s} {row.type:14s} {row.shape}")'),
    ("md", "## One call: `render_vis`\nAn objective string `\"layer:channel\"` maximizes the mean activation of "
           "one channel. `thresholds` takes snapshots along the way."),
    ("code", 'halfway = max(1, STEPS // 2)\n'
             'images = opt.render_vis(model, "blocks.10:7", image=opt.render.default_image(SIZE),\n'
             '                        thresholds=(halfway, STEPS), seed=0, progress=False)\n'
             'opt.show(torch.cat(images), labels=[f"{halfway} steps", f"{STEPS} steps"])'),
    ("md", "## The same, spelled out\n`render_vis` composes an image parameterization (a Fourier-parameterized, "
           "colour-decorrelated `NaturalImage`), robustness transforms, an objective and `InputOptimization`."),
    ("code", 'image = opt.images.NaturalImage((SIZE, SIZE))\n'
             'loss = opt.loss.ChannelActivation("blocks.10", 7)\n'
             'obj = opt.InputOptimization(model, loss, image, opt.transforms.TransformationRobustness())\n'
             'history = obj.optimize(opt.optimization.n_steps(STEPS, show_progress=False))\n'
             'print(f"loss went from {history[0]:.3f} to {history[-1]:.3f}")\n'
             'import tempfile, pathlib\n'
             'out = pathlib.Path(tempfile.mkdtemp()) / "blocks10_7.png"\n'
             'image().export(out)\n'
             'print(out, out.stat().st_size, "bytes")'),
    ("md", "## Many channels of a layer\n`render_layer` optimizes a batch of channels at once (each image has its "
           "own objective); `make_grid_image` lays them out."),
    ("code", 'tiles = opt.render_layer(model, "blocks.5", channels=range(8), batch_size=8, steps=STEPS, size=SIZE,\n'
             '                         progress=False, seed=0)\n'
             'opt.show(opt.make_grid_image(tiles, images_per_row=4))'),
    ("md", "The command line does the same without code: `optim render efficientnet_lite0 --target blocks.10:7 "
           "--output channel.png`, `optim layer efficientnet_lite0 blocks.5 --channels 0:8`, and `optim app` "
           "opens the graphical interface."),
])

NOTEBOOKS["02_model_preparation"] = ("Preparing a model: layer names, RedirectedReLU and linear models", [
    ("code", SETUP),
    ("md", "## Layer names\nEvery objective names its layer by the dotted module name. `get_model_layers` lists "
           "them; a misspelt name fails early with the closest valid names."),
    ("code", 'names = opt.models.get_model_layers(model)\n'
             'print(len(names), "modules, e.g.", [n for n in names if n.startswith("blocks.10")])\n'
             'try:\n'
             '    opt.render_vis(model, "block.10:7", thresholds=(1,), progress=False)\n'
             'except ValueError as err:\n'
             '    print("ValueError:", err)'),
    ("md", "## RedirectedReLU\nA ReLU (here ReLU6) passes no gradient where it is inactive, so an optimization "
           "that starts in a dead region never leaves it. The redirected variant computes the same forward pass "
           "but lets the gradient through when it would otherwise be zero everywhere (Lucid's trick)."),
    ("code", 'import copy\n'
             'import torch.nn as nn\n'
             'redirected = copy.deepcopy(model)\n'
             'opt.models.replace_layers(redirected, nn.ReLU6, opt.models.RedirectedRelu6Layer)\n'
             'x = torch.rand(2, 3, 224, 224)\n'
             'with torch.no_grad():\n'
             '    print("same forward pass:", torch.allclose(model(x), redirected(x), atol=1e-5))\n'
             'print(sum(isinstance(m, opt.models.RedirectedRelu6Layer) for m in redirected.modules()), '
             '"ReLU6 layers redirected")\n'
             'images = opt.render_vis(redirected, "blocks.3:5", image=opt.render.default_image(SIZE),\n'
             '                        thresholds=(STEPS,), seed=0, progress=False)\n'
             'opt.show(images[0])'),
    ("md", "## Linear models\nWith the nonlinearities skipped, the network between two layers is linear (batch "
           "norm in eval mode is affine), which is what expanded weights (the circuits tutorial) rely on. "
           "The zoo factories build that variant with `use_linear_modules_only=True` (every ReLU6 a "
           "`SkipLayer`, as captum's googlenet); `skip_layers` does the same to any model, and raises if the "
           "class it is given matches nothing (the pretrained model's ReLU6s are `RedirectedRelu6Layer`):"),
    ("code", 'linear = opt.models.efficientnet_lite0(pretrained=True, use_linear_modules_only=True).eval()\n'
             'print(sum(isinstance(m, opt.models.SkipLayer) for m in linear.modules()), "activations skipped")\n'
             'try:\n'
             '    opt.models.skip_layers(copy.deepcopy(model), nn.ReLU6)\n'
             'except ValueError as err:\n'
             '    print("ValueError:", str(err)[:90], "...")\n'
             'a, b = torch.rand(1, 3, 64, 64) / 2, torch.rand(1, 3, 64, 64) / 2  # a + b stays in [0, 1]\n'
             'f = lambda t: opt.models.collect_activations(linear, "blocks.4", t)["blocks.4"]\n'
             'with torch.no_grad():\n'
             '    residual = f(a + b) - f(a) - f(b) + f(torch.zeros_like(a))\n'
             'print("affine: max |f(a+b) - f(a) - f(b) + f(0)| =", float(residual.abs().max()))'),
])

NOTEBOOKS["03_losses"] = ("Objectives and their algebra", [
    ("code", SETUP),
    ("md", "Objectives are `Loss` objects. They combine with `+ - * / **`, unary `-` and `abs()`: loss-with-loss "
           "arithmetic reduces each side to its mean first, loss-with-number arithmetic is elementwise."),
    ("code", 'a = opt.loss.ChannelActivation("blocks.10", 7)\n'
             'b = opt.loss.ChannelActivation("blocks.10", 21)\n'
             'acts = opt.models.collect_activations(model, "blocks.10", torch.rand(1, 3, 128, 128))\n'
             'print("a:", float(a(acts).mean()), " b:", float(b(acts).mean()))\n'
             'print("a - 0.5 * b:", float((a - 0.5 * b)(acts).mean()))\n'
             'print(float((a - 0.5 * b)(acts).mean()), "==", float(a(acts).mean() - 0.5 * b(acts).mean()))'),
    ("md", "## Mixing two channels\nA weighted sum of two channels renders the neuron \"interaction\"; a string "
           "objective is parsed into the same losses (`\"layer\"`, `\"layer:channel\"`, `\"layer:channel:x:y\"`)."),
    ("code", 'mix = opt.loss.parse("blocks.10:7") + opt.loss.parse("blocks.10:21")\n'
             'images = [opt.render_vis(model, o, image=opt.render.default_image(SIZE), thresholds=(STEPS,), seed=0,\n'
             '                         progress=False)[0] for o in ("blocks.10:7", "blocks.10:21", mix)]\n'
             'opt.show(torch.cat(images), labels=["7", "21", "7 + 21"])'),
    ("md", "## Batches, diversity and regularizers\n`batch_index` points a term at some images of the batch. "
           "`Diversity` pushes a batch apart; `TotalVariation` (subtracted) smooths."),
    ("code", 'channel = opt.loss.ChannelActivation("blocks.10", 7)\n'
             'objective = channel - 1e2 * opt.loss.Diversity("blocks.10")\n'
             'images = opt.render_vis(model, objective, image=opt.render.default_image(SIZE, batch=3),\n'
             '                        thresholds=(STEPS,), seed=0, progress=False)\n'
             'opt.show(images[0])\n'
             'pos_neg = opt.loss.parse("blocks.10:7", batch_index=0) - opt.loss.parse("blocks.10:7", batch_index=1)\n'
             'images = opt.render_vis(model, pos_neg, image=opt.render.default_image(SIZE, batch=2),\n'
             '                        thresholds=(STEPS,), seed=0, progress=False)\n'
             'opt.show(images[0], labels=["maximize", "minimize"])'),
])

NOTEBOOKS["04_circuits"] = ("Circuits: expanded weights between layers", [
    ("code", SETUP),
    ("md", "Expanded weights are the effective linear weights between two layers of the linearized network "
           "(nonlinearities skipped): entry `[c2, c1, y, x]` says how much channel `c1` at offset `(y, x)` "
           "excites channel `c2`. Here: from the output of block 4 to the output of block 6 (two blocks with 3x3 and 5x5 "
           "depthwise convolutions between them, so every offset of the 5 x 5 window carries weight)."),
    ("code", 'linear = opt.models.efficientnet_lite0(pretrained=True, use_linear_modules_only=True).eval()\n'
             'w = opt.circuits.extract_expanded_weights(linear, "blocks.4", "blocks.6", crop_shape=5,\n'
             '                                          model_input=torch.zeros(1, 3, 96, 96))\n'
             'print("expanded weights:", tuple(w.shape))\n'
             'top = opt.circuits.top_connections(w, k=4, target_channel=0, score="sum")\n'
             'top'),
    ("md", "`weights_to_heatmap_2d` colours a 2-D weight slice in [-1, 1] (blue negative, white zero, red "
           "positive), so the slices are divided by the largest magnitude into channel 0 first, as captum's "
           "example does; the strongest input channels of channel 0, and their feature visualizations:"),
    ("code", 'from torch.nn.functional import interpolate\n'
             'scale = w[0].abs().max()\n'
             'heat = torch.stack([opt.circuits.weights_to_heatmap_2d(w[0, c.source_channel] / scale) for c in top])\n'
             'opt.show(interpolate(heat, scale_factor=16, mode="nearest"),\n'
             '         labels=[f"{c.source_channel} -> 0" for c in top])\n'
             'channels = [c.source_channel for c in top]\n'
             'tiles = opt.render_layer(model, "blocks.4", channels=channels, steps=STEPS, size=SIZE, progress=False,\n'
             '                         seed=0)\n'
             'opt.show(tiles, labels=[f"blocks.4:{c}" for c in channels])'),
])

NOTEBOOKS["05_reducer_and_atlas"] = ("Channel reducer and activation atlas", [
    ("code", SETUP),
    ("code", IMAGES),
    ("md", "## Factorizing activations\n`ChannelReducer` wraps scikit-learn decompositions (NMF by default) over "
           "the channel dimension: each component is a direction in channel space."),
    ("code", 'acts = opt.models.collect_activations(model, "blocks.10", photos)["blocks.10"]\n'
             'reducer = opt.reducer.ChannelReducer(3, "NMF", max_iter=200)\n'
             'spatial = reducer.fit_transform(torch.relu(acts))\n'
             'print("activations", tuple(acts.shape), "-> factors", tuple(spatial.shape))\n'
             'components = torch.as_tensor(reducer.components, dtype=torch.float32)\n'
             'images = [opt.render_vis(model, opt.loss.Direction("blocks.10", v), image=opt.render.default_image(SIZE),\n'
             '                         thresholds=(STEPS,), seed=0, progress=False)[0] for v in components]\n'
             'opt.show(torch.cat(images), labels=[f"factor {i}" for i in range(3)])'),
    ("md", "## Activation atlas\nLay activation samples out in 2-D, average them per grid cell and render each "
           "cell's average direction. UMAP (the `umap` extra) is the usual layout; PCA needs no extra."),
    ("code", 'samples = acts.permute(0, 2, 3, 1).reshape(-1, acts.shape[1])\n'
             'atlas = opt.atlas.activation_atlas(model, "blocks.10", samples, grid_size=3, reducer="PCA",\n'
             '                                   min_density=2, image_size=max(16, SIZE // 4), steps=STEPS)\n'
             'print(tuple(atlas.shape))\n'
             'opt.show(atlas)'),
])

NOTEBOOKS["06_attribution"] = ("Attribution and building blocks", [
    ("code", SETUP),
    ("code", IMAGES),
    ("md", "## Which pixels matter\n`attribute` runs an attribution method for a class; `overlay` draws it over "
           "the image."),
    ("code", 'image = photos[1:2]  # the cat\n'
             'with torch.no_grad():\n'
             '    top_class = int(model(image).argmax())\n'
             'labels = opt.models.model_info("efficientnet_lite0").labels\n'
             'print("predicted:", labels[top_class])\n'
             'attr = opt.attribution.attribute(model, image, top_class, method="saliency")\n'
             'print("attribution", tuple(attr.shape))\n'
             'opt.attribution.overlay(image, attr)'),
    ("md", "## Building blocks\nChannel attribution ranks the channels of a layer by their contribution to the "
           "class; each block pairs a channel's feature visualization with where it fires in the image."),
    ("code", 'ranked = opt.attribution.channel_attribution(model, image, top_class, "blocks.14", top_k=4)\n'
             'print(ranked)\n'
             'def render_fn(layer, channel):\n'
             '    return opt.render_vis(model, f"{layer}:{channel}", image=opt.render.default_image(SIZE),\n'
             '                          thresholds=(STEPS,), seed=0, progress=False)[0]\n'
             'blocks = opt.attribution.channel_blocks(model, image, top_class, "blocks.14", render_fn, top_k=3)\n'
             'opt.attribution.plot_channel_blocks(blocks, image)'),
])

NOTEBOOKS["07_cka"] = ("Comparing representations with CKA", [
    ("code", SETUP),
    ("code", IMAGES),
    ("md", "Centered kernel alignment (CKA) measures how similar two layers' representations of the same inputs "
           "are, invariant to rotations and isotropic scaling. It is 1 for a layer with itself:"),
    ("code", 'acts = opt.models.collect_activations(model, ["blocks.5", "blocks.10"], photos)\n'
             'x, y = (a.flatten(1) for a in acts.values())\n'
             'print("CKA(blocks.5, blocks.5)  =", float(opt.analysis.linear_cka(x, x)))\n'
             'print("CKA(blocks.5, blocks.10) =", float(opt.analysis.linear_cka(x, y)))\n'
             'permuted = 2 * x[:, torch.randperm(x.shape[1])]  # an orthogonal map and a scaling\n'
             'print("CKA(blocks.5, 2 * permuted blocks.5) =", float(opt.analysis.linear_cka(x, permuted)))'),
    ("md", "## Two models, layer by layer\nA heatmap of CKA between the block outputs of the pretrained "
           "EfficientNet-Lite0 and a randomly initialized one."),
    ("code", 'random_model = opt.models.efficientnet_lite0(pretrained=False).eval()\n'
             'layers = [f"blocks.{i}" for i in (1, 5, 10, 15)]\n'
             'cka_map = opt.analysis.cka_heatmap(model, random_model, photos, layers, layers, progress=False)\n'
             'opt.analysis.plot_cka(cka_map, labels=("pretrained", "random"))'),
])


def build() -> List[Path]:
    """Write every notebook; returns their paths."""
    paths = []
    for name, (title, cells) in NOTEBOOKS.items():
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells.append(nbformat.v4.new_markdown_cell(f"# {title}"))
        for kind, source in cells:
            make = nbformat.v4.new_markdown_cell if kind == "md" else nbformat.v4.new_code_cell
            nb.cells.append(make(source))
        for i, cell in enumerate(nb.cells):
            cell["id"] = f"{name}-{i}"  # stable ids: regenerating gives no spurious diff
        path = HERE / f"{name}.ipynb"
        nbformat.write(nb, path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in build():
        print(p)
