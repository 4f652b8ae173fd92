"""Why is my int8 model slower? One finding per quantized cell that is not faster than its float parent on the
same target and runtime configuration: the measured ratio, what its per-layer profile and its parent's say (which
operators ran integer kernels and which float, how many quantize/dequantize ops, each group's share of the time),
the CPU's int8 instructions from the device probe, and a next step. Pure functions over rows, profiles, probes and
the manifest."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

#: operators that only move values between int8 and float
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "FakeQuantize", "QUANTIZE",
                     "DEQUANTIZE"})
#: ONNX Runtime's integer kernels that do not start with 'QLinear' / 'Q'
_INTEGER_OPS = frozenset({"ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"})
#: layer types that only reshape or copy (neither integer nor float arithmetic)
_LAYOUT_OPS = frozenset({"Reshape", "RESHAPE", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity",
                         "Parameter", "Result", "Constant", "Input", "Output"})


def kernel_group(layer: Mapping[str, Any]) -> str:
    """'qdq', 'integer', 'float' or 'layout' for one profiled layer (ONNX Runtime node types; OpenVINO's
    execution type and precision)."""
    kind = str(layer.get("type") or "")
    if kind in QDQ_OPS:
        return "qdq"
    if kind in _LAYOUT_OPS:
        return "layout"
    precision = str(layer.get("precision") or "").lower()
    exec_type = str(layer.get("exec_type") or "")
    if precision in ("u8", "i8") or exec_type.upper().endswith("I8") or "_I8" in exec_type.upper():
        return "integer"
    if kind in _INTEGER_OPS or kind.startswith("QLinear") or kind in ("QGemm", "QAttention") \
            or (kind.startswith("Q") and kind[1:2].isupper()):
        return "integer"
    return "float"


def profile_groups(profile: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Per group: the operator types in it, how many layers, and their share of the profiled time (None when the
    runtime gives no per-layer times, as LiteRT)."""
    layers = list(profile.get("layers") or [])
    timed = bool(profile.get("timed"))
    total = sum(float(layer.get("time_ms") or 0.0) for layer in layers) if timed else 0.0
    groups: Dict[str, Dict[str, Any]] = {}
    for layer in layers:
        group = groups.setdefault(kernel_group(layer), {"types": [], "count": 0, "time_ms": 0.0})
        kind = str(layer.get("type") or "?")
        if kind not in group["types"]:
            group["types"].append(kind)
        group["count"] += 1
        group["time_ms"] += float(layer.get("time_ms") or 0.0)
    for group in groups.values():
        group["share"] = group["time_ms"] / total if total > 0 else None
    return groups


def _groups_text(groups: Mapping[str, Mapping[str, Any]]) -> str:
    words = {"integer": "ran integer kernels", "float": "ran float kernels", "qdq": "quantize/dequantize ops"}
    parts = []
    for key, word in words.items():
        group = groups.get(key) or {"count": 0, "types": [], "share": None}
        share = f", {group['share']:.0%} of the time" if group.get("share") is not None else ""
        types = f" ({', '.join(group['types'][:4])}{share})" if group["count"] else ""
        parts.append(f"{group['count']} {word}{types}")
    return ", ".join(parts)


def next_step(groups: Mapping[str, Mapping[str, Any]], cpu_flags: Optional[Sequence[str]], parent_ms: float) -> str:
    """One concrete thing to try, from what the profile and the CPU show."""
    share = lambda key: (groups.get(key) or {}).get("share") or 0.0  # noqa: E731
    if groups and share("qdq") >= 0.3:
        return ("most of its time converts between int8 and float: quantize the operators between the integer ones "
                "too (fewer float islands), or keep this model float on this target")
    if groups and share("float") > share("integer"):
        return ("its heavy operators still ran float kernels: check that this runtime has int8 kernels for them "
                "(the types above), or exclude them from quantization so no quantize/dequantize surrounds them")
    if cpu_flags is not None and not cpu_flags:
        return ("this CPU has no int8 dot-product instructions (VNNI, AMX, Arm dotprod/i8mm): int8 kernels cannot beat "
                "float ones here; profile on a target that has them, or keep float")
    if parent_ms < 0.1:
        return (f"the reference takes {parent_ms:.3f} ms: per-call overhead dominates and int8 cannot pay off at "
                "this size; compare at a larger batch (--input-shape) or keep float")
    return ("the int8 kernels themselves are slower here: try the runtime's other int8 format (QOperator vs QDQ, "
            "per-channel weights) or another runtime configuration, and compare profiles again")


def _quantized_variants(manifest: Mapping[str, Any]) -> Dict[Tuple[str, str], str]:
    """(model, variant) -> how it was quantized, from the build's artifacts."""
    out: Dict[Tuple[str, str], str] = {}
    for artifact in manifest.get("artifacts") or []:
        how = (artifact.get("metrics") or {}).get("quantization")
        if how and str(how) not in ("tflite_float16", "tflite_dynamic"):
            out[(str(artifact.get("model")), str(artifact.get("variant")))] = str(how)
    return out


def int8_slowdowns(rows: Sequence[Mapping[str, Any]], profiles: Mapping[str, Mapping[str, Any]],
                   devices: Mapping[str, Mapping[str, Any]], manifest: Mapping[str, Any]) -> List[str]:
    """One line per quantized cell whose median latency is not below its float parent's (the reference variant
    of the same model, format, runtime configuration and target)."""
    quantized = _quantized_variants(manifest)
    ok = [r for r in rows if r.get("status") == "ok" and r.get("latency_p50_ms")]
    parents = {(r.get("model"), r.get("format"), r.get("runtime_config"), r.get("target")): r
               for r in ok if r.get("variant") == "reference"}
    lines = []
    for row in ok:
        if (str(row.get("model")), str(row.get("variant"))) not in quantized:
            continue
        parent = parents.get((row.get("model"), row.get("format"), row.get("runtime_config"), row.get("target")))
        if parent is None:
            continue
        ratio = float(row["latency_p50_ms"]) / float(parent["latency_p50_ms"])
        if ratio < 1.0:
            continue
        groups = profile_groups(profiles.get(str(row.get("cell_id"))) or {})
        parent_groups = profile_groups(profiles.get(str(parent.get("cell_id"))) or {})
        probe = devices.get(str(row.get("target"))) or {}
        flags = probe.get("cpu_int8_flags")
        cpu = ("the CPU's int8 instructions: " + (", ".join(flags) if flags else "none")) if flags is not None \
            else "the CPU's int8 instructions: not reported by this agent"
        what = f"{row.get('model')}/{row.get('variant')}/{row.get('format')} on {row.get('target')}"
        profile_text = (f"its profile: {_groups_text(groups)}" if groups else "no per-layer profile of it") + \
            (f"; the reference's: {_groups_text(parent_groups)}" if parent_groups else "")
        lines.append(f"{what} is not faster than the reference it was quantized from: {ratio:.2f}x its p50 "
                     f"({float(row['latency_p50_ms']):.3f} vs {float(parent['latency_p50_ms']):.3f} ms); "
                     f"{profile_text}; {cpu}. Next: {next_step(groups, flags, float(parent['latency_p50_ms']))}")
    return lines
