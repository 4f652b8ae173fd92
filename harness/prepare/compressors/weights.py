"""Weight-level measures of a variant against its reference (pure numpy, no framework imports).

A variant's weights may come back from a deployable file in another layout
(TFLite stores a Dense kernel as [out, in], ONNX a Conv kernel as OIHW), so
`match_weights` pairs each reference array with the candidate that is the same
tensor under some axis permutation, choosing the closest when several fit.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np


def rel_frobenius(reference: Sequence[np.ndarray], variant: Sequence[np.ndarray]) -> float:
    """sqrt(sum ||R_i - V_i||_F^2) / sqrt(sum ||R_i||_F^2) over paired arrays: one number for the whole model.

    Pooled rather than averaged per layer, so a large layer counts by its size
    (its share of the model's weights), as it does in the artifact.
    """
    if len(reference) != len(variant):
        raise ValueError(f"{len(reference)} reference weights but {len(variant)} variant weights")
    if not reference:
        raise ValueError("no weights to compare")
    num = den = 0.0
    for r, v in zip(reference, variant):
        r64, v64 = np.asarray(r, np.float64), np.asarray(v, np.float64)
        if r64.shape != v64.shape:
            raise ValueError(f"weight shapes differ: {r64.shape} vs {v64.shape}")
        num += float(((r64 - v64) ** 2).sum())
        den += float((r64 ** 2).sum())
    return float(np.sqrt(num / den)) if den > 0 else float(np.sqrt(num))


def sparsity(weights: Sequence[np.ndarray], min_ndim: int = 2) -> float:
    """Fraction of exact zeros among the kernels (arrays with at least min_ndim dimensions).

    Biases (1-D) are never pruned, so counting them would understate the sparsity reached.
    """
    kernels = [np.asarray(w) for w in weights if np.ndim(w) >= min_ndim]
    total = sum(k.size for k in kernels)
    if total == 0:
        return 0.0
    return float(sum(int((k == 0).sum()) for k in kernels) / total)


def _layouts(reference: np.ndarray, candidate: np.ndarray) -> List[np.ndarray]:
    """The candidate brought into the reference's shape by every axis permutation that fits."""
    ref_shape = tuple(d for d in reference.shape if d != 1)
    cand = np.squeeze(candidate)
    if cand.size != reference.size or sorted(cand.shape) != sorted(ref_shape):
        return []
    views = []
    for perm in set(itertools.permutations(range(cand.ndim))):
        moved = np.transpose(cand, perm)
        if moved.shape == ref_shape:
            views.append(moved.reshape(reference.shape))
    return views


def match_weights(reference: Sequence[np.ndarray], candidates: Sequence[np.ndarray]
                  ) -> Tuple[List[np.ndarray], List[Optional[np.ndarray]]]:
    """Pair each reference array with its closest candidate in a compatible layout (each used once).

    Returns (reference, matched) where matched[i] is None if no candidate fits
    reference[i] (e.g. a converter folded it into another tensor).
    Larger arrays are matched first: they are the least ambiguous.
    """
    order = sorted(range(len(reference)), key=lambda i: -np.asarray(reference[i]).size)
    used = set()
    matched: List[Optional[np.ndarray]] = [None] * len(reference)
    for i in order:
        ref = np.asarray(reference[i], np.float64)
        best, best_dist, best_j = None, np.inf, None
        for j, cand in enumerate(candidates):
            if j in used:
                continue
            for view in _layouts(ref, np.asarray(cand, np.float64)):
                dist = float(((ref - view) ** 2).sum())
                if dist < best_dist:
                    best, best_dist, best_j = view, dist, j
        if best_j is not None:
            used.add(best_j)
            matched[i] = best
    return list(reference), matched


def matched_rel_frobenius(reference: Sequence[np.ndarray], candidates: Sequence[np.ndarray]
                          ) -> Tuple[Optional[float], float]:
    """(relative Frobenius distance over the matched weights, fraction of reference weights matched).

    The fraction is by element count; a distance over a partial match is still
    reported, and the fraction says how much of the model it covers.
    """
    ref, matched = match_weights(reference, candidates)
    pairs = [(r, m) for r, m in zip(ref, matched) if m is not None]
    total = sum(np.asarray(r).size for r in ref)
    covered = sum(np.asarray(r).size for r, _ in pairs)
    if not pairs:
        return None, 0.0
    return rel_frobenius([r for r, _ in pairs], [m for _, m in pairs]), covered / total if total else 0.0


def dequantize(q: np.ndarray, scale, zero_point, axis: Optional[int] = None) -> np.ndarray:
    """(q - zero_point) * scale, per tensor or per channel along axis."""
    q = np.asarray(q, np.float64)
    scale = np.asarray(scale, np.float64)
    zero_point = np.asarray(zero_point, np.float64)
    if scale.size > 1 or (axis is not None and zero_point.size > 1):
        if axis is None:
            raise ValueError("per-channel quantization parameters need an axis")
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape) if zero_point.size > 1 else zero_point
    return (q - zero_point) * scale


# ---------------------------------------------------------------- readers: the weights a file holds
def keras_weights(model) -> List[np.ndarray]:
    """Trainable weights (kernels and biases) in layer order."""
    return [np.asarray(w.numpy()) for w in model.trainable_weights]


def onnx_weight_tensors(path: Path) -> List[np.ndarray]:
    """Float initializers plus every initializer a DequantizeLinear turns back into floats."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out, consumed = [], set()
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            scale = inits[node.input[1]]
            zero_point = inits[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros_like(scale)
            q = inits[node.input[0]]
            out.append(dequantize(q, scale, zero_point, axis if np.size(scale) > 1 else None))
            consumed.update(node.input)
    out += [v.astype(np.float64) for k, v in inits.items() if k not in consumed and v.dtype.kind == "f" and v.ndim]
    return out


#: TFLite schema TensorType codes of tensors that can hold weights
_TFLITE_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 7: np.int16, 9: np.int8}


def tflite_weight_tensors(path: Path) -> List[np.ndarray]:
    """Every constant float or quantized tensor stored in a .tflite file, dequantized to float64.

    Read from the flatbuffer itself, so what is measured is what ships: the
    int8 values and their per-channel scales as the converter wrote them.
    Integer constants without quantization parameters (shapes, axes) are skipped.
    """
    from harness.zoo.keras_util import import_tf
    import_tf()
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    out = []
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            buffer = model.buffers[tensor.buffer]
            dtype = _TFLITE_TYPES.get(tensor.type)
            if buffer.data is None or len(buffer.data) == 0 or dtype is None:
                continue
            raw = np.frombuffer(bytes(bytearray(buffer.data)), dtype=dtype)
            shape = tuple(int(d) for d in tensor.shape) if tensor.shape is not None else (raw.size,)
            values = raw.reshape(shape) if int(np.prod(shape)) == raw.size else raw
            q = tensor.quantization
            scale = None if q is None or q.scale is None or len(q.scale) == 0 else np.asarray(q.scale)
            if scale is not None and np.any(scale != 0):
                zero_point = np.asarray(q.zeroPoint) if q.zeroPoint is not None else np.zeros_like(scale)
                axis = int(q.quantizedDimension) if scale.size > 1 else None
                out.append(dequantize(values, scale, zero_point, axis))
            elif np.issubdtype(dtype, np.floating):
                out.append(values.astype(np.float64))
    return out
