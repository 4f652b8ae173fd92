"""Evaluation and calibration data as named arrays, checked against a model's interface.

The convention (for --data, --calibration, `data: {npz: ...}` and loader entry
points): one array per input name. An array with one more dimension than the
input holds one sample per entry, samples first (each entry is the whole input
tensor, batch axis included, wherever that axis is); an array of the input's
own rank is a constant fed with every sample (a recurrent state, a scalar
sample rate). An optional `labels` array, one entry per sample, enables
classification accuracy and is passed to a user's metric.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from harness.agent import agent as device_agent
from harness.core.errors import ConfigError
from harness.schema.interface import Interface, TensorSpec, is_static, normalize_name
from harness.schema.recipes import ImagePreprocessing

SAMPLE, CONSTANT = "sample", "constant"
LABELS = "labels"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass(frozen=True)
class SampleSet:
    """Named input arrays, each per-sample (samples first) or constant, and optional labels."""

    arrays: Dict[str, np.ndarray]
    modes: Dict[str, str]
    labels: Optional[np.ndarray] = None
    #: where the data came from, for the report ("eval.npz", "random (seed 0)", ...)
    origin: str = ""

    @property
    def n_samples(self) -> int:
        counts = [len(a) for n, a in self.arrays.items() if self.modes[n] == SAMPLE]
        return counts[0] if counts else 1

    def subset(self, index: Sequence[int]) -> "SampleSet":
        index = np.asarray(index, dtype=np.int64)
        arrays = {n: a[index] if self.modes[n] == SAMPLE else a for n, a in self.arrays.items()}
        labels = None if self.labels is None else self.labels[index]
        return replace(self, arrays=arrays, labels=labels)

    def sample(self, i: int) -> Dict[str, np.ndarray]:
        return {n: (a[i] if self.modes[n] == SAMPLE else a) for n, a in self.arrays.items()}

    def feeds(self) -> "device_agent.Feeds":
        """The agent's view of these inputs (the host runs the reference through the same code)."""
        spec = [{"key": f"f{k}", "name": n, "mode": self.modes[n]} for k, n in enumerate(self.arrays)]
        return device_agent.Feeds({f"f{k}": a for k, a in enumerate(self.arrays.values())}, spec)

    def write_feeds(self, path: Path) -> None:
        feeds = self.feeds()
        np.savez(path, **feeds.arrays, **{device_agent.FEEDS_KEY: np.array(json.dumps(feeds.spec))})


# ---------------------------------------------------------------- reading the user's data
def read_npz(path: Path) -> Tuple[Dict[str, np.ndarray], Optional[np.ndarray]]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "no such data file; --data and --calibration take an .npz with one array per "
                          "model input name (and optional 'labels')")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:
        raise ConfigError(path, f"cannot be read as an .npz ({type(exc).__name__}: {exc}); save it with "
                          "numpy.savez(path, input_name=array, ..., labels=array)") from None
    labels = arrays.pop(LABELS, None)
    return arrays, labels


@contextmanager
def importable_from(directory: Optional[Path]) -> Iterator[None]:
    """Entry points beside a recipe (`metrics.py` next to `models/x.yaml`) import as `metrics:fn`."""
    added = directory is not None and str(directory) not in sys.path
    if added:
        sys.path.insert(0, str(directory))
    try:
        yield
    finally:
        if added:
            sys.path.remove(str(directory))


def load_entry_point(entry: str, where: str, key: str, base: Optional[Path] = None) -> Callable:
    """'package.module:function' -> the function; anything that cannot be imported is one clear ConfigError."""
    module_name, sep, attr = str(entry).partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(where, f"{entry!r} is not 'package.module:function'", key)
    with importable_from(base):
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise ConfigError(where, f"cannot import {module_name!r} for {entry!r} ({type(exc).__name__}: {exc}); "
                              f"it must be importable from {base or Path.cwd()} or the installed packages",
                              key) from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise ConfigError(where, f"{module_name} has no function {attr!r} (from {entry!r})", key)
    return function


def call_loader(entry: str, where: str, base: Optional[Path]) -> Tuple[Dict[str, np.ndarray], Optional[np.ndarray]]:
    loader = load_entry_point(entry, where, "data.loader", base)
    with importable_from(base):
        try:
            result = loader()
        except Exception as exc:
            raise ConfigError(where, f"data loader {entry!r} raised {type(exc).__name__}: {exc}", "data.loader") \
                from None
    if not isinstance(result, Mapping):
        raise ConfigError(where, f"data loader {entry!r} must return a dict of input name -> array (plus "
                          f"optional 'labels'), not {type(result).__name__}", "data.loader")
    arrays = {str(k): np.asarray(v) for k, v in result.items()}
    return arrays, arrays.pop(LABELS, None)


def read_images(directory: Path, labels_file: Optional[Path], prep: ImagePreprocessing, spec: TensorSpec,
                where: str) -> Tuple[Dict[str, np.ndarray], Optional[np.ndarray]]:
    """Every image in a directory (sorted by name), preprocessed into samples of the model's one image input."""
    from PIL import Image

    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(where, f"{directory} is not a directory of images", "data.images")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(where, f"{directory} holds no images ({', '.join(IMAGE_SUFFIXES)})", "data.images")
    shape = spec.shape or ()
    if len(shape) != 4:
        raise ConfigError(where, f"image data needs a 4-D image input; {spec.describe()} is not", "data.images")
    layout = prep.layout or ("NHWC" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "NCHW")
    c_axis, hw = (1, (2, 3)) if layout == "NCHW" else (3, (1, 2))
    size = tuple(prep.resize) or tuple(shape[a] for a in hw)
    if not all(is_static(d) for d in size):
        raise ConfigError(where, f"input {spec.name} has a dynamic height/width: set preprocessing.resize: [H, W]",
                          "data.preprocessing.resize")
    gray = prep.channels == "GRAY" or shape[c_axis] == 1
    samples = []
    for file in files:
        try:
            with Image.open(file) as image:
                image = image.convert("L" if gray else "RGB").resize((int(size[1]), int(size[0])),
                                                                     Image.BILINEAR)
                pixels = np.asarray(image, dtype=np.float32)
        except Exception as exc:
            raise ConfigError(file, f"cannot be read as an image ({exc})") from None
        pixels = pixels[..., None] if gray else pixels
        if prep.channels == "BGR":
            pixels = pixels[..., ::-1]
        pixels = (pixels / prep.scale - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
        samples.append(pixels.transpose(2, 0, 1) if layout == "NCHW" else pixels)
    arrays = {spec.name: np.stack(samples)[:, None].astype(spec.dtype if spec.dtype.startswith("float")
                                                            else np.float32)}
    return arrays, (read_labels(labels_file, [f.name for f in files]) if labels_file else None)


def read_labels(path: Path, names: Sequence[str]) -> np.ndarray:
    """Integer labels: an .npy, or text with one label per line (images in name order) or 'file,label' lines."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "no such labels file")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    pairs = [ln.replace("\t", ",").split(",") for ln in lines]
    try:
        if all(len(p) == 2 for p in pairs):
            by_name = {p[0].strip(): int(p[1]) for p in pairs}
            missing = [n for n in names if n not in by_name]
            if missing:
                raise ConfigError(path, f"no label for {len(missing)} image(s), e.g. {missing[:3]}")
            return np.array([by_name[n] for n in names], dtype=np.int64)
        return np.array([int(p[0]) for p in pairs], dtype=np.int64)
    except ValueError as exc:
        raise ConfigError(path, f"labels must be integers, one per line or 'file,label' ({exc})") from None


def random_samples(interface: Interface, n: int, seed: int) -> SampleSet:
    """Seeded random inputs of each input's dtype and shape, as benchmark_app and benchmark_model make them,
    made in that dtype (never a float64 array cast afterwards: that took 2-4 times the memory)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in interface.inputs:
        shape = (n,) + spec.static_shape
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            made = dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)
            arrays[spec.name] = rng.random(shape, dtype=made).astype(dtype, copy=False)
        elif dtype.kind == "b":
            arrays[spec.name] = rng.integers(0, 2, shape, dtype=np.uint8).view(bool)
        else:
            info = np.iinfo(dtype)
            arrays[spec.name] = rng.integers(max(info.min, 0), min(info.max, 10), shape, dtype=dtype, endpoint=True)
    return SampleSet(arrays, {n_: SAMPLE for n_ in arrays}, None, f"random (seed {seed}, {n} samples)")


#: the share of the host's memory that a run's generated samples may take
SAMPLE_MEMORY_SHARE = 0.25


def host_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _bytes_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def check_sample_memory(interface: Interface, n_samples: int, where: str, memory_bytes: Optional[int] = None) -> None:
    """Refuse, before allocating, samples that would take more than a quarter of this host's memory (they are
    made, written for the agent and run through the reference, which needs as much again for its outputs)."""
    memory_bytes = memory_bytes or host_memory_bytes()
    sizes = {s.name: int(np.prod(s.static_shape, dtype=object)) * np.dtype(s.dtype).itemsize * n_samples
             for s in interface.inputs}
    need = sum(sizes.values())
    if need <= SAMPLE_MEMORY_SHARE * memory_bytes:
        return
    largest = max(interface.inputs, key=lambda s: sizes[s.name])
    raise ConfigError(where, f"{n_samples} random samples of {largest.describe()} need {_bytes_text(need)}, more than "
                      f"a quarter of this host's {_bytes_text(memory_bytes)}; lower --samples or the shape "
                      f"(--input-shape {largest.name}=...)")


# ---------------------------------------------------------------- conforming data to the interface
def _input_for(interface: Interface, key: str) -> Optional[TensorSpec]:
    exact = [s for s in interface.inputs if s.name == key]
    loose = [s for s in interface.inputs if normalize_name(s.name) == normalize_name(key)]
    return (exact or loose or [None])[0]


def _sample_count(interface: Interface, arrays: Mapping[str, np.ndarray]) -> Optional[int]:
    """How many samples the data holds: from inputs of known rank, else the most common leading size
    (the larger on a tie: a state's leading axis is usually smaller than a data set)."""
    known = [len(a) for k, a in arrays.items() if (s := _input_for(interface, k)) is not None
             and s.shape is not None and a.ndim == len(s.shape) + 1]
    sizes = known or [len(a) for a in arrays.values() if np.ndim(a) >= 1]
    return max(set(sizes), key=lambda n: (sizes.count(n), n)) if sizes else None


def fill_shapes_from_data(interface: Interface, arrays: Mapping[str, np.ndarray]) -> Dict[str, Tuple[int, ...]]:
    """Sizes of the data's inputs, for the inputs whose shape the file leaves dynamic (or does not record).

    Where the file records no rank (TorchScript), an array whose leading size is the sample count holds
    samples and any other is a constant; `--input-shape` settles a constant that happens to match."""
    shapes = {}
    n = _sample_count(interface, arrays)
    for key, array in arrays.items():
        spec = _input_for(interface, key)
        if spec is None or spec.is_static:
            continue
        if spec.shape is None:
            per_sample = np.ndim(array) >= 1 and len(array) == n
            shapes[spec.name] = tuple(array.shape[1:] if per_sample else np.shape(array))
        elif array.ndim == len(spec.shape) + 1:
            shapes[spec.name] = tuple(array.shape[1:])
        elif array.ndim == len(spec.shape):
            shapes[spec.name] = tuple(array.shape)
    return shapes


def samples_on_leading_axis(interface: Interface, arrays: Mapping[str, np.ndarray], labels: Optional[np.ndarray],
                            shapes: Mapping[str, Sequence[int]], force: bool = False
                            ) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """Data saved the natural way for a batch-1 or dynamic-batch model: (N, H, W, C) for an input [1|-1, H, W, C],
    with N labels. Its leading axis is then the samples, each one batch of 1: the arrays get that axis of 1
    (N, 1, H, W, C), and a note says so. Without labels, or where the leading size is not the label count,
    or a shape given for the input fixes another batch, the data stays as it is (one batch of N). `force`: the
    evaluation data was read so; its calibration data (no labels) is read the same way."""
    n_labels = len(labels) if labels is not None and np.ndim(labels) >= 1 else 0
    out, moved = dict(arrays), []
    if n_labels < 2 and not force:
        return out, []
    for key, array in arrays.items():
        spec = _input_for(interface, key)
        if spec is None or spec.shape is None or len(spec.shape) < 2 or np.ndim(array) != len(spec.shape):
            continue
        given = next((tuple(v) for k, v in shapes.items() if normalize_name(k) == normalize_name(spec.name)), None)
        batch = spec.shape[0]
        batch_one = (batch == 1 or not is_static(batch)) and (given is None or (len(given) > 0 and given[0] == 1))
        fits = all(not is_static(d) or d == a for d, a in zip(spec.shape[1:], np.shape(array)[1:]))
        if batch_one and fits and (force or len(array) == n_labels):
            out[key] = np.asarray(array)[:, None]
            moved.append(spec.name)
    if not moved:
        return out, []
    return out, [f"samples: the leading axis of {', '.join(moved)} holds {n_labels} samples (one per label), each "
                 "run at the model's batch of 1; --input-shape with another batch runs the data as one batch"]


def _quantization(spec: TensorSpec, array: np.ndarray) -> Optional[Tuple[float, int]]:
    """The input's (scale, zero point) when float data goes into an integer input that stands for reals."""
    want = np.dtype(spec.dtype)
    return spec.quantization if array.dtype.kind == "f" and want.kind in "iu" and spec.quantization else None


def _cast(array: np.ndarray, spec: TensorSpec, where: str, key: str) -> np.ndarray:
    want = np.dtype(spec.dtype)
    got = array.dtype
    if got == want:
        return array
    quantization = _quantization(spec, array)
    if quantization is not None:  # the device agent quantizes the same way (agent._quantize)
        return device_agent._quantize(array, want, quantization[0], quantization[1])
    ok = (got.kind == want.kind) or (got.kind in "iu" and want.kind in "iuf") or (got.kind == "b" and want.kind in "iu")
    if ok and got.kind in "iu" and want.kind in "iu" and array.size:
        info = np.iinfo(want)
        ok = info.min <= array.min() and array.max() <= info.max
    if not ok:
        raise ConfigError(where, f"input {spec.name}: the data is {got.name}, the model takes {want.name}; "
                          f"save it as {want.name}", key)
    return array.astype(want)


def cast_notes(interface: Interface, arrays: Mapping[str, np.ndarray]) -> List[str]:
    """One note per input whose data was cast to the model's dtype (float64 → float32, an in-range int64 → int32),
    with the largest change the cast made."""
    notes = []
    for key, array in arrays.items():
        spec = _input_for(interface, key)
        if spec is None or np.asarray(array).dtype == np.dtype(spec.dtype):
            continue
        array = np.asarray(array)
        quantization = _quantization(spec, array)
        if quantization is not None:
            codes = _cast(array, spec, "", key)
            error = float(np.max(np.abs(array.astype(np.float64) - (codes.astype(np.float64) - quantization[1])
                                        * quantization[0]))) if array.size else 0.0
            notes.append(f"input {spec.name}: the data is {array.dtype.name}, quantized to the model's {spec.dtype} "
                         f"with the input's scale {quantization[0]:.6g} and zero point {quantization[1]} "
                         f"(largest rounding or clipping error {error:.3g}); {spec.dtype} data goes in as it is")
            continue
        change = float(np.max(np.abs(array.astype(np.float64) - array.astype(spec.dtype).astype(np.float64)))) \
            if array.size and array.dtype.kind in "fiu" else 0.0
        notes.append(f"input {spec.name}: the data is {array.dtype.name}, cast to the model's {spec.dtype} "
                     f"(largest change {change:.3g})")
    return notes


def check_input_names(interface: Interface, arrays: Mapping[str, np.ndarray], where: str) -> Dict[str, TensorSpec]:
    """Each array's input; arrays the model does not take, or inputs without an array, list both sides."""
    names = interface.input_names
    matched = {key: _input_for(interface, key) for key in arrays}
    unknown = [k for k, s in matched.items() if s is None]
    covered = {s.name for s in matched.values() if s is not None}
    missing = [n for n in names if n not in covered]
    if unknown or missing:
        raise ConfigError(where, f"the data's arrays {sorted(arrays)} do not match the model's inputs {names}"
                          + (f"; missing: {missing}" if missing else "") + (f"; unknown: {unknown}" if unknown else "")
                          + " (name each array after a model input; 'labels' holds labels)")
    return matched  # type: ignore[return-value]


def conform(interface: Interface, arrays: Mapping[str, np.ndarray], labels: Optional[np.ndarray], where: str,
            origin: str) -> SampleSet:
    """Check data against a fixed interface: every input present, each per-sample or constant with the
    input's shape, dtypes castable without loss, one label per sample. Errors name input, expected and found."""
    names = interface.input_names
    matched = check_input_names(interface, arrays, where)
    out: Dict[str, np.ndarray] = {}
    modes: Dict[str, str] = {}
    for key, spec in matched.items():
        array = np.asarray(arrays[key])
        shape = spec.static_shape  # type: ignore[union-attr]
        if array.shape[1:] == shape and array.ndim == len(shape) + 1:
            modes[spec.name] = SAMPLE  # type: ignore[union-attr]
        elif array.shape == shape:
            modes[spec.name] = CONSTANT  # type: ignore[union-attr]
        else:
            raise ConfigError(where, f"input {spec.name}: expected samples of shape {list(shape)} (an array "  # type: ignore[union-attr]
                              f"(n, {', '.join(map(str, shape))})) or one constant of shape {list(shape)}; found "
                              f"{list(array.shape)}", key)
        out[spec.name] = _cast(array, spec, where, key)  # type: ignore[union-attr, arg-type]
    ordered = {n: out[n] for n in names}
    data = SampleSet(ordered, {n: modes[n] for n in names}, None, origin)
    counts = {len(a) for n, a in ordered.items() if modes[n] == SAMPLE}
    if len(counts) > 1:
        raise ConfigError(where, "per-sample arrays disagree on the number of samples: " + ", ".join(
            f"{n}: {len(a)}" for n, a in ordered.items() if modes[n] == SAMPLE))
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim == 0 or len(labels) != data.n_samples:
            raise ConfigError(where, f"'labels' has {labels.shape[0] if labels.ndim else 'no'} entries but there "
                              f"are {data.n_samples} samples; give one label per sample", "labels")
        data = replace(data, labels=labels)
    return data


def split(data: SampleSet, n_calibration: int, seed: int) -> Tuple[SampleSet, SampleSet]:
    """(calibration, evaluation): disjoint, by a seeded permutation of the samples."""
    order = np.random.default_rng(seed).permutation(data.n_samples)
    calib, rest = order[:n_calibration], np.sort(order[n_calibration:])
    return (replace(data.subset(calib), origin=f"{n_calibration} samples split from {data.origin}"),
            replace(data.subset(rest), origin=f"{data.origin} less the {n_calibration} calibration samples"))
