"""Energy per inference: the agent's power sources read against trees in the real file layouts (written here as
fixtures: this VM has no powercap, hwmon or thermal, docs/energy.md), the meter's arithmetic, and a farm run whose
devices carry SIMULATED sensors (harness.farm.sim_power) that follow a stated power model of their own CPU use."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from harness.agent import agent
from harness.agent.agent import Doc
from harness.run.measurement import energy_fields
from harness.schema.results import COLUMNS


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------ real layouts (fixtures)
def test_jetson_l4t34_hwmon_layout_reads_the_input_rail_by_default(tmp_path):
    d = tmp_path / "bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    for n, (label, mv, ma) in enumerate((("VDD_IN", 5008, 1320), ("VDD_CPU_GPU_CV", 4992, 288),
                                         ("VDD_SOC", 4992, 496)), 1):
        write(d / f"in{n}_label", label + "\n"), write(d / f"in{n}_input", f"{mv}\n")
        write(d / f"curr{n}_input", f"{ma}\n")
    write(d / "in7_label", "sum of shunt voltages\n")  # Orin's summed channel: not a rail
    source = agent.Ina3221Power.open({"root": str(tmp_path)})
    assert source.rails == ["VDD_IN"] and source.kind == "power"
    assert source.read() == pytest.approx(5.008 * 1.320)
    soc = agent.Ina3221Power.open({"root": str(tmp_path), "rail": "vdd_soc"})
    assert soc.read() == pytest.approx(4.992 * 0.496)
    with pytest.raises(agent.PowerUnavailable, match="no rail 'VDD_GPU'.*VDD_CPU_GPU_CV"):
        agent.Ina3221Power.open({"root": str(tmp_path), "rail": "VDD_GPU"})


def test_jetson_l4t32_ina3221x_iio_layout_in_milliwatts(tmp_path):
    d = tmp_path / "bus/i2c/drivers/ina3221x/1-0040/iio:device0"
    for n, (label, mw) in enumerate((("POM_5V_IN", 3612), ("POM_5V_GPU", 120), ("POM_5V_CPU", 842))):
        write(d / f"rail_name_{n}", label + "\n"), write(d / f"in_power{n}_input", f"{mw}\n")
    source = agent.Ina3221Power.open({"root": str(tmp_path)})
    assert source.rails == ["POM_5V_IN"] and source.read() == pytest.approx(3.612)
    assert "iio" in source.method


def test_pi5_pmic_read_adc_lines_sum_current_times_voltage_per_rail():
    text = ("     3V7_WL_SW_A current(0)=0.00390372A\n       VDD_CORE_A current(7)=2.51000000A\n"
            "     3V7_WL_SW_V volt(8)=3.71197600V\n       VDD_CORE_V volt(15)=0.80000000V\n"
            "        EXT5V_V volt(24)=5.15108000V\n")
    rails = agent.parse_pmic_read_adc(text)
    assert set(rails) == {"3V7_WL_SW", "VDD_CORE"}  # EXT5V has a voltage only
    assert rails["VDD_CORE"] == pytest.approx(2.51 * 0.80)


def test_a_pi4_vcgencmd_without_pmic_readings_says_it_has_no_current_sensing(tmp_path):
    exe = write(tmp_path / "vcgencmd", '#!/bin/sh\necho \'error=1 error_msg="Command not registered"\'\nexit 255\n')
    exe.chmod(0o755)
    meter = agent.EnergyMeter({"source": "pmic", "command": str(exe)})
    assert meter.source is None and "Raspberry Pi 4 has no current sensing" in meter.reason
    assert meter.result(1.0, 100) == {"not_measured": meter.reason}


def test_rapl_energy_counter_wraps_at_max_energy_range(tmp_path):
    d = tmp_path / "class/powercap/intel-rapl:0"
    write(d / "name", "package-0\n"), write(d / "max_energy_range_uj", "1000000\n")
    write(d / "energy_uj", "900000\n")
    write(tmp_path / "class/powercap/intel-rapl:0:0/energy_uj", "5\n")  # a sub-zone (core): not summed again
    source = agent.RaplPower.open({"root": str(tmp_path)})
    assert source.rails == ["package-0"] and source.kind == "energy"
    assert source.read() == 0.0
    write(d / "energy_uj", "100000\n")  # wrapped: 0.1 J to the top, 0.1 J after
    assert source.read() == pytest.approx(0.2)
    write(d / "energy_uj", "400000\n")
    assert source.read() == pytest.approx(0.5)
    assert "udev" in agent.RAPL_UDEV_FIX and "chmod" in agent.RAPL_UDEV_FIX


def test_generic_hwmon_power_in_microwatts(tmp_path):
    d = tmp_path / "class/hwmon/hwmon2"
    write(d / "name", "power_meter\n"), write(d / "power1_input", "7250000\n")
    source = agent.HwmonPower.open({"root": str(tmp_path)})
    assert source.read() == pytest.approx(7.25) and source.rails == ["power_meter/power1"]


def test_an_external_meter_command_printing_watts(tmp_path):
    exe = write(tmp_path / "usbmeter", "#!/bin/sh\necho 'P: 4.75 W'\n")
    exe.chmod(0o755)
    source, why = agent.open_power_source({"source": "auto", "command": str(exe), "unit": "W"})
    assert why is None and source.name == "command" and source.read() == pytest.approx(4.75)


def test_this_vm_has_no_sensor_and_says_which_were_looked_for():
    """Real: this machine has no powercap, hwmon or INA3221 (NOTES 2026-12-07), so auto finds none."""
    meter = agent.EnergyMeter({"source": "auto"})
    assert meter.source is None
    assert meter.reason.startswith("no power sensor found: no INA3221")
    assert "no RAPL" in meter.reason and "no hwmon power" in meter.reason
    fields = energy_fields([{Doc.ENERGY: meter.result(1.0, 100)}])
    assert fields["energy_method"].startswith("not measured: no power sensor found")
    assert "energy_mj_per_inference" not in fields  # empty, never zero


def test_too_few_samples_is_not_measured_never_zero(tmp_path):
    d = tmp_path / "class/hwmon/hwmon0"
    write(d / "name", "x\n"), write(d / "power1_input", "5000000\n")
    meter = agent.EnergyMeter({"root": str(tmp_path), "idle_s": 0.05, "sampling_hz": 20, "min_samples": 50})
    meter.measure_idle()
    meter.start()
    time.sleep(0.05)
    meter.stop()
    result = meter.result(0.05, 10)
    assert result["not_measured"].startswith("too few samples (idle:")
    assert "mj_per_inference" not in result
    assert energy_fields([{Doc.ENERGY: result}])["energy_method"].endswith(result["not_measured"])


def test_energy_per_inference_is_active_minus_idle_times_timed_seconds_over_inferences(tmp_path):
    d = tmp_path / "class/hwmon/hwmon0"
    write(d / "name", "x\n"), write(d / "power1_input", "2000000\n")
    meter = agent.EnergyMeter({"root": str(tmp_path), "idle_s": 0.4, "sampling_hz": 50})
    meter.measure_idle()
    write(d / "power1_input", "5000000\n")  # "busy": 3 W above idle
    meter.start()
    time.sleep(0.4)
    meter.stop()
    result = meter.result(2.0, 1000)
    assert result["not_measured"] is None, result
    assert result["idle_w"] == pytest.approx(2.0) and result["active_w"] == pytest.approx(5.0)
    assert result["mj_per_inference"] == pytest.approx(3.0 * 2.0 / 1000 * 1e3)  # 6 mJ
    assert result["total_mj"] == pytest.approx(10000.0)
    assert result["sampling_hz"] >= 10
    assert set(["energy_mj_per_inference", "power_active_w", "power_idle_w", "energy_method", "energy_rails",
                "power_sampling_hz"]) <= set(COLUMNS)


# ------------------------------------------------------------------ the simulated farm (SIMULATED sensors)
def _heavier_tflite(path: Path) -> Path:
    """The same heavier network as a TFLite file (a tf.function converted; no Keras)."""
    import tensorflow as tf
    rng = np.random.default_rng(0)
    weights = [tf.constant((rng.standard_normal(s) * 0.03).astype(np.float32))
               for s in ((64, 1024), (1024, 1024), (1024, 1024), (1024, 10))]

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 1], tf.float32, name="image")])
    def heavier(image):
        h = tf.reshape(image, [1, 64])
        for w in weights:
            h = tf.matmul(h, w)
        return h

    converter = tf.lite.TFLiteConverter.from_concrete_functions([heavier.get_concrete_function()], heavier)
    path.write_bytes(converter.convert())
    return path


def _heavier(light, path: Path):
    from harness.core.files import file_sha256
    sha = file_sha256(path)
    return dataclasses.replace(light, variant="heavier", path=str(path), files=(str(path),), file_sha256=(sha,),
                               sha256=sha, size_bytes=path.stat().st_size)


@pytest.fixture(scope="module")
def farm_energy(farm, tmp_path_factory):
    """Each simulated device runs digits_cnn and a heavier model of the same interface, 1 s of timing each."""
    from helpers import artifact_for, digits_build, heavier_dense_onnx
    from harness.run.device_job import run_target_job
    from harness.run.plan import Cell, ModelEval, RunSettings, TargetJob
    from harness.schema.rundir import RunDir
    from harness.schema.targets import load_target
    prepared, _ = digits_build()
    tmp = tmp_path_factory.mktemp("energy")
    light = {fmt: artifact_for(fmt) for fmt in ("onnx", "tflite")}
    heavier_onnx = heavier_dense_onnx(tmp / "heavier.onnx", light["onnx"].interface, (1024, 1024, 1024))
    heavy = {"onnx": _heavier(light["onnx"], heavier_onnx),
             "tflite": _heavier(light["tflite"], _heavier_tflite(tmp / "heavier.tflite"))}
    evals = {"digits_cnn": ModelEval.of(prepared)}
    settings = RunSettings(warmup=5, iterations=20, min_duration_s=1.0, max_samples=20, profile=False)
    rows = {}
    for name, fmt in (("sim-pi4", "tflite"), ("sim-jetson", "onnx"), ("sim-x86", "onnx")):
        target = load_target(farm.target_file(name))
        rundir = RunDir.create(f"energy-{name}", tmp / "reports")
        cells = (Cell(light[fmt], target.name), Cell(heavy[fmt], target.name))
        for row in run_target_job(TargetJob(target, cells, evals, str(rundir.root.resolve()), settings)):
            rows[(name, "heavier" if row["variant"] == "heavier" else "light")] = row
    return rows


def test_simulated_sensors_give_energy_on_every_device_and_a_heavier_model_costs_more(farm_energy, sim_target):
    for name, source in (("sim-pi4", "pmic"), ("sim-jetson", "ina3221"), ("sim-x86", "rapl")):
        assert sim_target(name).power.source == source
        light, heavy = farm_energy[(name, "light")], farm_energy[(name, "heavier")]
        print(f"\n{name}: light {light['energy_mj_per_inference']:.4f} mJ ({light['latency_mean_ms']:.3f} ms), "
              f"heavier {heavy['energy_mj_per_inference']:.4f} mJ ({heavy['latency_mean_ms']:.3f} ms); idle "
              f"{light['power_idle_w']:.2f} W, active {light['power_active_w']:.2f} / {heavy['power_active_w']:.2f} W "
              f"at {light['power_sampling_hz']:.1f} Hz; {light['energy_method']} [{light['energy_rails']}]")
        for row in (light, heavy):
            assert row["status"] == "ok", row["error_message"]
            assert row["energy_mj_per_inference"] > 0 and row["energy_total_mj"] > 0
            assert row["energy_method"].startswith(source) and row["energy_rails"]
            assert row["power_active_w"] > row["power_idle_w"] > 0
            assert row["power_sampling_hz"] >= 10
        assert heavy["energy_mj_per_inference"] > 2 * light["energy_mj_per_inference"]
    assert farm_energy[("sim-jetson", "light")]["energy_rails"] == "VDD_IN"


# ------------------------------------------------------------------ budgets and the gate
def _energy_row(fmt: str, mj, method="rapl /sys/class/powercap") -> dict:
    from harness.schema.results import make_row
    return make_row(run_id="r", cell_id=f"m__reference__{fmt}__dev", model="m", variant="reference", format=fmt,
                    runtime_config="", target="dev", status="ok", energy_mj_per_inference=mj,
                    energy_method=method if mj is not None else "not measured: no power sensor found: no INA3221")


def test_the_gate_judges_energy_budgets_and_energy_regression():
    from harness.judge.gate import GateInputs, Policy, TargetPolicy, evaluate
    from harness.schema.targets import Budgets
    base = [_energy_row("onnx", 1.0), _energy_row("tflite", 1.0)]
    now = [_energy_row("onnx", 1.05), _energy_row("tflite", 1.4)]
    result = evaluate(Policy(defaults=TargetPolicy(max_energy_regression=0.2)), now,
                      GateInputs(baseline_rows=base, baseline_id="base"))
    failed = {(c.rule, c.subject.split("__")[2]) for c in result.checks if not c.passed}
    assert failed == {("max_energy_regression", "tflite")}
    assert any("1 -> 1.4 mJ (+40.0%" in c.message for c in result.checks if c.rule == "max_energy_regression")
    budget = evaluate(Policy(defaults=TargetPolicy(use_target_budgets=True)), [_energy_row("onnx", 1.4),
                                                                                _energy_row("tflite", None)],
                      GateInputs(budgets={"dev": Budgets(energy_mj=1.2)}))
    checks = {c.subject.split("__")[2]: c for c in budget.checks if c.rule == "max_energy_mj"}
    assert not checks["onnx"].passed and "1.40 mJ (maximum 1.2 mJ)" in checks["onnx"].message
    assert not checks["tflite"].passed and checks["tflite"].message.startswith("not measured: no power sensor")
    no_budget = evaluate(Policy(defaults=TargetPolicy(use_target_budgets=True)), [_energy_row("onnx", 9.0)],
                         GateInputs(budgets={"dev": Budgets()}))
    assert not any(c.rule == "max_energy_mj" for c in no_budget.checks)


def test_target_power_settings_are_checked_when_the_file_loads(tmp_path):
    from harness.core.errors import ConfigError
    from harness.schema.targets import load_target
    write(tmp_path / "dev.yaml", "name: dev\npower: {source: ina3221, root: /tmp/tree, rail: VDD_IN}\n"
                                 "budgets: {energy_mj: 2.5}\n")
    target = load_target("dev", tmp_path)
    assert target.power.to_agent()["root"] == "/tmp/tree" and target.budgets.energy_mj == 2.5
    write(tmp_path / "bad.yaml", "name: bad\npower: {source: ina3222}\n")
    with pytest.raises(ConfigError, match="source"):
        load_target("bad", tmp_path)
    write(tmp_path / "typo.yaml", "name: typo\npower: {sorce: rapl}\n")
    with pytest.raises(ConfigError, match="sorce"):
        load_target("typo", tmp_path)
