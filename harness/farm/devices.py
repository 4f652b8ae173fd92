"""What each simulated device class *is*: limits, thread count, runtimes, Python environment.

Data only; starting servers lives in harness.farm.sim and building Python
environments in harness.farm.envs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

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


#: Raspberry Pi OS (bookworm) has Python 3.11 and, for tflite-runtime, numpy 1.x.
PI_ENV = DeviceEnv("pi", ("3.11", ""), ("numpy<2", "tflite-runtime==2.14.0"), ("numpy", "tflite_runtime.interpreter"))
#: JetPack 5 ships Python 3.8 with numpy 1.x; onnxruntime 1.19 is the last release for 3.8.
JETSON_ENV = DeviceEnv("jetson", ("3.8", "3.11", ""),
                       ("numpy<2", "onnxruntime==1.19.2", "tflite-runtime==2.14.0"),
                       ("numpy", "onnxruntime", "tflite_runtime.interpreter"))


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
    env: Optional[DeviceEnv]
    latency_p99_ms: float
    peak_memory_mb: float


DEVICE_CLASSES: Tuple[DeviceClass, ...] = (
    DeviceClass("sim-pi4", "simulated Raspberry Pi 4: 1 pinned CPU at a 50% quota, 1 GiB, numpy<2 + tflite-runtime",
                ("tflite",), threads=1, cpu_count=1, cpu_quota=0.5, memory_limit_bytes=1 * GiB, env=PI_ENV,
                latency_p99_ms=40.0, peak_memory_mb=300.0),
    DeviceClass("sim-jetson", "simulated Jetson: 2 CPUs at a 1.5-CPU quota, 4 GiB, Python 3.8 with onnxruntime "
                "and tflite-runtime", ("onnx", "tflite"), threads=2, cpu_count=2, cpu_quota=1.5,
                memory_limit_bytes=4 * GiB, env=JETSON_ENV, latency_p99_ms=20.0, peak_memory_mb=600.0),
    DeviceClass("sim-x86", "simulated x86 edge box: every CPU, 8 GiB, the host's Python with all three runtimes",
                ("tflite", "onnx", "openvino"), threads=2, cpu_count=0, cpu_quota=None,
                memory_limit_bytes=8 * GiB, env=None, latency_p99_ms=10.0, peak_memory_mb=1024.0),
)


def device_plan(count: int) -> Tuple[Tuple[str, DeviceClass, int], ...]:
    """Names for `count` devices, cycling through the classes: sim-pi4, sim-jetson, sim-x86, sim-pi4-2, ...

    Returns (device name, class, copy index starting at 0).
    """
    plan = []
    for i in range(count):
        cls = DEVICE_CLASSES[i % len(DEVICE_CLASSES)]
        copy = i // len(DEVICE_CLASSES)
        plan.append((cls.name if copy == 0 else f"{cls.name}-{copy + 1}", cls, copy))
    return tuple(plan)
