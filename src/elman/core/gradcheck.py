"""The old path of ``elman.model.gradcheck``, kept for ``elman.explain``
until it imports ``elman.model.gradcheck``; the import contracts name this one exception."""
from elman.model.gradcheck import *  # noqa: F401,F403
from elman.model.gradcheck import central_difference, max_rel_error, step_loss  # noqa: F401
