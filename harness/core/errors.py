"""One exception tree for the harness.

Library code raises these; only the CLI turns them into messages and exit
codes. Every message should say what to do next.
"""
from __future__ import annotations


class HarnessError(Exception):
    """Root of every error the harness raises on purpose."""


class ConfigError(HarnessError):
    """A YAML file (target, recipe, policy) is malformed or incomplete."""

    def __init__(self, path: object, message: str, key: str | None = None):
        self.path = str(path)
        self.key = key
        where = f"{self.path}" + (f": field '{key}'" if key else "")
        super().__init__(f"{where}: {message}")


class LibraryMissing(HarnessError):
    """An optional library this step needs is not installed; the message names the extra that brings it."""

    def __init__(self, message: str, package: str = ""):
        self.package = package
        super().__init__(message)


class HostDiskFull(HarnessError):
    """This host could not write a file of the run: its disk (the reports directory, the cache) is full."""

    def __init__(self, path: object, detail: str = ""):
        self.path = str(path)
        super().__init__(f"no space left on this host for {self.path}" + (f" ({detail})" if detail else "") +
                         "; free space there (or pass --reports-dir / HARNESS_CACHE_DIR on a larger disk), then "
                         "`harness run --resume RUN_ID` measures what is missing")


class UnknownNameError(HarnessError):
    """A name looked up in a registry is not registered."""


class TransportError(HarnessError):
    """Talking to a device failed."""


class ConnectError(TransportError):
    """The device could not be reached or refused us (host key, auth, network)."""


class HostKeyError(ConnectError):
    """The device's host key is unknown or changed."""


class HostKeyUnknown(HostKeyError):
    """The device offered a key that known_hosts does not list (a device not yet trusted)."""


class HostKeyChanged(HostKeyError):
    """The device offered a key other than the one known_hosts lists: a security event, never a lost device."""


class RemoteCommandFailed(TransportError):
    """A command on the device exited non-zero; carries its output like invoke's Failure."""

    def __init__(self, command: str, exit_code: int | None, stdout: str, stderr: str, device: str = ""):
        self.command = command
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        self.device = device
        tail = (stderr or stdout).strip().splitlines()[-5:]
        super().__init__(
            f"[{device}] command exited {exit_code}: {command}" + ("\n  " + "\n  ".join(tail) if tail else "")
        )


class CommandTimeout(TransportError):
    """A command on the device ran past its timeout and was killed.

    `stalled` says why the command made no progress when the device itself was to blame (its processes were
    stopped, 'T', or stuck in uninterruptible I/O, 'D'); empty when it was simply still running, as a model too slow
    for its timeout is. `cleaned`: the kill reached every process of the command."""

    def __init__(self, message: str, stalled: str = "", cleaned: bool = True):
        super().__init__(message)
        self.stalled, self.cleaned = stalled, cleaned


class DeviceTimeout(ConnectError):
    """The device stopped answering: a command, a kill or a transfer got no reply within its timeout (a frozen
    device, a hung SD card, a stopped sshd). The cells not measured are resumable once it answers again."""


class ChecksumMismatch(TransportError):
    """An uploaded file's sha256 on the device differs from the local one."""


class DeviceBusy(TransportError):
    """Another run holds the device lock."""


class ConversionError(HarnessError):
    """A model could not be converted to a format; `diagnostic` keeps the converter's whole text."""

    def __init__(self, message: str, diagnostic: str = ""):
        self.diagnostic = diagnostic
        super().__init__(message)

    def __reduce__(self):  # the diagnostic survives a process pool (litert-torch converts in one)
        return type(self), (str(self), self.diagnostic)
