"""The seed's model and its exact gradients, NumPy only.

``layers``: each equation as a reference forward/backward pair, readable on
one screen. ``params``: Params. ``model``: one time step
(``step_gradients``), truncated BPTT (``bptt``) and the forward-only losses.
``classes``, ``sampled``: the output layers for large vocabularies.
``direct``: hashed n-gram connections to the logits (RNNME). ``sparse``:
row/column-sparse gradients. ``gradcheck``: central finite differences in float64.
"""
