"""Runtime configurations: what a target runs a format with (execution providers, delegates, devices, precision).

A target's `runtimes:` is either today's list of formats, each meaning that runtime's default configuration,

    runtimes: [tflite, onnx]

or named configurations per runtime, each checked against that runtime's option schema when the file loads:

    runtimes:
      onnx:
        - {name: ort-cpu}
        - {name: ort-trt, providers: [TensorrtExecutionProvider, CPUExecutionProvider], fallback: allow}

A configuration with no options is the runtime's default: its cells keep the plain cell id
(model__variant__format__target), so resumed runs and history series go on; any other configuration's cells
are model__variant__format@name__target. Options reach the agent as data (one JSON document); the agent
turns them into the runtime's own calls and records what took effect. Pure: no I/O, no runtime imports.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from harness.core.errors import ConfigError
from harness.core.names import is_valid_name



@dataclass(frozen=True)
class RuntimeConfig:
    """One named way of running a format on a target."""

    #: the format, which is also the runtime: tflite, onnx, openvino, torch
    runtime: str
    #: the configuration's name, unique on its target (a list-form entry is named after its runtime)
    name: str
    #: the runtime's options, checked against its schema; empty: the runtime's defaults
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def is_default(self) -> bool:
        return not self.options

    @property
    def fallback_allowed(self) -> bool:
        return self.options.get("fallback") == "allow"

    def options_json(self) -> str:
        """The options, canonical ('' for the default): what history keys and cache keys use."""
        return json.dumps(dict(self.options), sort_keys=True, separators=(",", ":")) if self.options else ""

    def to_agent(self) -> Dict[str, Any]:
        """What the agent's --runtime-config takes."""
        return {"name": self.name, "runtime": self.runtime, "options": dict(self.options)}


def default_config(runtime: str) -> RuntimeConfig:
    return RuntimeConfig(runtime, runtime, {})


# ---------------------------------------------------------------- schemas, one per runtime
#: a check takes the value and returns an error text, or None when the value is fine
Check = Callable[[Any], Optional[str]]
SCHEMAS: Dict[str, Dict[str, Tuple[Check, str]]] = {}


def register_schema(runtime: str, options: Dict[str, Tuple[Check, str]]) -> None:
    """Each runtime's option names with their check and a description (what `harness targets` can show)."""
    if runtime in SCHEMAS:
        raise ValueError(f"runtime configuration schema {runtime!r} registered twice")
    SCHEMAS[runtime] = {**COMMON, **options}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def integer(minimum: int = 0) -> Check:
    return lambda v: None if _is_int(v) and v >= minimum else f"expected an integer >= {minimum}, got {v!r}"


def boolean(v: Any) -> Optional[str]:
    return None if isinstance(v, bool) else f"expected true or false, got {v!r}"


def string(v: Any) -> Optional[str]:
    return None if isinstance(v, str) and v else f"expected a non-empty string, got {v!r}"


def one_of(*choices: Any) -> Check:
    return lambda v: None if v in choices else f"must be one of {', '.join(map(repr, choices))}, got {v!r}"


def string_list(v: Any) -> Optional[str]:
    if not isinstance(v, (list, tuple)) or not v or not all(isinstance(x, str) and x for x in v):
        return f"expected a non-empty list of names, got {v!r}"
    return None


def _scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool))


def scalar_mapping(v: Any) -> Optional[str]:
    if not isinstance(v, Mapping) or not all(isinstance(k, str) and _scalar(x) for k, x in v.items()):
        return f"expected a mapping of names to numbers, strings or booleans, got {v!r}"
    return None


def streams(v: Any) -> Optional[str]:
    return None if (_is_int(v) and v >= 1) or v == "auto" else f"expected an integer >= 1 or 'auto', got {v!r}"


COMMON: Dict[str, Tuple[Check, str]] = {
    "fallback": (one_of("deny", "allow"),
                 "deny (default): a requested provider, device or delegate that is not there fails the cell "
                 "(provider_unavailable); allow: run on what is there, and record the fallback on the cell"),
    "threads": (integer(1), "threads for this configuration (default: the target's threads)"),
}

register_schema("onnx", {
    "providers": (string_list, "execution providers in order of preference, e.g. [CUDAExecutionProvider, "
                               "CPUExecutionProvider]"),
    "provider_options": (lambda v: None if isinstance(v, Mapping) and all(
        isinstance(k, str) and scalar_mapping(x) is None for k, x in v.items())
        else f"expected a mapping of provider name to its options, got {v!r}",
        "per provider, its options (e.g. TensorrtExecutionProvider: {trt_fp16_enable: true})"),
    "graph_optimization_level": (one_of("disable", "basic", "extended", "all"),
                                 "ONNX Runtime's graph optimisation level (default all)"),
    "intra_op_threads": (integer(0), "SessionOptions.intra_op_num_threads (default: threads)"),
    "inter_op_threads": (integer(0), "SessionOptions.inter_op_num_threads (default 1)"),
    "engine_cache": (boolean, "TensorRT/OpenVINO EP compiled-model cache in the device's content cache "
                              "(default true where the provider has one)"),
})
register_schema("tflite", {
    "use_xnnpack": (boolean, "false: the builtin kernels without the default XNNPACK delegate "
                             "(OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)"),
    "delegate": (string, "an external delegate library on the device (tflite.load_delegate), e.g. "
                         "/usr/lib/libvx_delegate.so"),
    "delegate_options": (scalar_mapping, "the external delegate's options"),
})
register_schema("openvino", {
    "device": (string, "OpenVINO device: CPU, GPU, NPU, AUTO:GPU,CPU, ... (default CPU)"),
    "hint": (one_of("latency", "throughput", "cumulative_throughput"), "PERFORMANCE_HINT (default latency)"),
    "streams": (streams, "NUM_STREAMS (default 1 under the latency hint)"),
    "precision": (one_of("f32", "f16", "bf16", "i8"), "INFERENCE_PRECISION_HINT (default: the plugin's)"),
    "cache": (boolean, "compiled-model cache (CACHE_DIR) in the device's content cache (default false)"),
})
register_schema("torch", {
    "device": (lambda v: None if isinstance(v, str) and re.match(r"^(cpu|cuda(:\d+)?)$", v)
               else f"expected cpu, cuda or cuda:N, got {v!r}", "torch device (default cpu)"),
})


# ---------------------------------------------------------------- loading
def _check_options(runtime: str, entry: Mapping[str, Any], path: str, key: str) -> Dict[str, Any]:
    schema = SCHEMAS.get(runtime, COMMON)  # a device-only runtime without a schema takes the common options
    options = {}
    for name, value in entry.items():
        if name == "name":
            continue
        if not isinstance(name, str) or name not in schema:
            raise ConfigError(path, f"unknown {runtime} option; known: {', '.join(sorted(schema))}",
                              f"{key}.{name}")
        problem = schema[name][0](value)
        if problem:
            raise ConfigError(path, problem, f"{key}.{name}")
        options[name] = list(value) if isinstance(value, tuple) else value
    if runtime == "onnx" and "provider_options" in options:
        listed = set(options.get("providers") or ())
        stray = sorted(set(options["provider_options"]) - listed)
        if stray:
            raise ConfigError(path, f"options for provider(s) not in providers: {', '.join(stray)}",
                              f"{key}.provider_options")
    return options


def parse_runtimes(value: Any, path: str, known: Sequence[str]) -> Tuple[RuntimeConfig, ...]:
    """A target's `runtimes:` (list of formats, or runtime -> list of named configurations) -> configurations."""
    configs: List[RuntimeConfig] = []
    if isinstance(value, str) or not isinstance(value, (list, tuple, Mapping)):
        raise ConfigError(path, f"expected a list of runtimes or a mapping of runtime to configurations, "
                                f"got {value!r}", "runtimes")
    if not isinstance(value, Mapping):
        for i, runtime in enumerate(value):
            if runtime not in known:
                raise ConfigError(path, f"unknown runtime {runtime!r}; known: {', '.join(known)}", f"runtimes[{i}]")
            configs.append(default_config(runtime))
    else:
        for runtime, entries in value.items():
            key = f"runtimes.{runtime}"
            if runtime not in known:
                raise ConfigError(path, f"unknown runtime; known: {', '.join(known)}", key)
            if not isinstance(entries, (list, tuple)) or not entries:
                raise ConfigError(path, "expected a non-empty list of configurations ({name: ..., options})", key)
            defaults = 0
            for i, entry in enumerate(entries):
                where = f"{key}[{i}]"
                if not isinstance(entry, Mapping):
                    raise ConfigError(path, f"expected a mapping with a name, got {entry!r}", where)
                name = entry.get("name")
                if not isinstance(name, str) or not is_valid_name(name):
                    raise ConfigError(path, "required: letters, digits, '_', '-' or '.'", f"{where}.name")
                options = _check_options(runtime, entry, path, where)
                defaults += not options
                if defaults > 1:
                    raise ConfigError(path, f"two {runtime} configurations without options (both the default)",
                                      where)
                config = RuntimeConfig(runtime, name, options)
                same = [c.name for c in configs if c.runtime == runtime and c.options_json() == config.options_json()]
                if same:  # results, history and compiled caches key on the options: two names would collide
                    raise ConfigError(path, f"the same options as {same[0]!r}", where)
                configs.append(config)
    names = [c.name for c in configs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(path, f"configuration name(s) used twice: {', '.join(dup)}", "runtimes")
    return tuple(configs)


def formats_of(configs: Iterable[RuntimeConfig]) -> Tuple[str, ...]:
    out: List[str] = []
    for c in configs:
        if c.runtime not in out:
            out.append(c.runtime)
    return tuple(out)


def pick(configs: Sequence[RuntimeConfig], names: Sequence[str]) -> Tuple[RuntimeConfig, ...]:
    """The configurations named (harness profile --runtime-config); all when no names are given."""
    if not names:
        return tuple(configs)
    return tuple(c for c in configs if c.name in names)


def check_picked(all_configs: Mapping[str, Sequence[RuntimeConfig]], names: Sequence[str]) -> None:
    """Every name given on the command line is a configuration of some target (else one line naming them)."""
    known = sorted({c.name for cs in all_configs.values() for c in cs})
    missing = [n for n in names if n not in known]
    if missing:
        raise ConfigError("--runtime-config", f"no target has configuration(s) {', '.join(missing)}; "
                                              f"the targets have: {', '.join(known)}")


def wants_cache(config: RuntimeConfig) -> bool:
    """Whether the configuration compiles a model it can keep: OpenVINO with cache: true, or ONNX Runtime's
    TensorRT / OpenVINO execution providers (unless engine_cache: false)."""
    if config.runtime == "openvino":
        return bool(config.options.get("cache"))
    if config.runtime == "onnx":
        providers = set(config.options.get("providers") or ())
        return bool(providers & {"TensorrtExecutionProvider", "OpenVINOExecutionProvider"}) \
            and config.options.get("engine_cache", True) is not False
    return False


def compiled_cache_key(artifact_sha256: str, config: RuntimeConfig) -> str:
    """The compiled-model cache's directory name for an artifact under a configuration's options (the agent adds
    the runtime's name and version below it, so a runtime upgrade compiles afresh)."""
    import hashlib
    return hashlib.sha256(f"{artifact_sha256}\n{config.runtime}\n{config.options_json()}".encode()).hexdigest()
