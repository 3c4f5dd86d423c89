"""The speed machinery, beside the seed's layers and tested against them:
the chunked, threaded output layer (``output``), the threaded products of
the recurrence (``recurrence``), work sharing between cores (``threads``)
and reused scratch buffers (``scratch``); compiled loops (Numba) where
NumPy's indexing or its passes over memory were the bottleneck: the direct
weights' sampled columns (``windows``), sums of rows that share an id
(``rowsums``), SGD's and Adagrad's updates in one pass through a sparse
gradient's index (``kernels_optim``), and dJ/dD kept as its scatter, added
straight into D by its plain step (``kernels_direct``); the fast
forms of the output layers (``output``, ``classes`` with ``grouped``,
``sampled``) and of the direct connections (``direct``). Imports nothing
of ``elman`` but ``core``, whose interfaces it implements."""
