"""The speed machinery, beside the seed's layers and tested against them:
the chunked, threaded output layer (``output``), the threaded products of
the recurrence (``recurrence``), work sharing between cores (``threads``)
and reused scratch buffers (``scratch``). NumPy only; imports nothing of
``elman`` outside this package."""
