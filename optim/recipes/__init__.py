"""Ready recipes for the classic feature-visualization experiments, built on ``opt.render_vis``.

- class visualization: :func:`class_visualization`
- from a photo: :func:`deep_dream`, :func:`feature_inversion`, :func:`style_transfer`,
  :func:`feature_accentuation`
- channels: :func:`diversity`, :func:`neuron_vs_channel`, :func:`positive_negative`, :func:`interpolation`
- transparency: :func:`render_rgba`

Example::

    import optim as opt
    from optim import recipes
    model = opt.models.efficientnet_lite0(pretrained=True)
    pos, neg = recipes.positive_negative(model, "blocks.10:7")
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
