"""The registry of output layers: each layer's reference form (``core``)
and fast form (``fast``), by the name the model file gives it.

The model (``network``), the model file (``elman.modelfile``), ONNX export
and ``elman bench`` find layers here; the shared tests
(tests/test_output_layers.py) run every registered layer, fast form
against reference form. A new layer is one module (its class, implementing
``core.outputs.OutputLayer``) and one ``register`` line.
"""
from __future__ import annotations

from typing import NamedTuple

from elman.core.classes import ClassSoftmax
from elman.core.outputs import FullSoftmax, OutputLayer
from elman.core.sampled import SampledSoftmax
from elman.fast.classes import FastClassSoftmax
from elman.fast.output import FastFullSoftmax
from elman.fast.sampled import FastSampledSoftmax


class Entry(NamedTuple):
    reference: type
    fast: type


LAYERS: dict[str, Entry] = {}


def register(reference: type, fast: type | None = None) -> None:
    """Make a layer known by ``reference.name``; ``fast`` defaults to the reference itself."""
    if not (isinstance(reference, type) and issubclass(reference, OutputLayer)) or not reference.name:
        raise TypeError(f"{reference!r}: an output layer is an OutputLayer subclass with a name")
    LAYERS[reference.name] = Entry(reference, fast or reference)


register(FullSoftmax, FastFullSoftmax)
register(ClassSoftmax, FastClassSoftmax)
register(SampledSoftmax, FastSampledSoftmax)


def model_outputs() -> dict:
    """name -> the tensors it owns, for the layers a model file may name
    (not the training-only ones)."""
    return {name: e.reference.tensors for name, e in LAYERS.items() if not e.reference.training_only}


def output_name(tensor_names) -> str:
    """The output layer of a model with these tensors: the one owning the
    most of them (the full softmax owns none beyond U and b2; of layers
    owning as many, the first registered)."""
    names = set(tensor_names)
    fits = [(n, t) for n, t in model_outputs().items() if set(t) <= names]
    return max(fits, key=lambda fit: len(fit[1]))[0]


def layer_for(p, sampled=None, reference: bool = False) -> OutputLayer:
    """The output layer that runs ``p``: the one its tensors name, or with
    ``sampled`` = (samples, log_q) the sampled softmax that trains it."""
    name = "sampled" if sampled is not None else output_name(p.as_dict())
    entry = LAYERS[name]
    cls = entry.reference if reference else entry.fast
    return cls(*sampled) if sampled is not None else cls()
