"""elman: the Elman RNN language model of the seed, with exact gradients.

    e(t) = x(t) L      h(t) = sigmoid(h(t-1) H + e(t) I + b1)      yhat(t) = softmax(h(t) U + b2)
"""
from elman.model import Params, bptt, forward_losses, output_probs, rnn_step, step_gradients
from elman.gradcheck import gradcheck  # noqa: E402  (the function; the module stays importable as elman.gradcheck)

__version__ = "0.1.0"
__all__ = ["Params", "bptt", "forward_losses", "output_probs", "rnn_step", "step_gradients", "gradcheck"]
