"""A simulated device farm on this machine: one OpenSSH server per device on loopback.

Each device gets its own host key, user key, known_hosts and working
directory under the state directory (`.harness/farm/<device>/`), its CPUs
pinned, a cgroup CPU quota and memory limit where the machine allows, its
thread count pinned through `SetEnv` in sshd_config, and a generated
`targets/<device>.yaml` that points at all of that, so `TARGET=sim-pi4`
works exactly like a real device. The harness talks to it over real SSH.
"""
from __future__ import annotations

import errno
import getpass
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from harness.farm import cgroups
from harness.farm.devices import DeviceClass, EmulatedEnv, classes_for, device_plan, extra_classes
from harness.farm.emulated import check_can_emulate, ensure_emulated_env
from harness.farm.envs import FarmError, ensure_env
from harness.core.files import atomic_write_text

SSHD = "/usr/sbin/sshd"
DEFAULT_STATE_DIR = Path(".harness/farm")
DEFAULT_ENVS_DIR = Path(".harness/farm-envs")
DEFAULT_TARGETS_DIR = Path("targets")
STATE_FILE = "farm.json"
HOST = "127.0.0.1"
log = logging.getLogger("harness.farm")
# sshd processes this Python started, so farm_down can reap them (no zombies in a test session).
_CHILDREN: Dict[int, subprocess.Popen] = {}


@dataclass(frozen=True)
class SimDevice:
    """One running simulated device, as recorded in farm.json."""

    name: str
    device_class: str
    port: int
    pid: int
    target_file: str
    python: str
    workdir: str
    cpus: Tuple[int, ...]
    cgroups: Tuple[str, ...] = ()
    notes: Tuple[str, ...] = ()
    #: the SIMULATED power sensor's process (harness.farm.sim_power), 0: none
    sensor_pid: int = 0


@dataclass(frozen=True)
class Farm:
    state_dir: str
    targets_dir: str
    devices: Tuple[SimDevice, ...] = field(default_factory=tuple)
    started_s: float = 0.0

    @property
    def target_names(self) -> List[str]:
        return [d.name for d in self.devices]

    def target_file(self, name: str) -> str:
        for d in self.devices:
            if d.name == name:
                return d.target_file
        raise FarmError(f"no simulated device {name!r}; running: {', '.join(self.target_names)}")


def sshd_path() -> str:
    if not os.access(SSHD, os.X_OK):
        raise FarmError(f"{SSHD} is not installed; the simulated farm and the SSH tests need an OpenSSH "
                        f"server: run `make system-deps` (apt-get install -y openssh-server)")
    return SSHD


# ---------------------------------------------------------------- up
def farm_up(devices: Optional[int] = None, state_dir: Path = DEFAULT_STATE_DIR,
            targets_dir: Path = DEFAULT_TARGETS_DIR, envs_dir: Path = DEFAULT_ENVS_DIR, ready_timeout_s: float = 10.0,
            arches: Sequence[str] = (), extra: Sequence[str] = ()) -> Farm:
    """Start `devices` simulated devices (restarting any this state directory already runs).

    `arches` picks the device classes ("x86_64", "aarch64"; default: this machine's own);
    `devices` defaults to one of each. Builds the device Python environments the first time
    (cached in envs_dir), writes `<targets_dir>/<device>.yaml` for each, and returns the Farm.
    A machine that cannot run an emulated class gets a FarmError before anything starts.
    """
    started = time.perf_counter()
    sshd = sshd_path()
    state_dir, targets_dir, envs_dir = (Path(p).resolve() for p in (state_dir, targets_dir, envs_dir))
    if devices is not None and devices < 1:
        raise FarmError("--devices must be at least 1")
    try:
        classes = classes_for(arches, os.uname().machine) + extra_classes(extra)
    except ValueError as exc:
        raise FarmError(str(exc)) from None
    plan = device_plan(devices, classes)
    for cls in {cls.name: cls for _, cls, _ in plan}.values():
        if isinstance(cls.env, EmulatedEnv):
            check_can_emulate(cls.env)
    if (state_dir / STATE_FILE).exists():
        farm_down(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    targets_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # sshd's privilege-separation directory; Debian creates it only at boot.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    pythons = {}
    for _, cls, _ in plan:
        if cls.name not in pythons:
            pythons[cls.name] = _device_python(cls, envs_dir)
    farm_id = hashlib.sha256(str(state_dir).encode()).hexdigest()[:8]
    user = getpass.getuser()
    running: List[SimDevice] = []
    try:
        for name, cls, copy in plan:
            running.append(_start_device(sshd, name, cls, copy, state_dir, targets_dir, pythons[cls.name],
                                         user, farm_id, ready_timeout_s))
            _write_state(state_dir, targets_dir, running)
    except BaseException:
        farm_down(state_dir)
        raise
    farm = Farm(str(state_dir), str(targets_dir), tuple(running), time.perf_counter() - started)
    for device in running:
        for note in device.notes:
            log.warning("[%s] %s", device.name, note)
    return farm


def _device_python(cls: DeviceClass, envs_dir: Path) -> str:
    if cls.env is None:
        return os.path.abspath(sys.executable)
    if isinstance(cls.env, EmulatedEnv):
        return ensure_emulated_env(cls.env, envs_dir)
    return ensure_env(cls.env, envs_dir)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _keygen(path: Path, comment: str) -> None:
    if path.exists() and path.with_suffix(".pub").exists():
        return
    path.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    path.chmod(0o600)


def _pinned_cpus(cls: DeviceClass, copy: int) -> Tuple[int, ...]:
    available = sorted(os.sched_getaffinity(0))
    if cls.cpu_count <= 0 or cls.cpu_count >= len(available):
        return tuple(available)
    # Small devices take CPUs from the end, so several copies spread out; larger ones from the start.
    start = (len(available) - cls.cpu_count - copy * cls.cpu_count) % len(available)
    return tuple(available[(start + i) % len(available)] for i in range(cls.cpu_count))


def _sshd_config(d: Path, port: int, user: str, threads: int, name: str) -> str:
    thread_env = " ".join(f"{v}={threads}" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                                      "TF_NUM_INTRAOP_THREADS"))
    return "\n".join([
        f"# simulated device {name}: generated by `harness farm up`",
        f"Port {port}",
        f"ListenAddress {HOST}",
        f"HostKey {d / 'host_ed25519_key'}",
        f"PidFile {d / 'sshd.pid'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}",
        f"AllowUsers {user}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        # Keys live under the repository, whose permissions sshd's StrictModes would refuse.
        "StrictModes no",
        "Subsystem sftp internal-sftp",
        # SHLVL=1: bash skips ~/.bashrc for sshd commands (it only sources it at shell level 1), so the
        # host's root shell setup (pyenv init: 0.3 s per command) is not part of every device command.
        f"SetEnv {thread_env} HARNESS_SIM_DEVICE={name} SHLVL=1",
        "AllowTcpForwarding no",
        "X11Forwarding no",
        "PrintMotd no",
        "MaxSessions 32",
        "MaxStartups 32:50:64",
        "LogLevel INFO",
        "",
    ])


def _start_device(sshd: str, name: str, cls: DeviceClass, copy: int, state_dir: Path, targets_dir: Path,
                  python: str, user: str, farm_id: str, ready_timeout_s: float) -> SimDevice:
    d = state_dir / name
    workdir = d / "device"
    workdir.mkdir(parents=True, exist_ok=True)
    _keygen(d / "host_ed25519_key", f"{name} host key")
    _keygen(d / "user_ed25519_key", f"{name} harness user key")
    shutil.copyfile(d / "user_ed25519_key.pub", d / "authorized_keys")
    port = _free_port()
    host_pub = (d / "host_ed25519_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[{HOST}]:{port} {host_pub[0]} {host_pub[1]}\n")
    config = d / "sshd_config"
    config.write_text(_sshd_config(d, port, user, cls.threads, name))
    log_path = d / "sshd.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                stdout=log_file, stderr=log_file, start_new_session=True)
    _CHILDREN[proc.pid] = proc
    # Limits go on the listener before it accepts anyone; every session it forks inherits them.
    cpus = _pinned_cpus(cls, copy)
    notes: List[str] = []
    try:
        os.sched_setaffinity(proc.pid, cpus)
    except OSError as exc:
        notes.append(f"CPU pinning to {list(cpus)} not applied: {exc}")
    created, cg_notes = cgroups.apply_limits(f"{farm_id}-{name}", proc.pid, cls.cpu_quota, cls.memory_limit_bytes)
    notes += cg_notes
    (d / "sshd.pid").write_text(f"{proc.pid}\n")
    sensor_pid, power, thermal = 0, None, None
    if cls.power is not None:
        usage, usage_created, usage_notes = cgroups.usage_group(f"{farm_id}-{name}", proc.pid)
        created, notes = created + usage_created, notes + usage_notes
        if usage is not None:
            sensor_pid, power, thermal = _start_sensor(cls, d / "sensor", usage)
    _wait_listening(proc, port, log_path, ready_timeout_s, name)
    target_file = targets_dir / f"{name}.yaml"
    _write_target(target_file, name, cls, port, user, d, python, workdir, power, thermal)
    return SimDevice(name, cls.name, port, proc.pid, str(target_file), python, str(workdir), cpus,
                     tuple(created), tuple(notes), sensor_pid)


def _start_sensor(cls: DeviceClass, tree: Path, usage: str
                  ) -> Tuple[int, Dict[str, str], Optional[Dict[str, str]]]:
    """The device's SIMULATED power sensor and thermal zone (harness.farm.sim_power), the target's `power:` and
    `thermal:` that read them (thermal None: the class has no thermal model)."""
    assert cls.power is not None
    kind, idle_w, w_per_cpu = cls.power
    script = Path(__file__).with_name("sim_power.py")
    tree.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, str(script), "--kind", kind, "--tree", str(tree), "--usage", usage,
            "--idle-w", str(idle_w), "--w-per-cpu", str(w_per_cpu)]
    thermal: Optional[Dict[str, str]] = None
    if cls.thermal is not None:
        ambient_c, c_per_cpu, tau_s, trip_c = cls.thermal
        argv += ["--ambient-c", str(ambient_c), "--c-per-cpu", str(c_per_cpu), "--tau-s", str(tau_s),
                 "--trip-c", str(trip_c)]
        thermal = {"root": str(tree)}
        if kind == "pmic":  # a Pi's throttling is its firmware's: vcgencmd get_throttled
            thermal["vcgencmd"] = str(tree / "vcgencmd")
    with open(tree.parent / "sensor.log", "ab") as log_file:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                start_new_session=True)
    _CHILDREN[proc.pid] = proc
    ready = tree / ("pmic_read_adc.txt" if kind == "pmic" else "class")
    deadline = time.monotonic() + 10.0
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if kind == "pmic":
        return proc.pid, {"source": "pmic", "command": str(tree / "vcgencmd")}, thermal
    return proc.pid, {"source": kind, "root": str(tree)}, thermal


def _wait_listening(proc: subprocess.Popen, port: int, log_path: Path, timeout_s: float, name: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            tail = "\n  ".join(log_path.read_text(errors="replace").strip().splitlines()[-5:])
            raise FarmError(f"sshd for {name} exited with {proc.returncode}; its log {log_path}:\n  {tail}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise FarmError(f"sshd for {name} is not listening on {HOST}:{port} after {timeout_s:.0f}s; "
                                f"see {log_path}") from None
            time.sleep(0.02)


def _write_target(path: Path, name: str, cls: DeviceClass, port: int, user: str, d: Path, python: str,
                  workdir: Path, power: Optional[Dict[str, str]] = None,
                  thermal: Optional[Dict[str, str]] = None) -> None:
    doc = {
        "name": name, "transport": "ssh", "description": cls.description,
        "host": HOST, "port": port, "user": user,
        "key_file": str(d / "user_ed25519_key"), "known_hosts": str(d / "known_hosts"),
        "host_key_policy": "reject", "python": python, "workdir": str(workdir),
        # A native stand-in runs on this machine's CPU: its real architecture, not the device's.
        # An emulated one runs the device's architecture, slowly: its timings are flagged, not judged.
        "arch": cls.arch(os.uname().machine), "emulated": cls.emulated,
        "runtimes": dict(cls.runtime_configs) if cls.runtime_configs else list(cls.runtimes), "threads": cls.threads,
        "budgets": {"latency_p99_ms": cls.latency_p99_ms, "peak_memory_mb": cls.peak_memory_mb},
        "connect_timeout_s": 5.0, "command_timeout_s": cls.command_timeout_s, "transfer_timeout_s": 60.0,
        "connect_retries": 2, "lock_timeout_s": 60.0,
    }
    if power:  # a SIMULATED sensor tree (harness.farm.sim_power) stands in for the device's own
        doc["power"] = power
    if thermal:  # a SIMULATED thermal tree (harness.farm.sim_power) stands in for the device's own
        doc["thermal"] = thermal
    header = (f"# Generated by `harness farm up` for the simulated device {name}; `harness farm down` removes it.\n"
              f"# Edit harness/farm/devices.py instead.\n"
              + ("# power: and thermal: read SIMULATED sensor trees (harness.farm.sim_power), not real sensors.\n"
                 if power or thermal else ""))
    atomic_write_text(path, header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None))


def _write_state(state_dir: Path, targets_dir: Path, devices: List[SimDevice]) -> None:
    doc = {"state_dir": str(state_dir), "targets_dir": str(targets_dir), "devices": [asdict(d) for d in devices]}
    atomic_write_text(state_dir / STATE_FILE, json.dumps(doc, indent=1))


def load_farm(state_dir: Path = DEFAULT_STATE_DIR) -> Optional[Farm]:
    """The farm recorded in state_dir, or None if none was started there."""
    path = Path(state_dir).resolve() / STATE_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise FarmError(f"{path} is not valid JSON ({exc}); stop the servers by hand and delete it") from None
    devices = tuple(SimDevice(**{**d, "cpus": tuple(d["cpus"]), "cgroups": tuple(d["cgroups"]),
                                 "notes": tuple(d["notes"])}) for d in doc["devices"])
    return Farm(doc["state_dir"], doc["targets_dir"], devices)


# ---------------------------------------------------------------- down and status
def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _is_our_sshd(pid: int, state_dir: Path) -> bool:
    """Only signal a pid that is still this farm's sshd (pids are reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # sshd rewrites its title ("sshd: /usr/sbin/sshd -D -e -f CONFIG [listener] ..."); the config path stays.
    return str(state_dir).encode() + b"/" in cmdline


def _stop(pid: int, state_dir: Path, timeout_s: float = 5.0) -> None:
    child = _CHILDREN.pop(pid, None)
    if not _is_our_sshd(pid, state_dir):
        if child is not None:
            child.poll()
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if child is not None:
        try:
            child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=timeout_s)
        return
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def farm_down(state_dir: Path = DEFAULT_STATE_DIR) -> List[str]:
    """Stop every device of the farm in state_dir, remove its cgroups and generated target files.

    Keys, logs and device working directories stay (the next farm-up reuses them).
    Returns the names of the devices stopped.
    """
    state_dir = Path(state_dir).resolve()
    farm = load_farm(state_dir)
    if farm is None:
        return []
    notes: List[str] = []
    for device in farm.devices:
        _stop(device.pid, state_dir)
        if device.sensor_pid:
            _stop(device.sensor_pid, state_dir)
        notes += cgroups.remove(list(device.cgroups))
        Path(device.target_file).unlink(missing_ok=True)
    for device in farm.devices:
        for directory in device.cgroups:
            try:
                Path(directory).parent.rmdir()  # the shared harness-farm parent, once empty
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EBUSY, errno.ENOENT):
                    notes.append(f"could not remove {Path(directory).parent}: {exc.strerror}")
    for note in notes:
        log.warning("%s", note)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return [d.name for d in farm.devices]


@dataclass(frozen=True)
class DeviceStatus:
    name: str
    port: int
    pid: int
    running: bool
    listening: bool
    target_file: str
    cpus: Tuple[int, ...]
    notes: Tuple[str, ...]


def farm_status(state_dir: Path = DEFAULT_STATE_DIR) -> List[DeviceStatus]:
    farm = load_farm(state_dir)
    if farm is None:
        return []
    statuses = []
    for d in farm.devices:
        try:
            with socket.create_connection((HOST, d.port), timeout=1.0):
                listening = True
        except OSError:
            listening = False
        statuses.append(DeviceStatus(d.name, d.port, d.pid, _alive(d.pid), listening, d.target_file, d.cpus,
                                     d.notes))
    return statuses
