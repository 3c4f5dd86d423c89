"""The speed machinery, beside the seed's layers and tested against them:
the chunked, threaded output layer (``output``), the threaded products of
the recurrence (``recurrence``), work sharing between cores (``threads``)
and reused scratch buffers (``scratch``); two compiled loops (Numba) where
NumPy's indexing was the bottleneck: the direct weights' sampled columns
(``windows``) and sums of rows that share an id (``rowsums``); the fast
forms of the output layers (``output``, ``classes`` with ``grouped``,
``sampled``) and of the direct connections (``direct``). Imports nothing
of ``elman`` but ``core``, whose interfaces it implements."""
