"""The SSH transport: a real device reached with paramiko.

Host keys are checked against the target's own known_hosts file and an
unknown or changed key is refused, unless the target file says
`host_key_policy: accept-new` (which, like OpenSSH's option of that name,
still refuses a *changed* key). Authentication is by key only. Every remote
command is one shell string built with shlex.quote from an argv list, so
nothing a model or file name contains can run as a command.
"""
from __future__ import annotations

import contextlib
import logging
import os
import select
import shlex
import socket
import stat as stat_mode
import time
import uuid
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import paramiko

from harness.core.errors import (
    ChecksumMismatch,
    CommandTimeout,
    ConnectError,
    DeviceTimeout,
    HostKeyChanged,
    HostKeyError,
    HostKeyUnknown,
    RemoteCommandFailed,
    TransportError,
)
from harness.run.transport import TRANSPORTS
from harness.core.files import file_sha256, raise_if_disk_full
from harness.run.transport.base import CommandResult, session_states_script, stalled_reason, timeout_error

_ENV_NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
# Fallback when the device has no sha256sum (some BusyBox builds): its Python hashes the file.
_SHA256_PY = ("import hashlib,sys\nh=hashlib.sha256()\nf=open(sys.argv[1],'rb')\n"
              "for b in iter(lambda: f.read(1<<20), b''): h.update(b)\nprint(h.hexdigest())")
# After the exit status: how long to wait for the end of output (EOF).
_EOF_GRACE_S = 2.0
# Exit code a shell reports when a command is not found.
_NOT_FOUND = 127


def _host_label(host: str, port: int) -> str:
    """How known_hosts names a host: `host` on port 22, `[host]:port` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


def _fingerprint(key: paramiko.PKey) -> str:
    return key.fingerprint  # "SHA256:..." as ssh-keygen -l prints it


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    """Refuse an unknown host key with a message that says how to trust it."""

    def __init__(self, target, known_hosts: str):
        self.target, self.known_hosts = target, known_hosts

    def missing_host_key(self, client, hostname, key):
        t = self.target
        raise HostKeyUnknown(
            f"[{t.name}] host key of {_host_label(t.host, t.port)} is unknown "
            f"({key.get_name()} {_fingerprint(key)}) and not in {self.known_hosts}. "
            f"After checking that fingerprint on the device (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), "
            f"run `ssh-keyscan -p {t.port} {t.host} >> {self.known_hosts}`, "
            f"or set `host_key_policy: accept-new` in {t.source_path or f'targets/{t.name}.yaml'}")


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Trust a host key seen for the first time and append it to known_hosts (never a changed one)."""

    def __init__(self, target, known_hosts: str, log: logging.Logger):
        self.target, self.known_hosts, self.log = target, known_hosts, log

    def missing_host_key(self, client, hostname, key):
        client.get_host_keys().add(hostname, key.get_name(), key)
        path = Path(self.known_hosts)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="ascii") as handle:
            handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        self.log.warning("accepted new host key %s %s for %s and saved it to %s (host_key_policy: accept-new)",
                         key.get_name(), _fingerprint(key), hostname, path)


@TRANSPORTS.register("ssh")
class SSHTransport:
    """A device reached over SSH. Connects in the constructor; `close()` (or `with`) disconnects."""

    def __init__(self, target) -> None:
        self.name = target.name
        self.target = target
        self.python = target.python
        self.log = logging.getLogger(f"harness.run.transport.ssh[{self.name}]")
        #: counters a caller (or a test) can read: what actually crossed the wire
        self.stats: Dict[str, int] = {"connects": 0, "commands": 0, "files_sent": 0, "bytes_sent": 0,
                                      "files_received": 0}
        self._sftp_client: Optional[paramiko.SFTPClient] = None
        self.client = self._connect_with_retry()
        try:
            self.workdir = self._resolve_workdir(target.workdir)
            # Without a pid file and from / : the working directory may not exist yet.
            created = self._run_line(f"mkdir -p -- {shlex.quote(self.workdir + '/.pids')}", ("mkdir",),
                                     target.command_timeout_s, None)
            if not created.ok:
                raise TransportError(f"[{self.name}] cannot create the working directory {self.workdir} on the "
                                     f"device: {created.stderr.strip()[-300:]}. Set `workdir:` in "
                                     f"{target.source_path or f'targets/{self.name}.yaml'} to a writable directory")
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ connecting
    def _connect_with_retry(self) -> paramiko.SSHClient:
        t = self.target
        attempts = max(1, int(t.connect_retries) + 1)
        delay_s = 0.5
        for attempt in range(1, attempts + 1):
            try:
                return self._connect_once()
            except (HostKeyError, paramiko.BadHostKeyException, paramiko.AuthenticationException):
                raise  # (translated below) a retry would not change the answer
            except (OSError, socket.timeout, EOFError, paramiko.SSHException) as exc:
                # Network errors and a dropped handshake (banner, kex) may pass: retry with backoff.
                if attempt == attempts:
                    raise ConnectError(
                        f"[{t.name}] cannot connect to {t.user}@{t.host}:{t.port} after {attempts} attempt(s): "
                        f"{type(exc).__name__}: {exc}. Check that the device is on and sshd listens "
                        f"(`ssh -p {t.port} {t.user}@{t.host} true`), or raise connect_timeout_s / "
                        f"connect_retries in {t.source_path or f'targets/{t.name}.yaml'}") from None
                self.log.warning("connect attempt %d/%d failed (%s: %s); retrying in %.1fs",
                                 attempt, attempts, type(exc).__name__, exc, delay_s)
                time.sleep(delay_s)
                delay_s = min(delay_s * 2, 8.0)
        raise AssertionError("unreachable")

    def _connect_once(self) -> paramiko.SSHClient:
        t = self.target
        known_hosts = t.expanded(t.known_hosts) or os.path.expanduser("~/.ssh/known_hosts")
        client = paramiko.SSHClient()
        # Only the target's known_hosts: the user's system-wide files are not consulted.
        if os.path.exists(known_hosts):
            client.load_host_keys(known_hosts)
        if t.host_key_policy == "accept-new":
            client.set_missing_host_key_policy(_AcceptNew(t, known_hosts, self.log))
        else:
            client.set_missing_host_key_policy(_RefuseUnknown(t, known_hosts))
        key_file = t.expanded(t.key_file)
        if key_file and not os.path.exists(key_file):
            raise ConnectError(f"[{t.name}] key_file {key_file} does not exist; create one with "
                               f"`ssh-keygen -t ed25519 -f {key_file}` and install its .pub on the device "
                               f"(`ssh-copy-id -i {key_file} -p {t.port} {t.user}@{t.host}`)")
        self.log.debug("connecting to %s@%s:%s (timeout %.0fs)", t.user, t.host, t.port, t.connect_timeout_s)
        try:
            client.connect(
                t.host, port=t.port, username=t.user,
                key_filename=key_file or None,
                # Key authentication only: an explicit key file, else the agent and ~/.ssh/id_*.
                allow_agent=not key_file, look_for_keys=not key_file, password=None,
                timeout=t.connect_timeout_s, banner_timeout=t.connect_timeout_s,
                auth_timeout=t.connect_timeout_s, channel_timeout=t.connect_timeout_s)
        except paramiko.BadHostKeyException as exc:
            client.close()
            label = _host_label(t.host, t.port)
            raise HostKeyChanged(
                f"[{t.name}] host key of {label} CHANGED: the device offered {exc.key.get_name()} "
                f"{_fingerprint(exc.key)} but {known_hosts} has {_fingerprint(exc.expected_key)}. "
                f"This may be a reinstalled device or an attack. If the change is expected, confirm the new "
                f"fingerprint on the device, then run `ssh-keygen -R '{label}' -f {known_hosts}` and "
                f"`ssh-keyscan -p {t.port} {t.host} >> {known_hosts}`") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise ConnectError(
                f"[{t.name}] {t.user}@{t.host}:{t.port} refused key authentication ({exc}). "
                f"Install the public key on the device: `ssh-copy-id -i {key_file or '~/.ssh/id_ed25519'} "
                f"-p {t.port} {t.user}@{t.host}`") from None
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        self.stats["connects"] += 1
        return client

    def _resolve_workdir(self, workdir: str) -> str:
        """The device's absolute working directory (`~` is the login user's home on the device)."""
        workdir = workdir or "~/.cache/edge-harness"
        if workdir.startswith("/"):
            return workdir.rstrip("/") or "/"
        home = self._sftp().normalize(".")
        rest = workdir[1:].lstrip("/") if workdir.startswith("~") else workdir
        return f"{home.rstrip('/')}/{rest}".rstrip("/")

    def _sftp(self) -> paramiko.SFTPClient:
        if self._sftp_client is None:
            self._sftp_client = self.client.open_sftp()
            self._sftp_client.get_channel().settimeout(self.target.transfer_timeout_s)
        return self._sftp_client

    # ------------------------------------------------------------ commands
    def command_line(self, argv: Sequence[str], env: Optional[Mapping[str, str]] = None,
                     cwd: Optional[str] = None, pid_file: Optional[str] = None) -> str:
        """The one shell string sent to the device: every argument quoted."""
        if not argv:
            raise ValueError("empty argv")
        words = [shlex.quote(str(a)) for a in argv]
        if env:
            for key in env:
                if not key or key[0].isdigit() or not set(key) <= _ENV_NAME_CHARS:
                    raise ValueError(f"invalid environment variable name {key!r}")
            words = ["env"] + [shlex.quote(f"{k}={v}") for k, v in env.items()] + words
        line = " ".join(words)
        if pid_file:
            # sshd makes the login shell a session leader: its pid is the process group to kill on timeout.
            line = f"echo $$ > {shlex.quote(pid_file)} && {line}; rc=$?; rm -f {shlex.quote(pid_file)}; exit $rc"
        return f"cd {shlex.quote(cwd or self.workdir)} && {line}"

    def run(self, argv: Sequence[str], timeout_s: float, env: Optional[Mapping[str, str]] = None,
            cwd: Optional[str] = None) -> CommandResult:
        argv = tuple(str(a) for a in argv)
        pid_file = f"{self.workdir}/.pids/{uuid.uuid4().hex}"
        line = self.command_line(argv, env, cwd, pid_file)
        self.log.debug("run %s (timeout %.0fs)", argv, timeout_s)
        return self._run_line(line, argv, timeout_s, pid_file)

    def _run_line(self, line: str, argv: tuple, timeout_s: float, pid_file: Optional[str]) -> CommandResult:
        started = time.perf_counter()
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectError(f"[{self.name}] SSH connection is closed; open a new transport")
        try:
            channel = transport.open_session(timeout=self.target.connect_timeout_s)
            channel.exec_command(line)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            # A dead or silent connection is the device gone (ConnectError); a channel the server refused is not.
            refused = isinstance(exc, paramiko.ChannelException) and transport.is_active()
            error = TransportError if refused else ConnectError
            raise error(f"[{self.name}] cannot start a command over SSH: {type(exc).__name__}: {exc}") from None
        self.stats["commands"] += 1
        stdout, stderr = bytearray(), bytearray()
        deadline = time.monotonic() + timeout_s
        exited_at: Optional[float] = None
        try:
            while True:
                while channel.recv_ready():
                    stdout += channel.recv(1 << 16)
                while channel.recv_stderr_ready():
                    stderr += channel.recv_stderr(1 << 16)
                if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                    # sshd may send the exit status before the last output; that ends with EOF. A
                    # background child that keeps stdout open would withhold EOF: give it a grace period.
                    exited_at = exited_at or time.monotonic()
                    if channel.eof_received or channel.closed or time.monotonic() - exited_at > _EOF_GRACE_S:
                        break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timed_out(argv, timeout_s, pid_file)
                # The channel's fileno becomes readable on output or close; cap the wait so an
                # exit status that arrives without a close is still seen promptly.
                select.select([channel], [], [], min(remaining, 0.5 if exited_at is None else 0.05))
            code = channel.recv_exit_status()
        finally:
            channel.close()
        if code < 0 and not transport.is_active():
            raise ConnectError(f"[{self.name}] connection to the device was lost while running: {' '.join(argv)}")
        # -1 on a live connection: the session was killed by a signal (exit-signal, no exit status).
        return CommandResult(argv, code if code >= 0 else 255, stdout.decode("utf-8", "replace"),
                             stderr.decode("utf-8", "replace"), time.perf_counter() - started)

    def _timed_out(self, argv: tuple, timeout_s: float, pid_file: Optional[str]) -> TransportError:
        """The error for a command past its timeout, after stopping it: a DeviceTimeout when the device did not
        answer the kill, else a CommandTimeout that says whether the command's processes were stalled."""
        what = " ".join(argv)
        report = self._stop_remote(pid_file) if pid_file else ("", True)
        if report is None:
            return DeviceTimeout(
                f"[{self.name}] the device stopped answering: `{what}` got no reply for {timeout_s:.0f}s and the kill "
                f"got none in {self.target.connect_timeout_s:.0f}s. Not cleaned up: the command may still run there "
                f"and hold the device lock until it ends; its run folder is left")
        states, cleaned = report
        return timeout_error(self.name, what, timeout_s, stalled_reason(states), cleaned)

    def _stop_remote(self, pid_file: str) -> Optional[Tuple[str, bool]]:
        """Kill the timed-out command's whole process group on the device; (the states its processes were in,
        whether none is left), or None when the device did not answer."""
        pid_file = shlex.quote(pid_file)
        script = (f"pid=$(cat {pid_file} 2>/dev/null); [ -n \"$pid\" ] || {{ echo 'states= left=0'; exit 0; }}; "
                  f"states=$({session_states_script('$pid')}); kill -KILL -- -$pid 2>/dev/null; i=0; "
                  "while kill -0 -- -$pid 2>/dev/null && [ $i -lt 20 ]; do sleep 0.1 || break; i=$((i+1)); done; "
                  "left=0; kill -0 -- -$pid 2>/dev/null && left=1; "
                  f"rm -f {pid_file}; echo \"states=$states left=$left\"")
        try:
            transport = self.client.get_transport()
            if transport is None or not transport.is_active():
                return None
            channel = transport.open_session(timeout=self.target.connect_timeout_s)
            channel.settimeout(self.target.connect_timeout_s)
            channel.exec_command(script)
            out = b""
            while True:
                chunk = channel.recv(4096)
                if not chunk:
                    break
                out += chunk
            channel.close()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.log.warning("could not reach the device to kill a timed-out command (%s)", exc)
            return None
        fields = dict(part.split("=", 1) for part in out.decode("utf-8", "replace").split() if "=" in part)
        return fields.get("states", ""), fields.get("left", "0") == "0"

    def _check(self, argv: Sequence[str], timeout_s: float) -> CommandResult:
        result = self.run(argv, timeout_s)
        if not result.ok:
            raise RemoteCommandFailed(" ".join(shlex.quote(a) for a in argv), result.exit_code,
                                      result.stdout, result.stderr, self.name)
        return result

    # ------------------------------------------------------------ files
    def remote_sha256(self, remote_path: str) -> str:
        """sha256 of a file on the device: sha256sum, or the device's Python where that is missing."""
        timeout_s = self.target.transfer_timeout_s
        result = self.run(["sha256sum", "--", remote_path], timeout_s)
        if result.exit_code == _NOT_FOUND:
            result = self.run([self.python or "python3", "-c", _SHA256_PY, remote_path], timeout_s)
        if not result.ok or not result.stdout.strip():
            raise TransportError(f"[{self.name}] cannot hash {remote_path} on the device "
                                 f"(exit {result.exit_code}): {result.stderr.strip()[-300:]}")
        return result.stdout.split()[0].lstrip("\\")

    def _transfer_deadline(self, what: str):
        """An SFTP progress callback that aborts a transfer running past transfer_timeout_s."""
        limit_s = self.target.transfer_timeout_s
        deadline = time.monotonic() + limit_s

        def check(done: int, total: int) -> None:
            if time.monotonic() > deadline:
                raise CommandTimeout(f"[{self.name}] {what} passed the {limit_s:.0f}s transfer timeout "
                                     f"({done}/{total} bytes); raise transfer_timeout_s in the target file")
        return check

    @contextlib.contextmanager
    def _file_errors(self, what: str):
        """SFTP reports a dropped connection as OSError/EOFError/SSHException: make it a ConnectError."""
        try:
            yield
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            transport = self.client.get_transport()
            # EOFError and SSHException come from the connection itself; an OSError may be the device's answer.
            if isinstance(exc, TimeoutError) or isinstance(exc, paramiko.SSHException) and "imeout" in str(exc):
                raise DeviceTimeout(f"[{self.name}] the device stopped answering during {what}: no reply within "
                                    f"{self.target.transfer_timeout_s:.0f}s (transfer_timeout_s)") from None
            if not isinstance(exc, OSError) or transport is None or not transport.is_active():
                raise ConnectError(f"[{self.name}] connection to the device was lost during {what}: "
                                   f"{type(exc).__name__}: {exc}") from None
            raise

    def _free_bytes(self, remote_dir: str) -> Optional[int]:
        """Free space in a directory on the device (None when df cannot tell)."""
        try:
            result = self.run(["df", "-Pk", "--", remote_dir], self.target.command_timeout_s)
            return int(result.stdout.strip().splitlines()[-1].split()[3]) * 1024 if result.ok else None
        except (TransportError, ValueError, IndexError):
            return None

    def _upload_error(self, local_path: Path, remote_path: str, exc: BaseException) -> TransportError:
        """A failed SFTP write as a TransportError that says why (a full disk shows only as a short write)."""
        parent = remote_path.rpartition("/")[0] or "/"
        message = f"[{self.name}] upload of {local_path} to {remote_path} failed: {type(exc).__name__}: {exc}"
        size, free = local_path.stat().st_size, self._free_bytes(parent)
        if free is not None and free < size:
            message += (f". No space left on the device: {parent} has {free} bytes free and the file needs {size}; "
                        f"free space there or set `workdir:` in "
                        f"{self.target.source_path or f'targets/{self.name}.yaml'} to a larger disk")
        return TransportError(message)

    def _send_file(self, local_path: Path, remote_tmp: str) -> None:
        """Copy bytes to the device (a seam: tests replace it to corrupt a transfer)."""
        self._sftp().put(str(local_path), remote_tmp, callback=self._transfer_deadline(f"upload of {local_path}"),
                         confirm=True)

    def put(self, local_path: Path, remote_path: str, sha256: Optional[str] = None) -> None:
        local_path = Path(local_path)
        expected = sha256 or file_sha256(local_path)
        parent, _, base = remote_path.rpartition("/")
        if parent:
            self.mkdir(parent)
        tmp = f"{parent}/.{base}.{uuid.uuid4().hex}.part"
        with self._file_errors(f"the upload of {local_path.name}"):
            sftp = self._sftp()
        self.log.debug("put %s -> %s", local_path, remote_path)
        try:
            with self._file_errors(f"the upload of {local_path.name}"):
                self._send_file(local_path, tmp)
                actual = self.remote_sha256(tmp)
                if actual != expected:
                    raise ChecksumMismatch(f"[{self.name}] {remote_path}: sha256 on the device {actual} != "
                                           f"expected {expected}; the upload was corrupted and was discarded")
                try:
                    sftp.posix_rename(tmp, remote_path)
                except IOError:
                    # No posix-rename@openssh.com extension: mv within one directory is a rename(2) too.
                    self._check(["mv", "-f", "--", tmp, remote_path], self.target.command_timeout_s)
        except BaseException as exc:
            try:
                sftp.remove(tmp)
            except (IOError, OSError, EOFError, paramiko.SSHException):
                pass
            if isinstance(exc, OSError):  # the device refused the write (a lost link is a ConnectError by now)
                raise self._upload_error(local_path, remote_path, exc) from None
            raise
        self.stats["files_sent"] += 1
        self.stats["bytes_sent"] += local_path.stat().st_size

    def get(self, remote_path: str, local_path: Path) -> None:
        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = local_path.with_name(f".{local_path.name}.{uuid.uuid4().hex}.part")
        try:
            with self._file_errors(f"the download of {remote_path}"):
                self._sftp().get(remote_path, str(tmp),
                                 callback=self._transfer_deadline(f"download of {remote_path}"))
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            raise TransportError(f"[{self.name}] no such file on device: {remote_path}") from None
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise_if_disk_full(exc, local_path)  # this host's disk, not the device
            raise
        os.replace(tmp, local_path)
        self.stats["files_received"] += 1

    def exists(self, remote_path: str) -> bool:
        try:
            with self._file_errors(f"a look-up of {remote_path}"):
                self._sftp().stat(remote_path)
            return True
        except FileNotFoundError:
            return False

    def is_file(self, remote_path: str) -> bool:
        try:
            with self._file_errors(f"a look-up of {remote_path}"):
                return stat_mode.S_ISREG(self._sftp().stat(remote_path).st_mode or 0)
        except FileNotFoundError:
            return False

    def mkdir(self, remote_path: str) -> None:
        self._check(["mkdir", "-p", "--", remote_path], self.target.command_timeout_s)

    def close(self) -> None:
        if self._sftp_client is not None:
            try:
                self._sftp_client.close()
            except Exception:  # closing a dead connection must not hide the real error
                pass
            self._sftp_client = None
        client = getattr(self, "client", None)
        if client is not None:
            client.close()

    def __enter__(self) -> "SSHTransport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
