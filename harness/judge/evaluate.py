"""Scoring a cell's outputs against the reference: the evaluators, and the primary figure.

Outputs are name -> array with samples first, or a list of per-sample arrays
when an output's size varies from sample to sample (detections). Evaluators:
  parity          every output against the reference: max abs difference, cosine, SNR in dB;
  classification  top-1/top-5 accuracy on labels, top-1 agreement and KL against the reference;
  metric          the recipe's `metric: "package.module:function"`: (outputs by name, labels) -> {name: figure}.
The primary figure (what scores and the gate judge, as retention against the
reference) is the declared metric, else accuracy, else top-1 agreement, else output SNR.
Pure: no I/O except reading an outputs file.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from harness.agent.agent import OUTPUTS_KEY, match_names
from harness.core.numbers import finite_or_none
from harness.schema.results import UNAVAILABLE

Output = Union[np.ndarray, List[np.ndarray]]
Outputs = Dict[str, Output]

#: SNR at which output parity counts as fully retained (1 % error amplitude)
SNR_FULL_DB = 40.0
_SNR_CAP_DB = 200.0


def read_outputs(path: Path) -> Outputs:
    """An outputs .npz written by the agent (or by the host's reference run) -> name -> array or list."""
    with np.load(path, allow_pickle=False) as data:
        if OUTPUTS_KEY not in data.files:  # a run from before multi-output: output_0, output_1, ...
            return {k: data[k] for k in sorted(data.files)}
        spec = json.loads(str(data[OUTPUTS_KEY]))
        out: Outputs = {}
        for entry in spec:
            if entry.get("ragged"):
                out[entry["name"]] = [data[f"{entry['key']}_{i}"] for i in range(int(entry["ragged"]))]
            else:
                out[entry["name"]] = data[entry["key"]]
    return out


def _per_sample(output: Output, n: int) -> List[np.ndarray]:
    return [np.asarray(output[i], dtype=np.float64) for i in range(n)]


def align(outputs: Outputs, reference: Outputs) -> Tuple[Dict[str, Output], List[str]]:
    """The cell's outputs renamed to the reference's names (matched by name, then position), and problems."""
    ref_names, names = list(reference), list(outputs)
    order = match_names(ref_names, names)
    if order is None:
        return {}, [f"outputs {names} do not match the reference's {ref_names}"]
    return {ref: outputs[names[i]] for ref, i in zip(ref_names, order)}, []


#: (output name, (scale, zero point) or None) of each source output, in the source's order
OutputQuantization = Tuple[Tuple[str, Optional[Tuple[float, int]]], ...]


def dequantize(outputs: Outputs, quantization: OutputQuantization) -> Tuple[Outputs, List[str]]:
    """Integer outputs of a converted file as the reals they stand for, with the source's own scale and zero
    point (tf2onnx and OpenVINO keep a quantized TFLite output as raw int8 codes; LiteRT's agent dequantizes):
    real = (code - zero point) * scale, computed as the agent computes it. Returns the outputs and the names of
    the source outputs that were dequantized."""
    if not any(q for _, q in quantization):
        return outputs, []
    names = list(outputs)
    order = match_names([n for n, _ in quantization], names)
    if order is None:
        return outputs, []
    out, done = dict(outputs), []
    for (ref_name, q), i in zip(quantization, order):
        value = outputs[names[i]]
        if q is None or isinstance(value, list) or np.asarray(value).dtype.kind not in "iu":
            continue
        scale, zero_point = q
        out[names[i]] = (np.asarray(value).astype("float32") - zero_point) * scale
        done.append(ref_name)
    return out, done


def dequantized_text(quantization: OutputQuantization, names: Sequence[str]) -> str:
    """What the row says about outputs compared on their real scale."""
    by_name = dict(quantization)
    return "; ".join(f"{n} (scale {by_name[n][0]:.6g}, zero point {by_name[n][1]})"  # type: ignore[index]
                     for n in names) + ": integer outputs dequantized with the source's scale and zero point"


def output_parity(out: Output, ref: Output) -> Dict[str, Optional[float]]:
    """max abs difference, mean cosine similarity and SNR (dB) of one output over the samples both have."""
    n = min(len(out), len(ref))
    if n == 0:
        return {"max_abs_diff": None, "cosine_similarity": None, "snr_db": None}
    a, b = _per_sample(out, n), _per_sample(ref, n)
    if any(x.size != y.size for x, y in zip(a, b)):
        return {"max_abs_diff": None, "cosine_similarity": None, "snr_db": None,
                "shape_mismatch": f"{a[0].shape} vs reference {b[0].shape}"}  # type: ignore[dict-item]
    a = [x.reshape(-1) for x in a]
    b = [y.reshape(-1) for y in b]
    diff = max((float(np.abs(x - y).max()) if x.size else 0.0) for x, y in zip(a, b))
    cos = []
    for x, y in zip(a, b):
        denom = np.linalg.norm(x) * np.linalg.norm(y)
        cos.append(float(x @ y / denom) if denom > 0 else (1.0 if np.array_equal(x, y) else 0.0))
    signal = sum(float((y ** 2).sum()) for y in b)
    noise = sum(float(((x - y) ** 2).sum()) for x, y in zip(a, b))
    if noise == 0:
        snr = _SNR_CAP_DB
    elif signal == 0:
        snr = -_SNR_CAP_DB
    else:
        snr = float(np.clip(10 * np.log10(signal / noise), -_SNR_CAP_DB, _SNR_CAP_DB))
    return {"max_abs_diff": diff, "cosine_similarity": float(np.mean(cos)), "snr_db": snr}


def parity(outputs: Outputs, reference: Outputs) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """Row figures (worst over outputs) and per-output figures."""
    aligned, problems = align(outputs, reference)
    per_output = {name: output_parity(aligned[name], reference[name]) for name in aligned}
    row: Dict[str, Any] = {"n_eval_samples": min((len(v) for v in aligned.values()), default=0) or None}
    if problems:
        row["parity_problem"] = "; ".join(problems)
    mismatched = [f"{n}: {p['shape_mismatch']}" for n, p in per_output.items() if p.get("shape_mismatch")]
    if mismatched:
        row["parity_problem"] = "output shapes differ: " + "; ".join(mismatched)
    values = lambda key: [p[key] for p in per_output.values() if p.get(key) is not None]
    row["max_abs_diff"] = max(values("max_abs_diff"), default=None)
    row["cosine_similarity"] = min(values("cosine_similarity"), default=None)
    row["output_snr_db"] = min(values("snr_db"), default=None)
    return row, per_output


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def as_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Outputs that already are a distribution stay; logits go through softmax."""
    out = outputs.astype(np.float64)
    if out.min() >= 0 and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3):
        return out
    return softmax(out)


def class_scores(output: Output) -> Optional[np.ndarray]:
    """(n, classes) from a classification output of any leading singleton axes; None if it is not one."""
    if isinstance(output, list):
        return None
    scores = np.asarray(output, dtype=np.float64)
    scores = scores.reshape(len(scores), -1)
    return scores if scores.shape[1] > 1 else None


def classification(outputs: Outputs, reference: Outputs, labels: Optional[np.ndarray],
                   output_name: str = "") -> Dict[str, Any]:
    """Top-1/top-5 accuracy on labels (-1: unlabelled), top-1 agreement and KL with the reference's classes."""
    aligned, problems = align(outputs, reference)
    name = output_name if output_name in reference else next(iter(reference), "")
    if problems or name not in aligned:
        return {}
    out, ref = class_scores(aligned[name]), class_scores(reference[name])
    if out is None or ref is None or out.shape[1] != ref.shape[1]:
        return {}
    n = min(len(out), len(ref))
    out, ref = out[:n], ref[:n]
    pred, ref_pred = out.argmax(axis=1), ref.argmax(axis=1)
    p_ref, p_out = as_probabilities(ref), as_probabilities(out)
    eps = 1e-12
    figures: Dict[str, Any] = {
        "top1_agreement": float((pred == ref_pred).mean()) if n else None,
        "kl_divergence": float((p_ref * (np.log(p_ref + eps) - np.log(p_out + eps))).sum(axis=1).mean()) if n else None,
    }
    if labels is not None and np.asarray(labels).ndim == 1 and np.issubdtype(np.asarray(labels).dtype, np.integer):
        y = np.asarray(labels)[:n]
        labelled = y >= 0
        if labelled.any():
            figures["accuracy"] = float((pred[labelled] == y[labelled]).mean())
            top5 = np.argsort(-out, axis=1)[:, :5]
            figures["top5_accuracy"] = float((top5[labelled] == y[labelled, None]).any(axis=1).mean())
    return figures


def user_metric(function: Callable, outputs: Outputs, labels: Optional[np.ndarray]) -> Dict[str, float]:
    """The user's figures, each a number where higher is better."""
    result = function(dict(outputs), labels)
    if not isinstance(result, Mapping):
        raise TypeError(f"a metric must return a dict of name -> number, not {type(result).__name__}")
    figures = {}
    for key, value in result.items():
        try:
            figures[str(key)] = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"metric figure {key!r} is {value!r}, not a number") from None
        if not math.isfinite(figures[str(key)]):  # NaN or inf ranks nothing: a figure the gate cannot judge
            raise ValueError(f"metric figure {key!r} is {value!r}, not a finite number")
    return figures


def metric_columns(figures: Mapping[str, float], reference: Mapping[str, float]) -> Dict[str, Any]:
    row: Dict[str, Any] = {}
    for key, value in figures.items():
        row[f"metric_{key}"] = value
        ref = reference.get(key)
        row[f"metric_{key}_retention"] = value / ref if ref else None
    return row


def primary_figure(row: Mapping[str, Any], metric_names: Sequence[str], reference_accuracy: Optional[float],
                   primary: str = "") -> Dict[str, Any]:
    """Which figure judges this cell, its value and its retention against the reference."""
    def number(key: str) -> Optional[float]:
        return finite_or_none(row.get(key))

    name = primary or (metric_names[0] if metric_names else "")
    if name:
        return {"primary_metric": f"metric_{name}", "primary_value": number(f"metric_{name}"),
                "primary_retention": number(f"metric_{name}_retention")}
    if number("accuracy") is not None:
        retention = number("accuracy") / reference_accuracy if reference_accuracy else None  # type: ignore[operator]
        return {"primary_metric": "accuracy", "primary_value": number("accuracy"), "primary_retention": retention}
    if number("top1_agreement") is not None:
        return {"primary_metric": "top1_agreement", "primary_value": number("top1_agreement"),
                "primary_retention": number("top1_agreement")}
    snr = number("output_snr_db")
    return {"primary_metric": "output_snr_db", "primary_value": snr,
            "primary_retention": None if snr is None else float(np.clip(snr / SNR_FULL_DB, 0.0, 1.0))}


@dataclass(frozen=True)
class ScoringSpec:
    """What scoring a model's cells needs from its recipe, as plain data a device job carries."""

    task: str = ""
    #: the output that carries class scores ('' = the first)
    class_output: str = ""
    classes: int = 0
    metric: str = ""
    primary_metric: str = ""
    #: where the metric's module is imported from (the recipe's directory)
    base_dir: str = ""
    #: the source's quantized outputs (name, (scale, zero point)): a converted file's integer outputs are
    #: compared with the reference on the real scale
    output_quantization: OutputQuantization = ()

    @classmethod
    def from_recipe(cls, recipe: Any) -> "ScoringSpec":
        return cls(recipe.task, recipe.output.name, recipe.output.classes, recipe.metric, recipe.primary_metric,
                   str(recipe.base_dir))


def is_classification(spec: ScoringSpec, labels: Optional[np.ndarray]) -> bool:
    """Classification figures only for classification: declared, or integer labels one per sample."""
    if spec.task:
        return spec.task == "classification"
    if spec.classes:
        return True
    return labels is not None and np.asarray(labels).ndim == 1 and np.issubdtype(np.asarray(labels).dtype,
                                                                                  np.integer)


def score_outputs(outputs: Outputs, reference: Outputs, labels: Optional[np.ndarray], spec: ScoringSpec,
                  metric: Optional[Callable], reference_figures: Optional[Mapping[str, Any]] = None
                  ) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """Every figure of one cell (or, with outputs = reference, of the reference itself) and per-output parity.

    A user metric that raises is recorded (`evaluation_error`), the other figures stand and the primary
    figure is unavailable.
    """
    reference_figures = reference_figures or {}
    outputs, dequantized = dequantize(outputs, spec.output_quantization)
    row, per_output = parity(outputs, reference)
    if dequantized:
        row["outputs_dequantized"] = dequantized_text(spec.output_quantization, dequantized)
        for name in dequantized:
            if name in per_output:
                per_output[name]["dequantized"] = True
    if is_classification(spec, labels):
        row.update(classification(outputs, reference, labels, spec.class_output))
    names: List[str] = []
    if metric is not None:
        aligned, _ = align(outputs, reference)
        try:
            figures = user_metric(metric, aligned, labels)
        except (Exception, SystemExit) as exc:  # a metric that calls sys.exit() ends its cell, never the run
            what = f"called sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else \
                f"raised {type(exc).__name__}: {exc}"
            row["evaluation_error"] = f"metric {spec.metric} {what}"
        else:
            names = list(figures)
            reference_metric = {k[len("metric_"):]: v for k, v in reference_figures.items()
                                if k.startswith("metric_") and not k.endswith("_retention")} or figures
            row.update(metric_columns(figures, reference_metric))
    reference_accuracy = reference_figures.get("accuracy", row.get("accuracy"))
    if "evaluation_error" in row:  # the metric is the primary figure: no other figure stands in for it
        row.update(primary_metric=UNAVAILABLE, primary_value=None, primary_retention=None)
    else:
        row.update(primary_figure(row, names, reference_accuracy, spec.primary_metric))
    if row.get("accuracy") is not None and reference_accuracy is not None:
        row["reference_accuracy"] = reference_accuracy
        row["accuracy_retention"] = row["accuracy"] / reference_accuracy if reference_accuracy else None
    return row, per_output
