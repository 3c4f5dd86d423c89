"""Training: the loop (``train``), optimizers (``optim``), Mikolov's
learning-rate schedule (``schedule``) and the metrics log (``metrics``)."""
