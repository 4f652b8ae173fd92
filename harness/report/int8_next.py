"""The next step of an int8 finding (harness.report.int8): which other setting of the same quantizer to run, chosen
from the evidence (its settings, what its profile or file shows, the CPU's int8 instructions), named as a variant
the user can put next to the first attempt; or, where alternatives ran in the same run, how they compared. Pure
functions over the finding's data."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

#: the heavy operators an int8 quantizer exists for: when they still run float kernels, quantization missed them
HEAVY_OPS = frozenset({"Conv", "MatMul", "Gemm", "ConvTranspose", "Convolution", "FullyConnected",
                       "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"})
_X86_INT8 = frozenset({"vnni", "avx512_vnni", "avx_vnni", "amx_int8"})
_ARM_INT8 = frozenset({"asimddp", "i8mm"})


def is_x86(probe: Mapping[str, Any]) -> bool:
    machine = str(probe.get("machine") or "").lower()
    flags = set(probe.get("cpu_int8_flags") or ())
    return machine in ("x86_64", "amd64", "i686") or bool(flags & _X86_INT8)


def _share(groups: Mapping[str, Mapping[str, Any]], key: str) -> Optional[float]:
    return (groups.get(key) or {}).get("share")


def _pick(alternatives: Mapping[str, Mapping[str, Any]], **want: Any) -> Optional[str]:
    """The declared alternative whose parameters include `want` (e.g. activation_type='uint8')."""
    for name, params in alternatives.items():
        if all(params.get(k) == v for k, v in want.items()):
            return name
    return None


def choose_alternative(settings: Mapping[str, Any], alternatives: Mapping[str, Mapping[str, Any]],
                       groups: Mapping[str, Mapping[str, Any]], probe: Mapping[str, Any]) -> Optional[Dict[str, str]]:
    """{'variant': name, 'why': reason} for the alternative the evidence points to, or None when the recipe
    declares none that fits. `settings`: the cell's quantization_settings (format, activations, per_channel,
    kept_float for ONNX Runtime; preset for OpenVINO); `groups`: kernel groups from a profile or the file."""
    flags = probe.get("cpu_int8_flags")
    # A file's float operators (a QDQ file's Conv) are not evidence of float kernels: only a profile says that.
    profiled = not any(g.get("from_file") for g in groups.values())
    float_types = [t for t in (groups.get("float") or {}).get("types", [])] if profiled else []
    heavy_float = [t for t in float_types if t in HEAVY_OPS]
    qdq_share, float_share = _share(groups, "qdq"), _share(groups, "float")
    integer_share = _share(groups, "integer") or 0.0
    if "preset" in settings:  # OpenVINO / NNCF
        name = _pick(alternatives, preset="mixed") if settings.get("preset") != "mixed" else None
        if name:
            return {"variant": name, "why": "NNCF's mixed preset quantizes activations asymmetrically (a zero "
                    "point), which fits activations that are not centred on zero (after ReLU/SiLU) and may let more "
                    "of the graph run int8 kernels"}
        return None
    if settings.get("activations") == "int8" and is_x86(probe):
        name = _pick(alternatives, activation_type="uint8")
        if name:
            seen = f"its {', '.join(heavy_float)} ran float kernels between quantize/dequantize ops; " if heavy_float \
                else ""
            vnni = "VNNI" if set(flags or ()) & _X86_INT8 else "x86"
            return {"variant": name, "why": f"{seen}ONNX Runtime's {vnni} int8 kernels take uint8 activations with "
                    "int8 weights (its recommended x86 combination)"}
    if float_types and settings.get("kept_float") is None and \
            ((float_share or 0.0) > integer_share or (float_share is None and heavy_float)):
        name = _pick(alternatives, keep_float=True)
        if name:
            return {"variant": name, "why": f"{', '.join(float_types[:5])} still ran float kernels: that variant "
                    "leaves the operator types ONNX Runtime runs float anyway out of quantization, so no "
                    "quantize/dequantize pair surrounds them"}
    many_qdq = (qdq_share is not None and qdq_share >= 0.3) or \
        (qdq_share is None and (groups.get("qdq") or {}).get("count", 0) > (groups.get("integer") or {}).get("count", 0))
    # QOperator cannot re-quantize a graph that already holds Q/DQ pairs (ort_quant refuses it): not a next step
    if many_qdq and settings.get("format") == "qdq" and not settings.get("source_quantized"):
        name = _pick(alternatives, quant_format="qoperator")
        if name:
            return {"variant": name, "why": "much of it converts between int8 and float: the QOperator format puts "
                    "integer operators (QLinearConv, ...) in the file instead of quantize/dequantize pairs"}
    if settings.get("per_channel"):
        name = _pick(alternatives, per_channel=False)
        if name:
            return {"variant": name, "why": "one scale per weight tensor instead of per output channel: simpler "
                    "kernels that some runtimes and CPUs run faster"}
    return None


def precision_hint(settings: Mapping[str, Any]) -> str:
    """For OpenVINO: the runtime configuration that rules out a float reference computed in bf16/f16."""
    if "preset" not in settings:
        return ""
    return (" Also compare under a runtime configuration with `precision: f32` (INFERENCE_PRECISION_HINT): OpenVINO "
            "may run the float reference in bf16 on CPUs that have it, which int8 then has to beat")


def compared_alternatives(row: Mapping[str, Any], others: Sequence[Mapping[str, Any]],
                          parent_ms: float) -> str:
    """How the other settings of the same quantizer that ran in this run compare with this cell."""
    ms = float(row["latency_p50_ms"])
    timed = sorted((float(o["latency_p50_ms"]), str(o["variant"])) for o in others if o.get("latency_p50_ms"))
    if not timed:
        return ""
    best_ms, best = timed[0]
    if best_ms < ms:
        against = f"{parent_ms / best_ms:.2f}x faster than" if best_ms < parent_ms else \
            f"still {best_ms / parent_ms:.2f}x the p50 of"
        return (f"in this run {best} ran {ms / best_ms:.2f}x faster than {row.get('variant')} ({best_ms:.3f} vs "
                f"{ms:.3f} ms), {against} the reference")
    listed = ", ".join(f"{name} {value:.3f} ms" for value, name in timed)
    return f"in this run no other setting was faster than {row.get('variant')} ({listed})"


def command(first: str, alternative: str) -> str:
    return f"`--variants {first},{alternative}`"


def next_step_text(row: Mapping[str, Any], settings: Mapping[str, Any], first: str,
                   alternatives: Mapping[str, Mapping[str, Any]], groups: Mapping[str, Mapping[str, Any]],
                   probe: Mapping[str, Any], others: Sequence[Mapping[str, Any]], parent_ms: float,
                   fallback: str) -> str:
    """The finding's 'Next:' text: the alternatives that ran, compared; else the alternative to run, as the
    --variants value to paste; else `fallback` (the general advice)."""
    ran = compared_alternatives(row, others, parent_ms)
    hint = precision_hint(settings)
    chosen = choose_alternative(settings, {n: p for n, p in alternatives.items() if n != row.get("variant")},
                                groups, probe)
    ran_names = {str(o.get("variant")) for o in others}
    if chosen and chosen["variant"] not in ran_names:
        suggestion = f"run {chosen['variant']} next to it, {command(first, chosen['variant'])}: {chosen['why']}"
        return (f"{ran}; {suggestion}" if ran else suggestion) + "." + hint
    if ran:
        return ran + "." + hint
    return fallback + hint


def declared_alternatives(metrics_by_variant: Mapping[str, Mapping[str, Any]], variant: str) -> List[str]:
    """The first attempt `variant` belongs to and every variant of it (first attempt included)."""
    first = str((metrics_by_variant.get(variant) or {}).get("alternative_of") or variant)
    names = [first] + list((metrics_by_variant.get(first) or {}).get("alternatives") or {})
    return names
