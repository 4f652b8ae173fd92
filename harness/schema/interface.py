"""A model's interface as data: named inputs and outputs with shapes and dtypes.

Any source fills it from its file; a dimension that is not a number (None,
-1 or a symbolic name such as 'p2o.DynamicDimension.0') is dynamic and must
be fixed (`--input-shape NAME=1x3x640x640`) before a model can run. Pure: no I/O.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

# One copy of the name matching, in the agent (which cannot import the harness): the host and the device
# must pair inputs and outputs across formats the same way.
from harness.agent.agent import match_names, normalize_name  # noqa: F401 (re-exported)
from harness.core.errors import ConfigError

Dim = Union[int, str, None]

#: dtypes the runtimes take, by the names numpy gives them
DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")

def is_static(dim: Dim) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0


@dataclass(frozen=True)
class TensorSpec:
    name: str
    #: one entry per axis: a size, or None / a symbolic name where the size is dynamic;
    #: None where the file does not record even the rank (TorchScript)
    shape: Optional[Tuple[Dim, ...]]
    dtype: str = "float32"
    #: (scale, zero point) of an integer tensor that stands for real numbers (a quantized TFLite input or
    #: output: real = (code - zero point) * scale); None for any other tensor
    quantization: Optional[Tuple[float, int]] = None

    @property
    def dynamic_axes(self) -> List[int]:
        return [i for i, d in enumerate(self.shape or ()) if not is_static(d)]

    @property
    def is_static(self) -> bool:
        return self.shape is not None and not self.dynamic_axes

    @property
    def static_shape(self) -> Tuple[int, ...]:
        if not self.is_static:
            raise ValueError(f"{self.name} has dynamic axes {self.dynamic_axes}")
        return tuple(int(d) for d in self.shape)  # type: ignore[arg-type, union-attr]

    def describe(self) -> str:
        if self.shape is None:
            return f"{self.name} (shape not recorded) {self.dtype}"
        dims = "x".join("?" if d is None else str(d) for d in self.shape) or "scalar"
        return f"{self.name} {dims} {self.dtype}"

    def to_doc(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = {"name": self.name, "shape": None if self.shape is None else list(self.shape),
                               "dtype": self.dtype}
        if self.quantization is not None:  # only then: other models' documents (and cache keys) stay as they were
            doc["quantization"] = [self.quantization[0], self.quantization[1]]
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> "TensorSpec":
        raw = doc.get("shape")
        shape = None if raw is None else tuple(d if d is None or isinstance(d, str) else int(d) for d in raw)
        quant = doc.get("quantization")
        quantization = (float(quant[0]), int(quant[1])) if quant and float(quant[0]) else None
        return cls(str(doc["name"]), shape, str(doc.get("dtype", "float32")), quantization)


@dataclass(frozen=True)
class Interface:
    inputs: Tuple[TensorSpec, ...]
    outputs: Tuple[TensorSpec, ...]
    #: the model keeps state between inferences (resource variables, a stateful module): found by running it
    stateful: bool = False

    @property
    def input_names(self) -> List[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> List[str]:
        return [s.name for s in self.outputs]

    @property
    def is_static(self) -> bool:
        return all(s.is_static for s in self.inputs)

    def to_doc(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = {"inputs": [s.to_doc() for s in self.inputs],
                               "outputs": [s.to_doc() for s in self.outputs]}
        if self.stateful:  # only then: the documents (and cache keys) of every other model stay as they were
            doc["stateful"] = True
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> "Interface":
        return cls(tuple(TensorSpec.from_doc(d) for d in doc.get("inputs", [])),
                   tuple(TensorSpec.from_doc(d) for d in doc.get("outputs", [])), bool(doc.get("stateful", False)))


# ---------------------------------------------------------------- fixing dynamic dimensions
def parse_shape_flag(text: str) -> Tuple[str, Tuple[int, ...]]:
    """'image=1x3x640x640' -> ('image', (1, 3, 640, 640)); 'rate=' or 'rate=scalar' is a scalar."""
    name, sep, dims = str(text).rpartition("=")
    if not sep or not name:
        raise ConfigError("--input-shape", f"{text!r} is not NAME=DIMS (e.g. image=1x3x640x640)")
    dims = dims.strip().lower()
    if dims in ("", "scalar"):
        return name, ()
    try:
        shape = tuple(int(d) for d in re.split(r"[x,]", dims))
    except ValueError:
        raise ConfigError("--input-shape", f"{text!r}: dimensions must be integers separated by 'x' "
                          "(e.g. image=1x3x640x640)") from None
    if any(d < 0 for d in shape):
        raise ConfigError("--input-shape", f"{text!r}: dimensions must be 0 or more")
    return name, shape


def _match_input(interface: Interface, name: str) -> Optional[TensorSpec]:
    for spec in interface.inputs:
        if spec.name == name:
            return spec
    for spec in interface.inputs:
        if normalize_name(spec.name) == normalize_name(name):
            return spec
    return None


def batch_defaults(interface: Interface, shapes: Mapping[str, Sequence[int]]) -> Dict[str, Tuple[int, ...]]:
    """Shapes for the inputs not in `shapes` whose only dynamic axis is a leading batch axis: batch 1.

    benchmark_model runs a TFLite file at its stored shape and onnxruntime_perf_test takes free
    dimensions as 1, so a `-1` batch (every TFLite file converted from Keras, most exported detectors)
    needs no flag. A 1-D input's only axis is a length, not a batch, and any other dynamic axis still
    has to be fixed by the user.
    """
    given = {spec.name for spec in (_match_input(interface, n) for n in shapes) if spec is not None}
    return {spec.name: (1,) + tuple(int(d) for d in spec.shape[1:])  # type: ignore[index, arg-type]
            for spec in interface.inputs
            if spec.name not in given and spec.shape is not None and len(spec.shape) >= 2
            and spec.dynamic_axes == [0]}


def fix_interface(interface: Interface, shapes: Mapping[str, Sequence[int]], where: str,
                  dtypes: Optional[Mapping[str, str]] = None, flag: str = "--input-shape") -> Interface:
    """The interface with every input's shape fixed: from `shapes` where given, else from the file.

    A shape given for an unknown input, of the wrong rank, or contradicting a
    static dimension, and any dynamic dimension left unfixed, is a ConfigError
    naming every such dimension and the flag that fixes it.
    """
    unknown = [n for n in shapes if _match_input(interface, n) is None]
    if unknown:
        raise ConfigError(where, f"{flag} names input(s) {unknown} the model does not have; its inputs: "
                          + ", ".join(s.describe() for s in interface.inputs))
    given = {_match_input(interface, n).name: tuple(s) for n, s in shapes.items()}  # type: ignore[union-attr]
    fixed, missing = [], []
    for spec in interface.inputs:
        if spec.name in given:
            shape = given[spec.name]
            if spec.shape is not None and len(shape) != len(spec.shape):
                raise ConfigError(where, f"{flag} {spec.name}={'x'.join(map(str, shape)) or 'scalar'} has rank "
                                  f"{len(shape)}, but input {spec.describe()} has rank {len(spec.shape)}")
            clash = [i for i, (g, d) in enumerate(zip(shape, spec.shape or ())) if is_static(d) and g != d]
            if clash:
                raise ConfigError(where, f"{flag} {spec.name}: axis {clash[0]} is fixed at {spec.shape[clash[0]]} "
                                  f"in the model, not {shape[clash[0]]}")
            spec = replace(spec, shape=shape)
        elif not spec.is_static:
            missing.append(spec)
        if dtypes and spec.name in dtypes:
            spec = replace(spec, dtype=dtypes[spec.name])
        fixed.append(spec)
    if missing:
        dims = "; ".join(f"{s.name}: the file records no shape" if s.shape is None else
                         f"{s.name} axes {', '.join(f'{i} ({s.shape[i]})' for i in s.dynamic_axes)} of "
                         f"{s.describe()}" for s in missing)
        example = " ".join(f"{flag} {s.name}=" + ("1xN" if s.shape is None else "x".join(
            str(d) if is_static(d) else ("1" if i == 0 else "N") for i, d in enumerate(s.shape))) for s in missing)
        raise ConfigError(where, f"dynamic dimensions must be fixed: {dims}. Fix them with {example} "
                          "(N = the size to profile), or `inputs:` shapes in a recipe")
    return Interface(tuple(fixed), interface.outputs)


# ---------------------------------------------------------------- matching interfaces across formats
def _shape_compatible(expected: Optional[Sequence[Dim]], actual: Optional[Sequence[Dim]]) -> bool:
    if expected is None or actual is None:
        return True
    if len(expected) != len(actual):
        return False
    return all(not is_static(a) or not is_static(e) or a == e for e, a in zip(expected, actual))


def check_interface(expected: Interface, actual: Interface, allowed_dtypes: Sequence[str] = (),
                    produced: Sequence[TensorSpec] = ()) -> List[str]:
    """Problems of an artifact's interface against its source's: counts, names, ranks, sizes, dtypes.

    With `produced` (the outputs the source computed on the host at the fixed input shapes), an artifact's
    output is checked against what the source produces, not against what its file declares: it is compatible
    when it matches the produced tensor (a dynamic axis matches any size), or when it repeats the source's
    own declaration (a wrong declaration is a note on the model, not a verdict on its artifacts).
    """
    problems: List[str] = []
    produced_by_name = {s.name: s for s in produced}
    for kind, want, got in (("input", expected.inputs, actual.inputs), ("output", expected.outputs, actual.outputs)):
        if len(want) != len(got):
            problems.append(f"expected {len(want)} {kind}(s) ({', '.join(s.name for s in want)}), artifact has "
                            f"{len(got)} ({', '.join(s.name for s in got)})")
            continue
        order = match_names([s.name for s in want], [s.name for s in got])
        if order is None:
            problems.append(f"{kind} names {[s.name for s in got]} do not match {[s.name for s in want]}")
            continue
        for spec, i in zip(want, order):
            other = got[i]
            truth = produced_by_name.get(spec.name) if kind == "output" else None
            declared_again = truth is not None and other.shape == spec.shape
            shape_ok = _shape_compatible(truth.shape if truth else spec.shape, other.shape) or declared_again
            if not shape_ok:
                shown = truth.shape if truth else spec.shape
                problems.append(f"{kind} {spec.name}: shape {list(other.shape or ())} != {list(shown or ())}"
                                + (" (what the source produces)" if truth else ""))
            # int64 → int32 is how TFLite stores integer inputs; the agent casts, so that stays compatible.
            narrowed = {other.dtype, spec.dtype} == {"int32", "int64"}
            dtypes = {spec.dtype} | ({truth.dtype} if truth else set())
            if other.dtype not in dtypes and other.dtype not in allowed_dtypes and not narrowed:
                problems.append(f"{kind} {spec.name}: dtype {other.dtype} != {(truth or spec).dtype}")
    return problems


def produced_specs(outputs: Sequence[Tuple[str, Any]]) -> Tuple[TensorSpec, ...]:
    """What a model produced, per output (values per sample, samples first): each sample's shape, with an
    axis whose size varies between samples (a detector's box list) left dynamic, and its dtype."""
    import numpy as np

    specs = []
    for name, values in outputs:
        shapes = {tuple(np.shape(v)) for v in values}
        ranks = {len(s) for s in shapes}
        shape: Optional[Tuple[Dim, ...]] = None
        if len(ranks) == 1:
            first = next(iter(shapes))
            shape = tuple(d if all(s[i] == d for s in shapes) else None for i, d in enumerate(first))
        specs.append(TensorSpec(name, shape, np.asarray(values[0]).dtype.name if len(values) else "float32"))
    return tuple(specs)


def declared_vs_produced(declared: Sequence[TensorSpec], produced: Sequence[TensorSpec]) -> List[str]:
    """One note per output whose file declares a shape or dtype other than what the model produces."""
    notes = []
    by_name = {s.name: s for s in produced}
    for spec in declared:
        truth = by_name.get(spec.name)
        if truth is None or spec.shape is None:
            continue
        fits = _shape_compatible(spec.shape, truth.shape) and spec.dtype == truth.dtype
        if not fits:
            def show(s: TensorSpec) -> str:
                return f"[{', '.join('?' if d is None else str(d) for d in (s.shape or ()))}] {s.dtype}"
            notes.append(f"output {spec.name}: declared {show(spec)}, produces {show(truth)}; the run checks "
                         "converted files against what it produces")
    return notes
