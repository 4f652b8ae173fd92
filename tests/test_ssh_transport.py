"""The SSH transport against a real OpenSSH server (the simulated farm on 127.0.0.1)."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from harness.core.errors import ChecksumMismatch, CommandTimeout, ConnectError, HostKeyError, TransportError
from harness.run.transport import open_transport
from harness.run.transport.ssh import SSHTransport

pytestmark = pytest.mark.ssh

# Every shell metacharacter that could end a quoted word or start a command.
NASTY_NAME = "model v2 'quoted' \"dq\" ; touch PWNED; $(touch PWNED2) `touch PWNED3` & | > < * ?.tflite"


@pytest.fixture
def x86(sim_target):
    transport = open_transport(sim_target("sim-x86"))
    yield transport
    transport.close()


class CorruptingSSHTransport(SSHTransport):
    """Flips one byte of the remote temporary file right after the SFTP upload, before the
    on-device sha256 check: what a flaky link or a bad SD card would do to an artifact."""

    corrupt_sends = 10**9

    def __init__(self, target):
        super().__init__(target)
        self.sends = 0

    def _send_file(self, local_path, remote_tmp):
        super()._send_file(local_path, remote_tmp)
        self.sends += 1
        if self.sends <= self.corrupt_sends:
            with self._sftp().open(remote_tmp, "r+") as handle:
                first = handle.read(1)
                handle.seek(0)
                handle.write(bytes([first[0] ^ 0xFF]))


def test_run_returns_exit_code_stdout_and_stderr_without_raising(x86):
    result = x86.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout_s=30)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.ok and result.duration_s > 0


def test_large_output_arrives_complete(x86):
    result = x86.run(["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo tail >&2"], timeout_s=60)
    assert result.ok and len(result.stdout) == 3_000_001 and result.stderr == "tail\n"


def test_run_uses_workdir_cwd_and_env(x86, tmp_path):
    assert x86.run(["pwd"], 30).stdout.strip() == x86.workdir
    assert x86.run(["pwd"], 30, cwd="/tmp").stdout.strip() == "/tmp"
    result = x86.run(["sh", "-c", 'echo "$GREETING"'], 30, env={"GREETING": "a b; $(echo no)"})
    assert result.stdout == "a b; $(echo no)\n"
    with pytest.raises(ValueError):
        x86.run(["true"], 30, env={"A;B": "x"})


def test_arguments_are_quoted_so_nothing_runs(x86):
    result = x86.run(["echo", "a; touch PWNED", "$(touch PWNED2)", "`touch PWNED3`", "*"], 30)
    assert result.stdout == "a; touch PWNED $(touch PWNED2) `touch PWNED3` *\n"
    assert not any(Path(x86.workdir, p).exists() for p in ("PWNED", "PWNED2", "PWNED3"))


def test_file_name_with_spaces_quotes_and_semicolon_round_trips(x86, tmp_path):
    local = tmp_path / NASTY_NAME
    local.write_bytes(b"\x00model bytes\xff" * 1000)
    remote = f"{x86.workdir}/quoting/{NASTY_NAME}"
    x86.put(local, remote)
    assert x86.exists(remote)
    listed = x86.run(["ls", "-1", f"{x86.workdir}/quoting"], 30).stdout.splitlines()
    assert listed == [NASTY_NAME]
    digest = x86.run(["sha256sum", remote], 30).stdout.split()[0]
    assert digest == hashlib.sha256(local.read_bytes()).hexdigest()
    back = tmp_path / "back.bin"
    x86.get(remote, back)
    assert back.read_bytes() == local.read_bytes()
    for marker in ("PWNED", "PWNED2", "PWNED3"):
        assert not Path(x86.workdir, marker).exists() and not Path(x86.workdir, "quoting", marker).exists()


def test_put_leaves_no_temporary_file_and_counts_bytes(x86, tmp_path):
    local = tmp_path / "weights.bin"
    local.write_bytes(os.urandom(300_000))
    before = dict(x86.stats)
    x86.put(local, f"{x86.workdir}/put-test/weights.bin")
    assert os.listdir(Path(x86.workdir, "put-test")) == ["weights.bin"]
    assert x86.stats["files_sent"] == before["files_sent"] + 1
    assert x86.stats["bytes_sent"] == before["bytes_sent"] + 300_000


def test_corrupted_upload_is_detected_and_discarded(sim_target, tmp_path):
    local = tmp_path / "model.onnx"
    local.write_bytes(b"onnx" * 5000)
    transport = CorruptingSSHTransport(sim_target("sim-x86"))
    try:
        remote = f"{transport.workdir}/corrupt-test/model.onnx"
        with pytest.raises(ChecksumMismatch, match="sha256 on the device"):
            transport.put(local, remote)
        assert not transport.exists(remote)
        assert os.listdir(Path(transport.workdir, "corrupt-test")) == []  # the .part file is gone too
        assert transport.stats["files_sent"] == 0
    finally:
        transport.close()


def test_get_of_missing_file_is_a_transport_error(x86, tmp_path):
    with pytest.raises(TransportError, match="no such file on device"):
        x86.get(f"{x86.workdir}/does-not-exist", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_command_timeout_kills_the_remote_process_group(x86):
    pid_file = f"{x86.workdir}/sleeper.pid"
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match="1s timeout"):
        x86.run(["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], timeout_s=1)
    assert time.monotonic() - started < 10
    # The device is this machine, so the test can look at the process directly; SIGKILL is
    # delivered asynchronously, so give the process a moment to be scheduled and die.
    pid = int(Path(pid_file).read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_unknown_host_key_is_refused_with_how_to_trust_it(sim_target, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    target = sim_target("sim-x86", known_hosts=str(empty))
    with pytest.raises(HostKeyError) as info:
        open_transport(target)
    message = str(info.value)
    assert "unknown" in message and f"ssh-keyscan -p {target.port} 127.0.0.1 >> {empty}" in message
    assert "host_key_policy: accept-new" in message
    assert empty.read_text() == ""  # nothing trusted behind the user's back


def test_changed_host_key_is_refused_even_with_accept_new(sim_target, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = tmp_path / "known_hosts"
    target = sim_target("sim-x86")
    algo, key = other.with_suffix(".pub").read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{target.port} {algo} {key}\n")
    for policy in ("reject", "accept-new"):
        with pytest.raises(HostKeyError) as info:
            open_transport(sim_target("sim-x86", known_hosts=str(known), host_key_policy=policy))
        assert "CHANGED" in str(info.value) and "ssh-keygen -R '[127.0.0.1]:" in str(info.value)
    assert known.read_text() == f"[127.0.0.1]:{target.port} {algo} {key}\n"


def test_accept_new_trusts_and_saves_a_first_seen_key(sim_target, tmp_path, farm):
    known = tmp_path / "ssh" / "known_hosts"
    target = sim_target("sim-x86", known_hosts=str(known), host_key_policy="accept-new")
    open_transport(target).close()
    saved = known.read_text().split()
    host_pub = Path(farm.state_dir, "sim-x86", "host_ed25519_key.pub").read_text().split()
    assert saved == [f"[127.0.0.1]:{target.port}", host_pub[0], host_pub[1]]
    # Now known: the strict policy accepts it.
    open_transport(sim_target("sim-x86", known_hosts=str(known))).close()


def test_wrong_key_fails_fast_without_retries(sim_target, tmp_path):
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    started = time.monotonic()
    with pytest.raises(ConnectError, match="refused key authentication.*ssh-copy-id"):
        open_transport(sim_target("sim-x86", key_file=str(stranger), connect_retries=3))
    assert time.monotonic() - started < 2.5  # retries would have slept 0.5 + 1 + 2 s


def test_missing_key_file_says_how_to_make_one(sim_target, tmp_path):
    with pytest.raises(ConnectError, match="ssh-keygen -t ed25519"):
        open_transport(sim_target("sim-x86", key_file=str(tmp_path / "nope")))


def test_refused_connection_is_retried_with_backoff_then_fails_clearly(sim_target):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ConnectError, match="after 3 attempt"):
        open_transport(sim_target("sim-x86", port=closed_port, connect_retries=2))
    assert 1.4 < time.monotonic() - started < 5  # slept 0.5 s, then 1 s


class CountingSSHTransport(SSHTransport):
    """Counts the round trips a step makes to the device (commands run and files looked up)."""

    def __init__(self, target):
        super().__init__(target)
        self.trips = 0

    def run(self, *args, **kwargs):
        self.trips += 1
        return super().run(*args, **kwargs)

    def exists(self, *args, **kwargs):
        self.trips += 1
        return super().exists(*args, **kwargs)


def test_the_cached_agent_is_checked_in_one_round_trip_and_replaced_when_it_changed(sim_target):
    from harness.run.probe import agent_sha256, ensure_agent

    transport = CountingSSHTransport(sim_target("sim-x86"))
    try:
        remote = ensure_agent(transport)
        transport.trips = 0
        assert ensure_agent(transport) == remote
        assert transport.trips == 1, "a device job's agent check is one command (its sha256), not exists + sha256"
        Path(remote).write_text("# a copy changed on the device's storage\n")
        assert ensure_agent(transport) == remote
        assert hashlib.sha256(Path(remote).read_bytes()).hexdigest() == agent_sha256(), "the changed copy replaced"
        Path(remote).unlink()
        assert ensure_agent(transport) == remote and Path(remote).is_file(), "a missing copy is uploaded"
    finally:
        transport.close()
