"""The old path of ``elman.model`` (the composed model), kept for ``elman.explain``
until it imports ``elman.model``; the import contracts name this one exception."""
from elman.model import *  # noqa: F401,F403
from elman.model.network import *  # noqa: F401,F403
from elman.model.network import EVAL_LOGITS, PARAM_NAMES, CLASS_NAMES, DIRECT_NAMES  # noqa: F401
