"""Activation layouts: NCHW / NHWC / tokens, exact loss values on tiny tensors, Grad-CAM on token models."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import optim as opt
from optim.activations import record_activations
from optim.layouts import Layout, channels_first, check_layout, infer_layout, unit_count
from optim.loss import (
    ActivationWeights, AngledNeuronDirection, ChannelActivation, ContentLoss, DeepDream, Direction, Diversity,
    FacetLoss, L2Mean, LayerActivation, NeuronActivation, NeuronDirection, StyleLoss, TensorDirection,
    VectorLoss, parse,
)


def model_state(model):
    return (model.training, [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.fixture
def tokens():
    # N=2, a class token + a 3x3 grid (L=10), D=4 hidden units; value = 100 n + 10 token + unit
    n, t, d = torch.meshgrid(torch.arange(2.0), torch.arange(10.0), torch.arange(4.0), indexing="ij")
    return 100 * n + 10 * t + d


# --- inference --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length, prefix, grid", [
    (197, 1, (14, 14)), (196, 0, (14, 14)), (50, 1, (7, 7)), (201, 5, (14, 14)), (198, 2, (14, 14)),
    (5, 1, (2, 2)), (4, 0, (2, 2)),
    (12, 0, None),   # 3x3 + 3: more prefix tokens than a grid row minus one
    (205, 0, None),  # 14x14 + 9: more than 8 prefix tokens
    (3, 0, None), (1, 0, None),
])
def test_token_inference_rule(length, prefix, grid):
    assert infer_layout(torch.zeros(1, length, 8)) == Layout("NLD", prefix=prefix, grid=grid)


def test_rank_inference_and_explicit_layouts():
    assert infer_layout(torch.zeros(2, 3, 4, 5)) == Layout("NCHW")
    assert infer_layout(torch.zeros(2, 10)) == Layout("NCHW")
    assert infer_layout(torch.zeros(7)) == Layout("NCHW")
    assert infer_layout(torch.zeros(1, 12, 8), Layout("NLD", grid=(3, 4))) == Layout("NLD", prefix=0, grid=(3, 4))
    assert infer_layout(torch.zeros(1, 12, 8), Layout("NLD", prefix=3)) == Layout("NLD", prefix=3, grid=(3, 3))
    assert infer_layout(torch.zeros(1, 13, 8), Layout("NLD", prefix=1)) == Layout("NLD", prefix=1, grid=None)
    assert infer_layout(torch.zeros(1, 10, 8), "NCL") == Layout("NCHW")
    assert check_layout("nhwc") == Layout("NHWC") and check_layout(None) is None


@pytest.mark.parametrize("bad, error, match", [
    ("NHCW", ValueError, r"one of 'NCHW', 'NHWC', 'NLD'.*got 'NHCW'"),
    (4, TypeError, r"layout must be None \(infer\), a name .* got 4 \(int\)"),
    (Layout("NLD", prefix=2, grid=(3, 3)), ValueError, r"has 10 tokens, but prefix=2 and grid=\(3, 3\) make 11"),
    (Layout("NLD", grid=(4, 4)), ValueError, r"has 10 tokens, fewer than the grid \(4, 4\) needs \(16\)"),
    (Layout("NLD", prefix=11), ValueError, r"has 10 tokens, fewer than prefix=11"),
])
def test_layout_errors_name_the_value(tokens, bad, error, match):
    with pytest.raises(error, match=match):
        infer_layout(tokens, bad)


def test_layout_constructor_errors():
    with pytest.raises(ValueError, match="prefix and grid describe token layouts"):
        Layout("NCHW", prefix=1)
    with pytest.raises(TypeError, match=r"grid must be an \(h, w\) pair of ints, got 5"):
        Layout("NLD", grid=5)
    with pytest.raises(ValueError, match="prefix must be >= 0"):
        Layout("NLD", prefix=-1)
    with pytest.raises(ValueError, match=r"layout 'NLD' needs a 3-D \(N, L, D\) activation; .* \(2, 3, 4, 5\)"):
        infer_layout(torch.zeros(2, 3, 4, 5), "NLD")
    with pytest.raises(TypeError, match="layout must be None"):
        ChannelActivation("block", 0, layout=["NLD"])


def test_channels_last_from_the_module():
    ln, lin = nn.LayerNorm(96), nn.Linear(8, 96)
    conv_block = nn.Sequential(nn.Conv2d(96, 96, 3, padding=1), nn.LayerNorm(96))  # a ConvNeXt-like block
    assert infer_layout(torch.zeros(1, 56, 56, 96), module=ln) == Layout("NHWC")
    assert infer_layout(torch.zeros(1, 7, 7, 96), module=lin) == Layout("NHWC")
    assert infer_layout(torch.zeros(1, 96, 56, 56), module=conv_block) == Layout("NCHW")
    assert infer_layout(torch.zeros(1, 96, 96, 96), module=ln) == Layout("NCHW")  # ambiguous: NCHW
    assert infer_layout(torch.zeros(1, 56, 56, 96)) == Layout("NCHW")  # no module, no signal
    assert unit_count(torch.zeros(1, 56, 56, 96), module=ln) == 96


def test_channels_first_views(tokens):
    grid = channels_first(tokens)
    assert grid.shape == (2, 4, 3, 3)
    # unit 2 of image 1 on the grid: tokens 1..9 row by row
    assert grid[1, 2].tolist() == [[112.0, 122.0, 132.0], [142.0, 152.0, 162.0], [172.0, 182.0, 192.0]]
    every = channels_first(tokens, keep_prefix=True)
    assert every.shape == (2, 4, 10) and every[0, 3, 0].item() == 3.0  # the class token kept, first
    nhwc = torch.arange(24.0).reshape(1, 2, 3, 4)
    assert torch.equal(channels_first(nhwc, "NHWC"), nhwc.permute(0, 3, 1, 2))
    plain = torch.zeros(2, 3, 4, 5)
    assert channels_first(plain) is plain
    assert channels_first(torch.zeros(1, 12, 8)).shape == (1, 8, 12)  # no grid: a sequence
    assert unit_count(tokens) == 4 and unit_count(torch.zeros(2, 1000)) == 1000
    with pytest.raises(ValueError, match=r"shape \(3,\) has no unit dimension"):
        unit_count(torch.zeros(3))


# --- losses on tokens: exact values -----------------------------------------------------------------------
def test_channel_neuron_and_layer_losses_on_tokens(tokens):
    acts = {"block": tokens}
    patch = tokens[:, 1:]  # (N, 9, D) patch tokens, row-major on the 3x3 grid
    torch.testing.assert_close(ChannelActivation("block", 2)(acts), patch[..., 2].reshape(2, 3, 3))
    assert ChannelActivation("block", 2)(acts).mean().item() == pytest.approx(float(patch[..., 2].mean()))
    # a neuron: unit 1 at the centre (row 1, column 1 = patch token 4 = token 5), at x=2, y=0 (token 3)
    assert NeuronActivation("block", 1)(acts).flatten().tolist() == [51.0, 151.0]
    assert NeuronActivation("block", 1, x=2, y=0)(acts).flatten().tolist() == [31.0, 131.0]
    assert NeuronActivation("block", 3, token=0)(acts).flatten().tolist() == [3.0, 103.0]  # the class token
    assert NeuronActivation("block", 3, token=0, batch_index=-1)(acts).flatten().tolist() == [103.0]
    # whole-layer losses read the channels-first view of the patch tokens
    torch.testing.assert_close(LayerActivation("block")(acts), channels_first(tokens))
    assert DeepDream("block")(acts).sum().item() == pytest.approx(float((patch**2).sum()))
    l2 = L2Mean("block", channel_index=0, constant=0.0)(acts).item()
    assert l2 == pytest.approx(float((patch[..., 0] ** 2).mean()))
    # string targets mean the same
    torch.testing.assert_close(parse("block:2")(acts), ChannelActivation("block", 2)(acts))
    assert parse("block:1:2:0")(acts).flatten().tolist() == [31.0, 131.0]
    # explicitly NCL: the old reading (channel = token)
    assert ChannelActivation("block", 1, layout="NCL")(acts)[0].tolist() == [10.0, 11.0, 12.0, 13.0]


def test_directions_on_tokens(tokens):
    acts = {"block": tokens}
    vec = torch.tensor([1.0, -2.0, 0.5, 3.0])
    patch = tokens[:, 1:]
    expected = (patch @ vec).reshape(2, 3, 3)
    torch.testing.assert_close(Direction("block", vec)(acts), expected)
    torch.testing.assert_close(VectorLoss("block", vec, activation_fn=None)(acts), (patch @ vec).mean(1))
    assert NeuronDirection("block", vec)(acts).flatten().tolist() == (tokens[:, 5] @ vec).tolist()
    assert NeuronDirection("block", vec, token=0)(acts).flatten().tolist() == (tokens[:, 0] @ vec).tolist()
    assert NeuronDirection("block", vec, x=0, y=2, channel_index=3)(acts).flatten().tolist() == \
        (3 * tokens[:, 7, 3]).tolist()
    torch.testing.assert_close(AngledNeuronDirection("block", vec, cossim_pow=0)(acts), tokens[:, 5] * vec)
    weights = torch.tensor([0.0, 1.0, 0.0, 2.0])
    expected = (patch * weights).transpose(1, 2).reshape(2, 4, 3, 3)
    torch.testing.assert_close(ActivationWeights("block", weights)(acts), expected)
    pattern = torch.ones(1, 4, 1, 1)
    torch.testing.assert_close(TensorDirection("block", pattern)(acts), tokens[:, 5].sum(1).reshape(2, 1, 1))
    # a ViT-B/16 block: a 768-d direction on (N, 197, 768)
    block = torch.randn(2, 197, 768, generator=torch.Generator().manual_seed(0))
    d = torch.randn(768, generator=torch.Generator().manual_seed(1))
    out = Direction("blocks.11", d)({"blocks.11": block})
    assert out.shape == (2, 14, 14)
    torch.testing.assert_close(out, (block[:, 1:] @ d).reshape(2, 14, 14), rtol=1e-5, atol=1e-4)


def test_out_of_range_errors_count_hidden_units():
    acts = {"blocks.1": torch.zeros(1, 197, 192)}
    with pytest.raises(ValueError, match=r"channel_index 300 .* which has 192 hidden units \(valid: 0..191\)"):
        parse("blocks.1:300")(acts)
    with pytest.raises(ValueError, match=r"the direction has 768 values but blocks.1 has 192 hidden units"):
        Direction("blocks.1", torch.ones(768))(acts)
    with pytest.raises(ValueError, match=r"x 14 is out of range .* which has 14 columns"):
        NeuronActivation("blocks.1", 0, x=14)(acts)
    with pytest.raises(ValueError, match=r"token 197 is out of range .* which has 197 tokens"):
        NeuronActivation("blocks.1", 0, token=197)(acts)
    with pytest.raises(ValueError, match=r"token=0 needs a token layer .* read as NCHW"):
        NeuronActivation("conv", 0, token=0)({"conv": torch.zeros(1, 4, 3, 3)})
    with pytest.raises(ValueError, match="not both"):
        NeuronActivation("blocks.1", 0, token=0, x=1)
    with pytest.raises(ValueError, match=r"channel_index 4 .* which has 4 channels"):
        ChannelActivation("conv", 4)({"conv": torch.zeros(1, 4, 3, 3)})


def test_channels_last_losses_and_references():
    nhwc = torch.rand(2, 3, 5, 4, generator=torch.Generator().manual_seed(0))
    acts = {"stage": nhwc}
    torch.testing.assert_close(ChannelActivation("stage", 1, layout="NHWC")(acts), nhwc[..., 1])
    # a reference recorded in the layer's own layout is read in the same view
    assert ContentLoss("stage", nhwc[:1], layout="NHWC")(acts).item() == pytest.approx(
        float(((nhwc - nhwc[:1]) ** 2).mean()))
    tok = torch.rand(1, 10, 4, generator=torch.Generator().manual_seed(1))
    assert abs(StyleLoss("block", tok)({"block": tok}).item()) < 1e-12
    gram = channels_first(tok).reshape(1, 4, 9)
    gram = gram @ gram.transpose(1, 2) / 9
    other = torch.rand(1, 10, 4, generator=torch.Generator().manual_seed(2))
    g2 = channels_first(other).reshape(1, 4, 9)
    g2 = g2 @ g2.transpose(1, 2) / 9
    assert StyleLoss("block", tok)({"block": other}).item() == pytest.approx(
        float(((g2 - gram) ** 2).mean() / (gram**2).mean()), rel=1e-5)
    # Diversity compares D x D Gram matrices of the patch tokens
    two = torch.rand(2, 10, 4, generator=torch.Generator().manual_seed(3))
    flat = channels_first(two).reshape(2, 4, 9)
    grams = F.normalize((flat @ flat.transpose(1, 2)).reshape(2, -1), dim=1)
    assert Diversity("block")({"block": two}).item() == pytest.approx(float(-2 * (grams[0] @ grams[1]) / 2))


class TinyTokens(nn.Module):
    """A ViT-shaped toy: patchify 2x2, a class token, two blocks (Linear + LayerNorm), a class-token head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 6, 2, stride=2)
        self.cls = nn.Parameter(torch.randn(1, 1, 6))
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Linear(6, 6), nn.LayerNorm(6)) for _ in range(2)])
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1)
        t = self.blocks(t)
        return self.head(t[:, 0] + t[:, 1:].mean(1))


def test_facet_loss_gradient_follows_the_token_layout():
    torch.manual_seed(0)
    net = TinyTokens().eval()
    x = torch.rand(1, 3, 4, 4).requires_grad_(True)  # a render's image: the activations are on its graph
    acts = record_activations(net, ["blocks.0", "blocks.1"], x, requires_grad=True)
    vec = torch.randn(6)
    loss = FacetLoss("blocks.1", "blocks.0", vec, torch.ones(6))
    layer = acts["blocks.0"]
    grad = torch.autograd.grad(channels_first(F.relu(acts["blocks.1"])).movedim(1, -1).matmul(vec).mean(),
                               layer, retain_graph=True)[0]
    expected = (channels_first(layer) * F.relu(channels_first(grad))).sum()
    assert loss(acts).detach().item() == pytest.approx(float(expected), rel=1e-5)


# --- a render and Grad-CAM on a timm ViT ------------------------------------------------------------------
@pytest.fixture(scope="module")
def vit():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2).eval()


def test_render_raises_a_hidden_unit_on_a_vit(vit):
    from optim.models.preprocess import render_inputs

    vit.train()  # the render leaves the mode as it found it
    before = model_state(vit)
    objective = parse("blocks.1:5")
    preprocess = render_inputs(vit).preprocess  # what the library defaults feed the model (timm's mean/std)

    def score(image):
        with torch.no_grad():
            acts = record_activations(vit, ["blocks.1"], preprocess(image))
        assert acts["blocks.1"].shape == (1, 197, 192)
        return objective(acts).mean().item()

    # library defaults: the native 224 size, transforms that keep it, timm's normalization
    first, last = opt.render_vis(vit, "blocks.1:5", thresholds=(1, 20), progress=False, seed=0)
    assert last.shape == (1, 3, 224, 224)
    start, end = score(first), score(last)
    spread = record_activations(vit, ["blocks.1"], preprocess(first))["blocks.1"][0, 1:].std(0).mean().item()
    print(f"blocks.1:5 objective {start:.4f} -> {end:.4f} (unit spread {spread:.4f})")
    assert end - start > 0.5 * spread, (start, end, spread)  # hidden unit 5 rose by half a unit's spread
    assert model_state(vit) == before and hook_count(vit) == 0
    vit.eval()


def test_gradcam_on_a_vit(vit):
    from optim._utils import module_name

    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    before = model_state(vit)
    layer = opt.attribution.default_gradcam_layer(vit, x)
    assert module_name(vit, layer) == "blocks.0"  # the tokens entering the last block
    cam = opt.attribution.attribute(vit, x, [1, 7], upsample=False)
    assert cam.shape == (2, 1, 14, 14) and cam.min() >= 0 and (cam.flatten(1).sum(1) > 0).all()
    # by hand: the patch tokens of blocks.0's output on the 14x14 grid, weighted by their mean gradient
    with torch.no_grad():
        feats = vit.blocks[0](vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x)))))
    feats = feats.clone().requires_grad_(True)
    logits = vit.forward_head(vit.norm(vit.blocks[1](feats)))
    logits[torch.arange(2), torch.tensor([1, 7])].sum().backward()
    grid = lambda t: t[:, 1:].transpose(1, 2).reshape(2, 192, 14, 14)  # noqa: E731
    weights = grid(feats.grad).mean(dim=(2, 3), keepdim=True)
    expected = F.relu((weights * grid(feats.detach())).sum(1, keepdim=True))
    torch.testing.assert_close(cam, expected, rtol=1e-4, atol=1e-7)
    full = opt.attribution.attribute(vit, x, [1, 7])
    assert full.shape == (2, 1, 224, 224)
    assert model_state(vit) == before and hook_count(vit) == 0


def test_default_gradcam_layer_on_token_models_without_a_plain_stack():
    torch.manual_seed(0)
    net = TinyTokens().eval()
    x = torch.rand(2, 3, 4, 4)
    assert opt.attribution.default_gradcam_layer(net, x) is net.blocks[0]
    cam = opt.attribution.attribute(net, x, 1, upsample=False)
    assert cam.shape == (2, 1, 2, 2)
    # the same with the last block's input read explicitly
    torch.testing.assert_close(cam, opt.attribution.attribute(net, x, 1, layer="blocks.1", upsample=False,
                                                               attribute_to_layer_input=True))


@pytest.mark.parametrize("arch, size, expected", [
    ("convnext_tiny", 64, "features.7"),
])
def test_default_gradcam_layer_is_the_torchvision_stage(arch, size, expected):
    torchvision = pytest.importorskip("torchvision")
    from optim._utils import module_name

    net = getattr(torchvision.models, arch)(weights=None).eval()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    assert module_name(net, opt.attribution.default_gradcam_layer(net, x)) == expected
    assert hook_count(net) == 0


@pytest.mark.parametrize("name, expected", [("resnet18", "layer4"), ("convnext_atto", "stages.3")])
def test_default_gradcam_layer_is_the_timm_stage(name, expected):
    timm = pytest.importorskip("timm")
    from optim._utils import module_name

    net = timm.create_model(name, pretrained=False).eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert module_name(net, opt.attribution.default_gradcam_layer(net, x)) == expected
    cam = opt.attribution.attribute(net, x, 3)
    assert cam.shape == (1, 1, 64, 64) and torch.isfinite(cam).all()


def test_torchvision_vit_gradcam_layer():
    torchvision = pytest.importorskip("torchvision")
    from torchvision.models.vision_transformer import VisionTransformer
    from optim._utils import module_name

    torch.manual_seed(0)
    net = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)
    nn.init.normal_(net.heads.head.weight)  # torchvision starts the head at zero (no gradient at all)
    net.eval()
    x = torch.rand(1, 3, 32, 32)
    assert module_name(net, opt.attribution.default_gradcam_layer(net, x)) == "encoder.layers.encoder_layer_0"
    cam = opt.attribution.attribute(net, x, 2, upsample=False)
    assert cam.shape == (1, 1, 4, 4) and cam.sum() > 0


@pytest.mark.parametrize("layers, expected", [(2, "vit.layers.0"), (1, "vit.embeddings")])
def test_hugging_face_vit_gradcam_and_hidden_units(layers, expected):
    transformers = pytest.importorskip("transformers")
    from optim._utils import module_name

    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                                    intermediate_size=64, image_size=32, patch_size=8, num_labels=5)
    net = transformers.ViTForImageClassification(config).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    layer = opt.attribution.default_gradcam_layer(net, x)  # the tokens entering the last block
    names = {n for n, _ in net.named_modules()}
    expected = expected if expected in names else expected.replace("vit.layers", "vit.encoder.layer")
    assert module_name(net, layer) == expected
    cam = opt.attribution.attribute(net, x, [1, 2], upsample=False)
    assert cam.shape == (2, 1, 4, 4) and (cam.flatten(1).sum(1) > 0).all()
    acts = record_activations(net, [expected], x)
    assert acts[expected].shape == (2, 17, 32) and unit_count(acts[expected]) == 32
    torch.testing.assert_close(parse(f"{expected}:31")(acts), acts[expected][:, 1:, 31].reshape(2, 4, 4))
    assert hook_count(net) == 0


def test_swin_stages_are_channels_last():
    torchvision = pytest.importorskip("torchvision")
    net = torchvision.models.swin_t(weights=None).eval()
    names = [f"features.{i}" for i in range(8)]
    acts = record_activations(net, names, torch.rand(1, 3, 64, 64))
    assert [unit_count(acts[n], module=acts.module_of(n)) for n in names] == [96, 96, 192, 192, 384, 384, 768, 768]
    stage = acts["features.5"]
    assert stage.shape == (1, 4, 4, 384)  # (N, H, W, C)
    torch.testing.assert_close(parse("features.5:10")(acts), stage[..., 10])
    with pytest.raises(ValueError, match="which has 384 channels"):
        parse("features.5:384")(acts)


def test_channel_attribution_ranks_hidden_units_of_a_token_layer():
    torch.manual_seed(0)
    net = TinyTokens().eval()
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    ca = opt.attribution.channel_attribution(net, x, 2, "blocks.0", top_k=3)
    assert ca.all_scores.shape == (6,) and ca.maps.shape == (3, 2, 2)  # 6 hidden units; a 2x2 grid
    # by hand: activation x gradient of logit 2, summed over the patch tokens (the class token left out)
    acts = record_activations(net, ["blocks.0"], x.clone().requires_grad_(True), requires_grad=True)
    layer = acts["blocks.0"]
    logits = net.head(net.blocks[1](layer)[:, 0] + net.blocks[1](layer)[:, 1:].mean(1))
    grad = torch.autograd.grad(logits[0, 2], layer)[0]
    expected = (grad * layer)[0, 1:].sum(0).detach()
    torch.testing.assert_close(ca.all_scores, expected, rtol=1e-5, atol=1e-7)
    assert ca.channels.tolist() == torch.argsort(expected, descending=True)[:3].tolist()


def test_layer_probe_counts_hidden_units(vit):
    from optim.models.selection import channel_counts

    assert channel_counts(vit, ["blocks.1", "patch_embed.proj", "head"], 224) == [192, 192, 1000]


def test_sequence_first_tokens(tokens):
    seq_first = tokens.transpose(0, 1).contiguous()  # (L, N, D)
    assert infer_layout(seq_first, "LND") == Layout("LND", prefix=1, grid=(3, 3))
    torch.testing.assert_close(channels_first(seq_first, "LND"), channels_first(tokens))
    torch.testing.assert_close(ChannelActivation("b", 2, layout="LND")({"b": seq_first}),
                               ChannelActivation("b", 2)({"b": tokens}))
    assert NeuronActivation("b", 3, token=0, layout="LND")({"b": seq_first}).flatten().tolist() == [3.0, 103.0]
    # inferred from the module: nn.MultiheadAttention stacks that take the sequence first
    layer = nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=False)
    assert infer_layout(seq_first, module=layer) == Layout("LND", prefix=1, grid=(3, 3))
    assert unit_count(seq_first, module=layer) == 4
    batch_first = nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True)
    assert infer_layout(tokens, module=batch_first) == Layout("NLD", prefix=1, grid=(3, 3))
    with pytest.raises(ValueError, match=r"layout 'LND' needs a 3-D \(L, N, D\) activation"):
        infer_layout(torch.zeros(2, 3), "LND")


# --- review fixes: widths of the module, its block and its model -----------------------------------------
def test_conv1d_and_batchnorm1d_outputs_are_channels_first():
    torch.manual_seed(0)
    conv = nn.Conv1d(3, 64, 3, padding=1)
    x = conv(torch.randn(2, 3, 100))
    assert infer_layout(x, module=conv) == Layout("NCHW") and unit_count(x, module=conv) == 64
    assert infer_layout(torch.zeros(2, 64, 100), module=nn.BatchNorm1d(64)) == Layout("NCHW")
    net = nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.ReLU())  # the ReLU reads the Sequential's widths
    acts = record_activations(net, ["0", "1"], torch.randn(2, 3, 10))
    assert [unit_count(acts[n], module=acts.module_of(n), model=net) for n in ("0", "1")] == [8, 8]
    torch.testing.assert_close(ChannelActivation("1", 5, batch_index=1)(acts), acts["1"][1:, 5])
    # tokens stay tokens: dim 1 (L) is no convolution width, or the last dim is a channels-last width
    assert infer_layout(torch.zeros(2, 10, 8), module=nn.Linear(4, 8)) == Layout("NLD", prefix=1, grid=(3, 3))
    mixed = nn.Sequential(nn.Conv1d(3, 10, 1), nn.Linear(5, 8))
    assert infer_layout(torch.zeros(2, 10, 8), module=mixed).name == "NLD"


def test_modules_without_widths_read_their_block():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.swin_transformer.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 1], window_size=[7, 7]).eval()
    names = ["features.1.0.mlp.0", "features.1.0.mlp.1", "features.1.0.mlp.2", "features.1.0.mlp.4"]
    acts = record_activations(net, names, torch.rand(1, 3, 96, 96))
    gelu = acts["features.1.0.mlp.1"]
    assert gelu.shape == (1, 24, 24, 64)
    assert infer_layout(gelu, module=acts.module_of("features.1.0.mlp.1"), model=net) == Layout("NHWC")
    assert infer_layout(gelu, module=acts.module_of("features.1.0.mlp.1")) == Layout("NCHW")  # no ancestors
    assert [unit_count(acts[n], module=acts.module_of(n), model=net) for n in names] == [64, 64, 64, 16]
    # losses reach the model through the ActivationMap: unit 40 is the last dim
    assert acts.model is net
    torch.testing.assert_close(ChannelActivation("features.1.0.mlp.1", 40)(acts), gelu[..., 40])
    rows = {r.name: r.channels for r in opt.models.layer_info(net, (1, 3, 96, 96))}
    assert [rows[n] for n in names] == [64, 64, 64, 16] and rows["features.1.0.norm2"] == 16
    # a ConvNeXt-like block: dwconv, permute, LayerNorm, Linear, GELU, Linear, permute back
    class Permute(nn.Module):
        def __init__(self, *dims):
            super().__init__()
            self.dims = dims

        def forward(self, x):
            return x.permute(*self.dims)

    block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), Permute(0, 2, 3, 1), nn.LayerNorm(8),
                          nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8), Permute(0, 3, 1, 2))
    acts = record_activations(block, ["1", "4", "6"], torch.rand(1, 8, 5, 5))
    assert [infer_layout(acts[n], module=block[int(n)], model=block).name for n in ("1", "4", "6")] == [
        "NHWC", "NHWC", "NCHW"]


class _QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class _ResidualAttentionBlock(nn.Module):
    """OpenAI CLIP's block: (L, N, D) in and out."""

    def __init__(self, d):
        super().__init__()
        from collections import OrderedDict

        self.attn = nn.MultiheadAttention(d, 2)
        self.ln_1 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(d, 4 * d), gelu=_QuickGELU(), c_proj=nn.Linear(4 * d, d)))
        self.ln_2 = nn.LayerNorm(d)

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    def __init__(self, d, layers):
        super().__init__()
        self.resblocks = nn.Sequential(*[_ResidualAttentionBlock(d) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class _ClipVisual(nn.Module):
    """OpenAI CLIP's VisionTransformer at D=8, 4 px patches: NLD around a sequence-first transformer."""

    def __init__(self, d=8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, d, 4, 4, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(d))
        self.ln_pre = nn.LayerNorm(d)
        self.transformer = _Transformer(d, 2)
        self.ln_post = nn.LayerNorm(d)

    def forward(self, x):
        x = self.conv1(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], dim=1)
        x = self.ln_pre(x).permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x).permute(1, 0, 2)  # LND -> NLD
        return self.ln_post(x[:, 0])


def test_modules_of_sequence_first_blocks_are_sequence_first():
    torch.manual_seed(0)
    net = _ClipVisual().eval()
    block = "transformer.resblocks.0"
    names = ["ln_pre", "transformer", "transformer.resblocks", block, f"{block}.ln_2", f"{block}.mlp",
             f"{block}.mlp.c_fc", f"{block}.mlp.gelu"]
    acts = record_activations(net, names, torch.rand(2, 3, 12, 12))  # N=2, L = 1 + 3 x 3
    layouts = [infer_layout(acts[n], module=acts.module_of(n), model=net).name for n in names]
    assert layouts == ["NLD", "LND", "LND", "LND", "LND", "LND", "LND", "LND"]
    assert infer_layout(acts[f"{block}.mlp.c_fc"], module=acts.module_of(f"{block}.mlp.c_fc"), model=net) == Layout(
        "LND", prefix=1, grid=(3, 3))
    fc = acts[f"{block}.mlp.c_fc"]
    assert fc.shape == (10, 2, 32)
    # batch_index selects the image, not a token: image 1's hidden unit 7 on the 3 x 3 grid
    torch.testing.assert_close(ChannelActivation(f"{block}.mlp.c_fc", 7, batch_index=1)(acts),
                               fc[1:, 1, 7].reshape(1, 3, 3))
    assert NeuronActivation(f"{block}.mlp.gelu", 3, token=0)(acts).flatten().tolist() == pytest.approx(
        acts[f"{block}.mlp.gelu"][0, :, 3].tolist())
    rows = {r.name: r.channels for r in opt.models.layer_info(net, (1, 3, 12, 12))}
    assert [rows[n] for n in names[3:]] == [8, 8, 8, 32, 32]


def test_token_order_inference_refuses_to_guess():
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    stack = open_clip.transformer.Transformer(8, 1, 2, batch_first=False).eval()  # (N, L, D) in and out
    acts = record_activations(stack, [stack, "resblocks.0.mlp.c_fc"], torch.rand(2, 10, 8))
    assert infer_layout(acts[stack], module=stack, model=stack) == Layout("NLD", prefix=1, grid=(3, 3))
    assert infer_layout(acts["resblocks.0.mlp.c_fc"], module=stack.resblocks[0].mlp.c_fc, model=stack).name == "LND"
    # both leading dims fit the token rule: (4, 10, 8) is 4 images of 10 tokens or 10 of 4 (a 2 x 2 grid)
    with pytest.raises(ValueError, match=r"\(N, L, D\) or \(L, N, D\).*give layout='NLD' or 'LND'"):
        infer_layout(torch.zeros(4, 10, 8), module=stack)
    assert unit_count(torch.zeros(4, 10, 8), module=stack) == 8  # the hidden units either way
    assert infer_layout(torch.zeros(4, 10, 8), "NLD", module=stack).name == "NLD"
    # an output of a sequence-first block that is none of its streams (attention weights, say)
    block = _ResidualAttentionBlock(8)
    probs = nn.Softmax(-1)
    block.add_module("probs", probs)
    with pytest.raises(ValueError, match=r"sequence-first block _ResidualAttentionBlock.*last dim is 10; give layout="):
        infer_layout(torch.zeros(2, 10, 10), module=probs, model=block)
    mixed = nn.Sequential(nn.MultiheadAttention(8, 2), nn.MultiheadAttention(8, 2, batch_first=True))
    with pytest.raises(ValueError, match="both orders"):
        infer_layout(torch.zeros(10, 2, 8), module=mixed)


def test_renderable_layers_keep_token_and_channels_last_layers():
    from optim.models.selection import layer_table, renderable_layers

    class Permute(nn.Module):
        def forward(self, x):
            return x.permute(0, 2, 3, 1)

    torch.manual_seed(0)
    rows = layer_table(TinyTokens().eval(), 4)  # a 2x2 grid and a class token: (1, 5, 6) blocks, (1, 3) head
    kept = {r.name: (r.shape, r.channels) for r in renderable_layers(rows)}
    blocks = ["blocks", "blocks.0", "blocks.0.0", "blocks.0.1", "blocks.1", "blocks.1.0", "blocks.1.1"]
    assert kept == {"embed": ((1, 6, 2, 2), 6), **{n: ((1, 5, 6), 6) for n in blocks}}  # not the head
    nhwc = nn.Sequential(nn.Conv2d(3, 4, 2, 2), Permute(), nn.LayerNorm(4), nn.Linear(4, 6), nn.Flatten(1))
    assert [(r.name, r.shape, r.channels) for r in renderable_layers(layer_table(nhwc, 16))] == [
        ("0", (1, 4, 8, 8), 4), ("1", (1, 8, 8, 4), 4), ("2", (1, 8, 8, 4), 4), ("3", (1, 8, 8, 6), 6)]


def test_review_regressions_root_widths_transformer_containers_and_no_leak() -> None:
    import gc

    import torchvision.models as tvm

    from optim.activations import record_activations
    from optim.layouts import _PARENTS
    from optim.models.selection import channel_count

    # a root-level pool of a concat map is channels-first even when the head's width equals the map's width
    torch.manual_seed(0)
    g = tvm.googlenet(weights=None, num_classes=4, aux_logits=False, init_weights=False).eval()
    acts = record_activations(g, "maxpool4", torch.rand(1, 3, 128, 128))
    assert acts["maxpool4"].shape == (1, 832, 4, 4) and channel_count(g, "maxpool4", 128) == 832
    got = ChannelActivation("maxpool4", 2)(acts)
    torch.testing.assert_close(got.mean(), acts["maxpool4"][:, 2].mean())

    # torch's TransformerEncoder never transposes: (L, N, D) whatever the batch size
    class Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch = nn.Conv2d(3, 16, 4, 4)
            layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=False)
            self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
            self.head = nn.Linear(16, 5)

        def forward(self, x):
            return self.head(self.enc(self.patch(x).flatten(2).permute(2, 0, 1)).mean(0))

    m = Seq().eval()
    for shape in ((16, 3, 16, 48), (16, 3, 32, 32), (8, 3, 32, 32)):
        out = record_activations(m, "enc", torch.rand(*shape))["enc"]
        assert infer_layout(out, module=m.enc, model=m).name == "LND"

    # the ancestor cache holds no strong reference: models are freed
    import weakref

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU()))
    infer_layout(torch.zeros(1, 4, 2, 2), module=net[1][0], model=net)
    assert net in _PARENTS
    gone = weakref.ref(net)
    del net
    gc.collect()
    assert gone() is None
