"""The reference: the seed's model and its exact gradients, NumPy only
(imports nothing of ``elman`` outside ``core``; the import contracts hold it).

``layers``: each equation as a reference forward/backward pair, readable on
one screen. ``params``: Params. ``outputs``: the output layer's interface,
its named results, and the full softmax; ``classes``, ``sampled``: the
output layers for large vocabularies. ``direct``: hashed n-gram
connections to the logits (RNNME). ``sparse``: row/column-sparse
gradients. The composed model the toolkit runs is ``elman.model``.
"""
