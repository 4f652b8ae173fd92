"""Foreign-architecture device Pythons for the simulated farm: a Debian sysroot run by qemu-user.

An emulated environment under `.harness/farm-envs/<name>/` is

    sysroot/        Debian's packages for the architecture (python3.11 and the C libraries),
                    fetched with apt under a private configuration and unpacked with dpkg-deb
                    (no maintainer scripts run, nothing on this machine changes), plus PyPI's
                    wheels for that architecture in sysroot/usr/local/lib/python3.X/dist-packages
    bin/python      the device's `python`: a shell script that runs the sysroot's interpreter
                    under `qemu-<arch>-static -L sysroot`

No binfmt_misc registration is needed: the wrapper names qemu explicitly, and qemu's `-L`
prefix makes the guest's ELF interpreter, libraries and /proc/cpuinfo come from the sysroot.
Everything the device runs afterwards (pip-installed extension modules included) is loaded
by the emulated dynamic loader inside that one qemu process.

A stamp records the recipe; a later farm-up with the same recipe reuses the environment.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Dict, List

from harness.farm.devices import EmulatedEnv
from harness.farm.envs import STAMP, FarmError, _check_call, _read_stamp, locked_env_dir

log = logging.getLogger("harness.farm.emulated")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
#: bookworm's glibc is 2.36: every manylinux wheel up to that runs in the sysroot
SYSROOT_GLIBC_MINOR = 36
#: where qemu-user-static puts its emulators on Debian and Ubuntu
QEMU_DIRS = ("/usr/bin", "/usr/local/bin")
INSTALL_HINT = "apt-get install -y qemu-user-static"


def qemu_path(arch: str) -> str:
    """The qemu-user emulator for `arch`, or a FarmError in one line that says what to install."""
    for directory in QEMU_DIRS:
        for name in (f"qemu-{arch}-static", f"qemu-{arch}"):
            path = os.path.join(directory, name)
            if os.access(path, os.X_OK):
                return path
    raise FarmError(f"this machine cannot run {arch} binaries: qemu-{arch}-static is not installed "
                    f"(looked in {', '.join(QEMU_DIRS)}); install it with `{INSTALL_HINT}` "
                    f"(or `make system-deps`)")


def check_can_emulate(env: EmulatedEnv) -> None:
    """Everything the environment needs from this machine, checked before any device starts."""
    qemu_path(env.arch)
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise FarmError(f"building the {env.arch} device Python needs Debian's {' and '.join(missing)} "
                        f"(the sysroot is made of Debian {env.debian_arch} packages); run the farm on Debian "
                        f"or Ubuntu")
    if not os.path.exists(DEBIAN_KEYRING):
        raise FarmError(f"{DEBIAN_KEYRING} is missing, so Debian's {env.debian_arch} packages cannot be verified; "
                        f"install it with `apt-get install -y debian-archive-keyring`")


def wheel_platforms(arch: str) -> List[str]:
    """pip --platform tags a wheel may have to run in the sysroot (newest first)."""
    return [f"manylinux_2_{minor}_{arch}" for minor in range(SYSROOT_GLIBC_MINOR, 16, -1)] + [f"manylinux2014_{arch}"]


def recipe(env: EmulatedEnv) -> Dict[str, object]:
    return {"name": env.name, "arch": env.arch, "debian_arch": env.debian_arch, "debian_suite": env.debian_suite,
            "python_version": env.python_version, "debian_packages": list(env.debian_packages),
            "requirements": list(env.requirements), "qemu_cpu": env.qemu_cpu, "mirror": DEBIAN_MIRROR}


def ensure_emulated_env(env: EmulatedEnv, envs_dir: Path, timeout_s: float = 900.0) -> str:
    """The device `python` (a qemu wrapper) of this environment, building it if its recipe changed."""
    check_can_emulate(env)
    with locked_env_dir(envs_dir, env.name) as directory:
        python = directory / "bin" / "python"
        stamp = _read_stamp(directory)
        if stamp is not None and stamp.get("recipe") == recipe(env) and python.exists():
            _write_wrapper(env, directory)  # cheap; picks up a qemu that moved
            _write_cpuinfo(env, directory / "sysroot")  # the host's CPU count may differ from the build's
            return str(python)
        log.warning("building the %r device environment (once): Debian %s %s python%s + %s under %s",
                    env.name, env.debian_suite, env.debian_arch, env.python_version, " ".join(env.requirements),
                    qemu_path(env.arch))
        build = directory.parent / f".{env.name}.build"
        shutil.rmtree(build, ignore_errors=True)
        try:
            _build(env, build, timeout_s)
            shutil.rmtree(directory, ignore_errors=True)
            os.replace(build, directory)
            _write_wrapper(env, directory)  # its paths name the final directory
            _check_call([str(python), "-c", "; ".join(f"import {m}" for m in env.check_imports)],
                        f"import {', '.join(env.check_imports)} in the {env.name} sysroot under qemu", 300)
            (directory / STAMP).write_text(json.dumps({"recipe": recipe(env)}, indent=1))
        finally:
            shutil.rmtree(build, ignore_errors=True)
        return str(python)


def _build(env: EmulatedEnv, build: Path, timeout_s: float) -> None:
    sysroot = build / "sysroot"
    debs = _download_debs(env, build / "apt", timeout_s)
    sysroot.mkdir(parents=True)
    for deb in debs:
        _check_call(["dpkg-deb", "-x", str(deb), str(sysroot)], f"unpack {deb.name} into {sysroot}", 120)
    shutil.rmtree(build / "apt", ignore_errors=True)
    interpreter = sysroot / "usr" / "bin" / f"python{env.python_version}"
    if not interpreter.exists():
        raise FarmError(f"the {env.name} sysroot has no {interpreter.relative_to(sysroot)} after unpacking "
                        f"{', '.join(env.debian_packages)}")
    # An empty loader cache: the emulated ld.so must not read this machine's x86 /etc/ld.so.cache
    # (qemu -L falls back to host paths for files the sysroot lacks); it searches its default dirs.
    (sysroot / "etc").mkdir(exist_ok=True)
    (sysroot / "etc" / "ld.so.cache").write_bytes(b"")
    _write_cpuinfo(env, sysroot)
    site = site_packages(env, sysroot)
    site.mkdir(parents=True, exist_ok=True)
    platforms = [arg for tag in wheel_platforms(env.arch) for arg in ("--platform", tag)]
    abi = "cp" + env.python_version.replace(".", "")
    _check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-warn-conflicts",
                 "--no-warn-script-location", "-q", "--target", str(site), "--only-binary=:all:",
                 "--implementation", "cp", "--python-version", env.python_version, "--abi", abi, *platforms,
                 *env.requirements],
                f"install {env.arch} wheels of {' '.join(env.requirements)} into the {env.name} sysroot", timeout_s,
                hint=f"check that PyPI is reachable and has {env.arch} wheels for Python {env.python_version} "
                     f"(`pip download --only-binary=:all: --python-version {env.python_version} --platform "
                     f"manylinux2014_{env.arch} PACKAGE`)")
    # Console scripts pip wrote name this machine's Python; the device has no use for them.
    shutil.rmtree(site / "bin", ignore_errors=True)


def site_packages(env: EmulatedEnv, sysroot: Path) -> Path:
    """Where `pip install` on the board would put packages (Debian's python adds it to sys.path)."""
    return sysroot / "usr" / "local" / "lib" / f"python{env.python_version}" / "dist-packages"


def _apt_options(apt: Path, env: EmulatedEnv) -> List[str]:
    """apt-get options for a private apt of the foreign architecture: nothing of the host's apt is touched."""
    options = {
        "APT::Architecture": env.debian_arch, "APT::Architectures": env.debian_arch,
        "Dir::State": str(apt), "Dir::State::Lists": str(apt / "lists"), "Dir::State::status": str(apt / "status"),
        "Dir::Cache": str(apt), "Dir::Cache::archives": str(apt / "archives"),
        "Dir::Etc::SourceList": str(apt / "sources.list"), "Dir::Etc::SourceParts": str(apt / "sources.list.d"),
        "Dir::Etc::Parts": str(apt / "apt.conf.d"), "Dir::Etc::Preferences": str(apt / "preferences"),
        "Dir::Etc::PreferencesParts": str(apt / "preferences.d"),
        # Files under the repository; apt's _apt sandbox user could not write them.
        "APT::Sandbox::User": "root", "Debug::NoLocking": "1",
    }
    return [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]


def _download_debs(env: EmulatedEnv, apt: Path, timeout_s: float) -> List[Path]:
    for sub in ("lists/partial", "archives/partial", "sources.list.d", "apt.conf.d", "preferences.d"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "status").write_text("")  # nothing installed: apt resolves every dependency
    source = f"deb [arch={env.debian_arch} signed-by={DEBIAN_KEYRING}]"
    (apt / "sources.list").write_text(
        f"{source} {DEBIAN_MIRROR} {env.debian_suite} main\n"
        f"{source} {DEBIAN_MIRROR} {env.debian_suite}-updates main\n"
        f"{source} {DEBIAN_SECURITY_MIRROR} {env.debian_suite}-security main\n")
    options = _apt_options(apt, env)
    hint = f"check that the Debian archive ({DEBIAN_MIRROR}) is reachable"
    _check_call(["apt-get", *options, "-q", "update"], f"read Debian {env.debian_suite} {env.debian_arch} package "
                f"lists", timeout_s, hint=hint)
    _check_call(["apt-get", *options, "-q", "-y", "--no-install-recommends", "--download-only", "install",
                 *env.debian_packages], f"download Debian {env.debian_arch} packages {' '.join(env.debian_packages)}",
                timeout_s, hint=hint)
    debs = sorted((apt / "archives").glob("*.deb"))
    if not debs:
        raise FarmError(f"apt downloaded no {env.debian_arch} packages into {apt / 'archives'}")
    return debs


def _write_cpuinfo(env: EmulatedEnv, sysroot: Path) -> None:
    """/proc/cpuinfo as the guest reads it (qemu -L serves sysroot/proc/cpuinfo in place of the host's)."""
    count = os.cpu_count() or 1  # as many as the host's /sys/devices/system/cpu/possible, which the guest reads
    blocks = [f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {env.cpu_features}\nCPU implementer\t: 0x41\n"
              f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {env.cpu_part}\nCPU revision\t: 0\n"
              for i in range(count)]
    (sysroot / "proc").mkdir(exist_ok=True)
    text = "\n".join(blocks) + f"\nHardware\t: {env.cpu_hardware}\n"
    path = sysroot / "proc" / "cpuinfo"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _write_wrapper(env: EmulatedEnv, directory: Path) -> None:
    sysroot = directory / "sysroot"
    text = "\n".join([
        "#!/bin/sh",
        f"# The {env.arch} Python {env.python_version} of the simulated {env.name} devices: Debian {env.debian_suite} "
        f"{env.debian_arch} under qemu-user.",
        "# Generated by `harness farm up` (harness/farm/emulated.py); timings through it are not representative.",
        f"exec {_sh(qemu_path(env.arch))} -cpu {_sh(env.qemu_cpu)} -L {_sh(str(sysroot))} "
        f"{_sh(str(sysroot / 'usr' / 'bin' / ('python' + env.python_version)))} \"$@\"",
        "",
    ])
    path = directory / "bin" / "python"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        tmp = path.with_name(".python.part")
        tmp.write_text(text)
        tmp.chmod(0o755)
        os.replace(tmp, path)


def _sh(value: str) -> str:
    return shlex.quote(value)
