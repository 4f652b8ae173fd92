"""How to talk to a device: one small protocol, a local and an SSH implementation."""
from __future__ import annotations

from harness.core.registry import Registry
from harness.run.transport.base import CommandResult, Transport

TRANSPORTS: Registry = Registry("transport", {"local": "harness.run.transport.local", "ssh": "harness.run.transport.ssh"})


def open_transport(target) -> Transport:
    """Open the transport a TargetSpec names (`transport: local|ssh`)."""
    factory = TRANSPORTS.get(target.transport)
    return factory(target)


__all__ = ["CommandResult", "Transport", "TRANSPORTS", "open_transport"]
