"""Read model files on a device of the run when this host lacks their runtime.

The prepare stage inspects every artifact (interface, operators) and computes a runtime-format source's
reference outputs with the runtime the device will use. Where this host has no such runtime (a controller
without LiteRT profiling a .tflite on a Raspberry Pi with tflite-runtime), `DeviceInspector` does it through
the agent on the first target of the run that lists the format in its runtimes and whose probe finds that
runtime importable: `agent.py inspect` for the facts, `agent.py run --outputs` (no timing to speak of) for the
reference outputs.

It holds plain data only (the run's TargetSpecs and what the probes said), opens a transport for each call and
closes it, and so pickles: the dask dispatcher ships it to the workers that build.
"""
from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from harness.agent.agent import STATUS_OK, Doc, ErrorCategory
from harness.core.errors import ConfigError, HarnessError, LibraryMissing, TransportError
from harness.prepare.inspection import Shapes
from harness.run import probe as device
from harness.run.transport import open_transport
from harness.schema.targets import TargetSpec

log = logging.getLogger("harness.run.device_inspection")

#: the agent's seconds to load a model and say what it is, at most (a device's command timeout may be shorter)
INSPECT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class DeviceRuntime:
    """A target whose probe found a format's runtime: which module and version."""

    target: str
    module: str
    version: str

    def describe(self) -> str:
        return f"{self.target} ({self.module} {self.version})"


@dataclass
class DeviceInspector:
    """harness.prepare.inspection.Inspector on the run's devices: the first that has the format's runtime."""

    targets: Tuple[TargetSpec, ...]
    #: format -> the device that reads it, once found
    chosen: Dict[str, DeviceRuntime] = field(default_factory=dict)
    #: target -> its probe's runtimes section ({fmt: {"available", "module", "version"}}), or why it failed
    probes: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, targets: Sequence[TargetSpec]) -> "DeviceInspector":
        return cls(tuple(targets))

    # -------------------------------------------------------- which device
    def _runtimes(self, target: TargetSpec) -> Dict[str, Any]:
        """The probe's runtimes of a target (probed once per inspector); a device that cannot be reached
        has none, and says why."""
        if target.name not in self.probes:
            try:
                transport = open_transport(target)
                try:
                    info = device.probe(transport, device.device_python(target, transport))
                finally:
                    transport.close()
                self.probes[target.name] = info.get("runtimes", {})
            except HarnessError as exc:
                log.warning("[%s] not probed for inspection: %s", target.name, exc)
                self.probes[target.name] = f"unreachable ({str(exc).splitlines()[0][:160]})"
        return self.probes[target.name]

    def _find(self, fmt: str) -> Optional[DeviceRuntime]:
        if fmt not in self.chosen:
            for target in self.targets:
                if fmt not in target.runtimes or is_this_host(target):
                    continue
                runtimes = self._runtimes(target)
                info = runtimes.get(fmt, {}) if isinstance(runtimes, dict) else {}
                if info.get("available"):
                    self.chosen[fmt] = DeviceRuntime(target.name, str(info.get("module", fmt)),
                                                     str(info.get("version", "unknown")))
                    break
        return self.chosen.get(fmt)

    def _target(self, name: str) -> TargetSpec:
        return next(t for t in self.targets if t.name == name)

    def has(self, fmt: str) -> bool:
        return self._find(fmt) is not None

    def cache_identity(self, fmt: str) -> Any:
        found = self._require(fmt)
        return ("agent", fmt, found.module, found.version)

    def where(self, fmt: str) -> str:
        return self._require(fmt).describe()

    def missing(self, fmt: str) -> str:
        said: List[str] = []
        for target in self.targets:
            if fmt not in target.runtimes:
                said.append(f"{target.name}: does not list {fmt}")
                continue
            if is_this_host(target):
                said.append(f"{target.name}: is this host's own Python")
                continue
            runtimes = self._runtimes(target)
            if isinstance(runtimes, str):
                said.append(f"{target.name}: {runtimes}")
            elif not runtimes.get(fmt, {}).get("available"):
                said.append(f"{target.name}: no {fmt} runtime importable")
        return "devices " + (", ".join(said) if said else "none in the run")

    def _require(self, fmt: str) -> DeviceRuntime:
        found = self._find(fmt)
        if found is None:
            raise LibraryMissing(f"no device of the run has the {fmt} runtime ({self.missing(fmt)})", package=fmt)
        return found

    # -------------------------------------------------------- on the device
    def _agent(self, transport, target: TargetSpec, argv: List[str]) -> Tuple[int, str, str]:
        python = device.device_python(target, transport)
        agent = device.ensure_agent(transport)
        result = transport.run([python, agent, *argv], min(target.command_timeout_s, INSPECT_TIMEOUT_S))
        return result.exit_code, result.stdout, result.stderr

    def _upload(self, transport, path: Path) -> Tuple[str, ...]:
        """The model's files in the device's cache (an OpenVINO .xml brings its .bin)."""
        from harness.prepare.converters import artifact_files

        fmt_files = artifact_files(path, "openvino") if path.suffix == ".xml" else [path]
        return tuple(device.ensure_artifact(transport, Path(p)) for p in fmt_files)

    def inspect(self, path: Path, fmt: str, shapes: Shapes) -> Dict[str, Any]:
        found = self._require(fmt)
        target = self._target(found.target)
        transport = open_transport(target)
        try:
            files = self._upload(transport, Path(path))
            argv = ["inspect", "--model", files[0], "--format", fmt, "--threads", str(target.threads)]
            if len(files) > 1:
                argv += ["--weights", files[1]]
            if shapes:
                argv += ["--shapes", json.dumps({k: list(v) for k, v in shapes.items()})]
            code, stdout, stderr = self._agent(transport, target, argv)
        finally:
            transport.close()
        document = _last_json(stdout)
        if document is None:
            raise TransportError(f"[{target.name}] agent inspect of {Path(path).name} printed no JSON (exit {code}): "
                                 f"{_tail(stderr or stdout)}")
        facts: Dict[str, Any] = {"interface": {}, "operators": {}, "load_error": "", "holds_state": False,
                                 "inspected_on": found.describe()}
        if document.get(Doc.STATUS) != STATUS_OK:
            category, message = document.get(Doc.ERROR_CATEGORY, ""), document.get(Doc.ERROR_MESSAGE, "")
            if category == ErrorCategory.RUNTIME_MISSING:  # the probe said otherwise: the device changed under us
                raise LibraryMissing(f"{target.name} lost its {fmt} runtime since its probe: {message}", package=fmt)
            facts["load_error"] = f"cannot load with the {fmt} runtime on {target.name}: {message}"
            return facts
        facts.update(interface=document.get(Doc.INTERFACE) or {}, operators=document.get(Doc.OPERATORS) or {},
                     holds_state=bool(document.get(Doc.HOLDS_STATE)))
        return facts

    def reference_outputs(self, path: Path, fmt: str, inputs_path: Path, out_path: Path) -> str:
        found = self._require(fmt)
        target = self._target(found.target)
        transport = open_transport(target)
        remote_dir = f"{transport.workdir}/inspect/{uuid.uuid4().hex[:12]}"
        try:
            files = self._upload(transport, Path(path))
            inputs = device.ensure_artifact(transport, Path(inputs_path))
            transport.mkdir(remote_dir)
            argv = ["run", "--model", files[0], "--format", fmt, "--inputs", inputs,
                    "--result", f"{remote_dir}/result.json", "--outputs", f"{remote_dir}/outputs.npz",
                    "--warmup", "0", "--iterations", "1", "--min-duration", "0", "--max-duration", "0",
                    "--threads", str(target.threads), "--lock", device.lock_path(transport),
                    "--lock-timeout", str(max(target.lock_timeout_s, 60.0)), "--holder", "harness reference outputs",
                    # the reference computes in f32: a plugin's bf16 default belongs to a deployment, not the model
                    "--runtime-config", json.dumps({"name": "reference", "options": {"precision": "f32"}
                                                    if fmt == "openvino" else {}})]
            if len(files) > 1:
                argv += ["--weights", files[1]]
            code, stdout, stderr = self._agent(transport, target, argv)
            local_result = Path(out_path).with_suffix(".result.json")
            try:
                transport.get(f"{remote_dir}/result.json", local_result)
                document = json.loads(local_result.read_text())
            except (TransportError, ValueError):
                raise TransportError(f"[{target.name}] the agent gave no result for the reference outputs of "
                                     f"{Path(path).name} (exit {code}): {_tail(stderr or stdout)}") from None
            finally:
                local_result.unlink(missing_ok=True)
            if document.get(Doc.STATUS) != STATUS_OK:
                raise ConfigError(path, f"the model fails on the evaluation data on {target.name} "
                                  f"({document.get(Doc.ERROR_CATEGORY)}: {document.get(Doc.ERROR_MESSAGE)}); check "
                                  "the data's shapes and dtypes against the model")
            transport.get(f"{remote_dir}/outputs.npz", Path(out_path))
            transport.run(["rm", "-rf", remote_dir], 30.0)
        finally:
            transport.close()
        return found.describe()


def is_this_host(target: TargetSpec) -> bool:
    """A local target without a Python of its own runs the agent with the harness's own interpreter: it has
    what this host has, so it is no place to read what the host cannot."""
    return target.transport == "local" and not target.python


def _last_json(stdout: str) -> Optional[Dict[str, Any]]:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _tail(text: str) -> str:
    return " | ".join(text.strip().splitlines()[-3:]) or "no output"
