"""Attribution: which pixels and channels drive a class (captum.attr underneath, extra ``attr``).

Example::

    import optim as opt
    cam = opt.attribution.attribute(model, cat, 285, method="gradcam")
    opt.attribution.overlay(cat, cam).show()
"""
from .channels import *  # noqa: F401,F403
from .methods import *  # noqa: F401,F403
from .visualize import *  # noqa: F401,F403

from . import channels as _channels, methods as _methods, visualize as _visualize  # noqa: E402

__all__ = list(_methods.__all__) + list(_visualize.__all__) + list(_channels.__all__)
