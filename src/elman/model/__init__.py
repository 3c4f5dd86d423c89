"""The composed model the toolkit runs: the seed's layers (``core``) with
the speed machinery (``fast``) and an output layer from the registry.

``network``: one time step (``step_gradients``), truncated BPTT (``bptt``);
``scoring``: the forward-only losses (``forward_losses``, ``window_losses``);
``outputs``: the registry of output layers; ``perplexity``: the perplexity
of a token stream; ``gradcheck``: every gradient against central
differences in float64.
"""
from elman.core.params import CLASS_NAMES, DIRECT_NAMES, PARAM_NAMES, Params, initial_state
from elman.model.network import (
    bptt, dropout_masks, features, output_log_probs, output_probs, rnn_step, step_gradients,
)
from elman.model.scoring import forward_losses, target_log_probs, window_losses
from elman.model.outputs import LAYERS, layer_for, output_name, register

__all__ = ["Params", "initial_state", "PARAM_NAMES", "CLASS_NAMES", "DIRECT_NAMES", "bptt", "dropout_masks", "features", "forward_losses", "output_log_probs", "output_probs", "rnn_step", "target_log_probs",
           "step_gradients", "window_losses", "LAYERS", "layer_for", "output_name", "register"]
