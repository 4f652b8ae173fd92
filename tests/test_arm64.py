"""Emulated Arm devices: an aarch64 Python under qemu-user in the simulated farm, and what the
report, scores and gate make of them (outputs compared across architectures, timings not judged)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from harness.farm import EMULATED_DEVICE_CLASSES, FarmError, classes_for, device_plan, farm_down, farm_up
from harness.judge.gate import Policy, TargetPolicy, GateInputs, evaluate
from harness.judge.scores import compare_outputs, cross_arch_parity, portability_scores, recommend
from harness.schema.targets import Budgets, load_target


def judge(policy, frame, budgets=None, **inputs):
    """The gate's verdict on a table, with GateInputs given as keywords."""
    return evaluate(policy, frame, GateInputs(budgets=budgets or {}, **inputs))

ARM_DEVICES = ("sim-pi4-arm64", "sim-jetson-arm64")


# ---------------------------------------------------------------- pure: plans, scores, gate, parity
def test_arch_selects_the_emulated_classes_and_x86_stays_the_default():
    assert [c.name for c in classes_for(["aarch64"], "x86_64")] == list(ARM_DEVICES)
    assert [c.name for c in classes_for(["arm64"], "x86_64")] == list(ARM_DEVICES)
    assert [n for n, _, _ in device_plan()] == ["sim-pi4", "sim-jetson", "sim-x86"]
    both = [n for n, _, _ in device_plan(None, classes_for(["x86_64", "aarch64"], "x86_64"))]
    assert both == ["sim-pi4", "sim-jetson", "sim-x86", *ARM_DEVICES]
    assert all(c.emulated and c.arch("x86_64") == "aarch64" for c in EMULATED_DEVICE_CLASSES)
    with pytest.raises(ValueError, match="no simulated devices for architecture riscv64"):
        classes_for(["riscv64"], "x86_64")


def _row(target, fmt="tflite", p99=5000.0, mem_mb=900.0, variant="reference", top1=1.0):
    return dict(model="m", variant=variant, format=fmt, target=target, cell_id=f"m__{variant}__{fmt}__{target}",
                status="ok", accuracy=0.95, accuracy_retention=1.0, top1_agreement=top1, latency_p99_ms=p99,
                peak_rss_bytes=mem_mb * 2 ** 20)


def test_emulated_latency_and_memory_are_recorded_but_not_judged():
    rows = [_row("arm", p99=5000.0, mem_mb=900.0), _row("x86", p99=20.0, mem_mb=100.0)]
    budgets = {"arm": Budgets(40.0, 300.0), "x86": Budgets(10.0, 512.0)}
    score = portability_scores(rows, budgets, emulated={"arm"})[0]
    arm = next(c for c in score.per_target if c.target == "arm")
    assert arm.emulated and arm.parts.latency == arm.parts.memory == 1.0 and arm.score == 1.0
    assert score.latency == pytest.approx(0.5)  # the x86 cell alone: the emulated one is left out of the mean
    rec = next(r for r in recommend(rows, budgets, emulated={"arm"}) if r.target == "arm")
    assert rec.fits and "emulated" in rec.reason
    policy = Policy(defaults=TargetPolicy(min_accuracy_retention=0.99, max_latency_p99_ms=50.0,
                                          max_peak_memory_mb=512.0))
    result = judge(policy, [{**r, "noisy": True} if r["target"] == "arm" else r for r in rows], budgets,
                      emulated={"arm"})
    assert result.passed and result.exit_code == 0, result.lines()
    assert {c.rule for c in result.checks if c.target == "arm"} == {"cell_status", "min_accuracy_retention"}
    assert any("arm: emulated" in n for n in result.notes)
    assert not judge(policy, rows, budgets).passed  # the same cells on a real board would fail


def test_cross_arch_parity_compares_every_output_and_names_arm_only_differences():
    logits = np.array([[1.0, 3.0, 0.5], [2.0, 0.1, 0.2]], dtype=np.float32)
    boxes = np.ones((2, 4), dtype=np.float32)
    x86 = {"logits": logits, "boxes": boxes}
    rows = [_row(t, variant="int8") for t in ("sim-x86", "sim-jetson", "sim-pi4-arm64")]
    arches = {"sim-x86": "x86_64", "sim-jetson": "x86_64", "sim-pi4-arm64": "aarch64"}
    # one int8 step on the second output only: the first output's argmax agrees, the pair still differs
    outputs = {rows[0]["cell_id"]: x86, rows[1]["cell_id"]: dict(x86),
               rows[2]["cell_id"]: {"logits": logits, "boxes": boxes + np.float32(1 / 128)}}
    (found,) = cross_arch_parity(rows, outputs, arches)
    assert found.target == "sim-pi4-arm64" and found.baseline_targets == ("sim-jetson", "sim-x86")
    assert found.baseline_agrees and not found.agrees
    assert found.verdict == "agrees on x86_64, differs on aarch64"
    assert found.max_abs_diff == pytest.approx(1 / 128) and found.top1_agreement == 1.0
    outputs[rows[2]["cell_id"]] = {"logits": logits + np.float32(1e-6), "boxes": boxes}  # float noise
    assert cross_arch_parity(rows, outputs, arches)[0].verdict == "agrees with x86_64"
    outputs[rows[2]["cell_id"]] = {"output_0": logits}
    assert cross_arch_parity(rows, outputs, arches)[0].verdict.startswith("not comparable: output names differ")
    assert compare_outputs({"o": logits}, {"o": logits[:, ::-1]}).top1_agreement == 0.5  # row 2 flips


def test_cross_arch_parity_compares_like_runtime_with_like_runtime():
    """tflite-runtime 2.14 and ai-edge-litert 2.3 round some int8 outputs one step apart on x86_64 itself:
    the Arm cell is judged against the x86_64 cell of its own runtime version, the others shown apart."""
    logits = np.array([[1.0, 3.0, 0.5], [2.0, 0.1, 0.2]], dtype=np.float32)
    rows = [{**_row(t, variant="int8"), "runtime": rt, "runtime_version": v}
            for t, rt, v in (("sim-x86", "ai-edge-litert", "2.3.0"), ("sim-pi4", "tflite-runtime", "2.14.0"),
                             ("sim-pi4-arm64", "ai-edge-litert", "2.3.0"))]
    outputs = {rows[0]["cell_id"]: {"logits": logits}, rows[1]["cell_id"]: {"logits": logits + np.float32(0.2)},
               rows[2]["cell_id"]: {"logits": logits.copy()}}
    (found,) = cross_arch_parity(rows, outputs, {"sim-x86": "x86_64", "sim-pi4": "x86_64",
                                                 "sim-pi4-arm64": "aarch64"})
    assert found.agrees and found.baseline_targets == ("sim-x86",) and found.max_abs_diff == 0.0
    assert found.other_runtime_targets == ("sim-pi4",) and found.agrees_with_other_runtimes is False
    assert found.verdict == ("agrees with x86_64 (ai-edge-litert 2.3.0); other runtime versions on x86_64 "
                             "(sim-pi4: tflite-runtime 2.14.0) differ from it")


# ---------------------------------------------------------------- the emulated devices over SSH
@pytest.fixture(scope="module")
def arm_farm():
    """sim-pi4, sim-jetson, sim-x86 and the two emulated Arm devices, each an sshd on 127.0.0.1."""
    from conftest import FARM_ENVS_DIR, ROOT

    from harness.farm import qemu_path, sshd_path
    try:
        sshd_path()
    except FarmError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        qemu_path("aarch64")
    except FarmError as exc:  # the one reason to skip: this machine truly cannot run aarch64 code
        pytest.skip(str(exc))
    state = ROOT / ".harness" / "test-farm-arm64"
    farm = farm_up(None, state_dir=state, targets_dir=state / "targets", envs_dir=FARM_ENVS_DIR,
                   arches=("x86_64", "aarch64"))
    try:
        yield farm
    finally:
        farm_down(state)


@pytest.mark.ssh
@pytest.mark.slow
def test_arm64_devices_probe_as_aarch64_and_farm_up_is_cached(arm_farm, tmp_path):
    from conftest import FARM_ENVS_DIR

    from harness.run import probe as device
    from harness.run.transport import open_transport
    for name in ARM_DEVICES:
        target = load_target(arm_farm.target_file(name))
        assert target.emulated and target.arch == "aarch64"
        transport = open_transport(target)
        try:
            probe = device.probe(transport, device.device_python(target, transport))
        finally:
            transport.close()
        assert probe["machine"] == "aarch64", json.dumps(probe)
        assert probe["python"].startswith("3.11.") and "qemu-aarch64" in probe["cpu_model"]
        wanted = {"sim-pi4-arm64": ("tflite", "ai-edge-litert"), "sim-jetson-arm64": ("onnx", "onnxruntime")}[name]
        assert probe["runtimes"][wanted[0]]["available"] and probe["runtimes"][wanted[0]]["module"] == wanted[1]
    assert not load_target(arm_farm.target_file("sim-x86")).emulated
    again = farm_up(None, state_dir=tmp_path / "farm", targets_dir=tmp_path / "targets", envs_dir=FARM_ENVS_DIR,
                    arches=("aarch64",))
    try:
        assert again.target_names == list(ARM_DEVICES)
        assert again.started_s < 5  # the sysroots are cached after the first farm-up
    finally:
        farm_down(tmp_path / "farm")


@pytest.mark.ssh
@pytest.mark.slow
def test_digits_on_arm64_devices_matches_the_x86_cells(arm_farm, tmp_path):
    from helpers import ROOT, session_cache_dir

    from harness.run import pipeline
    from harness.run.plan import RunSettings
    from harness.prepare.cache import ContentCache
    from harness.schema.recipes import load_recipe
    from harness.report import build_context
    names = ("sim-x86", *ARM_DEVICES)
    targets = [load_target(arm_farm.target_file(n)) for n in names]
    # Emulation is ~200x slower: few iterations and samples, seconds per cell.
    outcome = pipeline.run_profile([load_recipe("digits_cnn", ROOT / "models")], targets,
                                   variants={"digits_cnn": ["tflite_int8", "ort_int8"]},
                                   settings=RunSettings(warmup=1, iterations=5, max_samples=20, min_duration_s=0.0),
                                   reports_dir=tmp_path / "reports", cache=ContentCache(session_cache_dir()))
    frame = outcome.frame.set_index(["variant", "format", "target"])
    for cell in [("reference", "tflite", "sim-pi4-arm64"), ("tflite_int8", "tflite", "sim-pi4-arm64"),
                 ("reference", "onnx", "sim-jetson-arm64"), ("ort_int8", "onnx", "sim-jetson-arm64")]:
        assert frame.loc[cell, "status"] == "ok", frame.loc[cell, "error_message"]
        assert frame.loc[cell, "top1_agreement"] >= 0.95
    assert frame.loc[("reference", "tflite", "sim-pi4-arm64"), "runtime"] == "ai-edge-litert"
    ctx = build_context(outcome, {t.name: t for t in targets})
    assert ctx.emulated == frozenset(ARM_DEVICES)
    assert ctx.arches["sim-pi4-arm64"] == "aarch64" and ctx.arches["sim-x86"] == "x86_64"
    compared = {(c.variant, c.format, c.target): c for c in ctx.cross_arch}
    assert set(compared) >= {("reference", "tflite", "sim-pi4-arm64"), ("tflite_int8", "tflite", "sim-pi4-arm64"),
                             ("reference", "onnx", "sim-jetson-arm64"), ("ort_int8", "onnx", "sim-jetson-arm64")}
    for key, c in compared.items():
        assert c.baseline_targets == ("sim-x86",) and c.n_samples == 20
        assert c.agrees, f"{key}: {c.verdict} (top-1 {c.top1_agreement}, max abs diff {c.max_abs_diff})"
    assert all(s.emulated for s in ctx.cell_scores if s.target in ARM_DEVICES)


@pytest.mark.ssh
def test_a_machine_without_qemu_gets_one_clear_line_and_no_half_started_farm(tmp_path, monkeypatch):
    from conftest import FARM_ENVS_DIR

    from harness.farm import emulated, sshd_path
    try:
        sshd_path()
    except FarmError as exc:
        pytest.fail(str(exc), pytrace=False)
    monkeypatch.setattr(emulated, "QEMU_DIRS", (str(tmp_path / "no-qemu-here"),))
    with pytest.raises(FarmError) as raised:
        farm_up(None, state_dir=tmp_path / "farm", targets_dir=tmp_path / "targets", envs_dir=FARM_ENVS_DIR,
                arches=("x86_64", "aarch64"))
    message = str(raised.value)
    assert "\n" not in message
    assert "cannot run aarch64 binaries" in message and "apt-get install -y qemu-user-static" in message
    # Nothing started: no state, no target files, not even the x86 devices that need no qemu.
    assert not (tmp_path / "farm" / "farm.json").exists()
    assert not list((tmp_path / "targets").glob("*.yaml")) if (tmp_path / "targets").exists() else True
