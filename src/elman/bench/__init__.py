"""Measurement: training and evaluation speed against this machine's limit
(``speed``), the machine's facts and matmul peak (``machine``), and the
PyTorch reference the speed is compared with (``torch_ref``)."""
