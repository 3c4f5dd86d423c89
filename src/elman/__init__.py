"""elman: the Elman RNN language model of the seed, with exact gradients.

    e(t) = x(t) L      h(t) = sigmoid(h(t-1) H + e(t) I + b1)      yhat(t) = softmax(h(t) U + b2)

The package, by role: ``core`` (the model and its exact gradients, NumPy
only), ``fast`` (the speed machinery), ``data`` (corpora), ``modelfile``
(the model file format), ``training``, ``inference``, ``explain``,
``bench``, and ``cli``.
"""
from elman.core.gradcheck import gradcheck
from elman.core.model import Params, bptt, forward_losses, output_probs, rnn_step, step_gradients

__version__ = "0.1.0"
__all__ = ["Params", "bptt", "forward_losses", "output_probs", "rnn_step", "step_gradients", "gradcheck"]
