"""elman: the Elman RNN language model of the seed, with exact gradients.

    e(t) = x(t) L      h(t) = sigmoid(h(t-1) H + e(t) I + b1)      yhat(t) = softmax(h(t) U + b2)

The package, by role: ``core`` (the reference: the model's layers and their
exact gradients, NumPy only), ``fast`` (the speed machinery), ``model`` (the
composed model the toolkit runs, and the registry of output layers), ``data`` (corpora), ``modelfile``
(the model file format), ``training``, ``inference``, ``explain``,
``bench``, and ``cli``.
"""
from elman.model import Params, bptt, forward_losses, output_probs, rnn_step, step_gradients
from elman.model.gradcheck import gradcheck

__version__ = "0.1.0"
__all__ = ["Params", "bptt", "forward_losses", "output_probs", "rnn_step", "step_gradients", "gradcheck"]
