"""``elman.model`` (the composed model) under the name ``elman.explain``
imports it by: the one import of core above core, named in the import contracts."""
from elman.model import *  # noqa: F401,F403
from elman.model.network import *  # noqa: F401,F403
from elman.model.network import EVAL_LOGITS, PARAM_NAMES, CLASS_NAMES, DIRECT_NAMES  # noqa: F401
