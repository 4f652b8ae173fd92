"""What a device *is*: `targets/<name>.yaml` loaded into a frozen TargetSpec.

No I/O beyond reading the file; connecting lives in harness.run.transport.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Tuple

from harness.schema.loader import list_names, load_named, named_file
from harness.core.errors import ConfigError
from harness.core.names import is_valid_name

TARGETS_DIR = Path("targets")
LOCAL = "local"
#: the formats every recipe converts to and every target runs unless it says otherwise
FORMATS = ("tflite", "onnx", "openvino")
#: runtimes only devices have (TensorRT, an NPU SDK): format name -> the suffix of its model files. The host
#: never imports them: it reads their files through the agent on a device of the run that has the runtime
#: (harness.prepare.inspection, harness.run.device_inspection). Adding one: docs/device-runtimes.md.
DEVICE_ONLY_FORMATS: Dict[str, str] = {}
#: every format a recipe may name and a target may run: torch (TorchScript / torch.export programs) is opt-in
ALL_FORMATS = FORMATS + ("torch",) + tuple(DEVICE_ONLY_FORMATS)


@dataclass(frozen=True)
class Budgets:
    """Per-target budgets used by scoring, recommendations and the gate."""

    latency_p99_ms: float = 50.0
    peak_memory_mb: float = 512.0
    #: energy per inference above idle, millijoules (docs/energy.md); null: no energy budget
    energy_mj: Optional[float] = None

    def __post_init__(self) -> None:
        if self.energy_mj is not None and self.energy_mj <= 0:
            raise ValueError(f"energy_mj must be above 0 (or null: no energy budget), got {self.energy_mj}")


#: the power sources the agent knows (harness.agent.agent.POWER_SOURCES), plus auto (probe them in turn) and none
POWER_SOURCE_NAMES = ("auto", "none", "ina3221", "pmic", "rapl", "hwmon", "command")


@dataclass(frozen=True)
class PowerSettings:
    """Where the agent reads the device's power (docs/energy.md). The defaults probe the real places: INA3221
    rails, `vcgencmd pmic_read_adc`, RAPL, hwmon power, in that order."""

    #: auto, none, ina3221 (Jetson), pmic (Raspberry Pi 5), rapl (x86), hwmon, command (an external meter)
    source: str = "auto"
    #: the sysfs root the sysfs sources read ('' = /sys); a simulated or copied tree can stand in
    root: str = ""
    #: the rail to read (INA3221: VDD_IN, POM_5V_IN, ...; pmic: VDD_CORE, ...); '' = the board's input rail
    #: (Jetson), every rail summed (pmic), every package (RAPL)
    rail: str = ""
    #: pmic: the vcgencmd to run ('' = vcgencmd on PATH); command: the meter's command line, printing one number
    command: str = ""
    #: command: what the number is, W (watts now) or J (joules so far, a counter)
    unit: str = "W"
    #: seconds of idle power, the model loaded and nothing running, before the timed loop
    idle_s: float = 0.5
    #: readings per second while idle and while timing (a sampling thread); the rate reached is recorded
    sampling_hz: float = 20.0
    #: fewer readings than this in the idle window or the timed loop: "not measured: too few samples"
    min_samples: int = 5

    def __post_init__(self) -> None:
        if self.source not in POWER_SOURCE_NAMES:
            raise ValueError(f"source must be one of {', '.join(POWER_SOURCE_NAMES)}, got {self.source!r}")
        if self.source == "command" and not self.command:
            raise ValueError("source: command needs command: (the meter's command line)")
        if self.unit not in ("W", "J"):
            raise ValueError(f"unit must be W or J, got {self.unit!r}")
        if self.idle_s <= 0 or self.sampling_hz <= 0 or self.min_samples < 2:
            raise ValueError("idle_s and sampling_hz must be above 0 and min_samples at least 2")

    def to_agent(self) -> Dict[str, Any]:
        """The agent's --power JSON."""
        return {"source": self.source, "root": self.root, "rail": self.rail, "command": self.command,
                "unit": self.unit, "idle_s": self.idle_s, "sampling_hz": self.sampling_hz,
                "min_samples": self.min_samples}


@dataclass(frozen=True)
class ThermalSettings:
    """Where the agent reads the device's temperature and throttling (docs/heat.md). The defaults read the real
    places: thermal zones, hwmon CPU chips, `vcgencmd get_throttled`, clock-capping cooling devices, x86
    thermal_throttle counters."""

    #: the sysfs root ('' = /sys): a copied or simulated tree can stand in
    root: str = ""
    #: the vcgencmd to run for get_throttled ('' = vcgencmd on PATH, where there is one)
    vcgencmd: str = ""
    #: readings per second over the timed loop (a thread; vcgencmd, a fork per reading, at most 2)
    sampling_hz: float = 4.0

    def __post_init__(self) -> None:
        if not 0 < self.sampling_hz <= 100:
            raise ValueError(f"sampling_hz must be above 0 and at most 100, got {self.sampling_hz}")

    def to_agent(self, quiet: "QuietLimits") -> Dict[str, Any]:
        """The agent's --thermal JSON: where to read, and the cooldown before each agent run."""
        return {"root": self.root, "vcgencmd": self.vcgencmd, "sampling_hz": self.sampling_hz,
                "cooldown_below_c": quiet.cooldown_below_c, "cooldown_max_wait_s": quiet.cooldown_max_wait_s}


@dataclass(frozen=True)
class QuietLimits:
    """When a device is too busy or too hot to measure: a cell measured past any of these is `noisy`,
    and the gate does not judge it (re-run). The agent reads the device before and after timing.
    A limit set to null is not checked."""

    #: CPUs' worth of time other processes used while the agent timed (0.5 = half a core, on average)
    max_other_busy_cpus: Optional[float] = 0.5
    #: 1-minute load average per CPU before timing, the agent itself not counted
    max_load_per_cpu: Optional[float] = 1.0
    #: hottest thermal zone, degrees C
    max_temperature_c: Optional[float] = 85.0
    #: any throttling flag (Pi `vcgencmd get_throttled`, a thermal cooling device engaged on a Jetson,
    #: x86 thermal_throttle counters that rose while timing) makes the cell noisy
    fail_on_throttling: bool = True
    #: the CPU governor the device must run, e.g. performance (null: any)
    require_governor: Optional[str] = None
    #: current / maximum CPU frequency right after timing must be at least this (null: not checked)
    min_frequency_ratio: Optional[float] = None
    #: the device speed reference (a fixed workload the agent times right before and after timing, and between
    #: the chunks of a long timing) may run at most this much slower than the device's usual time for it
    #: (0.05: 5 % slower); a repeat past it is measured again, and a cell that stays past it is noisy
    max_reference_drift: Optional[float] = 0.05
    #: how many times a repeat measured on a slow device (past max_reference_drift) is measured again
    max_remeasures: int = 2
    #: before each agent run of a cell, wait until the hottest reading is below this (degrees C; null: no
    #: cooldown); a cell that could not cool in cooldown_max_wait_s is still timed, and is noisy
    cooldown_below_c: Optional[float] = None
    #: the longest cooldown wait, seconds (it is added to the cell's command timeout)
    cooldown_max_wait_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("max_other_busy_cpus", "max_load_per_cpu", "max_temperature_c"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        if self.max_reference_drift is not None and self.max_reference_drift <= 0:
            raise ValueError(f"max_reference_drift must be above 0 (0.05: 5 % slower), got {self.max_reference_drift}")
        if self.max_remeasures < 0:
            raise ValueError(f"max_remeasures must not be negative, got {self.max_remeasures}")
        if self.min_frequency_ratio is not None and not 0.0 < self.min_frequency_ratio <= 1.0:
            raise ValueError(f"min_frequency_ratio must be in (0, 1], got {self.min_frequency_ratio}")
        if self.cooldown_below_c is not None and not 0.0 < self.cooldown_below_c < 150.0:
            raise ValueError(f"cooldown_below_c must be degrees C between 0 and 150 (e.g. 60), or null for no "
                             f"cooldown; got {self.cooldown_below_c}")
        if not 0.0 < self.cooldown_max_wait_s <= 3600.0:
            raise ValueError(f"cooldown_max_wait_s must be seconds above 0 and at most 3600 (e.g. 300), got "
                             f"{self.cooldown_max_wait_s}")

    @property
    def cooldown_s(self) -> float:
        """The most a cooldown may add to one agent run (0 without one)."""
        return self.cooldown_max_wait_s if self.cooldown_below_c is not None else 0.0


@dataclass(frozen=True)
class TargetSpec:
    name: str
    transport: Literal["local", "ssh"] = "local"
    description: str = ""
    host: str = ""
    port: int = 22
    user: str = ""
    key_file: str = ""
    known_hosts: str = ""
    # Explicit, visible policy: 'reject' (default) refuses unknown or changed keys.
    host_key_policy: Literal["reject", "accept-new"] = "reject"
    python: str = "python3"
    workdir: str = "~/.cache/edge-harness"
    arch: str = "x86_64"
    #: the device's Python runs under an emulator (qemu-user): it shows whether a model loads, runs and
    #: what it outputs on `arch`, but its latency and memory are not representative; scores and the gate
    #: do not judge them, and the report says so
    emulated: bool = False
    #: a list of formats (each the runtime's default configuration) or, per runtime, named configurations
    #: with their options (harness.schema.runtime_configs); normalized to the formats it names
    runtimes: Any = ("tflite", "onnx", "openvino")
    threads: int = 1
    budgets: Budgets = field(default_factory=Budgets)
    #: when the device is too busy or hot to measure (cells measured past these are `noisy`)
    quiet: QuietLimits = field(default_factory=QuietLimits)
    #: the device's power sensor, for energy per inference (docs/energy.md)
    power: PowerSettings = field(default_factory=PowerSettings)
    #: where the device's temperature and throttling are read (docs/heat.md)
    thermal: ThermalSettings = field(default_factory=ThermalSettings)
    connect_timeout_s: float = 10.0
    command_timeout_s: float = 300.0
    transfer_timeout_s: float = 120.0
    connect_retries: int = 3
    lock_timeout_s: float = 0.0
    #: the device's content cache may hold at most this many bytes; least-recently-used entries no run needs are
    #: evicted before an upload that would pass it. 0: half of what was free at the device's first probe
    cache_max_bytes: int = 0
    #: free space the cache always leaves on the device's disk; 0: 10 % of the filesystem, at most 1 GiB
    cache_keep_free_bytes: int = 0
    #: the lab whose network reaches the device: with a dask scheduler (--scheduler), the device's job runs on
    #: a worker started with `--resources "site-<site>=1"`; '' runs it on any worker (harness.run.dask)
    site: str = ""
    #: set by the loader: the file this came from (for messages)
    source_path: str = field(default="", metadata={"internal": True})
    #: set from `runtimes` when the file loads: every named configuration (RuntimeConfig), in file order
    runtime_configs: Tuple[Any, ...] = field(default=(), metadata={"internal": True})

    def __post_init__(self) -> None:
        if not is_valid_name(self.name):
            raise ConfigError(self.source_path, f"{self.name!r} must be letters, digits, '_', '-' or '.'", "name")
        if self.transport == "ssh":
            for required in ("host", "user"):
                if not getattr(self, required):
                    raise ConfigError(self.source_path, "is required for an ssh target", required)
        if self.threads < 1:
            raise ConfigError(self.source_path, "must be at least 1", "threads")
        for budget in ("cache_max_bytes", "cache_keep_free_bytes"):
            if getattr(self, budget) < 0:
                raise ConfigError(self.source_path, "must be 0 (derived from the device's free space) or a number "
                                  "of bytes", budget)
        if self.site and not is_valid_name(self.site):
            raise ConfigError(self.source_path, f"{self.site!r} must be letters, digits, '_', '-' or '.' (it names "
                              "the worker resource site-<site>)", "site")
        from harness.schema.runtime_configs import RuntimeConfig, formats_of, parse_runtimes
        configs = self.runtime_configs
        if not configs or not all(isinstance(c, RuntimeConfig) for c in configs):
            if configs:
                raise ConfigError(self.source_path, "is set by the loader; declare configurations under runtimes:",
                                  "runtime_configs")
            configs = parse_runtimes(self.runtimes, self.source_path, ALL_FORMATS)
        # normalized once: runtimes are the formats, runtime_configs the configurations
        object.__setattr__(self, "runtime_configs", tuple(configs))
        object.__setattr__(self, "runtimes", formats_of(configs))

    @property
    def is_local(self) -> bool:
        return self.transport == "local"

    def expanded(self, value: str) -> str:
        return os.path.expanduser(os.path.expandvars(value)) if value else value


def target_path(name_or_path: str, targets_dir: Path = TARGETS_DIR) -> Path:
    return named_file(name_or_path, targets_dir)


#: the file `harness init` writes as targets/local.yaml: the built-in `local` is the same target
LOCAL_TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "targets" / f"{LOCAL}.yaml"


def builtin_local() -> TargetSpec:
    """This machine's CPU, as `harness init` writes it (same budgets, threads and lock wait), with this machine's
    architecture and every format its Python may run."""
    spec = load_named(TargetSpec, str(LOCAL_TEMPLATE), LOCAL_TEMPLATE.parent, "target", "targets")
    return replace(spec, description="this machine's CPU (built-in default)", arch=os.uname().machine,
                   runtimes=ALL_FORMATS, runtime_configs=(), source_path="")


def run_target(name_or_path: str, targets_dir: Path = TARGETS_DIR) -> TargetSpec:
    """A target named on the command line (see load_target)."""
    return load_target(name_or_path, targets_dir)


def load_target(name_or_path: str, targets_dir: Path = TARGETS_DIR) -> TargetSpec:
    """A target by name or path. `local` is this machine wherever no targets/local.yaml redefines it (no targets/
    directory, or one with only other targets), so `harness profile --model-file` works from any directory."""
    if name_or_path == LOCAL and not target_path(LOCAL, targets_dir).exists():
        return builtin_local()
    known = list_target_names(targets_dir)
    return load_named(TargetSpec, name_or_path, targets_dir, "target", "targets",
                      hint=". Create the file (examples: targets/examples/) or pass an existing name"
                      + ("" if LOCAL in known else f" (the built-in {LOCAL} is always there)"))


def list_target_names(targets_dir: Path = TARGETS_DIR) -> list:
    """The target files' names (the built-in `local` is not a file: load_target knows it)."""
    return list_names(targets_dir)
