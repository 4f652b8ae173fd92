"""Heat: the agent's temperature and throttle readers against trees in the real file layouts (written here as
fixtures: this VM has no thermal zone, hwmon or thermal_throttle counters, NOTES 2026-12-07), the throttled share of
a timed loop, the cooldown against the SIMULATED thermal tree that harness.farm.sim_power keeps from a stated model
of CPU use, and farm and local runs whose rows carry the heat columns (docs/heat.md)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.agent import agent
from harness.agent.agent import Doc
from harness.run.measurement import combine_repeats, heat_fields
from harness.schema.results import COLUMNS, HEAT_COLUMNS
from harness.schema.targets import QuietLimits


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def script(path: Path, body: str) -> Path:
    write(path, "#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


# ------------------------------------------------------------------ real layouts (fixtures)
def test_pi_thermal_zone0_in_millidegrees_and_vcgencmd_get_throttled_bits(tmp_path):
    write(tmp_path / "class/thermal/thermal_zone0/type", "cpu-thermal\n")
    write(tmp_path / "class/thermal/thermal_zone0/temp", "61234\n")
    answer = write(tmp_path / "answer", "throttled=0x50005\n")  # under-voltage + throttled now, both since boot
    vcgencmd = script(tmp_path / "vcgencmd", f'[ "$1" = get_throttled ] && exec cat "{answer}"\nexit 1\n')
    heat = agent.HeatMonitor({"root": str(tmp_path), "vcgencmd": str(vcgencmd)})
    assert heat.temperature_c() == pytest.approx(61.234)
    assert heat.temperature.method.startswith(f"thermal_zone {tmp_path}/class/thermal (hottest of 1: cpu-thermal")
    [source] = heat.throttle
    assert source.name == "vcgencmd" and source.read() is True
    write(answer, "throttled=0x50000\n")  # it happened since boot, not now
    assert source.read() is False
    write(answer, "throttled=0x2\n")  # ARM frequency capped now
    assert source.read() is True
    assert heat.period == pytest.approx(1 / agent.VCGENCMD_MAX_HZ)  # a fork per reading: at most 2 Hz
    with pytest.raises(ValueError, match="no throttled"):
        agent.VcgencmdThrottled.parse('error=1 error_msg="Command not registered"')


def test_jetson_hottest_zone_and_clock_capping_cooling_devices_not_fans(tmp_path):
    for n, (kind, milli) in enumerate((("CPU-therm", 52000), ("GPU-therm", 49500), ("PMIC-Die", 100000))):
        write(tmp_path / f"class/thermal/thermal_zone{n}/type", kind + "\n")
        write(tmp_path / f"class/thermal/thermal_zone{n}/temp", f"{milli}\n")
    for n, (kind, state) in enumerate((("cpu-balanced", 0), ("pwm-fan", 120), ("gpu-balanced", 0))):
        write(tmp_path / f"class/thermal/cooling_device{n}/type", kind + "\n")
        write(tmp_path / f"class/thermal/cooling_device{n}/cur_state", f"{state}\n")
    heat = agent.HeatMonitor({"root": str(tmp_path)})
    assert heat.temperature_c() == 52.0  # Nano/TX2's PMIC-Die reads a fixed 100 C: not a temperature
    assert "hottest of 2: CPU-therm, GPU-therm" in heat.temperature.method
    [cooling] = heat.throttle
    assert cooling.name == "cooling_device" and "cpu-balanced, gpu-balanced" in cooling.method
    assert cooling.read() is False  # the fan spins, the clocks are not capped
    write(tmp_path / "class/thermal/cooling_device0/cur_state", "2\n")
    assert cooling.read() is True


def test_x86_package_zone_throttle_counters_and_coretemp_where_no_zone(tmp_path):
    write(tmp_path / "class/thermal/thermal_zone0/type", "acpitz\n")
    write(tmp_path / "class/thermal/thermal_zone0/temp", "27800\n")
    write(tmp_path / "class/thermal/thermal_zone1/type", "x86_pkg_temp\n")
    write(tmp_path / "class/thermal/thermal_zone1/temp", "71000\n")
    counters = tmp_path / "devices/system/cpu"
    write(counters / "cpu0/thermal_throttle/core_throttle_count", "5\n")
    write(counters / "cpu0/thermal_throttle/package_throttle_count", "2\n")
    write(counters / "cpu1/thermal_throttle/core_throttle_count", "3\n")
    heat = agent.HeatMonitor({"root": str(tmp_path)})
    assert heat.temperature_c() == 71.0
    [source] = heat.throttle
    assert source.name == "thermal_throttle" and source.read() is False
    write(counters / "cpu1/thermal_throttle/core_throttle_count", "4\n")
    assert source.read() is True and source.read() is False  # rose once, then not again
    coretemp = tmp_path / "no-zones"
    write(coretemp / "class/hwmon/hwmon2/name", "coretemp\n")
    write(coretemp / "class/hwmon/hwmon2/temp1_input", "55000\n")
    write(coretemp / "class/hwmon/hwmon2/temp2_input", "58000\n")
    write(coretemp / "class/hwmon/hwmon0/name", "nvme\n")
    write(coretemp / "class/hwmon/hwmon0/temp1_input", "90000\n")  # a disk: not the CPU
    assert agent.HeatMonitor({"root": str(coretemp)}).temperature_c() == 58.0


def test_this_vm_has_no_thermal_zone_and_says_why_never_zero():
    """Real: this machine's /sys/class/thermal is empty and it has no hwmon or thermal_throttle counters."""
    heat = agent.HeatMonitor({"cooldown_below_c": 50.0})
    cooldown = heat.cool_down()
    assert cooldown["cooled"] is None and cooldown["waited_s"] == 0.0
    assert cooldown["note"].startswith("no temperature readable (no thermal zone readable under /sys/class/thermal")
    assert cooldown["note"].endswith("did not wait")
    heat.start()
    heat.stop()
    result = heat.result(cooldown)
    assert result["temperature_method"].startswith("not measured: no thermal zone readable under /sys/class/thermal")
    assert result["throttle_method"] == ("not measured: no vcgencmd, no cpufreq/devfreq cooling device under "
                                         "/sys/class/thermal, no x86 thermal_throttle counters under "
                                         "/sys/devices/system/cpu")
    assert result["temperature_start_c"] is None and result["throttled_share"] is None and result["samples"] == 0
    fields = heat_fields([{Doc.HEAT: result}])
    assert fields["cooled"] is None and fields["temperature_start_c"] is None and fields["throttled_share"] is None
    assert fields["temperature_method"].startswith("not measured:")


def test_throttled_share_is_the_part_of_the_timed_loop_whose_readings_say_throttled(tmp_path):
    write(tmp_path / "class/thermal/thermal_zone0/temp", "50000\n")
    state = write(tmp_path / "class/thermal/cooling_device0/cur_state", "0\n")
    write(tmp_path / "class/thermal/cooling_device0/type", "cpufreq-cpu0\n")
    heat = agent.HeatMonitor({"root": str(tmp_path), "sampling_hz": 40})
    heat.start()
    time.sleep(0.5)
    write(state, "1\n"), write(tmp_path / "class/thermal/thermal_zone0/temp", "64500\n")
    time.sleep(0.5)
    heat.stop()
    result = heat.result()
    assert result["temperature_start_c"] == 50.0 and result["temperature_end_c"] == 64.5
    assert 0.35 < result["throttled_share"] < 0.65, result
    assert result["sampling_hz"] > 20 and result["throttle_method"].startswith("cooling_device")


# ------------------------------------------------------------------ the SIMULATED thermal tree (harness.farm.sim_power)
@pytest.fixture
def simulated_x86(tmp_path):
    """harness.farm.sim_power as the farm runs it (rapl kind: x86_pkg_temp + thermal_throttle counters), driven by a
    cgroup v1 cpuacct.usage file written here: 3 CPUs busy while `busy` is set, idle otherwise. Fast model
    (tau 1 s) so the test takes seconds: ambient 40 C, 15 C per CPU, trip 70 C."""
    usage = write(tmp_path / "cpuacct.usage", "0\n")
    busy = threading.Event()
    done = threading.Event()

    def drive():
        ns, last = 0, time.monotonic()
        while not done.wait(0.02):
            now = time.monotonic()
            ns, last = ns + (int(3e9 * (now - last)) if busy.is_set() else 0), now
            write(usage.with_suffix(".part"), f"{ns}\n").rename(usage)  # whole, as the kernel's file is
    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    tree = tmp_path / "sensor"
    proc = subprocess.Popen([sys.executable, str(Path(agent.__file__).parents[1] / "farm" / "sim_power.py"),
                             "--kind", "rapl", "--tree", str(tree), "--usage", str(usage), "--idle-w", "10",
                             "--w-per-cpu", "5", "--ambient-c", "40", "--c-per-cpu", "15", "--tau-s", "1",
                             "--trip-c", "70"])
    deadline = time.monotonic() + 10
    while not (tree / "class/thermal/thermal_zone0/temp").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield tree, busy
    finally:
        proc.terminate()
        proc.wait(5)
        done.set()
        driver.join(2)


def test_simulated_zone_heats_throttles_and_a_cooldown_waits_until_it_is_cool(simulated_x86):
    tree, busy = simulated_x86
    heat = agent.HeatMonitor({"root": str(tree), "sampling_hz": 20, "cooldown_below_c": 50.0,
                              "cooldown_poll_s": 0.1, "cooldown_max_wait_s": 20.0})
    assert heat.temperature_c() == pytest.approx(40.0, abs=1.0)  # ambient
    assert heat.cool_down()["waited_s"] < 0.2  # already cool: no wait
    busy.set()  # 3 CPUs: toward 85 C, past the 70 C trip point after about 1.1 s
    heat.start()
    time.sleep(2.5)
    heat.stop()
    busy.clear()
    hot = heat.result()
    assert hot["temperature_start_c"] < 50 and hot["temperature_end_c"] > 75, hot
    assert 0.2 < hot["throttled_share"] < 0.8, hot  # the counters rose once it passed 70 C
    assert hot["throttle_method"].startswith(f"thermal_throttle {tree}/devices/system/cpu")
    cooldown = heat.cool_down()
    print(f"\ncooldown: {cooldown}")
    assert cooldown["cooled"] is True and cooldown["start_c"] > 70 and cooldown["reached_c"] < 50
    assert 0.5 < cooldown["waited_s"] < 5  # 40 + 35 e^(-t/1 s) < 50: about 1.3 s
    row, _ = combine_repeats([{Doc.CONDITIONS: {"before": {}, "after": {}}, Doc.HEAT: heat.result(cooldown)}],
                             QuietLimits(cooldown_below_c=50.0))
    assert row["cooled"] is True and row["cooldown_wait_s"] == pytest.approx(cooldown["waited_s"])


def test_a_cooldown_that_cannot_be_met_times_the_cell_and_flags_it(simulated_x86):
    tree, _ = simulated_x86
    heat = agent.HeatMonitor({"root": str(tree), "cooldown_below_c": 30.0, "cooldown_max_wait_s": 0.5,
                              "cooldown_poll_s": 0.1})
    cooldown = heat.cool_down()
    assert cooldown["cooled"] is False and 0.5 <= cooldown["waited_s"] < 1.0
    assert cooldown["note"].startswith("could not cool below 30.0 °C in 0.5 s (was 40.")
    assert cooldown["note"].endswith("°C): timed hot")
    row, _ = combine_repeats([{Doc.CONDITIONS: {"before": {}, "after": {}}, Doc.HEAT: heat.result(cooldown)}] * 2,
                             QuietLimits(cooldown_below_c=30.0, cooldown_max_wait_s=0.5))
    assert row["cooled"] is False and row["noisy"] is True
    assert row["noise_reasons"].startswith("repeat 1: could not cool below 30.0 °C in 0.5 s")
    assert row["cooldown_wait_s"] == pytest.approx(2 * cooldown["waited_s"])


# ------------------------------------------------------------------ settings
def test_target_thermal_and_cooldown_settings_are_checked_when_the_file_loads(tmp_path):
    from harness.core.errors import ConfigError
    from harness.schema.targets import load_target
    write(tmp_path / "dev.yaml", "name: dev\nthermal: {root: /tmp/tree, vcgencmd: /opt/vc/bin/vcgencmd}\n"
                                 "quiet: {cooldown_below_c: 60, cooldown_max_wait_s: 120}\n")
    target = load_target("dev", tmp_path)
    assert target.thermal.to_agent(target.quiet) == {"root": "/tmp/tree", "vcgencmd": "/opt/vc/bin/vcgencmd",
                                                     "sampling_hz": 4.0, "cooldown_below_c": 60,
                                                     "cooldown_max_wait_s": 120}
    assert target.quiet.cooldown_s == 120 and QuietLimits().cooldown_s == 0.0
    for text, fragment in (("quiet: {cooldown_below_c: 600}", "cooldown_below_c must be degrees C"),
                           ("quiet: {cooldown_below_c: 60, cooldown_max_wait_s: 0}", "cooldown_max_wait_s must be"),
                           ("thermal: {sampling_hz: 0}", "sampling_hz must be above 0"),
                           ("thermal: {rooot: /tmp}", "rooot")):
        write(tmp_path / "bad.yaml", f"name: bad\n{text}\n")
        with pytest.raises(ConfigError, match=fragment) as caught:
            load_target("bad", tmp_path)
        assert "bad.yaml" in str(caught.value) and "\n" not in str(caught.value)
    assert set(HEAT_COLUMNS) <= set(COLUMNS)


# ------------------------------------------------------------------ runs: the farm (SIMULATED trees) and this machine
def _run_one_cell(target, fmt: str, reports: Path, progress=None):
    from helpers import artifact_for, digits_build
    from harness.run.device_job import run_target_job
    from harness.run.plan import Cell, ModelEval, RunSettings, TargetJob
    from harness.schema.rundir import RunDir
    prepared, _ = digits_build()
    rundir = RunDir.create(f"heat-{target.name}", reports)
    settings = RunSettings(warmup=5, iterations=20, min_duration_s=0.5, max_samples=20, profile=False)
    job = TargetJob(target, (Cell(artifact_for(fmt), target.name),), {"digits_cnn": ModelEval.of(prepared)},
                    str(rundir.root.resolve()), settings)
    [row] = run_target_job(job, progress or (lambda message: None))
    return rundir, row


def test_farm_cells_record_simulated_temperatures_and_a_cell_that_could_not_cool_is_flagged(farm, sim_target,
                                                                                           tmp_path):
    """Each simulated device's cell with a cooldown below its simulated ambient (it cannot be met): the cell is
    still timed, its row has the start and end temperature of the SIMULATED zone, and it is flagged in the row,
    the gate's text, summary.md and the report's findings."""
    from harness.judge.gate import Policy, evaluate
    from harness.report import write_report
    from harness.run.collate import collate
    for name, fmt, throttle in (("sim-pi4", "tflite", "vcgencmd get_throttled"),
                                ("sim-jetson", "onnx", "cooling_device"), ("sim-x86", "onnx", "thermal_throttle")):
        target = sim_target(name)
        assert target.thermal.root.endswith(f"{name}/sensor")
        target = dataclasses.replace(target, quiet=dataclasses.replace(target.quiet, cooldown_below_c=30.0,
                                                                       cooldown_max_wait_s=1.0))
        rundir, row = _run_one_cell(target, fmt, tmp_path / "reports")
        print(f"\n{name}: {row['temperature_start_c']} -> {row['temperature_end_c']} C, throttled "
              f"{row['throttled_share']}, waited {row['cooldown_wait_s']:.2f} s; {row['temperature_method']}; "
              f"{row['throttle_method']}")
        assert row["status"] == "ok" and row["latency_p50_ms"] > 0, row["error_message"]  # timed, not skipped
        assert 35.0 < row["temperature_start_c"] < 70.0 and 35.0 < row["temperature_end_c"] < 70.0
        assert row["temperature_method"].startswith(f"thermal_zone {target.thermal.root}/class/thermal")
        assert row["throttle_method"].startswith(throttle) and row["throttled_share"] == 0.0
        assert row["cooled"] is False and 1.0 <= row["cooldown_wait_s"] < 3.0
        assert row["noisy"] is True and row["noise_reasons"].startswith("could not cool below 30.0 °C in 1 s (was ")
        gate = evaluate(Policy(), [row])
        assert any("could not cool below 30.0 °C" in c.message for c in gate.not_judged)
        write_report(collate(rundir), {name: target})
        summary = (rundir.root / "summary.md").read_text()
        assert f"**⚠️ 1 cell(s) timed hot** on {name}: could not cool below 30.0 °C in 1 s (was " in summary
        assert "timed hot on " + name in (rundir.root / "index.html").read_text()


def test_a_local_target_without_thermal_zones_says_not_measured_and_does_not_wait(tmp_path):
    from harness.schema.targets import builtin_local
    target = builtin_local()
    target = dataclasses.replace(target, quiet=dataclasses.replace(target.quiet, cooldown_below_c=40.0),
                                 workdir=str(tmp_path / "device"))
    started, said = time.monotonic(), []
    _, row = _run_one_cell(target, "onnx", tmp_path / "reports", said.append)
    assert row["status"] == "ok", row["error_message"]
    assert row["temperature_method"].startswith("not measured: no thermal zone readable under /sys/class/thermal")
    assert row["throttle_method"].startswith("not measured: no vcgencmd")
    assert row["temperature_start_c"] is None and row["throttled_share"] is None
    assert row["cooled"] is None and row["cooldown_wait_s"] == 0.0
    assert "could not cool" not in (row["noise_reasons"] or "")
    assert time.monotonic() - started < 60
    [once] = [m for m in said if "cooldown_below_c" in m]
    assert once.startswith("[local] quiet.cooldown_below_c is set but the device has no temperature to cool by "
                           "(not measured: no thermal zone readable")


def test_the_quiet_guards_conditions_read_the_targets_thermal_root_with_the_monitors_sources(tmp_path):
    """read_conditions (what the quiet-device guard judges) reads the same tree the heat monitor does: a
    simulated device's, never this host's /sys; the PMIC-Die zone and fans are left out there too."""
    def write(relative, text):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")

    write("class/thermal/thermal_zone0/type", "cpu-thermal")
    write("class/thermal/thermal_zone0/temp", "51500")
    write("class/thermal/thermal_zone1/type", "PMIC-Die")
    write("class/thermal/thermal_zone1/temp", "100000")
    write("class/thermal/cooling_device0/type", "cpu-balanced")
    write("class/thermal/cooling_device0/cur_state", "2")
    write("class/thermal/cooling_device1/type", "Fan")
    write("class/thermal/cooling_device1/cur_state", "3")
    write("devices/system/cpu/cpu0/thermal_throttle/core_throttle_count", "7")
    conditions = agent.read_conditions({"root": str(tmp_path), "vcgencmd": str(tmp_path / "no-vcgencmd")})
    assert conditions["temperature_c"] == 51.5 and conditions["cooling_active"] == ["cpu-balanced=2"]
    assert conditions["thermal_throttle_count"] == 7 and conditions["vcgencmd_throttled"] is None
