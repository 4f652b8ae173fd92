"""The results table: one row per (model, variant, format, target) cell.

Pure functions over numpy arrays and dicts; no I/O. Units are in the column
names. A failed cell is a row too, with a status and an error category.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional

import numpy as np

# status values a row can have
# ok: measured; incompatible: interface check failed (not run); skipped: the target lacks the runtime;
# failed: ran and broke (category says how); lost: the device went away before the cell finished.
OK, INCOMPATIBLE, SKIPPED, FAILED, LOST = "ok", "incompatible", "skipped", "failed", "lost"

IDENTITY_COLUMNS = ["run_id", "cell_id", "model", "variant", "format", "target"]
STATUS_COLUMNS = ["status", "error_category", "error_message"]
ACCURACY_COLUMNS = ["accuracy", "reference_accuracy", "accuracy_retention", "top1_agreement",
                    "max_abs_diff", "cosine_similarity", "kl_divergence", "n_eval_samples"]
LATENCY_COLUMNS = ["latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_mean_ms", "latency_std_ms",
                   "latency_min_ms", "latency_max_ms", "load_ms", "first_inference_ms",
                   "warmup_iterations", "timed_iterations", "threads"]
MEMORY_COLUMNS = ["peak_rss_bytes", "rss_increase_bytes", "baseline_rss_bytes"]
ARTIFACT_COLUMNS = ["artifact_size_bytes", "artifact_gzip_bytes", "artifact_sha256", "param_count", "macs",
                    "sparsity", "weight_rel_frobenius", "compression_s", "fidelity"]
RUNTIME_COLUMNS = ["runtime", "runtime_version", "precision", "python_version", "numpy_version", "agent_version"]
TIME_COLUMNS = ["started_at", "duration_s"]

COLUMNS: List[str] = (IDENTITY_COLUMNS + STATUS_COLUMNS + ACCURACY_COLUMNS + LATENCY_COLUMNS + MEMORY_COLUMNS
                      + ARTIFACT_COLUMNS + RUNTIME_COLUMNS + TIME_COLUMNS)

#: columns printed at the end of a run
SUMMARY_COLUMNS = ["model", "variant", "format", "target", "status", "accuracy", "accuracy_retention",
                   "top1_agreement", "max_abs_diff", "latency_p50_ms", "latency_p99_ms", "peak_rss_bytes",
                   "artifact_size_bytes"]


def finite_or_none(value: Any) -> Optional[float]:
    """A float if value is a finite number, else None (NaN, None, text)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def cell_id(model: str, variant: str, fmt: str, target: str) -> str:
    return f"{model}__{variant}__{fmt}__{target}"


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


def output_metrics(outputs: np.ndarray, reference: np.ndarray, labels: Optional[np.ndarray],
                   reference_accuracy: Optional[float]) -> Dict[str, Any]:
    """Accuracy and agreement of a cell's outputs against labels and the reference outputs.

    outputs and reference are (n_samples, n_classes); only the first
    min(len) samples are compared, so a truncated run still scores what it has.
    """
    n = min(len(outputs), len(reference))
    out = outputs[:n].reshape(n, -1).astype(np.float64)
    ref = reference[:n].reshape(n, -1).astype(np.float64)
    pred, ref_pred = out.argmax(axis=1), ref.argmax(axis=1)
    metrics: Dict[str, Any] = {
        "n_eval_samples": int(n),
        "top1_agreement": float((pred == ref_pred).mean()) if n else None,
        "max_abs_diff": float(np.abs(out - ref).max()) if n else None,
    }
    denom = np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)
    cos = np.divide((out * ref).sum(axis=1), denom, out=np.ones(n), where=denom > 0)
    metrics["cosine_similarity"] = float(cos.mean()) if n else None
    p_ref, p_out = as_probabilities(ref), as_probabilities(out)
    eps = 1e-12
    kl = (p_ref * (np.log(p_ref + eps) - np.log(p_out + eps))).sum(axis=1)
    metrics["kl_divergence"] = float(kl.mean()) if n else None
    labelled = labels[:n] >= 0 if labels is not None else np.zeros(n, dtype=bool)  # -1: no label
    if labels is not None and labelled.any():
        acc = float((pred[labelled] == labels[:n][labelled]).mean())
        metrics["accuracy"] = acc
        if reference_accuracy is not None:
            metrics["reference_accuracy"] = reference_accuracy
            metrics["accuracy_retention"] = acc / reference_accuracy if reference_accuracy > 0 else None
    return metrics


def agent_metrics(agent_result: Mapping[str, Any]) -> Dict[str, Any]:
    """Flatten the agent's JSON document into result-row columns."""
    latency = agent_result.get("latency") or {}
    row = {f"latency_{k}": latency.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms",
                                                    "min_ms", "max_ms")}
    for key in ("load_ms", "first_inference_ms", "warmup_iterations", "timed_iterations", "threads",
                "peak_rss_bytes", "rss_increase_bytes", "baseline_rss_bytes", "runtime", "runtime_version",
                "precision", "agent_version"):
        row[key] = agent_result.get(key)
    row["python_version"] = agent_result.get("python")
    row["numpy_version"] = agent_result.get("numpy")
    return row


def make_row(**fields: Any) -> Dict[str, Any]:
    """A row with every column present (missing ones None); unknown keys are a bug."""
    unknown = set(fields) - set(COLUMNS)
    if unknown:
        raise KeyError(f"not result columns: {sorted(unknown)}")
    return {column: fields.get(column) for column in COLUMNS}


def results_frame(rows: Iterable[Mapping[str, Any]]):
    """The pandas table, columns in the documented order."""
    import pandas as pd
    frame = pd.DataFrame([make_row(**{k: v for k, v in r.items() if k in COLUMNS}) for r in rows], columns=COLUMNS)
    numeric = [c for c in COLUMNS if c.endswith(("_ms", "_bytes", "_s")) or c in (
        "accuracy", "reference_accuracy", "accuracy_retention", "top1_agreement", "max_abs_diff",
        "cosine_similarity", "kl_divergence", "sparsity", "weight_rel_frobenius", "fidelity")]
    for column in numeric:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in ("n_eval_samples", "warmup_iterations", "timed_iterations", "threads", "param_count", "macs"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    return frame.sort_values(["model", "variant", "format", "target"], kind="stable").reset_index(drop=True)
