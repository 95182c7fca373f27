"""Attribution: which pixels and channels drive a class (captum.attr underneath, extra ``attr``).

Example (``model``: EfficientNet-Lite0, ``cat``: a ``[1, 3, 96, 96]`` photo of a cat in ``[0, 1]``)::

    >>> import optim as opt
    >>> model(cat).argmax(1)  # 285: "Egyptian cat"
    tensor([285])
    >>> cam = opt.attribution.attribute(model, cat, 285, method="gradcam", layer="blocks.15")
    >>> view = opt.attribution.overlay(cat, cam)  # an ImageTensor; view.show() draws it
    >>> view.shape
    torch.Size([1, 3, 96, 96])
"""
from .channels import *  # noqa: F401,F403
from .methods import *  # noqa: F401,F403
from .visualize import *  # noqa: F401,F403

from . import channels as _channels, methods as _methods, visualize as _visualize  # noqa: E402

__all__ = list(_methods.__all__) + list(_visualize.__all__) + list(_channels.__all__)
