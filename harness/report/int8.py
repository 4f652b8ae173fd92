"""Why is my int8 model slower? One finding per quantized cell that is not faster than its float parent on the
same target and runtime configuration beyond noise: the measured ratio and how it was judged, what its per-layer
profile and its parent's say (which operators ran integer kernels and which float, how many quantize/dequantize ops,
each group's share of the time) or, without a profile, the operators its file holds and what is missing, the CPU's
int8 instructions from the device probe, and a next step (harness.report.int8_next: the alternative variant to run,
or how the ones in the run compared). Pure functions over rows, latency samples, profiles, probes and the
manifest."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

#: operators that only move values between int8 and float
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "FakeQuantize", "QUANTIZE",
                     "DEQUANTIZE"})
#: ONNX Runtime's integer kernels that do not start with 'QLinear' / 'Q'
_INTEGER_OPS = frozenset({"ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"})
#: layer types that only reshape or copy (neither integer nor float arithmetic)
_LAYOUT_OPS = frozenset({"Reshape", "RESHAPE", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity",
                         "Parameter", "Result", "Constant", "Input", "Output"})


@dataclass(frozen=True)
class Int8Finding:
    """One quantized cell not faster than its float parent: `what` (model/variant/format on target), the p50
    ratio, 'slower' or 'no faster', and the whole finding as one text (summary.md, the report, the gate)."""

    what: str
    ratio: float
    verdict: str
    text: str

    def short(self) -> str:
        """'digits_cnn/ort_int8/onnx on pi4 1.56x': the first screen's form."""
        return f"{self.what} {self.ratio:.2f}x"


def section_html(found: Sequence[Int8Finding]) -> str:
    """The report's section of these findings, each in full."""
    from harness.report.elements import esc
    if not found:
        return "<p>Every quantized cell that ran was faster than the reference it was quantized from.</p>"
    return ("<p>Each quantized cell not faster than its float reference (same format, runtime configuration and "
            "target) beyond noise: the ratio, what its profile or file shows, the CPU's int8 instructions and "
            "what to run next.</p><ul>" + "".join(f"<li>{esc(f.text)}</li>" for f in found) + "</ul>")


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


def _groups_text(groups: Mapping[str, Mapping[str, Any]], ran: bool = True) -> str:
    words = {"integer": "ran integer kernels", "float": "ran float kernels", "qdq": "quantize/dequantize ops"} \
        if ran else {"integer": "integer operators", "float": "float operators", "qdq": "quantize/dequantize ops"}
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


def _artifacts(manifest: Mapping[str, Any]) -> Dict[Tuple[str, str, str], Mapping[str, Any]]:
    return {(str(a.get("model")), str(a.get("variant")), str(a.get("format"))): a
            for a in manifest.get("artifacts") or []}


def _quantized_variants(manifest: Mapping[str, Any]) -> Dict[Tuple[str, str], Mapping[str, Any]]:
    """(model, variant) -> its compressor's metrics (quantization, quantization_settings, alternatives, ...)."""
    out: Dict[Tuple[str, str], Mapping[str, Any]] = {}
    for artifact in manifest.get("artifacts") or []:
        metrics = artifact.get("metrics") or {}
        how = metrics.get("quantization")
        if how and str(how) not in ("tflite_float16", "tflite_dynamic"):
            out[(str(artifact.get("model")), str(artifact.get("variant")))] = metrics
    return out


def file_groups(operators: Mapping[str, int]) -> Dict[str, Dict[str, Any]]:
    """Kernel groups from the operators a file holds (the artifact's inspection), without times: what a cell
    that has no per-layer profile still shows. A QDQ file's Conv counts as float here: whether the runtime fuses
    it into an integer kernel is only in a profile."""
    groups: Dict[str, Dict[str, Any]] = {}
    for kind, count in sorted(operators.items(), key=lambda item: -int(item[1])):
        group = groups.setdefault(kernel_group({"type": kind}), {"types": [], "count": 0, "time_ms": 0.0,
                                                                  "share": None, "from_file": True})
        group["types"].append(kind)
        group["count"] += int(count)
    return groups


def speed_verdict(parent_samples: Any, samples: Any) -> Tuple[str, str]:
    """('faster' | 'no faster' | 'slower', how it was judged) of a quantized cell against its parent: beyond the
    measured noise (harness.judge.regression.compare_latency: the 95 % interval of the change in median) where
    both cells kept latency samples; on the p50 alone where they did not."""
    from harness.judge.regression import compare_latency

    if parent_samples is None or samples is None:
        return "", "no latency samples: judged on the p50 alone"
    judged = compare_latency(parent_samples, samples)
    if not judged.judged:
        return "", "too few latency samples to judge the noise: judged on the p50 alone"
    interval = f"{judged.relative_change:+.0%}, 95% CI {judged.ci_low:+.0%}..{judged.ci_high:+.0%}, " \
        f"noise: {judged.noise_source}"
    if judged.ci_high < 0:
        return "faster", f"beyond noise ({interval})"
    if judged.ci_low > 0:
        return "slower", f"beyond noise ({interval})"
    return "no faster", f"within noise ({interval})"


def _cpu_text(probe: Mapping[str, Any]) -> str:
    flags = probe.get("cpu_int8_flags")
    if flags is None:
        return "the CPU's int8 instructions: not reported by this agent"
    machine = f" ({probe['machine']})" if probe.get("machine") else ""
    return f"the CPU's int8 instructions{machine}: " + (", ".join(flags) if flags else "none")


def _evidence(profile: Mapping[str, Any], parent_profile: Mapping[str, Any],
              artifact: Mapping[str, Any]) -> Tuple[Dict[str, Dict[str, Any]], str]:
    """The cell's kernel groups and the words for them: from its per-layer profile where it has one with
    times; its layers without times (LiteRT); else the operators its file holds."""
    groups = profile_groups(profile) if profile.get("layers") else {}
    parent = profile_groups(parent_profile) if parent_profile.get("layers") else {}
    theirs = f"; the reference's: {_groups_text(parent)}" if parent else ""
    if groups and profile.get("timed"):
        return groups, f"its profile: {_groups_text(groups)}{theirs}"
    if groups:
        return groups, f"its profile: {_groups_text(groups)}{theirs}; no per-layer times: the time shares are unknown"
    operators = artifact.get("operators") or {}
    if operators:
        groups = file_groups(operators)
        return groups, (f"no per-layer profile of it (the probe and its file only): its file holds "
                        f"{_groups_text(groups, ran=False)}; missing: which operators the runtime fused into integer "
                        "kernels, and no per-layer times: the time shares are unknown")
    return {}, "no per-layer profile of it and no operator list: which operators ran int8 is unknown"


def int8_slowdowns(rows: Sequence[Mapping[str, Any]], profiles: Mapping[str, Mapping[str, Any]],
                   devices: Mapping[str, Mapping[str, Any]], manifest: Mapping[str, Any],
                   samples: Optional[Mapping[str, Any]] = None) -> List[Int8Finding]:
    """One line per quantized cell whose latency is not below its float parent's (the reference variant of the
    same model, format, runtime configuration and target) beyond noise; `samples`: latency samples by cell_id
    (RunResults.latency_samples), without which the p50s decide."""
    from harness.report.int8_next import declared_alternatives, next_step_text

    samples = samples or {}
    quantized = _quantized_variants(manifest)
    artifacts = _artifacts(manifest)
    ok = [r for r in rows if r.get("status") == "ok" and r.get("latency_p50_ms")]
    place = lambda r: (r.get("model"), r.get("format"), r.get("runtime_config"), r.get("target"))  # noqa: E731
    parents = {place(r): r for r in ok if r.get("variant") == "reference"}
    lines = []
    for row in ok:
        model, variant = str(row.get("model")), str(row.get("variant"))
        metrics = quantized.get((model, variant))
        parent = parents.get(place(row))
        if metrics is None or parent is None:
            continue
        parent_ms, ms = float(parent["latency_p50_ms"]), float(row["latency_p50_ms"])
        ratio = ms / parent_ms
        verdict, judged = speed_verdict(samples.get(str(parent.get("cell_id"))), samples.get(str(row.get("cell_id"))))
        if verdict == "faster" or (not verdict and ratio < 1.0):
            continue
        verdict = verdict or ("slower" if ratio > 1.0 else "no faster")
        probe = devices.get(str(row.get("target"))) or {}
        artifact = artifacts.get((model, variant, str(row.get("format")))) or {}
        groups, evidence = _evidence(profiles.get(str(row.get("cell_id"))) or {},
                                     profiles.get(str(parent.get("cell_id"))) or {}, artifact)
        by_variant = {v: m for (mo, v), m in quantized.items() if mo == model}
        family = declared_alternatives(by_variant, variant)
        others = [r for r in ok if place(r) == place(row) and r.get("variant") in family and r is not row]
        alternatives = {name: {} for name in family[:1]}
        alternatives.update((by_variant.get(family[0]) or {}).get("alternatives") or {})
        fallback = next_step(groups if any(g.get("share") is not None for g in groups.values()) else {},
                             probe.get("cpu_int8_flags"), parent_ms)
        step = next_step_text(row, metrics.get("quantization_settings") or {}, family[0], alternatives, groups,
                              probe, others, parent_ms, fallback)
        what = f"{model}/{variant}/{row.get('format')} on {row.get('target')}"
        headline = "is not faster than the reference it was quantized from " + \
            ("(slower)" if verdict == "slower" else "(no faster: quantization gained nothing)")
        # a cell timed on a busy device is not judged by the gate: the finding stands, with that caveat first
        busy = " (timed on a busy device: re-run on a quiet one to confirm)" if any(
            str(r.get("noisy")) == "True" for r in (row, parent)) else ""
        lines.append(Int8Finding(what, ratio, verdict, f"{what} {headline}{busy}: {ratio:.2f}x its p50 ({ms:.3f} "
                                 f"vs {parent_ms:.3f} ms), {judged}; {evidence}; {_cpu_text(probe)}. Next: {step}"))
    return lines
