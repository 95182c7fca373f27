"""The same core on a CUDA device: renders, readers, attribution and seeds follow the model's device.

Skipped without a GPU (CI has none); run on a GPU machine with ``python -m pytest -q tests/test_cuda.py``.
"""
import pytest
import torch
import torch.nn as nn

import optim as opt

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning"),
]


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 6, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5)).eval()


def test_render_vis_on_cuda_raises_the_objective_and_is_seeded() -> None:
    model = tiny().cuda()
    loss = opt.loss.ChannelActivation(model[2], 3)
    first, last = opt.render_vis(model, loss, image=lambda: opt.render.default_image(32).cuda(), thresholds=(0, 24),
                                 progress=False, seed=1)
    acts = [opt.activations.record_activations(model, [model[2]], x.cuda())[model[2]][:, 3].mean().item()
            for x in (first, last)]
    assert acts[1] > acts[0] + 0.01
    (again,) = opt.render_vis(model, loss, image=lambda: opt.render.default_image(32).cuda(), thresholds=(24,),
                              progress=False, seed=1)
    assert torch.allclose(again, last, atol=1e-5)
    assert not any(m._forward_hooks for m in model.modules())


def test_default_image_follows_the_model_to_cuda() -> None:
    model = tiny().cuda()
    (out,) = opt.render_vis(model, "2:1", thresholds=(3,), progress=False, seed=0)
    assert out.shape[-1] == opt.render.DEFAULT_SIZE and torch.isfinite(out).all()


def test_record_activations_in_place_safe_on_cuda() -> None:
    model = tiny().cuda()
    x = torch.randn(2, 3, 16, 16, device="cuda")
    acts = opt.activations.record_activations(model, [model[0], model[2]], x)
    expected = model[0](x)
    assert acts[model[0]].is_cuda and torch.allclose(acts[model[0]], expected, atol=1e-5)
    assert float(acts[model[0]].min()) < 0  # not the in-place ReLU's output


def test_render_layer_and_class_visualization_on_cuda() -> None:
    model = tiny().cuda()
    tiles = opt.render_layer(model, "2", channels=[0, 1, 2], batch_size=2, steps=4, size=24, progress=False, seed=0)
    assert tiles.shape == (3, 3, 24, 24)
    images = opt.recipes.class_visualization(model, [0, 4], steps=4, size=24, progress=False, seed=0)
    assert images.shape == (2, 3, 24, 24)


def test_gradcam_on_cuda() -> None:
    model = tiny().cuda()
    x = torch.rand(2, 3, 16, 16, device="cuda")
    heat = opt.attribution.attribute(model, x, target=[1, 2], method="gradcam", layer=model[2])
    assert heat.is_cuda and heat.shape[0] == 2 and heat.shape[-2:] == (16, 16)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_model_renders_on_cuda(dtype) -> None:
    model = tiny().cuda().to(dtype)
    loss = opt.loss.ChannelActivation(model[2], 3)
    first, last = opt.render_vis(model, loss, image=opt.render.default_image(32), thresholds=(0, 16),
                                 progress=False, seed=0)
    assert last.dtype == torch.float32 and 0 <= float(last.min()) and float(last.max()) <= 1
    with torch.no_grad():
        acts = [model[:3](x.cuda().to(dtype))[:, 3].mean().item() for x in (first, last)]
    assert acts[1] > acts[0]
    assert next(model.parameters()).dtype == dtype
