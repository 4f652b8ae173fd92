"""The quiet-device guard: the agent's before/after readings against the target's `quiet:` limits."""
from __future__ import annotations

import pytest

from harness.judge.device_noise import noise_reasons, other_busy_cpus, pi_throttle_flags
from harness.core.errors import ConfigError
from harness.schema.targets import QuietLimits, load_target


def reading(t=0.0, busy=0, own=0, load=0.2, temp=45.0, **extra):
    """A reading shaped like the agent's `read_conditions()` (2 CPUs, 100 ticks a second)."""
    return {"monotonic_s": t, "cpu_count": 2, "clk_tck": 100, "cpu_jiffies": {"busy": busy, "own": own},
            "loadavg": [load, load, load], "busy_processes": [], "cpu_governor": "schedutil",
            "cur_freq_khz": 1500000, "max_freq_khz": 1500000, "temperature_c": temp, "cooling_active": [],
            "thermal_throttle_count": None, "vcgencmd_throttled": None, **extra}


def test_a_quiet_device_has_no_reasons():
    # 2 s of timing: the agent used 200 ticks (one core), nobody else used anything
    assert noise_reasons(reading(), reading(t=2.0, busy=200, own=200)) == []


def test_other_processes_using_a_core_make_the_cell_noisy_and_are_named():
    after = reading(t=2.0, busy=400, own=200, busy_processes=[{"pid": 7, "name": "stress-ng"}])
    assert other_busy_cpus(reading(), after) == pytest.approx(1.0)
    (reason,) = noise_reasons(reading(), after)
    assert "other processes kept 1.00 CPUs busy" in reason and "stress-ng" in reason


def test_high_load_before_timing_is_noisy_but_the_agent_itself_does_not_count():
    assert noise_reasons(reading(load=1.0), {}) == []             # the agent's own thread
    (reason,) = noise_reasons(reading(load=4.0), {})
    assert "load average 4.00 on 2 CPU(s)" in reason and "1.50 per CPU" in reason


def test_heat_and_every_kind_of_throttling_are_noisy():
    assert any("temperature 91.0 C" in r for r in noise_reasons(reading(), reading(t=1, temp=91.0)))
    pi = noise_reasons(reading(), reading(t=1, vcgencmd_throttled="throttled=0x50005"))
    assert pi == ["throttling: throttled, under-voltage (vcgencmd get_throttled throttled=0x50005)"]
    assert noise_reasons(reading(), reading(t=1, vcgencmd_throttled="throttled=0x50000")) == []  # only in the past
    jetson = noise_reasons(reading(), reading(t=1, cooling_active=["cpufreq-cpu0=3"]))
    assert jetson == ["throttling: CPU cooling device(s) engaged: cpufreq-cpu0=3"]
    x86 = noise_reasons(reading(thermal_throttle_count=10), reading(t=1, thermal_throttle_count=14))
    assert x86 == ["throttling: the CPUs' thermal throttle counters rose by 4 while timing"]


def test_limits_are_target_settings():
    strict = QuietLimits(require_governor="performance", min_frequency_ratio=0.9, max_temperature_c=None,
                         fail_on_throttling=False)
    reasons = noise_reasons(reading(), reading(t=1, temp=99.0, cur_freq_khz=600000,
                                               vcgencmd_throttled="throttled=0x4"), strict)
    assert reasons == ["CPU governor schedutil (the target requires performance)",
                       "CPU at 600 MHz of 1500 MHz right after timing (min 90%)"]


def test_an_old_agent_without_readings_is_not_called_noisy():
    assert noise_reasons(None, None) == [] and noise_reasons({}, {"cpu_count": 2}) == []


def test_pi_throttle_flags_parse_vcgencmd():
    assert pi_throttle_flags("throttled=0x0") == [] and pi_throttle_flags(None) == []
    assert pi_throttle_flags("throttled=0xe") == ["ARM frequency capped", "throttled", "soft temperature limit"]
    assert pi_throttle_flags("error") == []


def test_quiet_limits_load_from_a_target_file_and_mistakes_name_the_field(tmp_path):
    path = tmp_path / "pi.yaml"
    path.write_text("name: pi\nquiet:\n  max_other_busy_cpus: 0.2\n  require_governor: performance\n")
    assert load_target(str(path)).quiet == QuietLimits(max_other_busy_cpus=0.2, require_governor="performance")
    path.write_text("name: pi\nquiet:\n  max_load: 2\n")
    with pytest.raises(ConfigError, match=r"quiet\.max_load.*unknown field.*max_load_per_cpu"):
        load_target(str(path))
    path.write_text("name: pi\nquiet:\n  min_frequency_ratio: 2\n")
    with pytest.raises(ConfigError, match=r"quiet.*min_frequency_ratio must be in"):
        load_target(str(path))
