"""Where a model file is read: the runtime that reads it may be on this host or only on a device.

Inspecting an artifact (its interface and operators, checked against the source's) and computing a runtime
source's reference outputs need the format's runtime. The controller's job is to push and collate: a host
without LiteRT can still profile a .tflite on a Raspberry Pi that has tflite-runtime. An `Inspector` reads
files with one runtime somewhere; `HOST` is this process, and the run stage adds one that works through the
agent on a device of the run (harness.run.device_inspection), which `pick_inspector` falls back to.

Facts an inspector returns (a JSON document, cached by content and runtime version in "inspections"):
  interface: {"inputs": [...], "outputs": [...]} as the runtime sees the file ({} when it cannot load it)
  operators: operator type -> count ({} where the runtime lists none)
  load_error: "" or why the runtime rejects the file (an incompatibility of the cell, not a crash)
  holds_state: whether the runtime says the model keeps state between inferences
  inspected_on: "host", or "<target> (<runtime> <version>)"
"""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, runtime_checkable

from harness.agent import agent as device_agent
from harness.core.errors import LibraryMissing
from harness.core.optional import RUNTIME_MODULES, install_hint, library_missing
from harness.prepare.versions import library_versions
from harness.schema.interface import Interface

Shapes = Optional[Mapping[str, Sequence[int]]]
HOST_NAME = "host"


@runtime_checkable
class Inspector(Protocol):
    """Reads model files with one place's runtimes."""

    def has(self, fmt: str) -> bool:
        """Whether this inspector can read `fmt` files (its runtime imports where it runs)."""

    def cache_identity(self, fmt: str) -> Any:
        """What decides what reading a `fmt` file gives here (the runtime and its version): part of cache keys."""

    def where(self, fmt: str) -> str:
        """Where `fmt` files are read, for notes and the manifest: "host" or "sim-pi4 (tflite-runtime 2.14.0)"."""

    def inspect(self, path: Path, fmt: str, shapes: Shapes) -> Dict[str, Any]:
        """The facts of one model file loaded at `shapes` (None: as the file declares); see the module doc.
        A file the runtime rejects is a load_error in the facts; a runtime that is not there is LibraryMissing."""

    def reference_outputs(self, path: Path, fmt: str, inputs_path: Path, out_path: Path) -> str:
        """Run the model on every sample of `inputs_path` (the agent's feeds .npz) and write the agent's
        outputs .npz to `out_path`; returns where it ran (as `where`)."""

    def missing(self, fmt: str) -> str:
        """Why `fmt` cannot be read here (what was checked), for the library_missing message."""


@lru_cache(maxsize=None)
def host_runtime(fmt: str) -> Tuple[str, str]:
    """(module, version) of the agent's `fmt` runtime in this process, or ("", why not)."""
    runtime_cls = device_agent.RUNTIMES.get(fmt)
    if runtime_cls is None:
        return "", f"the agent has no {fmt} runtime"
    try:
        runtime = runtime_cls(1, {})
    except device_agent.AgentFailure as exc:
        return "", str(exc)
    return runtime.name, str(runtime.version)


class HostInspector:
    """This process, with the agent's own runtime classes: the host sees exactly what a device would."""

    def has(self, fmt: str) -> bool:
        return bool(host_runtime(fmt)[0])

    def cache_identity(self, fmt: str) -> Any:
        return library_versions()

    def where(self, fmt: str) -> str:
        return HOST_NAME

    def inspect(self, path: Path, fmt: str, shapes: Shapes) -> Dict[str, Any]:
        from harness.prepare.converters.inspect import list_operators
        from harness.prepare.sources.runtimes import load_on_host

        facts: Dict[str, Any] = {"interface": {}, "operators": {}, "load_error": "", "holds_state": False,
                                 "inspected_on": HOST_NAME}
        try:
            runtime = load_on_host(path, fmt, shapes)
            facts["interface"] = runtime.interface()
            facts["holds_state"] = bool(runtime.holds_state)
            facts["operators"] = list_operators(path, fmt, shapes)
        except LibraryMissing:  # this host lacks the runtime, not the file's fault: nothing is recorded
            raise
        except ImportError as exc:
            raise library_missing(exc, f"inspecting the {fmt} artifact") from None
        except Exception as exc:  # a file the runtime rejects is an incompatibility of this cell
            facts["load_error"] = f"cannot load with the {fmt} runtime: {exc}"
        return facts

    def reference_outputs(self, path: Path, fmt: str, inputs_path: Path, out_path: Path) -> str:
        from harness.prepare.sources.runtimes import load_on_host

        feeds = device_agent.Feeds.load(str(inputs_path))
        model = load_on_host(path, fmt, feeds.shapes(), {"precision": "f32"})
        outputs = device_agent.collect_outputs(model, feeds, device_agent.feed_order(model, feeds), feeds.n_samples)
        device_agent.save_outputs(str(out_path), outputs)
        return HOST_NAME

    def missing(self, fmt: str) -> str:
        return f"this host: {host_runtime(fmt)[1].splitlines()[0][:160]}"


HOST = HostInspector()


def reads_with_runtime(fmt: str) -> bool:
    """Whether files of this (source or artifact) format are read by the agent's runtime of the same name."""
    return fmt in device_agent.RUNTIMES


def pick_inspector(fmt: str, fallback: Optional[Inspector] = None, what: str = "") -> Inspector:
    """The host when it has the runtime, else `fallback` (a device of the run) when it has it; else
    LibraryMissing naming the extra that brings the runtime and every place checked."""
    if HOST.has(fmt):
        return HOST
    if fallback is not None and fallback.has(fmt):
        return fallback
    raise nowhere(fmt, fallback, what)


def nowhere(fmt: str, fallback: Optional[Inspector], what: str = "") -> LibraryMissing:
    """LibraryMissing for a format no place of the run can read: the extra, and what was checked."""
    module = RUNTIME_MODULES.get(fmt)
    checked: List[str] = [HOST.missing(fmt)]
    if fallback is not None:
        checked.append(fallback.missing(fmt))
    else:
        checked.append("no device was asked (this build was given none)")
    what = what or f"reading a {fmt} file"
    if module is None:  # a device-only runtime: no extra of the harness brings it
        return LibraryMissing(f"{what} needs the {fmt} runtime, which neither this host nor a device of the run "
                              f"has (checked: {'; '.join(checked)}); add a device whose probe lists {fmt}",
                              package=fmt)
    package, line = install_hint(module)
    return LibraryMissing(f"{what} needs the {fmt} runtime ({package}), which neither this host nor a device of "
                          f"the run has (checked: {'; '.join(checked)}); {line}, or run on a device that has it",
                          package=package)


def device_reader(fmt: str, inspector: Optional[Inspector], what: str) -> Optional[Inspector]:
    """The inspector that reads a runtime-format source where this host lacks its runtime, or None: the host
    reads it (it has the runtime, or the format is a framework's, whose source says what is missing)."""
    if not reads_with_runtime(fmt) or HOST.has(fmt) or inspector is None:
        return None
    return pick_inspector(fmt, inspector, what)


def reference_on_device(device: Inspector, path: Path, fmt: str, interface: Interface, feeds_path: Path,
                        outputs_path: Path) -> Tuple[List[Tuple[str, Any]], Interface, str]:
    """The source's outputs on every sample, run by the agent where `device` has the runtime this host lacks
    (the agent's own outputs file, read back); the interface, stateful where the runtime says so; the note."""
    from harness.judge.evaluate import read_outputs

    where = device.reference_outputs(path, fmt, feeds_path, outputs_path)
    outputs = list(read_outputs(outputs_path).items())
    if device.inspect(path, fmt, {s.name: list(s.static_shape) for s in interface.inputs})["holds_state"]:
        interface = replace(interface, stateful=True)
    note = f"reference outputs computed on {where}: this host has no {fmt} runtime"
    return outputs, interface, note
