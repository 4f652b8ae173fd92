"""The rest of issue 31, "Why is my int8 model slower?": the other settings of the int8 quantizers are variants
(ort_int8_u8, ort_int8_qoperator, ort_int8_per_tensor, ort_int8_keep_float, ov_int8_mixed) that run next to the first
attempt in one table; the finding judges 'not faster' beyond the cells' measured noise, names the alternative its
evidence points to (or compares the ones that ran), and works from the probe and the file's operators where no
per-layer profile exists; an ONNX source with quantized operators is named a re-quantization. The done-when: a real
detector built here, profiled through the CLI with --variants all and the alternatives."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest

import real_files
from helpers import ROOT, rows_by_variant_format, the_run_dir

from harness.core.errors import ConfigError
from harness.judge.regression import compare_latency
from harness.report.int8 import int8_slowdowns

ORT_VARIANTS = ("ort_int8", "ort_int8_u8", "ort_int8_qoperator", "ort_int8_per_tensor", "ort_int8_keep_float")


def _cli(tmp_path: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HARNESS_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args, "--reports-dir", str(tmp_path / "reports"),
                           "--warmup", "5", "--iterations", "50", "--min-duration", "0.5"], capture_output=True,
                          text=True, cwd=ROOT, timeout=900, env=env)


def _samples(run: Path, cell_id: str) -> np.ndarray:
    return np.asarray(json.loads((run / "cells" / f"{cell_id}.json").read_text())["latencies_ms"])


def _findings(run: Path) -> List[str]:
    return [ln for ln in (run / "summary.md").read_text().splitlines() if "is not faster than the reference" in ln]


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detector")
    return real_files.yolo_like_onnx(folder / "det.onnx"), folder / "cache"


@pytest.fixture(scope="module")
def detector_run(tmp_path_factory, detector):
    """--variants all with every alternative, on the local target, per-layer profiles on."""
    model, cache = detector
    tmp_path = tmp_path_factory.mktemp("detector-run")
    result = _cli(tmp_path, cache, "profile", "--model-file", str(model), "--variants", "all,int8_alternatives",
                  "--formats", "onnx,openvino")
    assert result.returncode == 0, result.stderr[-4000:]
    return result, the_run_dir(tmp_path)


# ---------------------------------------------------------------- the done-when, on a real detector
@pytest.mark.slow
def test_every_int8_cell_of_a_detector_not_faster_beyond_noise_has_the_finding(detector_run):
    _, run = detector_run
    rows, findings = rows_by_variant_format(run), _findings(run)
    probe = json.loads((run / "devices" / "local.json").read_text())
    quantized = [(v, "onnx") for v in ORT_VARIANTS] + [("ov_int8", "openvino"), ("ov_int8_mixed", "openvino")]
    explained = 0
    for variant, fmt in quantized:
        row, parent = rows[(variant, fmt)], rows[("reference", fmt)]
        assert row["status"] == "ok", row
        judged = compare_latency(_samples(run, parent["cell_id"]), _samples(run, row["cell_id"]))
        said = [ln for ln in findings if ln.startswith(f"- det/{variant}/{fmt} on local is not faster")]
        if judged.ci_high < 0:  # clearly faster: nothing to explain
            assert not said, said
            continue
        assert len(said) == 1, (variant, judged.describe(), findings)
        line = said[0]
        ratio = row["latency_p50_ms"] / parent["latency_p50_ms"]
        assert f"{ratio:.2f}x its p50" in line and ("beyond noise" in line or "within noise" in line), line
        assert "ran integer kernels" in line and "quantize/dequantize ops" in line and "the reference's:" in line
        assert f"the CPU's int8 instructions (x86_64): {', '.join(probe['cpu_int8_flags']) or 'none'}" in line \
            or probe.get("machine") != "x86_64", line
        assert "Next: " in line
        explained += 1
    # On this CPU (AVX512-VNNI) ONNX Runtime fuses no int8-activation convolution of a QDQ file: ort_int8 ran its
    # convolutions float between quantize/dequantize ops, so at least that cell is not faster.
    assert explained >= 1, findings


@pytest.mark.slow
def test_the_gate_text_carries_every_int8_finding_of_the_summary(detector_run, tmp_path):
    _, run = detector_run
    findings = _findings(run)
    assert findings
    gate = subprocess.run([sys.executable, "-m", "harness.cli", "gate", "--run", run.name, "--reports-dir",
                           str(run.parent), "--policy", str(ROOT / "policies" / "default.yaml"), "--db",
                           str(tmp_path / "history.db"), "--junit", str(tmp_path / "gate.xml"), "--no-record"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert gate.returncode in (0, 1), gate.stderr
    for line in findings:
        assert f"  note: {line[2:]}" in gate.stdout, gate.stdout


@pytest.mark.slow
def test_the_alternatives_land_in_the_same_table_each_a_different_file(detector_run):
    result, run = detector_run
    rows = rows_by_variant_format(run)
    shas = {v: rows[(v, "onnx")]["artifact_sha256"] for v in ORT_VARIANTS}
    assert len(set(shas.values())) == len(ORT_VARIANTS), shas
    assert rows[("ov_int8", "openvino")]["artifact_sha256"] != rows[("ov_int8_mixed", "openvino")]["artifact_sha256"]
    table = result.stdout
    assert all(name in table for name in ORT_VARIANTS + ("ov_int8_mixed",)), table
    manifest = json.loads((run / "manifest.json").read_text())
    metrics = {a["variant"]: a["metrics"] for a in manifest["artifacts"] if a["format"] in ("onnx", "openvino")}
    assert metrics["ort_int8_u8"]["quantization_settings"]["activations"] == "uint8"
    assert metrics["ort_int8_qoperator"]["quantization"] == "ort_qoperator_int8"
    assert metrics["ort_int8_per_tensor"]["quantization_settings"]["per_channel"] is False
    assert isinstance(metrics["ort_int8_keep_float"]["quantization_settings"]["kept_float"], list)
    assert metrics["ov_int8_mixed"]["quantization_settings"] == {"preset": "mixed"}
    assert sorted(metrics["ort_int8"]["alternatives"]) == sorted(ORT_VARIANTS[1:])


@pytest.mark.slow
def test_a_finding_compares_the_alternatives_that_ran_instead_of_suggesting_one(detector_run):
    _, run = detector_run
    rows = rows_by_variant_format(run)
    (line,) = [ln for ln in _findings(run) if "det/ort_int8/onnx" in ln] or [""]
    if not line:
        pytest.skip("ort_int8 was faster than the reference on this CPU")
    best = min(ORT_VARIANTS[1:], key=lambda v: rows[(v, "onnx")]["latency_p50_ms"])
    if rows[(best, "onnx")]["latency_p50_ms"] < rows[("ort_int8", "onnx")]["latency_p50_ms"]:
        assert f"Next: in this run {best} ran" in line and "faster than ort_int8" in line, line
    else:
        assert "in this run no other setting was faster than ort_int8" in line, line
    assert "`--variants" not in line  # nothing left to suggest: the alternative already ran


@pytest.mark.slow
def test_without_per_layer_profiles_the_probe_and_the_file_give_the_finding(tmp_path, detector):
    model, cache = detector
    result = _cli(tmp_path, cache, "profile", "--model-file", str(model), "--variants", "all", "--formats", "onnx",
                  "--no-profile")
    assert result.returncode == 0, result.stderr[-4000:]
    run = the_run_dir(tmp_path)
    rows = rows_by_variant_format(run)
    assert ("ort_int8_u8", "onnx") not in rows  # 'all' is the first attempts only
    row, parent = rows[("ort_int8", "onnx")], rows[("reference", "onnx")]
    judged = compare_latency(_samples(run, parent["cell_id"]), _samples(run, row["cell_id"]))
    said = [ln for ln in _findings(run) if "det/ort_int8/onnx" in ln]
    if judged.ci_high < 0:
        assert not said
        pytest.skip("ort_int8 was faster than the reference on this CPU")
    (line,) = said
    assert "no per-layer profile of it (the probe and its file only)" in line
    assert "QuantizeLinear" in line and "DequantizeLinear" in line and "quantize/dequantize ops" in line
    assert "time shares are unknown" in line and "the CPU's int8 instructions" in line
    probe = json.loads((run / "devices" / "local.json").read_text())
    if probe.get("machine") == "x86_64":  # int8 activations on x86: ONNX Runtime's own advice is uint8
        assert "Next: run ort_int8_u8 next to it, `--variants ort_int8,ort_int8_u8`" in line, line


@pytest.mark.slow
def test_an_onnx_source_with_quantized_operators_is_named_a_requantization(tmp_path, detector_run, detector):
    _, run = detector_run
    _, cache = detector
    manifest = json.loads((run / "manifest.json").read_text())
    (quantized,) = [a["path"] for a in manifest["artifacts"] if a["variant"] == "ort_int8" and a["format"] == "onnx"]
    source = tmp_path / "det_int8.onnx"
    source.write_bytes(Path(quantized).read_bytes())
    result = _cli(tmp_path, cache, "profile", "--model-file", str(source), "--variants", "ort_int8",
                  "--formats", "onnx", "--no-profile")
    assert result.returncode == 0, result.stderr[-4000:]
    said = [ln for ln in result.stderr.splitlines() if "det_int8/ort_int8: re-quantization" in ln]
    assert len(said) == 1 and "(its graph has" in said[0] and "QuantizeLinear" in said[0], result.stderr[-3000:]
    assert "re-quantization: ort_int8 quantizes an already-quantized source" in \
        (the_run_dir(tmp_path) / "summary.md").read_text()


# ---------------------------------------------------------------- variant names
def _file_recipe(fmt: str = "onnx"):
    from harness.prepare.recipes import recipe_for_file
    return recipe_for_file(Path("/nonexistent/det.onnx"), fmt)


def test_all_is_the_first_attempts_and_int8_alternatives_adds_the_other_settings():
    from harness.commands.profile import resolve_variants
    recipe = _file_recipe()
    assert resolve_variants([recipe], "all") == {recipe.name: ["ort_int8", "ov_int8"]}
    assert resolve_variants([recipe], "all,ort_int8_u8") == {recipe.name: ["ort_int8", "ov_int8", "ort_int8_u8"]}
    assert resolve_variants([recipe], "int8_alternatives")[recipe.name] == list(ORT_VARIANTS[1:]) + ["ov_int8_mixed"]
    with pytest.raises(ConfigError, match=r"no variant\(s\) \['ort_int8_s4'\] declared; declared: ort_int8, "
                                          r"ov_int8; alternatives \('int8_alternatives'\): ort_int8_u8, "):
        resolve_variants([recipe], "ort_int8_s4")


def test_an_alternative_of_a_variant_the_recipe_lacks_is_refused_when_it_loads():
    import dataclasses

    from harness.schema.recipes import VariantSpec
    recipe = _file_recipe()
    with pytest.raises(ConfigError, match=r"field 'variants\[1\].alternative_of'.*'ort_int9' is not a first-attempt"):
        dataclasses.replace(recipe, variants=(VariantSpec("ort_int8", "ort_int8"),
                                              VariantSpec("u8", "ort_int8", {"activation_type": "uint8"},
                                                          alternative_of="ort_int9")))


def test_a_bad_setting_of_an_alternative_is_one_line_naming_the_choices():
    from harness.prepare.compress import COMPRESSORS, CompressionContext
    ctx = CompressionContext(_file_recipe(), "onnx", Path("/nonexistent/det.onnx"), None)
    with pytest.raises(ConfigError, match="ort_int8 quant_format must be one of qdq, qoperator, got 'qop'"):
        COMPRESSORS.get("ort_int8")(ctx, {"quant_format": "qop"}, Path("/nonexistent"))


# ---------------------------------------------------------------- the finding, pure
ORT_ALTS = {"ort_int8_u8": {"activation_type": "uint8"}, "ort_int8_qoperator": {"quant_format": "qoperator"},
            "ort_int8_per_tensor": {"per_channel": False}, "ort_int8_keep_float": {"keep_float": True}}
S8_QDQ = {"format": "qdq", "activations": "int8", "weights": "int8", "per_channel": True, "kept_float": None}


def _run(int8_ms, probe, settings=S8_QDQ, samples=None, profiled=True, extra_rows=(), variant="ort_int8"):
    rows = [{"cell_id": "ref", "model": "m", "variant": "reference", "format": "onnx", "runtime_config": "onnx",
             "target": "t", "status": "ok", "latency_p50_ms": 2.0},
            {"cell_id": "q", "model": "m", "variant": variant, "format": "onnx", "runtime_config": "onnx",
             "target": "t", "status": "ok", "latency_p50_ms": int8_ms}, *extra_rows]
    layers = [{"type": "QuantizeLinear", "time_ms": 0.2}, {"type": "Conv", "time_ms": 1.5},
              {"type": "DequantizeLinear", "time_ms": 0.3}, {"type": "QLinearConv", "time_ms": 0.4}]
    profiles = {"q": {"timed": True, "layers": layers}} if profiled else {}
    metrics = {"quantization": "ort_qdq_int8", "quantization_settings": settings, "alternatives": ORT_ALTS}
    manifest = {"artifacts": [
        {"model": "m", "variant": variant, "format": "onnx", "metrics": metrics,
         "operators": {"QuantizeLinear": 7, "DequantizeLinear": 9, "Conv": 3, "Concat": 1}},
        *({"model": "m", "variant": r["variant"], "format": "onnx",
           "metrics": {"quantization": "ort_qdq_int8", "alternative_of": "ort_int8"}} for r in extra_rows)]}
    return [f.text for f in int8_slowdowns(rows, profiles, {"t": probe}, manifest, samples)]


X86 = {"machine": "x86_64", "cpu_int8_flags": ["avx512_vnni"]}
ARM = {"machine": "aarch64", "cpu_int8_flags": ["asimddp"]}


def _latencies(median_ms: float, spread: float, n: int = 200, seed: int = 0) -> np.ndarray:
    return median_ms * np.exp(np.random.default_rng(seed).normal(0.0, spread, n))


def test_not_faster_means_not_below_the_reference_beyond_its_noise():
    reference = _latencies(2.0, 0.05, seed=1)
    # 2 % faster at the median, within the noise: a finding (quantization gained nothing)
    (line,) = _run(1.96, X86, samples={"ref": reference, "q": _latencies(1.96, 0.05, seed=2)})
    assert "(no faster: quantization gained nothing): 0.98x its p50" in line and "within noise (" in line
    # clearly faster: nothing to say; clearly slower: 'slower', beyond noise
    assert _run(1.2, X86, samples={"ref": reference, "q": _latencies(1.2, 0.05, seed=2)}) == []
    (slower,) = _run(3.0, X86, samples={"ref": reference, "q": _latencies(3.0, 0.05, seed=2)})
    assert "(slower): 1.50x its p50" in slower and "beyond noise (+" in slower
    # no samples kept: the p50 alone decides, and the finding says so
    (alone,) = _run(2.1, X86)
    assert "no latency samples: judged on the p50 alone" in alone
    assert _run(1.9, X86) == []


def test_the_next_step_names_the_alternative_the_evidence_points_to_as_a_command():
    (x86,) = _run(3.0, X86)
    assert "Next: run ort_int8_u8 next to it, `--variants ort_int8,ort_int8_u8`: its Conv ran float kernels" in x86
    # on Arm int8 activations are what the kernels take; Conv still ran float: keep the fallbacks float
    (arm,) = _run(3.0, ARM)
    assert "Next: run ort_int8_keep_float next to it, `--variants ort_int8,ort_int8_keep_float`: Conv still ran" in arm
    # u8 activations already, per-layer shares unknown, many quantize/dequantize ops in the file: QOperator
    u8 = {**S8_QDQ, "activations": "uint8"}
    (file_only,) = _run(3.0, ARM, settings=u8, profiled=False)
    assert "`--variants ort_int8,ort_int8_qoperator`" in file_only and "the time shares are unknown" in file_only
    # a source that was quantized already: QOperator cannot re-quantize it (ort_quant refuses), so not that
    (requantized,) = _run(3.0, ARM, settings={**u8, "source_quantized": True}, profiled=False)
    assert "ort_int8_qoperator" not in requantized and "`--variants ort_int8,ort_int8_per_tensor`" in requantized


def test_an_alternative_that_ran_is_compared_instead_of_suggested():
    u8_row = {"cell_id": "u8", "model": "m", "variant": "ort_int8_u8", "format": "onnx", "runtime_config": "onnx",
              "target": "t", "status": "ok", "latency_p50_ms": 1.0}
    (line,) = _run(3.0, X86, extra_rows=[u8_row])
    assert "Next: in this run ort_int8_u8 ran 3.00x faster than ort_int8 (1.000 vs 3.000 ms), 2.00x faster than " \
           "the reference." in line and "`--variants" not in line


def test_without_a_profile_the_file_and_the_probe_say_what_they_can_and_what_is_missing():
    (line,) = _run(3.0, X86, profiled=False)
    assert "no per-layer profile of it (the probe and its file only): its file holds 0 integer operators, " \
           "4 float operators (Conv, Concat), 16 quantize/dequantize ops (DequantizeLinear, QuantizeLinear)" in line
    assert "the time shares are unknown" in line and "the CPU's int8 instructions (x86_64): avx512_vnni" in line
    assert "its Conv ran float kernels" not in line  # a QDQ file's Conv says nothing about the kernel that ran


def test_openvino_names_the_mixed_preset_and_the_precision_hint():
    from harness.report.int8_next import next_step_text
    row = {"variant": "ov_int8", "latency_p50_ms": 3.0}
    text = next_step_text(row, {"preset": "performance"}, "ov_int8", {"ov_int8_mixed": {"preset": "mixed"}}, {},
                          X86, [], 2.0, "fallback")
    assert text.startswith("run ov_int8_mixed next to it, `--variants ov_int8,ov_int8_mixed`: NNCF's mixed preset")
    assert "`precision: f32` (INFERENCE_PRECISION_HINT)" in text


def test_a_recipe_file_gets_the_alternatives_of_its_own_int8_variants_named_after_them():
    import dataclasses

    from harness.commands.profile import resolve_variants
    from harness.prepare.recipes import with_int8_alternatives
    from harness.schema.recipes import VariantSpec, load_recipe
    recipe = with_int8_alternatives(load_recipe("digits_cnn"))
    alternatives = {v.name: v for v in recipe.variants if v.alternative_of}
    assert sorted(alternatives) == sorted(list(ORT_VARIANTS[1:]) + ["ov_int8_mixed"])
    # each keeps its first attempt's parameters and changes one
    assert alternatives["ort_int8_u8"].params == {"per_channel": True, "activation_type": "uint8"}
    assert alternatives["ov_int8_mixed"].params == {"preset": "mixed"}
    assert resolve_variants([recipe], "int8_alternatives")["digits_cnn"] == list(alternatives)
    assert with_int8_alternatives(recipe) == recipe  # once is enough: a resumed run's recipe stays the same
    # a first attempt of another name: its alternatives are named after it; a name the recipe declares is kept
    own = dataclasses.replace(recipe, variants=(VariantSpec("edge_int8", "ort_int8", {"per_channel": False}),
                                                VariantSpec("edge_int8_u8", "ort_int8", {"calibrate_method": "entropy"},
                                                            alternative_of="edge_int8")))
    named = {v.name: v for v in with_int8_alternatives(own).variants}
    assert named["edge_int8_u8"].params == {"calibrate_method": "entropy"}
    assert named["edge_int8_qoperator"].params == {"per_channel": False, "quant_format": "qoperator"}
    assert named["edge_int8_per_tensor"].alternative_of == "edge_int8"
