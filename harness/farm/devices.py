"""What each simulated device class *is*: limits, thread count, runtimes, Python environment.

Data only; starting servers lives in harness.farm.sim and building Python
environments in harness.farm.envs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

GiB = 1 << 30


@dataclass(frozen=True)
class DeviceEnv:
    """A device Python environment: a venv built from the first base Python that exists."""

    name: str
    #: base Python versions to look for, best first (a real device's system Python); "" = the host's own
    base_versions: Tuple[str, ...]
    requirements: Tuple[str, ...]
    #: modules that must import afterwards (a broken build is an error at farm-up, not at profile time)
    check_imports: Tuple[str, ...]


#: ONNX Runtime with OpenVINO's execution provider: PyPI's onnxruntime-openvino installs the `onnxruntime` module
#: itself, so it lives in a venv of its own, never beside the host's onnxruntime.
INTEL_OVEP_ENV = DeviceEnv("intel-ovep", ("3.11", ""), ("numpy<2.3", "onnxruntime-openvino==1.24.1"),
                           ("numpy", "onnxruntime"))
#: Raspberry Pi OS (bookworm) has Python 3.11 and, for tflite-runtime, numpy 1.x.
PI_ENV = DeviceEnv("pi", ("3.11", ""), ("numpy<2", "tflite-runtime==2.14.0"), ("numpy", "tflite_runtime.interpreter"))
#: JetPack 5 ships Python 3.8 with numpy 1.x; onnxruntime 1.19 is the last release for 3.8.
JETSON_ENV = DeviceEnv("jetson", ("3.8", "3.11", ""),
                       ("numpy<2", "onnxruntime==1.19.2", "tflite-runtime==2.14.0"),
                       ("numpy", "onnxruntime", "tflite_runtime.interpreter"))


@dataclass(frozen=True)
class EmulatedEnv:
    """A device Python of another architecture: a Debian sysroot whose interpreter runs under qemu-user.

    The sysroot holds Debian's own packages for that architecture (the interpreter and the C
    libraries wheels link against); the Python packages are PyPI's wheels for that architecture,
    the ones `pip install` would pick on the real board.
    """

    name: str
    #: the machine the device reports (`platform.machine()`), e.g. "aarch64"
    arch: str
    #: Debian's name for it, e.g. "arm64"
    debian_arch: str
    #: the Debian release the sysroot comes from (Raspberry Pi OS 12 is bookworm)
    debian_suite: str
    python_version: str
    debian_packages: Tuple[str, ...]
    requirements: Tuple[str, ...]
    check_imports: Tuple[str, ...]
    #: qemu's -cpu model: what the emulated CPU reports in its ID registers and hwcaps
    qemu_cpu: str
    #: the emulated /proc/cpuinfo (the host's describes x86 CPUs, on which Arm builds of
    #: ONNX Runtime crash while detecting cores): MIDR part number and the Hardware line
    cpu_part: str
    cpu_features: str
    cpu_hardware: str


#: What `python3.11` needs from bookworm arm64 besides what wheels bundle (libstdc++ for the runtimes).
ARM64_DEBIAN_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6", "libgcc-s1")
#: Raspberry Pi 4 (Cortex-A72, no dot-product instructions), Python 3.11 as on Raspberry Pi OS bookworm;
#: tflite-runtime has no aarch64 wheel for 3.11, ai-edge-litert (its successor) has.
PI_ARM64_ENV = EmulatedEnv("pi-arm64", "aarch64", "arm64", "bookworm", "3.11", ARM64_DEBIAN_PACKAGES,
                           ("numpy<2", "ai-edge-litert==2.3.0"), ("numpy", "ai_edge_litert.interpreter"),
                           qemu_cpu="cortex-a72", cpu_part="0xd08", cpu_features="fp asimd evtstrm crc32 cpuid",
                           cpu_hardware="simulated Raspberry Pi 4 (qemu-aarch64 cortex-a72)")
#: Jetson Orin-like (Cortex-A78AE; qemu's nearest is the A76, both ARMv8.2 with dot product).
JETSON_ARM64_ENV = EmulatedEnv("jetson-arm64", "aarch64", "arm64", "bookworm", "3.11", ARM64_DEBIAN_PACKAGES,
                               ("numpy", "onnxruntime==1.32.0"), ("numpy", "onnxruntime"),
                               qemu_cpu="cortex-a76", cpu_part="0xd0b",
                               cpu_features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                                            "asimdrdm lrcpc dcpop asimddp",
                               cpu_hardware="simulated Jetson (qemu-aarch64 cortex-a76)")


@dataclass(frozen=True)
class DeviceClass:
    """One kind of simulated device: how much machine it gets and what it runs."""

    name: str
    description: str
    runtimes: Tuple[str, ...]
    threads: int
    #: CPUs pinned with sched_setaffinity (0 = every CPU this machine gives us)
    cpu_count: int
    #: cgroup CPU quota in CPUs (0.5 = half of one CPU); None = no quota
    cpu_quota: Optional[float]
    memory_limit_bytes: Optional[int]
    #: None: the harness's own Python (it has every runtime)
    env: Optional[Union[DeviceEnv, EmulatedEnv]]
    latency_p99_ms: float
    peak_memory_mb: float
    #: the target's command_timeout_s: one agent run (a cell) must end within it
    command_timeout_s: float = 300.0
    #: named runtime configurations for the target's `runtimes:` (harness.schema.runtime_configs); None: the list
    #: of runtimes, each with its default configuration
    runtime_configs: Optional[Mapping[str, Any]] = field(default=None, compare=False)
    #: its SIMULATED power sensor (harness.farm.sim_power): the sensor kind ("ina3221", "pmic", "rapl"), idle watts
    #: and watts per busy CPU of the device's own cgroup; None: no sensor (energy is "not measured")
    power: Optional[Tuple[str, float, float]] = None
    #: its SIMULATED thermal zone (harness.farm.sim_power, the same process as the power sensor, so only with
    #: `power`): ambient C, C per busy CPU of the device's own cgroup, time constant s, trip point C (throttling
    #: above it); None: no thermal tree (temperature "not measured")
    thermal: Optional[Tuple[float, float, float, float]] = None

    @property
    def emulated(self) -> bool:
        """Its Python runs under qemu-user: outputs are real, timings are not."""
        return isinstance(self.env, EmulatedEnv)

    def arch(self, host_arch: str) -> str:
        return self.env.arch if isinstance(self.env, EmulatedEnv) else host_arch


DEVICE_CLASSES: Tuple[DeviceClass, ...] = (
    DeviceClass("sim-pi4", "simulated Raspberry Pi 4: 1 pinned CPU at a 50% quota, 1 GiB, numpy<2 + tflite-runtime",
                ("tflite",), threads=1, cpu_count=1, cpu_quota=0.5, memory_limit_bytes=1 * GiB, env=PI_ENV,
                latency_p99_ms=40.0, peak_memory_mb=300.0, power=("pmic", 2.7, 3.0),
                thermal=(45.0, 30.0, 20.0, 80.0)),
    DeviceClass("sim-jetson", "simulated Jetson: 2 CPUs at a 1.5-CPU quota, 4 GiB, Python 3.8 with onnxruntime "
                "and tflite-runtime", ("onnx", "tflite"), threads=2, cpu_count=2, cpu_quota=1.5,
                memory_limit_bytes=4 * GiB, env=JETSON_ENV, latency_p99_ms=20.0, peak_memory_mb=600.0,
                power=("ina3221", 4.5, 2.5), thermal=(38.0, 12.0, 30.0, 85.0)),
    DeviceClass("sim-x86", "simulated x86 edge box: every CPU, 8 GiB, the host's Python with all three runtimes",
                ("tflite", "onnx", "openvino"), threads=2, cpu_count=0, cpu_quota=None,
                memory_limit_bytes=8 * GiB, env=None, latency_p99_ms=10.0, peak_memory_mb=1024.0,
                power=("rapl", 12.0, 8.0), thermal=(40.0, 10.0, 15.0, 90.0)),
)
#: Opt-in classes (`harness farm up --with NAME`), beside the architecture's own.
EXTRA_DEVICE_CLASSES: Tuple[DeviceClass, ...] = (
    DeviceClass("sim-intel-ovep", "simulated Intel box running ONNX models through ONNX Runtime's OpenVINO execution "
                "provider (onnxruntime-openvino 1.24.1 in its own venv) and its CPU provider; every CPU, 8 GiB",
                ("onnx",), threads=2, cpu_count=0, cpu_quota=None, memory_limit_bytes=8 * GiB, env=INTEL_OVEP_ENV,
                latency_p99_ms=10.0, peak_memory_mb=1024.0, runtime_configs={"onnx": [
                    {"name": "ort-cpu"},
                    {"name": "ort-openvino", "providers": ["OpenVINOExecutionProvider", "CPUExecutionProvider"],
                     "provider_options": {"OpenVINOExecutionProvider": {"device_type": "CPU"}}}]}),
)


def extra_classes(names: Sequence[str]) -> Tuple[DeviceClass, ...]:
    """The opt-in classes named (farm up --with); an unknown name lists the known ones."""
    known = {c.name: c for c in EXTRA_DEVICE_CLASSES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"no opt-in device class {', '.join(unknown)}; known: {', '.join(known)}")
    return tuple(known[n] for n in names)


#: Under qemu a cell's outputs for every evaluation sample take ~200x longer: fashion_cnn's 10,000 test images
#: take about 2 minutes as float TFLite on sim-pi4-arm64 (13 s per 1,000 measured), so 30 minutes, not 5.
EMULATED_COMMAND_TIMEOUT_S = 1800.0
#: Started with `farm up --arch aarch64`. No CPU quota (qemu is already ~200x slower and their latency is
#: not judged), and memory for qemu's translated code beside the model.
EMULATED_DEVICE_CLASSES: Tuple[DeviceClass, ...] = (
    DeviceClass("sim-pi4-arm64", "simulated Raspberry Pi 4, aarch64 under qemu-user (cortex-a72): Debian bookworm "
                "arm64 Python 3.11, numpy<2 + ai-edge-litert from PyPI's aarch64 wheels; 1 pinned CPU, 2 GiB",
                ("tflite",), threads=1, cpu_count=1, cpu_quota=None, memory_limit_bytes=2 * GiB, env=PI_ARM64_ENV,
                latency_p99_ms=40.0, peak_memory_mb=300.0, command_timeout_s=EMULATED_COMMAND_TIMEOUT_S),
    DeviceClass("sim-jetson-arm64", "simulated Jetson, aarch64 under qemu-user (cortex-a76): Debian bookworm arm64 "
                "Python 3.11, numpy + onnxruntime from PyPI's aarch64 wheels; 2 pinned CPUs, 4 GiB",
                ("onnx",), threads=2, cpu_count=2, cpu_quota=None, memory_limit_bytes=4 * GiB,
                env=JETSON_ARM64_ENV, latency_p99_ms=20.0, peak_memory_mb=600.0,
                command_timeout_s=EMULATED_COMMAND_TIMEOUT_S),
)
#: what `--arch` accepts besides the canonical names
ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64", "x86": "x86_64"}


def classes_for(arches: Sequence[str], host_arch: str) -> Tuple[DeviceClass, ...]:
    """The device classes of these architectures ("aarch64", "x86_64"; default: the host's), in table order.

    The host's architecture selects the native stand-ins; another one its emulated classes.
    """
    wanted = [ARCH_ALIASES.get(a.strip().lower(), a.strip().lower()) for a in arches if a.strip()] or [host_arch]
    every = DEVICE_CLASSES + EMULATED_DEVICE_CLASSES
    known = sorted({c.arch(host_arch) for c in every})
    unknown = [a for a in wanted if a not in known]
    if unknown:
        raise ValueError(f"no simulated devices for architecture {', '.join(unknown)}; known: {', '.join(known)}")
    return tuple(c for c in every if c.arch(host_arch) in wanted)


def device_plan(count: Optional[int] = None, classes: Sequence[DeviceClass] = ()
                ) -> Tuple[Tuple[str, DeviceClass, int], ...]:
    """Names for `count` devices, cycling through the classes: sim-pi4, sim-jetson, sim-x86, sim-pi4-2, ...

    `classes` defaults to DEVICE_CLASSES (the native ones); `count` to one device per class.
    Returns (device name, class, copy index starting at 0).
    """
    classes = tuple(classes) or DEVICE_CLASSES
    count = len(classes) if count is None else count
    plan = []
    for i in range(count):
        cls = classes[i % len(classes)]
        copy = i // len(classes)
        plan.append((cls.name if copy == 0 else f"{cls.name}-{copy + 1}", cls, copy))
    return tuple(plan)
