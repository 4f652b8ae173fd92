"""Keras (.keras/.h5) and TensorFlow SavedModel sources."""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import numpy as np

from harness.schema.interface import Interface, TensorSpec
from harness.prepare.sources import not_a_model, register_source


def _dims(shape) -> tuple:
    return tuple(None if d is None else int(d) for d in (shape.as_list() if hasattr(shape, "as_list") else shape))


def load_keras_model(path: Path):
    """tf-keras (what the harness trains with) first; a Keras 3 file then goes to Keras 3."""
    from harness.zoo.keras_util import import_tf
    _, keras = import_tf()
    try:
        return keras.models.load_model(str(path), compile=False)
    except Exception as first:
        try:
            import keras as keras3
            return keras3.models.load_model(str(path), compile=False)
        except Exception:
            raise not_a_model(path, "keras", first) from None


def keras_names(model, kind: str) -> List[str]:
    names = getattr(model, f"{kind}_names", None)
    tensors = getattr(model, f"{kind}s")
    return [str(n) for n in names] if names else [str(t.name).split(":")[0] for t in tensors]


def flatten_outputs(value: Any, names: Optional[List[str]] = None) -> List[Any]:
    if isinstance(value, dict):
        return [value[n] for n in (names or sorted(value))]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


class TFHostModel:
    def __init__(self, call, input_names, output_names, dtypes):
        self.call, self.input_names, self.output_names, self.dtypes = call, input_names, output_names, dtypes

    def prepare(self, feeds):
        return [x if str(x.dtype) == d else x.astype(d) for x, d in zip(feeds, self.dtypes)]

    def infer(self, prepared):
        self.last = [np.asarray(y) for y in self.call(prepared)]

    def fetch(self):
        return self.last


@register_source("keras")
class KerasSource:
    def describe(self, path: Path) -> Interface:
        model = load_keras_model(path)
        spec = lambda names, tensors: tuple(TensorSpec(n, _dims(t.shape), np.dtype(t.dtype.name if hasattr(
            t.dtype, "name") else t.dtype).name) for n, t in zip(names, tensors))
        return Interface(spec(keras_names(model, "input"), model.inputs),
                         spec(keras_names(model, "output"), model.outputs))

    def open(self, path: Path, interface: Interface):
        model = load_keras_model(path)
        outputs = keras_names(model, "output")

        def call(xs):
            y = model(xs if len(xs) > 1 else xs[0], training=False)
            return flatten_outputs(y, outputs if isinstance(y, dict) else None)
        return TFHostModel(call, keras_names(model, "input"), outputs, [s.dtype for s in interface.inputs])

    def param_count(self, path: Path) -> Optional[int]:
        return int(load_keras_model(path).count_params())


def serving_signature(path: Path):
    from harness.zoo.keras_util import import_tf
    tf, _ = import_tf()
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise not_a_model(path, "savedmodel", exc) from None
    signatures = dict(loaded.signatures)
    if not signatures:
        raise not_a_model(path, "savedmodel", ValueError("it has no signatures; export it with a serving signature"))
    return loaded, signatures.get("serving_default") or next(iter(signatures.values()))


def signature_interface(signature) -> Interface:
    _, kwargs = signature.structured_input_signature
    inputs = tuple(TensorSpec(name, _dims(spec.shape), spec.dtype.name) for name, spec in sorted(kwargs.items()))
    outs = signature.structured_outputs
    outputs = tuple(TensorSpec(name, _dims(spec.shape), spec.dtype.name) for name, spec in sorted(outs.items()))
    return Interface(inputs, outputs)


@register_source("savedmodel")
class SavedModelSource:
    def describe(self, path: Path) -> Interface:
        return signature_interface(serving_signature(path)[1])

    def open(self, path: Path, interface: Interface):
        loaded, signature = serving_signature(path)
        described = signature_interface(signature)
        names, outputs = described.input_names, described.output_names

        def call(xs):
            result = signature(**dict(zip(names, xs)))
            return [result[n].numpy() for n in outputs]
        host = TFHostModel(call, names, outputs, [s.dtype for s in interface.inputs])
        host.keepalive = loaded  # the signature's variables live as long as the loaded object
        return host

    def param_count(self, path: Path) -> Optional[int]:
        loaded, _ = serving_signature(path)
        return int(sum(int(np.prod(v.shape)) for v in getattr(loaded, "variables", []))) or None
