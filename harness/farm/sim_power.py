#!/usr/bin/env python3
"""A SIMULATED power sensor and thermal zone for a simulated farm device: no real sensor can exist on this machine.

It keeps a sensor tree in the real file layouts up to date from a stated power model of the device's own
CPU use (its cgroup's CPU time, so the agent and whatever else the device runs count):

    power_w = idle_w + w_per_cpu * busy_cpus

where busy_cpus is the cgroup's CPU seconds per second over the last tick. Kinds:

* `ina3221`: <tree>/class/hwmon/hwmon0/ as L4T 34+ writes it: name "ina3221", in<N>_label, in<N>_input (mV),
  curr<N>_input (mA); rail 1 is VDD_IN, the board's input rail (the whole model), 2 the CPU rail, 3 the SoC.
* `pmic`: <tree>/pmic_read_adc.txt in `vcgencmd pmic_read_adc`'s line format, and <tree>/vcgencmd, a shell
  script that prints it (a Raspberry Pi 5's PMIC; each reading costs the device a fork, as on a real Pi).
* `rapl`: <tree>/class/powercap/intel-rapl:0/ with name, energy_uj (a counter) and max_energy_range_uj, kept
  small so that it wraps during a run, as a real one does less often.

With --ambient-c (the thermal model), the same process keeps a SIMULATED thermal tree in the real layouts too:

    temperature_c relaxes toward ambient_c + c_per_cpu * busy_cpus with time constant tau_s
    (each tick: t += (target - t) * (1 - exp(-dt / tau_s))); above trip_c the device throttles

* every kind: <tree>/class/thermal/thermal_zone0/ (type, temp in millidegrees C);
* `pmic` (a Raspberry Pi): <tree>/get_throttled.txt, `throttled=0x...` as `vcgencmd get_throttled` prints it
  (bits 1 and 2 now, 17 and 18 since start), printed by the same simulated vcgencmd;
* `ina3221` (a Jetson): a second zone (GPU-therm, 3 C cooler), cooling_device0 `cpufreq-cpu0` whose cur_state is
  1 above trip_c, and cooling_device1 `pwm-fan` (a fan: not throttling);
* `rapl` (x86): zone type x86_pkg_temp, and <tree>/devices/system/cpu/cpu0/thermal_throttle/{core,package}
  _throttle_count, counters that rise every tick above trip_c.

Standard library only; run by harness.farm.sim as a script, stopped by `harness farm down`.
"""
import argparse
import math
import os
import signal
import sys
import time


class Model(object):
    """The stated power model; harness.farm.devices gives each device class its numbers."""

    def __init__(self, idle_w, w_per_cpu):
        self.idle_w, self.w_per_cpu = idle_w, w_per_cpu

    def watts(self, busy_cpus):
        return self.idle_w + self.w_per_cpu * max(0.0, busy_cpus)


def cpu_seconds(usage_file):
    """The cgroup's CPU time so far: cgroup v1 cpuacct.usage (ns) or v2 cpu.stat usage_usec."""
    with open(usage_file) as handle:
        text = handle.read()
    if usage_file.endswith("cpu.stat"):
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
        raise ValueError("no usage_usec in %s" % usage_file)
    return int(text.split()[0]) / 1e9


def _write(path, text):
    part = path + ".part"
    with open(part, "w") as handle:
        handle.write(text)
    os.rename(part, path)  # a reader sees the old value or the new one, never half of one


RAPL_RANGE_UJ = 50000000  # 50 J: wraps every few seconds, so the agent's wrap handling is exercised


class Tree(object):
    def __init__(self, kind, tree):
        self.kind, self.tree = kind, tree
        self.energy_uj = 0.0
        if kind == "ina3221":
            self.dir = os.path.join(tree, "class", "hwmon", "hwmon0")
            os.makedirs(self.dir, exist_ok=True)
            _write(os.path.join(self.dir, "name"), "ina3221\n")
            for n, label in ((1, "VDD_IN"), (2, "VDD_CPU_GPU_CV"), (3, "VDD_SOC")):
                _write(os.path.join(self.dir, "in%d_label" % n), label + "\n")
        elif kind == "rapl":
            self.dir = os.path.join(tree, "class", "powercap", "intel-rapl:0")
            os.makedirs(self.dir, exist_ok=True)
            _write(os.path.join(self.dir, "name"), "package-0\n")
            _write(os.path.join(self.dir, "max_energy_range_uj"), "%d\n" % RAPL_RANGE_UJ)
        elif kind == "pmic":
            os.makedirs(tree, exist_ok=True)
            script = os.path.join(tree, "vcgencmd")
            _write(script, '#!/bin/sh\n# SIMULATED vcgencmd (harness.farm.sim_power): pmic_read_adc, get_throttled\n'
                           'case "$1" in\n  pmic_read_adc) exec cat "%s";;\n  get_throttled) exec cat "%s";;\n'
                           '  *) echo "error=1 error_msg=\\"Command not registered\\""; exit 255;;\nesac\n'
                   % (os.path.join(tree, "pmic_read_adc.txt"), os.path.join(tree, "get_throttled.txt")))
            os.chmod(script, 0o755)
        else:
            raise ValueError("unknown kind %r" % kind)

    def update(self, watts, cpu_share, dt):
        """watts: the whole device; cpu_share: the part of it above idle (the CPU rail's)."""
        if self.kind == "ina3221":
            for n, (mv, w) in enumerate(((5000.0 - 20.0 * cpu_share, watts),
                                         (800.0 + 50.0 * cpu_share, 0.6 + cpu_share), (800.0, 1.1)), 1):
                _write(os.path.join(self.dir, "in%d_input" % n), "%d\n" % round(mv))
                _write(os.path.join(self.dir, "curr%d_input" % n), "%d\n" % round(w / mv * 1e6))
        elif self.kind == "rapl":
            self.energy_uj = (self.energy_uj + watts * dt * 1e6) % RAPL_RANGE_UJ
            _write(os.path.join(self.dir, "energy_uj"), "%d\n" % self.energy_uj)
        else:
            core_v = 0.80 + 0.05 * min(cpu_share, 1.0)
            core_a = (watts - 1.2) / core_v
            lines = ["     3V7_WL_SW_A current(0)=0.08000000A", "       3V3_SYS_A current(1)=0.09000000A",
                     "     VDD_CORE_A current(7)=%.8fA" % core_a, "     3V7_WL_SW_V volt(8)=3.70000000V",
                     "       3V3_SYS_V volt(9)=3.30000000V", "     VDD_CORE_V volt(15)=%.8fV" % core_v,
                     "        EXT5V_V volt(24)=5.12000000V"]
            # the two small rails: 0.08 x 3.7 + 0.09 x 3.3 = 0.593 W; the rest of the 1.2 W base is unmeasured
            _write(os.path.join(self.tree, "pmic_read_adc.txt"), "\n".join(lines) + "\n")


class ThermalModel(object):
    """The stated thermal model; harness.farm.devices gives each device class its numbers."""

    def __init__(self, ambient_c, c_per_cpu, tau_s, trip_c):
        self.ambient_c, self.c_per_cpu, self.tau_s, self.trip_c = ambient_c, c_per_cpu, tau_s, trip_c
        self.temperature_c = ambient_c

    def step(self, busy_cpus, dt):
        target = self.ambient_c + self.c_per_cpu * max(0.0, busy_cpus)
        self.temperature_c += (target - self.temperature_c) * (1.0 - math.exp(-max(dt, 0.0) / self.tau_s))
        return self.temperature_c

    @property
    def throttling(self):
        return self.temperature_c > self.trip_c


class ThermalTree(object):
    """The SIMULATED thermal files of one device kind (module docstring)."""

    def __init__(self, kind, tree):
        self.kind, self.tree = kind, tree
        self.zones = os.path.join(tree, "class", "thermal")
        self.throttled_since_start, self.events = False, 0
        zones = (("cpu-thermal", 0.0),) if kind == "pmic" else \
            (("CPU-therm", 0.0), ("GPU-therm", -3.0)) if kind == "ina3221" else (("x86_pkg_temp", 0.0),)
        self.offsets = []
        for n, (kind_name, offset) in enumerate(zones):
            os.makedirs(os.path.join(self.zones, "thermal_zone%d" % n), exist_ok=True)
            _write(os.path.join(self.zones, "thermal_zone%d" % n, "type"), kind_name + "\n")
            self.offsets.append(offset)
        if kind == "ina3221":
            for n, name in enumerate(("cpufreq-cpu0", "pwm-fan")):
                device = os.path.join(self.zones, "cooling_device%d" % n)
                os.makedirs(device, exist_ok=True)
                _write(os.path.join(device, "type"), name + "\n")
                _write(os.path.join(device, "max_state"), "%d\n" % (4 if name == "cpufreq-cpu0" else 255))
        if kind == "rapl":
            self.counters = os.path.join(tree, "devices", "system", "cpu", "cpu0", "thermal_throttle")
            os.makedirs(self.counters, exist_ok=True)

    def update(self, model):
        for n, offset in enumerate(self.offsets):
            _write(os.path.join(self.zones, "thermal_zone%d" % n, "temp"),
                   "%d\n" % round((model.temperature_c + offset) * 1000))
        now = model.throttling
        self.throttled_since_start = self.throttled_since_start or now
        if self.kind == "pmic":
            value = (0x6 if now else 0) | (0x60000 if self.throttled_since_start else 0)
            _write(os.path.join(self.tree, "get_throttled.txt"), "throttled=0x%x\n" % value)
        elif self.kind == "ina3221":
            _write(os.path.join(self.zones, "cooling_device0", "cur_state"), "%d\n" % (1 if now else 0))
            _write(os.path.join(self.zones, "cooling_device1", "cur_state"), "%d\n" % (80 if now else 40))
        else:
            self.events += 1 if now else 0
            for name in ("core_throttle_count", "package_throttle_count"):
                _write(os.path.join(self.counters, name), "%d\n" % self.events)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", required=True, choices=("ina3221", "pmic", "rapl"))
    parser.add_argument("--tree", required=True)
    parser.add_argument("--usage", required=True, help="the device cgroup's cpuacct.usage or cpu.stat")
    parser.add_argument("--idle-w", type=float, required=True)
    parser.add_argument("--w-per-cpu", type=float, required=True)
    parser.add_argument("--hz", type=float, default=50.0)
    parser.add_argument("--ambient-c", type=float, help="the thermal model (none: no thermal tree)")
    parser.add_argument("--c-per-cpu", type=float, default=20.0)
    parser.add_argument("--tau-s", type=float, default=20.0)
    parser.add_argument("--trip-c", type=float, default=85.0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    model, tree = Model(args.idle_w, args.w_per_cpu), Tree(args.kind, args.tree)
    heat = heat_tree = None
    if args.ambient_c is not None:
        heat = ThermalModel(args.ambient_c, args.c_per_cpu, args.tau_s, args.trip_c)
        heat_tree = ThermalTree(args.kind, args.tree)
        heat_tree.update(heat)
    last_t, last_cpu = time.monotonic(), cpu_seconds(args.usage)
    tree.update(model.watts(0.0), 0.0, 0.0)
    period = 1.0 / args.hz
    while True:
        time.sleep(period)
        now, cpu = time.monotonic(), cpu_seconds(args.usage)
        busy = (cpu - last_cpu) / (now - last_t) if now > last_t else 0.0
        watts = model.watts(busy)
        tree.update(watts, watts - args.idle_w, now - last_t)
        if heat is not None:
            heat.step(busy, now - last_t)
            heat_tree.update(heat)
        last_t, last_cpu = now, cpu


if __name__ == "__main__":
    main()
