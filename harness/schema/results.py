"""The results table: one row per (model, variant, format, target) cell, and the failure categories.

Pure functions over numpy arrays and dicts; no I/O. Units are in the column
names. A failed cell is a row too, with a status and an error category.
"""
from __future__ import annotations

import logging
import warnings
from enum import Enum
from typing import Any, Dict, Iterable, List, Mapping, Optional

from harness.agent.agent import Doc

log = logging.getLogger("harness.schema.results")


# status values a row can have
# ok: measured; incompatible: interface check failed (not run); skipped: the target lacks the runtime;
# failed: ran and broke (category says how); lost: the device went away before the cell finished.
OK, INCOMPATIBLE, SKIPPED, FAILED, LOST = "ok", "incompatible", "skipped", "failed", "lost"


class UnknownCategoryWarning(UserWarning):
    """A document carried an error category this host does not know (a newer agent's, or a bug): the cell is
    recorded as agent_failed. The tests turn this warning into an error (setup.cfg)."""


class Category(str, Enum):
    """Why a cell did not end `ok`: one vocabulary for the host's steps and the agent's own failures."""

    # built on the host
    COMPRESSION_FAILED = "compression_failed"
    CONVERSION_FAILED = "conversion_failed"
    NO_CONVERTER = "no_converter"
    UNSUPPORTED_FORMAT = "unsupported_format"
    INTERFACE_MISMATCH = "interface_mismatch"
    #: a Python library this host needs for the step is not installed; the message names the extra to install
    LIBRARY_MISSING = "library_missing"
    # eligibility on the target
    UNSUPPORTED_ON_TARGET = "unsupported_on_target"
    RUNTIME_MISSING = "runtime_missing"
    # push, run, fetch
    UPLOAD_FAILED = "upload_failed"
    TIMEOUT = "timeout"
    OOM_KILLED = "oom_killed"
    CRASHED = "crashed"
    AGENT_FAILED = "agent_failed"
    # the agent's own categories (harness.agent.agent.ErrorCategory; tests/test_agent_contract.py)
    LOAD_FAILED = "load_failed"
    INFERENCE_FAILED = "inference_failed"
    BAD_INPUT = "bad_input"
    DEVICE_BUSY = "device_busy"
    #: a cached file's sha256 changed on the device after its verified upload, again after one fresh upload
    CACHE_CORRUPTED = "cache_corrupted"
    #: the device's cache cannot make room for the cell's files (the message has the numbers)
    DEVICE_DISK_FULL = "device_disk_full"
    AGENT_ERROR = "agent_error"
    #: a requested execution provider, device or delegate is not there (the runtime's words in the message);
    #: a configuration with `fallback: allow` runs on what is there instead and records it (`fallback` column)
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    # the device
    DEVICE_UNREACHABLE = "device_unreachable"
    DEVICE_LOST = "device_lost"
    #: the device stopped answering, or the agent made no progress there (stopped, stuck in I/O): resumable
    DEVICE_TIMEOUT = "device_timeout"
    #: the device's workdir cannot be written (a read-only filesystem or its permissions): fix it, then resume
    DEVICE_STORAGE_READONLY = "device_storage_readonly"
    #: this host's reports directory or cache filled up while the cell's files were written: resumable
    HOST_DISK_FULL = "host_disk_full"
    #: the dask worker that ran the device's job died (harness.run.dask); the device may be fine
    WORKER_LOST = "worker_lost"
    HOST_KEY_CHANGED = "host_key_changed"
    HARNESS_ERROR = "harness_error"

    @classmethod
    def parse(cls, value: Any, strict: bool = False) -> "Category":
        """A category by its value. One this host does not know (a newer agent's) raises ValueError when
        `strict`; otherwise it is an agent failure, logged and warned about (UnknownCategoryWarning)."""
        try:
            return cls(value)
        except ValueError:
            if strict:
                raise
        message = f"unknown error category {value!r} (from a newer agent?): recorded as {cls.AGENT_FAILED.value}"
        log.warning(message)
        warnings.warn(message, UnknownCategoryWarning, stacklevel=2)
        return cls.AGENT_FAILED


IDENTITY_COLUMNS = ["run_id", "cell_id", "model", "variant", "format", "runtime_config", "target"]
STATUS_COLUMNS = ["status", "error_category", "error_message"]
#: `primary_metric` of a cell whose user metric raised (`evaluation_error`): no other figure stands in for it
UNAVAILABLE = "unavailable"
ACCURACY_COLUMNS = ["primary_metric", "primary_value", "primary_retention",
                    "accuracy", "top5_accuracy", "reference_accuracy", "accuracy_retention", "top1_agreement",
                    "max_abs_diff", "cosine_similarity", "output_snr_db", "kl_divergence", "n_eval_samples",
                    "parity_problem", "evaluation_error", "outputs_dequantized"]
LATENCY_COLUMNS = ["latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_mean_ms", "latency_std_ms",
                   "latency_min_ms", "latency_max_ms", "load_ms", "first_inference_ms",
                   # first use with a compiled-model cache (docs/runtime-configs.md), each in a fresh process: cold,
                   # from an empty cache (the compile included), and warm, from the filled cache: the load, the
                   # first inference and their sum. Empty for a cell whose configuration keeps no cache
                   "load_cold_ms", "first_inference_cold_ms", "first_use_cold_ms",
                   "load_warm_ms", "first_inference_warm_ms", "first_use_warm_ms",
                   "warmup_iterations", "timed_iterations", "threads",
                   # measurement: iterations per timed sample, seconds timed, independent agent runs and the
                   # spread of their medians (standard deviation of log median, about a CV)
                   "block_size", "timed_s", "repeats", "latency_repeat_cv",
                   # 'runtime' (the runtime's own figure: OpenVINO) or 'wall' (perf_counter around each call)
                   "latency_clock"]
#: a cell measured on a busy or throttling device (harness.judge.device_noise): the gate does not judge it
NOISE_COLUMNS = ["noisy", "noise_reasons",
                 # the device speed reference: its mean time while the cell's repeats were timed (the median over
                 # repeats), the device's usual time for it, usual / reference (1.0: usual speed, 0.89: 12 % slower),
                 # and how many repeats were measured again because the device ran slower than quiet.max_reference_drift
                 "reference_ms", "reference_usual_ms", "device_speed", "remeasured"]
#: energy per inference from the device's own power sensor (docs/energy.md): (mean active - mean idle power) x
#: timed s / inferences, the median over repeats; the whole energy while timing; the mean powers; the sensor and
#: how it was read, or "not measured: <why>" (then the figures are empty, never zero); the rails; readings per second
ENERGY_COLUMNS = ["energy_mj_per_inference", "energy_total_mj", "power_active_w", "power_idle_w", "energy_method",
                  "energy_rails", "power_sampling_hz"]
#: heat (docs/heat.md): the hottest reading at the start and at the end of the timed loop (degrees C), the share of
#: it spent throttled, how each was read or "not measured: <why>"; the cooldown before the cell: seconds waited,
#: the temperature it reached, and whether it got below quiet.cooldown_below_c (False: timed hot, the cell is
#: noisy; empty: no cooldown set, or no temperature to cool by). The worst repeat of each.
HEAT_COLUMNS = ["temperature_start_c", "temperature_end_c", "throttled_share", "temperature_method", "throttle_method",
                "cooldown_wait_s", "cooldown_reached_c", "cooled"]
MEMORY_COLUMNS = ["peak_rss_bytes", "rss_increase_bytes", "baseline_rss_bytes"]
ARTIFACT_COLUMNS = ["artifact_size_bytes", "artifact_gzip_bytes", "artifact_sha256", "param_count", "macs",
                    "sparsity", "weight_rel_frobenius", "compression_s", "fidelity"]
RUNTIME_COLUMNS = ["runtime", "runtime_version", "precision", "python_version", "numpy_version", "agent_version",
                   # the runtime configuration's options (canonical JSON, '' for the runtime's defaults), what took
                   # effect (providers in effect / OpenVINO device), a fallback it made, where the nodes ran
                   # ("CPUExecutionProvider 8/8"), and whether this run found its compiled-model cache cold (empty:
                   # it compiled) or warm
                   "runtime_options", "effective_providers", "fallback", "placement", "compile_cache"]
TIME_COLUMNS = ["started_at", "duration_s"]
#: what was repaired on the way to the cell's result: a corrupted cache entry uploaded again, a compiled-model cache
#: rebuilt; and the agent's time checking the cached files' sha256 before loading them
STORAGE_COLUMNS = ["cache_repair", "verify_ms"]

COLUMNS: List[str] = (IDENTITY_COLUMNS + STATUS_COLUMNS + ACCURACY_COLUMNS + LATENCY_COLUMNS + NOISE_COLUMNS
                      + ENERGY_COLUMNS + HEAT_COLUMNS + MEMORY_COLUMNS + ARTIFACT_COLUMNS + RUNTIME_COLUMNS
                      + TIME_COLUMNS + STORAGE_COLUMNS)

#: columns printed at the end of a run
SUMMARY_COLUMNS = ["model", "variant", "format", "runtime_config", "target", "status", "primary_metric", "primary_value",
                   "primary_retention", "max_abs_diff", "output_snr_db", "latency_p50_ms", "latency_p99_ms",
                   "peak_rss_bytes", "artifact_size_bytes"]

#: a user metric's figures become metric_<name> and metric_<name>_retention columns
METRIC_PREFIX = "metric_"




def cell_id(model: str, variant: str, fmt: str, target: str, runtime_config: str = "") -> str:
    """model__variant__format__target; a configuration other than the runtime's default adds @name to the format
    (so a default configuration's cells keep their ids across resumed runs and history)."""
    fmt_part = f"{fmt}@{runtime_config}" if runtime_config else fmt
    return f"{model}__{variant}__{fmt_part}__{target}"


def agent_metrics(agent_result: Mapping[str, Any]) -> Dict[str, Any]:
    """Flatten the agent's JSON document (keys: harness.agent.agent.Doc) into result-row columns."""
    latency = agent_result.get(Doc.LATENCY) or {}
    row = {f"latency_{k}": latency.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms",
                                                    "min_ms", "max_ms")}
    # document keys that are row columns of the same name
    for key in (Doc.LOAD_MS, Doc.FIRST_INFERENCE_MS, Doc.WARMUP_ITERATIONS, Doc.TIMED_ITERATIONS, Doc.THREADS,
                Doc.BLOCK_SIZE, Doc.TIMED_S, Doc.LATENCY_CLOCK, Doc.PEAK_RSS_BYTES, Doc.RSS_INCREASE_BYTES,
                Doc.BASELINE_RSS_BYTES, Doc.RUNTIME, Doc.RUNTIME_VERSION, Doc.PRECISION, Doc.AGENT_VERSION,
                Doc.LOAD_COLD_MS, Doc.FIRST_INFERENCE_COLD_MS, Doc.LOAD_WARM_MS, Doc.FIRST_INFERENCE_WARM_MS,
                Doc.COMPILE_CACHE, Doc.FALLBACK, Doc.VERIFY_MS):
        row[key] = agent_result.get(key)
    row.update(first_use(agent_result))
    row["python_version"] = agent_result.get(Doc.PYTHON)
    row["numpy_version"] = agent_result.get(Doc.NUMPY)
    effective = agent_result.get(Doc.EFFECTIVE_CONFIG) or {}
    in_effect = effective.get("providers") or effective.get("EXECUTION_DEVICES") or effective.get("device") or \
        effective.get("delegate") or ("builtin" if "xnnpack" in effective else None)  # TFLite without a delegate
    row["effective_providers"] = ",".join(in_effect) if isinstance(in_effect, list) else in_effect
    row["placement"] = placement_text((agent_result.get(Doc.PROFILE) or {}).get("placement"))
    return row


def first_use(agent_result: Mapping[str, Any]) -> Dict[str, Optional[float]]:
    """first_use_cold_ms and first_use_warm_ms: the load and the first inference from an empty and from a filled
    compiled-model cache, summed; None where the cell kept no cache or a part is missing."""
    def total(load: Any, first: Any) -> Optional[float]:
        return float(load) + float(first) if load is not None and first is not None else None
    return {"first_use_cold_ms": total(agent_result.get(Doc.LOAD_COLD_MS),
                                       agent_result.get(Doc.FIRST_INFERENCE_COLD_MS)),
            "first_use_warm_ms": total(agent_result.get(Doc.LOAD_WARM_MS),
                                       agent_result.get(Doc.FIRST_INFERENCE_WARM_MS))}


def placement_text(placement: Optional[Mapping[str, int]]) -> Optional[str]:
    """{'CUDAExecutionProvider': 195, 'CPUExecutionProvider': 17} -> 'CUDAExecutionProvider 195/212,
    CPUExecutionProvider 17/212' (most nodes first)."""
    if not placement:
        return None
    total = sum(placement.values())
    return ", ".join(f"{k} {n}/{total}" for k, n in sorted(placement.items(), key=lambda kv: (-kv[1], kv[0])))


def is_column(name: str) -> bool:
    return name in COLUMNS or name.startswith(METRIC_PREFIX)


def make_row(**fields: Any) -> Dict[str, Any]:
    """A row with every column present (missing ones None) plus the user's metric_* figures; unknown keys are a bug."""
    unknown = {k for k in fields if not is_column(k)}
    if unknown:
        raise KeyError(f"not result columns: {sorted(unknown)}")
    row = {column: fields.get(column) for column in COLUMNS}
    row.update({k: v for k, v in fields.items() if k.startswith(METRIC_PREFIX)})
    return row


def results_frame(rows: Iterable[Mapping[str, Any]]):
    """The pandas table: the documented columns in order, then the user's metric_* columns."""
    import pandas as pd
    records = [make_row(**{k: v for k, v in r.items() if is_column(k)}) for r in rows]
    metric_columns = sorted({k for r in records for k in r if k.startswith(METRIC_PREFIX)})
    frame = pd.DataFrame(records, columns=COLUMNS + metric_columns)
    numeric = [c for c in COLUMNS if c.endswith(("_ms", "_bytes", "_s", "_db")) or c in (
        "accuracy", "top5_accuracy", "reference_accuracy", "accuracy_retention", "top1_agreement", "max_abs_diff",
        "cosine_similarity", "kl_divergence", "sparsity", "weight_rel_frobenius", "fidelity", "primary_value",
        "primary_retention", "latency_repeat_cv", "device_speed", "energy_mj_per_inference", "energy_total_mj",
        "power_active_w", "power_idle_w", "power_sampling_hz")] + metric_columns
    for column in numeric:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in ("n_eval_samples", "warmup_iterations", "timed_iterations", "threads", "param_count", "macs",
                   "block_size", "repeats", "remeasured"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    frame["noisy"] = frame["noisy"].map(lambda v: None if v is None or v != v else bool(v)).astype("boolean")
    return frame.sort_values(["model", "variant", "format", "runtime_config", "target"], kind="stable",
                             na_position="first").reset_index(drop=True)


def records(frame: Any) -> List[Dict[str, Any]]:
    """The rows of a results table (a DataFrame or a list of rows) as plain dicts."""
    if hasattr(frame, "to_dict"):
        return [dict(r) for r in frame.to_dict(orient="records")]
    return [dict(r) for r in frame]


#: failed cells a resume runs again: the device was busy (another run held its lock), stopped answering, or its
#: storage or this host's was full or read-only: not the model's doing
RERUN_ON_RESUME = frozenset({"device_busy", "device_timeout", "device_disk_full", "host_disk_full",
                             "device_storage_readonly"})


def needs_rerun(row: Mapping[str, Any]) -> bool:
    """A cell `harness run --resume` runs again: lost, or failed for a device or host reason (RERUN_ON_RESUME)."""
    return row.get("status") == LOST or (row.get("status") == FAILED and row.get("error_category") in RERUN_ON_RESUME)
