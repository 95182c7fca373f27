"""Ready recipes for the classic feature-visualization experiments, built on ``opt.render_vis``.

- class visualization: :func:`class_visualization` (its objectives: :func:`~optim.recipes.classes.class_logits`)
- from a photo: :func:`deep_dream`, :func:`feature_inversion`, :func:`style_transfer`,
  :func:`feature_accentuation`
- channels: :func:`diversity`, :func:`neuron_vs_channel`, :func:`positive_negative`, :func:`interpolation`
- transparency: :func:`render_rgba`

Every recipe renders at the model's native size (:func:`~optim.models.preprocess.render_inputs`), else
``DEFAULT_SIZE`` (160 x 160), for ``DEFAULT_STEPS`` (128) steps, and feeds the model through its declared
normalization (``preprocess=`` overrides it), the photo recipes' reference photos included.

Example (tiny budgets so it runs in a second)::

    >>> import optim as opt
    >>> from optim import recipes
    >>> model = opt.models.efficientnet_lite0(pretrained=True).eval()
    >>> pos, neg = recipes.positive_negative(model, "blocks.10:7", size=64, steps=4, progress=False, seed=0)
    >>> pos.shape
    torch.Size([3, 64, 64])
    >>> acts = opt.models.collect_activations(model, "blocks.10", torch.stack([pos, neg]))["blocks.10"]
    >>> channel_7 = acts[:, 7].mean(dim=(1, 2))
    >>> bool(channel_7[0] > 0 > channel_7[1])  # raised in the first image, lowered in the second
    True
"""
from .channels import diversity, interpolation, neuron_vs_channel, positive_negative
from .classes import class_visualization
from .photo import deep_dream, feature_accentuation, feature_inversion, style_transfer
from .transparency import render_rgba

__all__ = [
    "class_visualization",
    "deep_dream",
    "feature_inversion",
    "style_transfer",
    "feature_accentuation",
    "diversity",
    "neuron_vs_channel",
    "positive_negative",
    "interpolation",
    "render_rgba",
]
