"""``elman.model.gradcheck`` under the name ``elman.explain`` imports it by:
an import of core above core, named in the import contracts."""
from elman.model.gradcheck import *  # noqa: F401,F403
from elman.model.gradcheck import central_difference, max_rel_error, step_loss  # noqa: F401
