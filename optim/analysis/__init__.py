"""Model analysis: CKA similarity between layers and models, and in-place model inspection/surgery."""
from .cka import *  # noqa: F401,F403
from .compare import *  # noqa: F401,F403
from .inspector import *  # noqa: F401,F403

from . import cka as _cka, compare as _compare, inspector as _inspector  # noqa: E402

__all__ = list(_cka.__all__) + list(_compare.__all__) + list(_inspector.__all__)
