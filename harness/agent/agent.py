#!/usr/bin/env python3
"""Edge inference agent: runs one model file with the runtime found on this device.

Self-contained on purpose: it needs only the standard library, numpy (1.x or
2.x) and one runtime, and it runs on old Pythons (3.7+). It never imports the
harness. The host copies this file to the device and runs, for example:

    python3 agent.py probe
    python3 agent.py inspect --model m.tflite --format tflite --shapes '{"x": [1, 8, 8, 1]}'
    python3 agent.py run --model m.onnx --format onnx --inputs in.npz \
        --result result.json --outputs outputs.npz --warmup 10 --iterations 100 --threads 1

`run` writes one JSON document (runtime, versions, load time, first-inference
time, latency samples and percentiles, peak memory) and, with --outputs, the
model's outputs for every input sample. `inspect` loads a model and prints
what the runtime sees of it (interface, operators, whether it keeps state), so
a host without this runtime can check an artifact. Failures are written to the
JSON too, with a category, and the exit code says which kind of failure it was.
"""
from __future__ import print_function

import argparse
import errno
import hashlib
import json
import math
import os
import platform
import sys
import time
import traceback

AGENT_VERSION = "5"
EXIT_OK, EXIT_FAILED, EXIT_NO_RUNTIME, EXIT_BAD_INPUT, EXIT_BUSY = 0, 2, 3, 4, 75
#: the values of a document's Doc.STATUS
STATUS_OK, STATUS_ERROR = "ok", "error"


class ErrorCategory(object):
    """Every `error_category` this agent writes (the host's harness.schema.results.Category has each of them;
    tests/test_agent_contract.py holds the two together)."""
    RUNTIME_MISSING = "runtime_missing"            # the format's runtime is not importable here
    PROVIDER_UNAVAILABLE = "provider_unavailable"  # a requested provider, device or delegate is not there
    LOAD_FAILED = "load_failed"                    # the runtime could not load the model
    INFERENCE_FAILED = "inference_failed"          # it loaded, then failed to run
    BAD_INPUT = "bad_input"                        # the request (arguments, inputs, configuration) is unusable
    DEVICE_BUSY = "device_busy"                    # another run holds the device lock
    CACHE_CORRUPTED = "cache_corrupted"            # a cached file's sha256 is not its entry's name any more
    DEVICE_DISK_FULL = "device_disk_full"          # the cache cannot make room for the run's files, or a write failed
    DEVICE_STORAGE_READONLY = "device_storage_readonly"  # the workdir cannot be written (read-only, permissions)
    AGENT_ERROR = "agent_error"                    # anything else: a bug here or an unexpected runtime error
    ALL = (RUNTIME_MISSING, PROVIDER_UNAVAILABLE, LOAD_FAILED, INFERENCE_FAILED, BAD_INPUT, DEVICE_BUSY,
           CACHE_CORRUPTED, DEVICE_DISK_FULL, DEVICE_STORAGE_READONLY, AGENT_ERROR)


class Doc(object):
    """The keys of the JSON document `run` writes, in one place (the host reads them by these names)."""
    # always
    AGENT_VERSION, STATUS, PYTHON, NUMPY = "agent_version", "status", "python", "numpy"
    # status "error"
    ERROR_CATEGORY, ERROR_MESSAGE, TRACEBACK = "error_category", "error_message", "traceback"
    # the runtime and what it made of the configuration
    RUNTIME, RUNTIME_VERSION, THREADS, RUNTIME_CONFIG = "runtime", "runtime_version", "threads", "runtime_config"
    EFFECTIVE_CONFIG, FALLBACK, INTERFACE, PRECISION = "effective_config", "fallback", "interface", "precision"
    LOAD_MS, COMPILE_CACHE = "load_ms", "compile_cache"
    # first use with an empty compiled-model cache (the compile included): the load and the first inference after
    # it, measured when this artifact, runtime version and configuration first met an empty cache on the device
    LOAD_COLD_MS, FIRST_INFERENCE_COLD_MS = "load_cold_ms", "first_inference_cold_ms"
    # first use from the filled cache, in a fresh process (the runtime's plugins and kernels loaded afresh, as when
    # the device's application starts again): the load and the first inference after it
    LOAD_WARM_MS, FIRST_INFERENCE_WARM_MS = "load_warm_ms", "first_inference_warm_ms"
    # timing
    FIRST_INFERENCE_MS, LATENCY_CLOCK, LATENCY, LATENCIES_MS = \
        "first_inference_ms", "latency_clock", "latency", "latencies_ms"
    WARMUP_ITERATIONS, TIMED_ITERATIONS, BLOCK_SIZE = "warmup_iterations", "timed_iterations", "block_size"
    TIMED_S, TIMER_COST_NS, CONDITIONS = "timed_s", "timer_cost_ns", "conditions"
    # the device speed reference timed before, after and between chunks of the timed loop (SpeedReference)
    REFERENCE = "reference"
    # memory
    BASELINE_RSS_BYTES, PEAK_RSS_BYTES, RSS_INCREASE_BYTES = \
        "baseline_rss_bytes", "peak_rss_bytes", "rss_increase_bytes"
    # outputs (--outputs) and the profiled session (--profile)
    N_OUTPUT_SAMPLES, PROFILE, PROFILE_ERROR = "n_output_samples", "profile", "profile_error"
    # how a model that keeps state was returned to its initial state before its outputs: "reset" or "reloaded"
    STATE_RESET = "state_reset"
    # the device's cache (--verify-cache): time spent hashing, the files that did not match, a compiled-model
    # cache that failed to load and was rebuilt
    VERIFY_MS, CORRUPTED_FILES, CACHE_REPAIR = "verify_ms", "corrupted_files", "cache_repair"
    # `inspect`: operator type -> count (null where the runtime lists none), and whether the model keeps state
    OPERATORS, HOLDS_STATE = "operators", "holds_state"
    # energy per inference from the device's power sensor (EnergyMeter.result): figures or `not_measured`
    ENERGY = "energy"
    # the device's temperature at the start and end of the timed loop, the share of it spent throttled, and the
    # cooldown before the cell (HeatMonitor.result): figures, or the method's `not measured: <why>`
    HEAT = "heat"

    @classmethod
    def keys(cls):
        return frozenset(v for k, v in vars(cls).items() if k.isupper())


class AgentFailure(Exception):
    def __init__(self, category, message, exit_code=EXIT_FAILED, details=None):
        Exception.__init__(self, message)
        self.category = category
        self.exit_code = exit_code
        #: document keys (Doc) that say more, e.g. which cached files did not match
        self.details = details or {}


# ---------------------------------------------------------------- memory
def _status_kib(field):
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (IOError, OSError, ValueError):
        pass
    return None


def rss_bytes():
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else None


def peak_rss_bytes():
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    import resource  # not on Windows; fine for the devices we target
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


# ---------------------------------------------------------------- names
def normalize_name(name):
    """TFLite names tensors 'serving_default_image:0'; the model's own name is 'image'."""
    name = str(name)
    if name.startswith("serving_default_"):
        name = name[len("serving_default_"):]
    head, sep, tail = name.rpartition(":")
    return head if sep and tail.isdigit() else name


def match_names(wanted, offered):
    """For each wanted name, the index of the offered name that carries it (None: no consistent match).

    Exact names first, then names without converter noise, then position for
    the rest when the counts agree (converters rename but keep the order).
    """
    if len(wanted) != len(offered):
        return None
    index = []
    for name in wanted:
        hit = next((i for i, o in enumerate(offered) if o == name), None)
        if hit is None:
            hit = next((i for i, o in enumerate(offered) if normalize_name(o) == normalize_name(name)), None)
        index.append(hit)
    found = [i for i in index if i is not None]
    if len(set(found)) != len(found):
        return None
    free = iter([i for i in range(len(offered)) if i not in found])
    return [i if i is not None else next(free) for i in index]


def shapes_in_order(names, shapes):
    """The shape given for each of a runtime's inputs (None where none is given), matched by name."""
    keys = list(shapes or {})
    order = match_names(names, keys) if keys else None
    return [None] * len(names) if order is None else [shapes[keys[k]] for k in order]


# ---------------------------------------------------------------- runtimes
RUNTIMES = {}

#: ONNX Runtime's type strings -> numpy dtype names
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
               "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16",
               "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool"}


def register_runtime(fmt):
    def decorator(cls):
        cls.fmt = fmt
        RUNTIMES[fmt] = cls
        return cls
    return decorator


class RuntimeOptions(object):
    """A runtime configuration's options as the user wrote them (checked on the host against the runtime's
    schema), and what the runtime did with them: any fallback."""

    def __init__(self, runtime, options):
        self.runtime = runtime
        self.options = dict(options or {})
        self.fallbacks = []

    def get(self, key, default=None):
        return self.options.get(key, default)

    def unavailable(self, message):
        """A requested provider, device or delegate is not there: the cell fails with the runtime's words,
        unless the configuration says `fallback: allow`, when it runs on what is there and says so."""
        if self.options.get("fallback") != "allow":
            raise AgentFailure(ErrorCategory.PROVIDER_UNAVAILABLE, message)
        self.fallbacks.append(message)


class Runtime(object):
    """What every runtime is to the agent and to the host (which loads models with these same classes).

    Construction imports the runtime (`import_runtime`, which raises AgentFailure(RUNTIME_MISSING) when it
    cannot) and keeps the user's options (`config`) apart from the agent's own settings: `cache_dir`, the
    compiled-model cache of this artifact, runtime version and options, and `profile_prefix`, where a profiled
    session's runtime writes its trace. After `load`, `input_names`, `output_names` and `effective` (the
    configuration in effect) are set.

    Every runtime implements import_runtime, load, interface, prepare, infer and fetch; the rest has a default
    here that says "not this runtime": callers use them as they are, without probing.
    """
    fmt = ""
    #: what the runtime computes in, where it says (OpenVINO's INFERENCE_PRECISION_HINT); None: not said
    precision = None
    #: the configuration in effect after load (providers, device, delegate, threads)
    effective = None
    #: True where own_latency_s gives the runtime's own time for the last inference
    keeps_own_latency = False
    #: whether the loaded model keeps state between inferences, where the runtime can tell (set by load)
    holds_state = False
    #: set by load_runtime: what was repaired on the way (a compiled-model cache discarded and rebuilt), or None
    cache_repair = None

    def __init__(self, threads, options, cache_dir=None, profile_prefix=None):
        self.config = RuntimeOptions(self.fmt, options)
        self.threads = self.config.get("threads", threads)
        self.cache_dir = cache_dir or None
        self.profile_prefix = profile_prefix or None
        self.input_names, self.output_names = [], []
        self.name, self.version = self.import_runtime()

    # ---- every runtime
    def import_runtime(self):
        """Import the runtime: (module name, version), or AgentFailure(RUNTIME_MISSING, ..., EXIT_NO_RUNTIME)."""
        raise NotImplementedError

    def load(self, path, weights=None, shapes=None):
        """Load the model at the input sizes the harness fixed (shapes: name -> shape, for dynamic inputs)."""
        raise NotImplementedError

    def interface(self):
        """The model's inputs and outputs as the runtime sees them ({"inputs": [...], "outputs": [...]})."""
        raise NotImplementedError

    def prepare(self, feeds):
        """The feeds (numpy arrays in input_names order) in the runtime's own form, outside the timed call."""
        raise NotImplementedError

    def infer(self, prepared):
        """One inference: the timed call."""
        raise NotImplementedError

    def fetch(self):
        """The last inference's outputs as numpy arrays, in output_names order."""
        raise NotImplementedError

    # ---- optional, with defaults
    def accelerators(self):
        """What a runtime configuration can ask for here (providers, devices); None: nothing to choose."""
        return None

    def uses_cache(self):
        """Whether the loaded model was compiled through cache_dir (a cold compile is then worth recording)."""
        return False

    def own_latency_s(self):
        """The runtime's own seconds for the last inference, where keeps_own_latency says it keeps one."""
        raise NotImplementedError("%s keeps no latency of its own" % self.name)

    def profile(self, run_once, n):
        """Per layer where it ran (and, where timed, how long) over n runs of run_once: {"layers", "timed"}.
        The default: no per-layer view."""
        return {"layers": [], "timed": False}

    def reset_state(self):
        """Return the loaded model to its initial state in place; False where only a fresh load does that.
        The default: a model of this runtime keeps no state of its own."""
        return True

    def operators(self):
        """Operator type -> count of the loaded model, for `inspect`; None: this runtime lists no operators."""
        return None


def _first_words(caught):
    """The text of the warnings a runtime raised while loading (its own words for what it could not do)."""
    texts = [str(w.message).strip() for w in caught if str(w.message).strip()]
    return "; ".join(t.splitlines()[0] for t in texts)


def _quantize(x, dtype, scale, zero_point):
    import numpy as np
    if not scale:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    q = np.round(x / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


@register_runtime("tflite")
class TFLiteRuntime(Runtime):
    """tflite-runtime, then ai-edge-litert, then tensorflow.lite: the first that imports."""

    def import_runtime(self):
        errors = []
        for module_name in ("tflite_runtime.interpreter", "ai_edge_litert.interpreter", "tensorflow.lite"):
            try:
                module = __import__(module_name, fromlist=["Interpreter"])
                self.module = module
                self.interpreter_cls = module.Interpreter
                top = __import__(module_name.split(".")[0])
                return module_name.split(".")[0].replace("_", "-"), getattr(top, "__version__", "unknown")
            except Exception as exc:  # ImportError, or a broken build
                errors.append("%s: %s" % (module_name, exc))
        raise AgentFailure(ErrorCategory.RUNTIME_MISSING,
                           "no TFLite runtime importable (" + "; ".join(errors) + ")", EXIT_NO_RUNTIME)

    def _lookup(self, name):
        """OpResolverType / load_delegate: in the interpreter module (tflite-runtime, LiteRT) or under
        tf.lite.experimental."""
        return getattr(self.module, name, None) or getattr(getattr(self.module, "experimental", None), name, None)

    def load(self, path, weights=None, shapes=None):
        kwargs = {"model_path": path, "num_threads": self.threads}
        xnnpack = self.config.get("use_xnnpack", True)
        self.delegate_name = None
        if not xnnpack:
            resolver = getattr(self._lookup("OpResolverType"), "BUILTIN_WITHOUT_DEFAULT_DELEGATES", None)
            if resolver is None:
                self.config.unavailable("%s %s cannot turn XNNPACK off (no OpResolverType.BUILTIN_WITHOUT_DEFAULT_"
                                   "DELEGATES)" % (self.name, self.version))
                xnnpack = True
            else:
                kwargs["experimental_op_resolver_type"] = resolver
        if self.config.get("delegate"):
            library = self.config.get("delegate")
            options = dict((str(k), str(v).lower() if isinstance(v, bool) else str(v))
                           for k, v in (self.config.get("delegate_options") or {}).items())
            try:
                kwargs["experimental_delegates"] = [self._lookup("load_delegate")(library, options)]
                self.delegate_name = os.path.basename(library)
            except Exception as exc:
                self.config.unavailable("%s could not load the delegate %s: %s" % (self.name, library, _one_line(exc)))
        self.interp = self.interpreter_cls(**kwargs)
        self.delegate_name = self.delegate_name or ("XNNPACK" if xnnpack else None)
        self.inputs = self.interp.get_input_details()
        # Signature names are the model's own names; tensor names are converter internals.
        in_names, out_names = {}, {}
        try:
            for sig in self.interp._get_full_signature_list().values():
                in_names.update(dict((v, k) for k, v in sig["inputs"].items()))
                out_names.update(dict((v, k) for k, v in sig["outputs"].items()))
        except Exception:
            pass
        self.input_names = [in_names.get(d["index"], d["name"]) for d in self.inputs]
        self.input_signatures = [list(d.get("shape_signature", d["shape"])) for d in self.inputs]
        # Dynamic dimensions (-1 in the signature) take the sizes the harness fixed, as benchmark_model's
        # --input_layer_shape does; tensors are then allocated for those sizes.
        for detail, shape in zip(self.inputs, shapes_in_order(self.input_names, shapes)):
            if shape is not None and list(shape) != list(detail["shape"]):
                self.interp.resize_tensor_input(detail["index"], list(shape), strict=False)
        self.interp.allocate_tensors()
        self.inputs = self.interp.get_input_details()
        self.outputs = self.interp.get_output_details()
        self.output_names = [out_names.get(d["index"], d["name"]) for d in self.outputs]
        self.layers = _tflite_placement(self.interp, self.delegate_name)
        self.holds_state = bool(_tflite_op_names(self.interp) & TFLITE_STATE_OPS)
        taken = sum(1 for layer in self.layers or () if layer["placement"] != "builtin")
        self.effective = {"threads": self.threads, "xnnpack": bool(xnnpack),
                          "delegate": self.delegate_name if taken else None,
                          "delegated_nodes": taken if self.layers is not None else None,
                          "nodes": len(self.layers) if self.layers is not None else None}

    def profile(self, run_once, n):
        """Which nodes the delegate took and which stayed on the builtin kernels (no per-op times)."""
        return {"layers": self.layers or [], "timed": False}

    def operators(self):
        # the model's own nodes, without the DELEGATE nodes that took them over (None: a runtime too old to list)
        return _count(layer["type"] for layer in self.layers) if self.layers is not None else None

    def reset_state(self):
        # reset_all_variables() resets variable tensors (an LSTM's state), not resource variables
        # (VAR_HANDLE ... ASSIGN_VARIABLE): those start again only in a fresh interpreter.
        self.interp.reset_all_variables()
        return not self.holds_state

    def interface(self):
        doc = _describe(self.input_names, [(s, d["dtype"]) for s, d in zip(self.input_signatures, self.inputs)],
                        self.output_names, [(d.get("shape_signature", d["shape"]), d["dtype"])
                                            for d in self.outputs])
        # An integer tensor that stands for real numbers carries its scale and zero point: the host quantizes
        # float data with them and compares a converted file's integer outputs on the same real scale.
        for specs, details in ((doc["inputs"], self.inputs), (doc["outputs"], self.outputs)):
            for spec, detail in zip(specs, details):
                scale, zero_point = detail.get("quantization", (0.0, 0))
                if scale and spec["dtype"] in ("int8", "uint8", "int16"):
                    spec["quantization"] = [float(scale), int(zero_point)]
        return doc

    def prepare(self, feeds):
        # Inputs are set here, outside the timed call, as LiteRT's benchmark_model does.
        for detail, x in zip(self.inputs, feeds):
            if x.dtype != detail["dtype"]:
                scale, zero_point = detail.get("quantization", (0.0, 0))
                x = _quantize(x, detail["dtype"], scale, zero_point) if x.dtype.kind == "f" \
                    else x.astype(detail["dtype"])
            self.interp.set_tensor(detail["index"], x)
        return None

    def infer(self, prepared):
        self.interp.invoke()

    def fetch(self):
        results = []
        for detail in self.outputs:
            y = self.interp.get_tensor(detail["index"])
            scale, zero_point = detail.get("quantization", (0.0, 0))
            if scale and y.dtype.kind in "iu":
                y = (y.astype("float32") - zero_point) * scale
            results.append(y)
        return results


@register_runtime("onnx")
class OnnxRuntime(Runtime):
    def import_runtime(self):
        try:
            import onnxruntime
        except Exception as exc:
            raise AgentFailure(ErrorCategory.RUNTIME_MISSING, "onnxruntime not importable: %s" % exc,
                               EXIT_NO_RUNTIME)
        self.ort = onnxruntime
        return "onnxruntime", onnxruntime.__version__

    _LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
               "all": "ORT_ENABLE_ALL"}

    def _provider_options(self, provider):
        options = dict((self.config.get("provider_options") or {}).get(provider) or {})
        cache = self.cache_dir
        if cache and self.config.get("engine_cache", True):
            # compiled engines kept in the device's content cache, keyed by artifact, runtime version and options
            if provider == "TensorrtExecutionProvider":
                options.setdefault("trt_engine_cache_enable", True)
                options.setdefault("trt_engine_cache_path", cache)
                options.setdefault("trt_timing_cache_enable", True)
                options.setdefault("trt_timing_cache_path", cache)
            elif provider == "OpenVINOExecutionProvider":
                options.setdefault("cache_dir", cache)
        return dict((k, ("True" if v else "False") if isinstance(v, bool) else str(v)) for k, v in options.items())

    def accelerators(self):
        return list(self.ort.get_available_providers())

    def uses_cache(self):
        return bool(set(self.requested) & {"TensorrtExecutionProvider", "OpenVINOExecutionProvider"}) \
            and bool(self.cache_dir) and self.config.get("engine_cache", True)

    def load(self, path, weights=None, shapes=None):
        import warnings
        so = self.ort.SessionOptions()
        so.intra_op_num_threads = self.config.get("intra_op_threads", self.threads)
        so.inter_op_num_threads = self.config.get("inter_op_threads", 1)
        level = self.config.get("graph_optimization_level")
        if level:
            so.graph_optimization_level = getattr(self.ort.GraphOptimizationLevel, self._LEVELS[level])
        if self.profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = self.profile_prefix
        self.requested = list(self.config.get("providers") or ["CPUExecutionProvider"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # ONNX Runtime drops a provider it lacks with a warning; the comparison below makes that a failure
            self.session = self.ort.InferenceSession(
                path, sess_options=so, providers=self.requested,
                provider_options=[self._provider_options(p) for p in self.requested])
        in_effect = self.session.get_providers()
        missing = [p for p in self.requested if p not in in_effect]
        if missing:
            words = _first_words(caught) or "not in effect after the session was created"
            self.config.unavailable("onnxruntime %s: %s requested, %s in effect (%s)" % (
                self.version, ", ".join(missing), ", ".join(in_effect), words))
        self.effective = {"providers_requested": self.requested, "providers": in_effect,
                          "provider_options": dict((p, o) for p, o in self.session.get_provider_options().items()
                                                   if p in in_effect and p != "CPUExecutionProvider"),
                          "graph_optimization_level": level or "all",
                          "intra_op_threads": so.intra_op_num_threads, "inter_op_threads": so.inter_op_num_threads,
                          "available_providers": self.ort.get_available_providers()}
        self.inputs, self.outputs = self.session.get_inputs(), self.session.get_outputs()
        self.input_names = [i.name for i in self.inputs]
        self.output_names = [o.name for o in self.outputs]
        self._dtypes = [_ORT_DTYPES.get(i.type, "float32") for i in self.inputs]

    def interface(self):
        dtype = lambda t: _ORT_DTYPES.get(t, t)
        return _describe(self.input_names, [(i.shape, dtype(i.type)) for i in self.inputs],
                         self.output_names, [(o.shape, dtype(o.type)) for o in self.outputs])

    def prepare(self, feeds):
        return dict((name, x if x.dtype == dtype else x.astype(dtype))
                    for name, dtype, x in zip(self.input_names, self._dtypes, feeds))

    def infer(self, prepared):
        self.last = self.session.run(self.output_names, prepared)

    def fetch(self):
        return self.last

    def profile(self, run_once, n):
        """ONNX Runtime's profiler: every node, the provider it ran on and its mean time over n runs."""
        for _ in range(n):
            run_once()
        trace = self.session.end_profiling()
        try:
            with open(trace) as handle:
                events = json.load(handle)
        finally:
            try:
                os.remove(trace)
            except OSError:
                pass
        nodes = {}
        for e in events:
            args = e.get("args") or {}
            if e.get("cat") != "Node" or "provider" not in args or not str(e.get("name", "")).endswith("_kernel_time"):
                continue
            name = e["name"][:-len("_kernel_time")]
            node = nodes.setdefault(name, {"name": name, "type": args.get("op_name"), "placement": args["provider"],
                                           "us": []})
            node["us"].append(float(e.get("dur") or 0.0))
        # the median over the runs: the session's first run (allocations, kernel selection) is in the trace too
        layers = [{"name": v["name"], "type": v["type"], "placement": v["placement"],
                   "time_ms": sorted(v["us"])[len(v["us"]) // 2] / 1e3} for v in nodes.values()]
        return {"layers": layers, "timed": True}


@register_runtime("openvino")
class OpenVINORuntime(Runtime):
    keeps_own_latency = True

    def import_runtime(self):
        try:
            import openvino
        except Exception as exc:
            raise AgentFailure(ErrorCategory.RUNTIME_MISSING, "openvino not importable: %s" % exc, EXIT_NO_RUNTIME)
        self.ov = openvino
        return "openvino", getattr(openvino, "__version__", None) or openvino.get_version()

    _PROPERTIES = ("EXECUTION_DEVICES", "PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_PRECISION_HINT",
                   "INFERENCE_NUM_THREADS", "OPTIMAL_NUMBER_OF_INFER_REQUESTS", "CACHE_DIR", "PERF_COUNT")

    def accelerators(self):
        return list(self.ov.Core().available_devices)

    def uses_cache(self):
        return bool(self.config.get("cache") and self.cache_dir)

    def load(self, path, weights=None, shapes=None):
        core = self.ov.Core()
        device = self.config.get("device", "CPU")
        hint = self.config.get("hint", "latency").upper()
        config = {"PERFORMANCE_HINT": hint}
        if "streams" in self.config.options:
            config["NUM_STREAMS"] = str(self.config.get("streams")).upper()
        elif hint == "LATENCY":
            config["NUM_STREAMS"] = 1
        if self.config.get("precision"):
            # The CPU plugin may compute in bf16 where the CPU supports it; f32 makes it comparable.
            config["INFERENCE_PRECISION_HINT"] = self.config.get("precision")
        if self.profile_prefix:
            config["PERF_COUNT"] = True
        if self.uses_cache():
            core.set_property({"CACHE_DIR": self.cache_dir})
        model = core.read_model(path, weights) if weights else core.read_model(path)
        self.model_interface = _ov_interface(model.inputs, model.outputs)
        self.model_types = [op.get_type_name() for op in model.get_ordered_ops()]
        if shapes and model.is_dynamic():
            # Compile for the sizes the harness fixed, as benchmark_app -shape does.
            wanted = shapes_in_order([_ov_name(p) for p in model.inputs], shapes)
            model.reshape(dict((p, self.ov.PartialShape(list(s))) for p, s in zip(model.inputs, wanted)
                               if s is not None))
        base = device.split(":")[0].split(".")[0]
        available = list(core.available_devices)
        if base not in ("AUTO", "HETERO", "MULTI", "BATCH") and not any(
                d == device or d.split(".")[0] == base for d in available):
            try:  # for OpenVINO's own words
                core.compile_model(model, device, {})
                words = "compiled anyway"
            except Exception as exc:
                words = _one_line(exc)
            self.config.unavailable("openvino %s has no device %s (available: %s): %s" % (
                self.version, device, ", ".join(available), words))
            device = "CPU"
        if device.startswith("CPU"):
            config["INFERENCE_NUM_THREADS"] = self.threads
        self.compiled = core.compile_model(model, device, config)
        self.device = device
        self.effective = {"device": device, "available_devices": available}
        for name in self._PROPERTIES:
            try:
                value = self.compiled.get_property(name)
            except Exception:
                continue
            value = value.get_type_name() if hasattr(value, "get_type_name") else value
            self.effective[name] = value if isinstance(value, (int, float, bool)) else \
                [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value)
        self.input_names = [_ov_name(p) for p in self.compiled.inputs]
        self.output_names = [_ov_name(p) for p in self.compiled.outputs]
        self.request = self.compiled.create_infer_request()
        # ReadValue/Assign pairs keep state in the infer request (a stateful IR)
        self.holds_state = bool(self.request.query_state()) if hasattr(self.request, "query_state") else False
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)

    def interface(self):
        return self.model_interface

    def prepare(self, feeds):
        # Inputs are set here, outside the timed call, as benchmark_app does.
        for i, x in enumerate(feeds):
            dtype = self.compiled.inputs[i].get_element_type().to_dtype()
            self.request.set_input_tensor(i, self.ov.Tensor(x if x.dtype == dtype else x.astype(dtype)))
        return None

    def infer(self, prepared):
        self.request.infer()

    def own_latency_s(self):
        """The runtime's own time for the last inference (InferRequest.latency, what benchmark_app reports):
        without the Python binding's few microseconds around the call, which dominate a 20 us model."""
        return self.request.latency * 1e-3

    def reset_state(self):
        if not hasattr(self.request, "reset_state"):  # OpenVINO before 2023.0: a fresh load instead
            return False
        self.request.reset_state()
        return True

    def fetch(self):
        return [self.request.get_output_tensor(i).data.copy() for i in range(len(self.compiled.outputs))]

    def operators(self):
        return _count(t for t in self.model_types if t not in ("Parameter", "Result", "Constant"))

    def profile(self, run_once, n):
        """OpenVINO's performance counters: each executed layer, its exec type, runtime precision and median time."""
        totals = {}
        for _ in range(n):
            run_once()
            for info in self.request.profiling_info:
                if str(info.status).endswith("NOT_RUN"):
                    continue
                layer = totals.setdefault(info.node_name, {"name": info.node_name, "type": info.node_type,
                                                           "exec_type": info.exec_type, "us": []})
                layer["us"].append(info.real_time.total_seconds() * 1e6)
        precision = {}
        try:
            for op in self.compiled.get_runtime_model().get_ordered_ops():
                info = op.get_rt_info()
                if "runtimePrecision" in info:
                    value = info["runtimePrecision"]
                    precision[op.get_friendly_name()] = str(value.astype(str) if hasattr(value, "astype") else value)
        except Exception:
            pass
        devices = self.effective.get("EXECUTION_DEVICES") or [self.device]
        layers = [{"name": v["name"], "type": v["type"], "exec_type": v["exec_type"],
                   "precision": precision.get(v["name"]) or _precision_of(v["exec_type"]),
                   "placement": ",".join(devices), "time_ms": sorted(v["us"])[len(v["us"]) // 2] / 1e3}
                  for v in totals.values()]
        return {"layers": layers, "timed": True}


@register_runtime("torch")
class TorchRuntime(Runtime):
    """PyTorch on CPU or CUDA: TorchScript (.pt, torch.jit.save) or a torch.export program (.pt2)."""

    def import_runtime(self):
        try:
            import torch
        except Exception as exc:
            raise AgentFailure(ErrorCategory.RUNTIME_MISSING, "torch not importable: %s" % exc, EXIT_NO_RUNTIME)
        self.torch = torch
        return "torch", torch.__version__

    def accelerators(self):
        cuda = self.torch.cuda
        return ["cpu"] + (["cuda:%d" % i for i in range(cuda.device_count())] if cuda.is_available() else [])

    def load(self, path, weights=None, shapes=None):
        torch = self.torch
        device = self.config.get("device", "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            self.config.unavailable("torch %s: CUDA is not available (torch.cuda.is_available() is False; this build's "
                               "CUDA: %s)" % (self.version, torch.version.cuda or "none, a CPU-only build"))
            device = "cpu"
        torch.set_num_threads(self.threads)
        self.device = torch.device(device)
        if path.endswith(".pt2"):
            program = torch.export.load(path)
            self.input_names = list(program.graph_signature.user_inputs)
            self.output_names = list(program.graph_signature.user_outputs)
            self.module = program.module().to(self.device)
        else:
            self.module = torch.jit.load(path, map_location=self.device).eval()
            self.input_names = [a.name for a in self.module.forward.schema.arguments[1:]]
            self.output_names = []
        self._describe_by_running(program if path.endswith(".pt2") else None, shapes)
        self.effective = {"device": str(self.device), "threads": torch.get_num_threads(),
                          "cuda_available": bool(torch.cuda.is_available())}
        if self.device.type == "cuda":
            self.effective["cuda_device_name"] = torch.cuda.get_device_name(self.device)

    def _describe_by_running(self, program, shapes):
        """TorchScript records no shapes or dtypes: inputs take the sizes the harness fixed (float32, or an
        exported program's own dtypes), outputs what one run on zeros gives. Unknown where that cannot run."""
        torch = self.torch
        dtypes = ["float32"] * len(self.input_names)
        if program is not None:
            nodes = dict((n.name, n) for n in program.graph.nodes)
            for i, name in enumerate(self.input_names):
                val = nodes[name].meta.get("val") if name in nodes else None
                if val is not None:
                    dtypes[i] = str(val.dtype).replace("torch.", "")
        wanted = shapes_in_order(self.input_names, shapes)
        self.in_specs = [(list(s) if s is not None else [], d) for s, d in zip(wanted, dtypes)]
        self.out_specs = [([], "") for _ in self.output_names]
        if any(s is None for s in wanted):
            return
        try:
            import numpy as np
            self.infer(self.prepare([np.zeros(s, dtype=d) for s, d in zip(wanted, dtypes)]))
            self.out_specs = [(list(t.shape), str(t.dtype).replace("torch.", "")) for t in self.last]
        except Exception:
            pass

    def interface(self):
        return _describe(self.input_names, self.in_specs, self.output_names, self.out_specs)

    def prepare(self, feeds):
        return [self.torch.from_numpy(contiguous(x)).to(self.device) for x in feeds]

    def infer(self, prepared):
        with self.torch.no_grad():
            out = self.module(*prepared)
        self.last = _flatten(out)
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)
        if len(self.output_names) != len(self.last):
            self.output_names = ["output_%d" % i for i in range(len(self.last))]

    def fetch(self):
        return [t.detach().cpu().numpy() for t in self.last]

    def reset_state(self):
        return False  # a module may keep state in its buffers: only a fresh load starts it again

    def profile(self, run_once, n):
        """torch.profiler: each operator, where it ran and its mean time over n runs."""
        from torch.profiler import ProfilerActivity, profile
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(n):
                run_once()
        layers = []
        for e in prof.key_averages():
            on_cuda = getattr(e, "device_time_total", 0) or getattr(e, "cuda_time_total", 0)
            layers.append({"name": e.key, "type": e.key, "placement": "cuda" if on_cuda else "cpu",
                           "calls": int(e.count) // n,
                           "time_ms": (e.self_cpu_time_total + (on_cuda or 0)) / n / 1e3})
        return {"layers": [l for l in layers if l["calls"] > 0], "timed": True}


def _count(names):
    counts = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return counts


def _flatten(value):
    if isinstance(value, dict):
        return [t for k in value for t in _flatten(value[k])]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flatten(v)]
    return [value]


def _precision_of(exec_type):
    """'brgconv_avx512_FP32' -> 'FP32' (the CPU plugin's exec types end in the precision they ran)."""
    tail = str(exec_type).rsplit("_", 1)[-1]
    return tail if tail[:1] in "FIUB" and any(c.isdigit() for c in tail) else None


#: TFLite operators by which a model keeps state in resource variables between invocations
TFLITE_STATE_OPS = frozenset(["VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"])


def _tflite_op_names(interp):
    try:
        return set(op["op_name"] for op in interp._get_ops_details())
    except Exception:  # very old runtimes list no ops: state is then found by the host's check
        return set()


def _tflite_placement(interp, delegate_name):
    """Each of the model's nodes and where it ran: the delegate (the nodes a DELEGATE node replaced, found by
    walking back from its outputs to its inputs) or the builtin kernels. None when the runtime lists no ops."""
    try:
        ops = interp._get_ops_details()
    except Exception:
        return None
    originals = [o for o in ops if o["op_name"] != "DELEGATE"]
    taken = set()
    for d in (o for o in ops if o["op_name"] == "DELEGATE"):
        frontier = set(int(t) for t in d["outputs"])
        boundary = set(int(t) for t in d["inputs"])
        changed = True
        while changed:
            changed = False
            for o in originals:
                if o["index"] not in taken and frontier & set(int(t) for t in o["outputs"]):
                    taken.add(o["index"])
                    frontier |= set(int(t) for t in o["inputs"]) - boundary
                    changed = True
    return [{"name": "%s_%d" % (o["op_name"], o["index"]), "type": o["op_name"],
             "placement": (delegate_name or "delegate") if o["index"] in taken else "builtin"} for o in originals]


def _ov_name(port):
    names = sorted(port.get_names())
    return names[0] if names else port.get_any_name()


def _ov_interface(inputs, outputs):
    shape = lambda p: [d.get_length() if d.is_static else None for d in p.get_partial_shape()] \
        if p.get_partial_shape().rank.is_static else []
    dtype = lambda p: p.get_element_type().to_dtype().name
    return _describe([_ov_name(p) for p in inputs], [(shape(p), dtype(p)) for p in inputs],
                     [_ov_name(p) for p in outputs], [(shape(p), dtype(p)) for p in outputs])


def _dim(d):
    """A size, or None (-1, None) / the symbolic name (ONNX 'batch') of a dynamic axis."""
    if isinstance(d, str):
        return d
    try:
        d = int(d)
    except (TypeError, ValueError):
        return None
    return d if d >= 0 else None


def _describe(in_names, in_specs, out_names, out_specs):
    def spec(name, shape_dtype):
        shape, dtype = shape_dtype
        dtype = getattr(dtype, "__name__", dtype)
        dtype = "bool" if dtype == "bool_" else dtype
        return {"name": str(name), "shape": [_dim(d) for d in list(shape)], "dtype": str(dtype)}
    return {"inputs": [spec(n, s) for n, s in zip(in_names, in_specs)],
            "outputs": [spec(n, s) for n, s in zip(out_names, out_specs)]}


# ---------------------------------------------------------------- statistics
def latency_stats(samples_ms):
    import numpy as np
    a = np.asarray(samples_ms, dtype="float64")
    if a.size == 0:
        return {}
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "std_ms": float(a.std()),
            "min_ms": float(a.min()), "max_ms": float(a.max()), "count": int(a.size)}


# ---------------------------------------------------------------- timing
#: a model faster than this is timed in blocks of iterations, so the timer's own cost stays under 1 %
BLOCK_BELOW_S = 100e-6
TIMER_SHARE = 0.01
#: at most about this many samples are kept (larger blocks beyond it), so a 1 s run of a 20 us model is not 50k numbers
MAX_SAMPLES = 10000
#: the device speed reference (SpeedReference) is timed again between the chunks of a long timed loop, this often
REFERENCE_EVERY_S = 2.0


def timer_cost_s(clock, chunks=21, n=100):
    """What one timed sample costs besides the inference: two clock reads, the arithmetic, the append, the checks.

    The median over chunks, so that a chunk the scheduler interrupted does not inflate it."""
    samples = []
    noop = lambda x: None  # noqa: E731 (stands for the inference call, whose own cost is measured)
    deadline = clock() + 1e9
    costs = []
    for _ in range(chunks):
        start = clock()
        for _ in range(n):
            t0 = clock()
            noop(None)
            t1 = clock()
            samples.append((t1 - t0) * 1e3)
            if t1 >= deadline:
                break
        costs.append((clock() - start) / n)
    return sorted(costs)[len(costs) // 2]


def choose_block(per_inference_s, timer_s, expected_iterations=0):
    """Iterations per timed sample: 1 for models of 100 us and more, else enough that the timer stays under 1 %
    (and that about MAX_SAMPLES samples at most are kept)."""
    if per_inference_s >= BLOCK_BELOW_S or per_inference_s <= 0:
        return 1
    if timer_s <= 0:
        return max(1, int(math.ceil(expected_iterations / float(MAX_SAMPLES))))
    return max(1, int(math.ceil(timer_s / (TIMER_SHARE * per_inference_s))),
               int(math.ceil(expected_iterations / float(MAX_SAMPLES))))


def time_inferences(infer, prepared, min_iterations, min_duration_s, max_duration_s, clock=None, own=None,
                    between=None, every_s=REFERENCE_EVERY_S):
    """Time `infer(prepared)` for at least min_duration_s and min_iterations, and at most max_duration_s.

    Returns (samples in ms, each the mean per-inference time of one block, block size, iterations, timed s,
    timer cost s). The block size comes from a short probe of the inference and of the timer's own cost.
    With `own` (a runtime that times its own inferences: seconds of the last one), samples are the
    runtime's figures and blocks only keep the sample count bounded. With `between` (returns the seconds it
    took), it is called between samples about every `every_s` of timing; its time is not timing time.
    """
    clock = clock or time.perf_counter
    probe_start, probed = clock(), 0
    while probed < 5 or (clock() - probe_start < 0.01 and probed < 1000):
        infer(prepared)
        probed += 1
    per_inference = (clock() - probe_start) / probed
    timer_s = timer_cost_s(clock)
    expected = max(min_iterations, min(min_duration_s, max_duration_s) / per_inference if per_inference > 0 else 0)
    block = choose_block(per_inference, 0.0 if own else timer_s, expected)
    blocks = range(block)
    samples_ms, iterations = [], 0
    start = clock()
    at_least, at_most = start + min_duration_s, start + max(max_duration_s, 0.0)
    next_between, aside = start + every_s, 0.0
    while True:
        if own is not None:
            total = 0.0
            for _ in blocks:
                infer(prepared)
                total += own()
            t1 = clock()
            samples_ms.append(total * 1e3 / block)
        else:
            t0 = clock()
            for _ in blocks:
                infer(prepared)
            t1 = clock()
            samples_ms.append((t1 - t0) * 1e3 / block)
        iterations += block
        if (t1 >= at_least and iterations >= min_iterations) or t1 >= at_most:
            break
        if between is not None and t1 >= next_between:
            spent = between()
            at_least, at_most, aside = at_least + spent, at_most + spent, aside + spent
            next_between = clock() + every_s
    return samples_ms, block, iterations, clock() - start - aside, timer_s


# ---------------------------------------------------------------- power sensors (energy per inference)
#: the power sources this agent can read, by name, in the order `auto` probes them (register_power_source)
POWER_SOURCES = {}
#: the Jetson board's input rail (the whole module's power), by the names L4T gives it, first found wins
JETSON_INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VDD_5V_IN", "VIN_SYS_5V0", "VIN")
RAPL_UDEV_FIX = ('a udev rule that makes it readable, e.g. /etc/udev/rules.d/99-rapl.rules: ACTION=="add", '
                 'SUBSYSTEM=="powercap", KERNEL=="intel-rapl:*", RUN+="/bin/chmod a+r /sys%p/energy_uj"')
POWER_DEFAULTS = {"source": "auto", "root": "", "rail": "", "command": "", "unit": "W", "idle_s": 0.5,
                  "sampling_hz": 20.0, "min_samples": 5}


class PowerUnavailable(Exception):
    """This source is not on the device (or cannot be read); the message says why."""


def registrar(table):
    """A decorator factory that files a class in `table` under a name, which the class keeps as `name`."""
    def register_as(name):
        def register(cls):
            cls.name = name
            table[name] = cls
            return cls
        return register
    return register_as


register_power_source = registrar(POWER_SOURCES)


class PowerSource(object):
    """One power sensor. `kind` is "power" (read() -> watts now) or "energy" (read() -> joules so far, a
    counter). `open(settings)` returns a reader or raises PowerUnavailable saying why."""
    name = ""
    kind = "power"

    def __init__(self, method, rails):
        self.method = method   # how it is read, for the row: "ina3221 hwmon /sys/class/hwmon/hwmon3 (VDD_IN)"
        self.rails = rails     # the rails summed

    @classmethod
    def open(cls, settings):
        raise NotImplementedError

    def read(self):
        raise NotImplementedError


def _sysfs_root(settings):
    return (settings.get("root") or "/sys").rstrip("/") or "/"


def _read_number(path):
    with open(path) as handle:
        return float(handle.read().strip())


def _pick_rails(found, wanted, defaults, what):
    """{rail: reader} narrowed to the rail asked for, else the first default present, else all of them."""
    if wanted:
        chosen = [r for r in found if r.lower() == wanted.lower()]
        if not chosen:
            raise PowerUnavailable("%s has no rail %r (it has: %s)" % (what, wanted, ", ".join(sorted(found))))
        return chosen
    for rail in defaults:
        if rail in found:
            return [rail]
    return sorted(found)


@register_power_source("ina3221")
class Ina3221Power(PowerSource):
    """Jetson INA3221 rails: L4T 34+ hwmon (in<N>_label, in<N>_input mV, curr<N>_input mA) or L4T 32 ina3221x iio
    (rail_name_<N>, in_power<N>_input mW). Default rail: the board's input rail (JETSON_INPUT_RAILS)."""

    def __init__(self, method, rails, readers):
        PowerSource.__init__(self, method, rails)
        self.readers = readers

    @classmethod
    def open(cls, settings):
        import glob
        root = _sysfs_root(settings)
        channels, places = {}, []
        hwmon_dirs = set(glob.glob(root + "/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"))
        for directory in glob.glob(root + "/class/hwmon/hwmon*"):
            if (_read_first(directory + "/name") or "").strip() == "ina3221":
                hwmon_dirs.add(directory)
        for directory in sorted(hwmon_dirs):
            for label_path in sorted(glob.glob(directory + "/in*_label")):
                n = os.path.basename(label_path)[2:-len("_label")]
                volt, curr = "%s/in%s_input" % (directory, n), "%s/curr%s_input" % (directory, n)
                label = (_read_first(label_path) or "").strip()
                if label and os.path.exists(volt) and os.path.exists(curr) and "sum" not in label.lower():
                    channels[label] = (lambda v=volt, c=curr: _read_number(v) * _read_number(c) / 1e6)
                    places.append("hwmon " + directory)
        for directory in sorted(glob.glob(root + "/bus/i2c/drivers/ina3221x/*/iio:device*")):
            for name_path in sorted(glob.glob(directory + "/rail_name_*")):
                n = name_path.rsplit("_", 1)[1]
                power = "%s/in_power%s_input" % (directory, n)
                label = (_read_first(name_path) or "").strip()
                if label and os.path.exists(power):
                    channels[label] = (lambda p=power: _read_number(p) / 1e3)
                    places.append("iio " + directory)
        if not channels:
            raise PowerUnavailable("no INA3221 (no ina3221 hwmon or ina3221x iio rails under %s)" % root)
        rails = _pick_rails(channels, settings.get("rail"), JETSON_INPUT_RAILS, "the INA3221")
        try:
            for rail in rails:
                channels[rail]()
        except (IOError, OSError, ValueError) as exc:
            raise PowerUnavailable("INA3221 rails unreadable: %s" % _one_line(exc))
        method = "ina3221 %s" % ", ".join(sorted(set(places)))
        return cls(method, rails, [channels[r] for r in rails])

    def read(self):
        return sum(reader() for reader in self.readers)


def parse_pmic_read_adc(text):
    """`vcgencmd pmic_read_adc` lines (`VDD_CORE_A current(7)=2.51A`, `VDD_CORE_V volt(15)=0.80V`) -> {rail:
    watts}: current x voltage per rail that has both."""
    import re
    amps, volts = {}, {}
    for line in text.splitlines():
        found = re.match(r"\s*(\S+?)_([AV])\s+(current|volt)\(\d+\)=([-0-9.eE+]+)([AV])", line)
        if found:
            (amps if found.group(3) == "current" else volts)[found.group(1)] = float(found.group(4))
    return dict((rail, amps[rail] * volts[rail]) for rail in amps if rail in volts)


@register_power_source("pmic")
class PmicPower(PowerSource):
    """Raspberry Pi 5: `vcgencmd pmic_read_adc`, current x voltage per PMIC rail, summed (or one `rail`). Each
    reading runs vcgencmd, so the rate it allows is lower than a sysfs file's."""

    def __init__(self, method, rails, argv):
        PowerSource.__init__(self, method, rails)
        self.argv = argv

    @classmethod
    def open(cls, settings):
        import shlex
        import subprocess
        exe = settings.get("command") or "vcgencmd"
        argv = shlex.split(exe) + ["pmic_read_adc"]
        try:
            text = subprocess.check_output(argv, stderr=subprocess.STDOUT, timeout=5).decode("ascii", "replace")
        except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            out = getattr(exc, "output", b"") or b""
            raise PowerUnavailable("no PMIC readings (`%s` failed: %s%s; a Raspberry Pi 4 has no current sensing, "
                                   "a Pi 5 does)" % (" ".join(argv), _one_line(exc),
                                                     (": " + out.decode("ascii", "replace").strip()) if out else ""))
        rails = parse_pmic_read_adc(text)
        if not rails:
            raise PowerUnavailable("`%s` printed no current readings (a Raspberry Pi 4 has no current sensing, "
                                   "a Pi 5 does)" % " ".join(argv))
        wanted = settings.get("rail")
        chosen = _pick_rails(rails, wanted, (), "vcgencmd pmic_read_adc")
        return cls("pmic %s" % " ".join(argv), chosen, argv)

    def read(self):
        import subprocess
        rails = parse_pmic_read_adc(subprocess.check_output(self.argv, timeout=5).decode("ascii", "replace"))
        return sum(rails[r] for r in self.rails)


@register_power_source("rapl")
class RaplPower(PowerSource):
    """x86 RAPL: /sys/class/powercap/intel-rapl:<package>/energy_uj, a microjoule counter that wraps at
    max_energy_range_uj; summed over packages. Root-only since Linux 5.10."""
    kind = "energy"

    def __init__(self, method, rails, zones):
        PowerSource.__init__(self, method, rails)
        self.zones = zones  # [(energy path, range uj)]
        self.last = [None] * len(zones)
        self.total_uj = 0.0

    @classmethod
    def open(cls, settings):
        import glob
        root = _sysfs_root(settings)
        zones, rails = [], []
        for directory in sorted(glob.glob(root + "/class/powercap/intel-rapl:*")):
            if directory.count(":") != 1:  # packages only: their sub-zones (core, uncore, dram) are inside them
                continue
            name = (_read_first(directory + "/name") or os.path.basename(directory)).strip()
            if settings.get("rail") and name != settings.get("rail"):
                continue
            try:
                _read_number(directory + "/energy_uj")
                wraps_at = _read_number(directory + "/max_energy_range_uj")
            except (IOError, OSError) as exc:
                if getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
                    raise PowerUnavailable("RAPL %s/energy_uj is readable by root only (Linux 5.10 and later); run "
                                           "the agent as root or add %s" % (directory, RAPL_UDEV_FIX))
                raise PowerUnavailable("RAPL %s unreadable: %s" % (directory, _one_line(exc)))
            zones.append((directory + "/energy_uj", wraps_at))
            rails.append(name)
        if not zones:
            raise PowerUnavailable("no RAPL (no intel-rapl package under %s/class/powercap)" % root)
        return cls("rapl %s/class/powercap" % root, rails, zones)

    def read(self):
        for k, (path, wraps_at) in enumerate(self.zones):
            now = _read_number(path)
            if self.last[k] is not None:
                self.total_uj += now - self.last[k] if now >= self.last[k] else now + wraps_at - self.last[k]
            self.last[k] = now
        return self.total_uj / 1e6


@register_power_source("hwmon")
class HwmonPower(PowerSource):
    """Any hwmon chip with power<N>_input (microwatts), else energy<N>_input (microjoules, a counter)."""

    def __init__(self, method, rails, paths, kind):
        PowerSource.__init__(self, method, rails)
        self.paths, self.kind = paths, kind

    @classmethod
    def open(cls, settings):
        import glob
        root = _sysfs_root(settings)
        for pattern, kind in (("power*_input", "power"), ("energy*_input", "energy")):
            paths, rails = [], []
            for path in sorted(glob.glob(root + "/class/hwmon/hwmon*/" + pattern)):
                directory = os.path.dirname(path)
                label = (_read_first(path.replace("_input", "_label")) or "").strip()
                rail = "%s/%s" % ((_read_first(directory + "/name") or "hwmon").strip(),
                                  label or os.path.basename(path)[:-len("_input")])
                if settings.get("rail") and settings["rail"] not in (rail, label):
                    continue
                try:
                    _read_number(path)
                except (IOError, OSError, ValueError):
                    continue
                paths.append(path)
                rails.append(rail)
            if paths:
                return cls("hwmon %s (%s)" % (root, pattern), rails, paths, kind)
        raise PowerUnavailable("no hwmon power (no readable power*_input or energy*_input under %s/class/hwmon)"
                               % root)

    def read(self):
        return sum(_read_number(p) for p in self.paths) / 1e6


@register_power_source("command")
class CommandPower(PowerSource):
    """An external meter: `command` (from the target file) prints a number: watts (`unit: W`) or joules so far
    (`unit: J`); the first number on its output counts."""

    def __init__(self, method, rails, argv, kind):
        PowerSource.__init__(self, method, rails)
        self.argv, self.kind = argv, kind

    @classmethod
    def open(cls, settings):
        import shlex
        if not settings.get("command"):
            raise PowerUnavailable("no meter command (power: {command: ...} in the target file)")
        unit = (settings.get("unit") or "W").upper()
        if unit not in ("W", "J"):
            raise PowerUnavailable("power unit must be W or J, not %r" % settings.get("unit"))
        source = cls("command %s (%s)" % (settings["command"], unit), ["meter"], shlex.split(settings["command"]),
                     "power" if unit == "W" else "energy")
        try:
            source.read()
        except Exception as exc:
            raise PowerUnavailable("the meter command `%s` failed: %s" % (settings["command"], _one_line(exc)))
        return source

    def read(self):
        import re
        import subprocess
        out = subprocess.check_output(self.argv, timeout=5).decode("ascii", "replace")
        found = re.search(r"[-+]?\d+(\.\d*)?([eE][-+]?\d+)?", out)
        if not found:
            raise ValueError("no number in %r" % out.strip()[:80])
        return float(found.group(0))


def open_power_source(settings):
    """(source or None, why none): the source the target names, or with `auto` the first one found in the order
    command (when one is given), ina3221, pmic (when vcgencmd is there), rapl, hwmon."""
    name = settings.get("source") or "auto"
    if name == "none":
        return None, "switched off in the target (power: {source: none})"
    if name != "auto":
        if name not in POWER_SOURCES:
            return None, "unknown power source %r; known: %s" % (name, ", ".join(sorted(POWER_SOURCES)))
        try:
            return POWER_SOURCES[name].open(settings), None
        except PowerUnavailable as exc:
            return None, str(exc)
    import shutil
    reasons = []
    for name in ("command", "ina3221", "pmic", "rapl", "hwmon"):
        if name == "command" and not settings.get("command"):
            continue
        if name == "pmic" and not settings.get("command") and not shutil.which("vcgencmd"):
            reasons.append("no vcgencmd")
            continue
        try:
            return POWER_SOURCES[name].open(settings), None
        except PowerUnavailable as exc:
            reasons.append(str(exc))
    short = [r.split(" (")[0] for r in reasons]
    return None, "no power sensor found: %s" % ", ".join(short)


class PowerSampler(object):
    """Reads a source in a thread at `hz` while something else runs: (monotonic s, value) pairs."""

    def __init__(self, source, hz):
        import threading
        self.source, self.period = source, 1.0 / max(float(hz), 0.1)
        self.samples, self.error = [], None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="power-sampler")
        self._thread.daemon = True

    def _run(self):
        next_at = time.monotonic()
        while True:
            try:
                value = self.source.read()
                self.samples.append((time.monotonic(), value))
            except Exception as exc:  # a sensor that stops answering ends sampling; the reason is kept
                self.error = _one_line(exc)
                return
            next_at += self.period
            if self._stop.wait(max(0.0, next_at - time.monotonic())):
                return

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5.0)
        return self.summary()

    def summary(self):
        """{mean_w, samples, seconds, hz} over what was read (mean_w None below two readings)."""
        samples = list(self.samples)
        n = len(samples)
        seconds = samples[-1][0] - samples[0][0] if n > 1 else 0.0
        out = {"samples": n, "seconds": seconds, "hz": (n - 1) / seconds if seconds > 0 else None, "mean_w": None,
               "error": self.error}
        if n > 1 and self.source.kind == "energy" and seconds > 0:
            out["mean_w"] = (samples[-1][1] - samples[0][1]) / seconds
        elif n and self.source.kind == "power":
            out["mean_w"] = sum(v for _, v in samples) / float(n)
        return out


class EnergyMeter(object):
    """Energy per inference: idle power for `idle_s` with the model loaded and nothing running, then active power
    sampled in a thread during the timed loop; energy per inference = (active - idle) x timed s / inferences.
    Probes once; with no source there is no thread and no cost."""

    def __init__(self, settings):
        self.settings = dict(POWER_DEFAULTS, **(settings or {}))
        self.source, self.reason = open_power_source(self.settings)
        self.idle = self.active = None
        self._sampler = None

    def measure_idle(self):
        if self.source is not None:
            sampler = PowerSampler(self.source, self.settings["sampling_hz"]).start()
            time.sleep(float(self.settings["idle_s"]))
            self.idle = sampler.stop()

    def start(self):
        if self.source is not None:
            self._sampler = PowerSampler(self.source, self.settings["sampling_hz"]).start()

    def stop(self):
        if self._sampler is not None:
            self.active = self._sampler.stop()

    def result(self, timed_s, iterations):
        """The document's `energy`: figures, or `not_measured` with the reason (never a zero)."""
        if self.source is None:
            return {"not_measured": self.reason}
        out = {"source": self.source.name, "method": self.source.method, "rails": self.source.rails,
               "kind": self.source.kind, "idle": self.idle, "active": self.active,
               "sampling_hz": (self.active or {}).get("hz"), "not_measured": None}
        least = max(2, int(self.settings["min_samples"]))
        for phase, summary in (("idle", self.idle), ("active", self.active)):
            got = (summary or {}).get("samples", 0)
            if got < least or (summary or {}).get("mean_w") is None:
                error = (summary or {}).get("error")
                out["not_measured"] = "too few samples (%s: %d of at least %d%s)" % (
                    phase, got, least, "; the sensor failed: %s" % error if error else "")
                return out
        out["idle_w"], out["active_w"] = self.idle["mean_w"], self.active["mean_w"]
        out["total_mj"] = out["active_w"] * timed_s * 1e3
        out["above_idle_mj"] = (out["active_w"] - out["idle_w"]) * timed_s * 1e3
        out["mj_per_inference"] = out["above_idle_mj"] / iterations if iterations else None
        return out


# ---------------------------------------------------------------- heat: temperature, throttling, cooldown
#: the agent's --thermal settings: the target's `thermal:` and `quiet.cooldown_*` (docs/heat.md)
THERMAL_DEFAULTS = {"root": "", "vcgencmd": "", "sampling_hz": 4.0, "cooldown_below_c": None,
                    "cooldown_max_wait_s": 300.0, "cooldown_poll_s": 1.0}
#: cooling devices that cap a clock (cpufreq on Arm boards and Orin, the Jetson's cpu-/gpu-balanced, devfreq);
#: a fan or an ACPI "Processor" device is not throttling
CLOCK_COOLING_TYPES = ("cpufreq", "cpu-balanced", "gpu-balanced", "devfreq", "cpu_thermal")
#: `vcgencmd get_throttled` bits that hold the ARM clock down now: 1 frequency capped, 2 throttled, 3 soft
#: temperature limit (bits 16-19 say the same happened since boot: not now)
PI_THROTTLED_NOW_MASK = (1 << 1) | (1 << 2) | (1 << 3)
#: each vcgencmd reading forks a process: the throttle sampler reads it at most this often
VCGENCMD_MAX_HZ = 2.0
#: hwmon chips whose temp*_input is the CPU's (x86 coretemp, AMD k10temp / zenpower, Arm cpu_thermal)
HWMON_CPU_CHIPS = ("coretemp", "k10temp", "zenpower", "cpu_thermal", "soc_thermal")
#: thermal zone types that are not a temperature: the Jetson Nano / TX2 `PMIC-Die` zone reads a fixed 100 C
NOT_A_TEMPERATURE_ZONES = ("pmic-die",)
THERMAL_SOURCES = {}


class ThermalUnavailable(Exception):
    """This temperature or throttle source is not on the device (or cannot be read); the message says why."""


register_thermal_source = registrar(THERMAL_SOURCES)


class ThermalSource(object):
    """One place the device says how hot it is or whether it throttles. `kind` "temperature": read() -> the
    hottest reading in C; "throttle": read() -> whether the clock is held down now (a counter source: whether it
    rose since the last read). `open(settings)` returns a reader or raises ThermalUnavailable saying why."""
    name = ""
    kind = "temperature"

    def __init__(self, method):
        self.method = method  # for the row: "thermal_zone /sys/class/thermal (hottest of 9)"

    @classmethod
    def open(cls, settings):
        raise NotImplementedError

    def read(self):
        raise NotImplementedError


def _millidegrees(path):
    text = _read_first(path)
    return float(text) / 1000.0 if text and text.lstrip("-").isdigit() else None


@register_thermal_source("thermal_zone")
class ThermalZones(ThermalSource):
    """<root>/class/thermal/thermal_zone*/temp in millidegrees C: the hottest zone (Pi: thermal_zone0 cpu-thermal;
    Jetson: CPU-therm, GPU-therm, ...; x86: x86_pkg_temp, acpitz)."""

    def __init__(self, method, paths):
        ThermalSource.__init__(self, method)
        self.paths = paths

    @classmethod
    def open(cls, settings):
        import glob
        where = _sysfs_root(settings) + "/class/thermal"
        paths = [p for p in sorted(glob.glob(where + "/thermal_zone*/temp")) if _millidegrees(p) is not None
                 and (_read_first(os.path.dirname(p) + "/type") or "").lower() not in NOT_A_TEMPERATURE_ZONES]
        if not paths:
            raise ThermalUnavailable("no thermal zone readable under %s" % where)
        kinds = sorted(set((_read_first(os.path.dirname(p) + "/type") or "?") for p in paths))
        return cls("thermal_zone %s (hottest of %d: %s)" % (where, len(paths), ", ".join(kinds[:4])), paths)

    def read(self):
        found = [t for t in (_millidegrees(p) for p in self.paths) if t is not None]
        if not found:
            raise ValueError("no thermal zone answered")
        return max(found)


@register_thermal_source("hwmon_cpu")
class HwmonCpuTemperature(ThermalSource):
    """<root>/class/hwmon/hwmon*/temp*_input (millidegrees) of a CPU chip (HWMON_CPU_CHIPS): x86 coretemp where the
    x86_pkg_temp zone is not loaded, AMD k10temp."""

    def __init__(self, method, paths):
        ThermalSource.__init__(self, method)
        self.paths = paths

    @classmethod
    def open(cls, settings):
        import glob
        where = _sysfs_root(settings) + "/class/hwmon"
        paths, chips = [], set()
        for directory in sorted(glob.glob(where + "/hwmon*")):
            chip = (_read_first(directory + "/name") or "").strip()
            if chip in HWMON_CPU_CHIPS:
                found = [p for p in sorted(glob.glob(directory + "/temp*_input")) if _millidegrees(p) is not None]
                paths += found
                chips.update([chip] if found else [])
        if not paths:
            raise ThermalUnavailable("no hwmon CPU temperature (%s) under %s" % ("/".join(HWMON_CPU_CHIPS[:2]), where))
        return cls("hwmon %s (%s)" % (where, ", ".join(sorted(chips))), paths)

    read = ThermalZones.read


@register_thermal_source("vcgencmd")
class VcgencmdThrottled(ThermalSource):
    """Raspberry Pi: `vcgencmd get_throttled` (throttled=0x50005): any of PI_THROTTLED_NOW_MASK set is throttled
    now. A fork per reading, so at most VCGENCMD_MAX_HZ."""
    kind = "throttle"

    def __init__(self, method, argv):
        ThermalSource.__init__(self, method)
        self.argv = argv
        self.last_text = None

    @staticmethod
    def parse(text):
        """`throttled=0x50005` -> 0x50005; ValueError where there is no such line."""
        import re
        found = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text or "")
        if not found:
            raise ValueError("no throttled=0x... in %r" % (text or "").strip()[:80])
        return int(found.group(1), 0)

    @classmethod
    def open(cls, settings):
        import shlex
        import shutil
        exe = settings.get("vcgencmd") or shutil.which("vcgencmd") or \
            next((p for p in ("/usr/bin/vcgencmd", "/opt/vc/bin/vcgencmd") if os.path.exists(p)), None)
        if not exe:
            raise ThermalUnavailable("no vcgencmd")
        source = cls("vcgencmd get_throttled (%s)" % exe, shlex.split(exe) + ["get_throttled"])
        try:
            source.read()
        except Exception as exc:
            raise ThermalUnavailable("`%s get_throttled` failed: %s" % (exe, _one_line(exc)))
        return source

    def read(self):
        import subprocess
        self.last_text = subprocess.check_output(self.argv, stderr=subprocess.STDOUT, timeout=2).decode(
            "ascii", "replace").strip()
        return bool(self.parse(self.last_text) & PI_THROTTLED_NOW_MASK)


@register_thermal_source("cooling_device")
class ClockCoolingDevices(ThermalSource):
    """<root>/class/thermal/cooling_device*/type + cur_state: a clock-capping device (CLOCK_COOLING_TYPES) with
    cur_state above 0 is throttling now (a Jetson's cpu-balanced / gpu-balanced, cpufreq-cpu0, a devfreq GPU)."""
    kind = "throttle"

    def __init__(self, method, devices):
        ThermalSource.__init__(self, method)
        self.devices = devices  # [(type, cur_state path)]

    @classmethod
    def open(cls, settings):
        import glob
        where = _sysfs_root(settings) + "/class/thermal"
        devices = []
        for device in sorted(glob.glob(where + "/cooling_device*")):
            kind = (_read_first(device + "/type") or "").lower()
            state = _read_first(device + "/cur_state")
            if any(k in kind for k in CLOCK_COOLING_TYPES) and state is not None and state.isdigit():
                devices.append((kind, device + "/cur_state"))
        if not devices:
            raise ThermalUnavailable("no cpufreq/devfreq cooling device under %s" % where)
        return cls("cooling_device %s (%s)" % (where, ", ".join(sorted(set(k for k, _ in devices)))), devices)

    def engaged(self):
        """['cpu-balanced=2', ...]: the devices holding a clock down now."""
        states = [(kind, _read_first(path) or "0") for kind, path in self.devices]
        return ["%s=%s" % (kind, state) for kind, state in states if state.isdigit() and int(state) > 0]

    def read(self):
        return bool(self.engaged())


@register_thermal_source("thermal_throttle")
class X86ThrottleCounters(ThermalSource):
    """x86: <root>/devices/system/cpu/cpu*/thermal_throttle/{core,package}_throttle_count, counters of throttle
    events: a rise since the last reading is throttling in between."""
    kind = "throttle"

    def __init__(self, method, paths):
        ThermalSource.__init__(self, method)
        self.paths = paths
        self.last = self._total()

    @classmethod
    def open(cls, settings):
        import glob
        where = _sysfs_root(settings) + "/devices/system/cpu"
        paths = [p for p in sorted(glob.glob(where + "/cpu*/thermal_throttle/*_throttle_count"))
                 if (_read_first(p) or "").isdigit()]
        if not paths:
            raise ThermalUnavailable("no x86 thermal_throttle counters under %s" % where)
        return cls("thermal_throttle %s (%d counters)" % (where, len(paths)), paths)

    def _total(self):
        return sum(int(_read_first(p) or 0) for p in self.paths)

    def read(self):
        now = self._total()
        rose, self.last = now > self.last, now
        return rose


def open_thermal_sources(settings, kind):
    """([readers], why none): every registered source of this kind ("temperature", "throttle") that the device
    has, in the order they were registered."""
    found, reasons = [], []
    for cls in [c for c in THERMAL_SOURCES.values() if c.kind == kind]:
        try:
            found.append(cls.open(settings))
        except ThermalUnavailable as exc:
            reasons.append(str(exc))
    return found, ", ".join(reasons)


class HeatMonitor(object):
    """The device's temperature and throttling around a cell: a cooldown before it (wait until the hottest
    reading is below `cooldown_below_c`, at most `cooldown_max_wait_s`), and a light sampler thread over the timed
    loop (`sampling_hz`, vcgencmd at most VCGENCMD_MAX_HZ) that gives the temperature at its start and end and the
    share of it spent throttled. Probes once; with nothing readable there is no thread, and the document says why."""

    def __init__(self, settings):
        self.settings = dict(THERMAL_DEFAULTS, **(settings or {}))
        # the first temperature source found (thermal zones before hwmon), every throttle source found
        temperatures, self.temperature_why = open_thermal_sources(self.settings, "temperature")
        self.temperature = temperatures[0] if temperatures else None
        self.throttle, self.throttle_why = open_thermal_sources(self.settings, "throttle")
        hz = max(float(self.settings["sampling_hz"]), 0.1)
        if any(s.name == "vcgencmd" for s in self.throttle):
            hz = min(hz, VCGENCMD_MAX_HZ)
        self.period = 1.0 / hz
        self.samples, self.error = [], None
        self._stop = self._thread = None

    def temperature_c(self):
        if self.temperature is None:
            return None
        try:
            return self.temperature.read()
        except Exception as exc:  # a zone that stops answering: no reading, the reason kept
            self.error = self.error or "temperature: %s" % _one_line(exc)
            return None

    def cool_down(self):
        """Wait, polling the temperature, until it is below cooldown_below_c or cooldown_max_wait_s ran out.
        None when no cooldown is set; `cooled` None where no temperature is readable (no wait)."""
        below = self.settings.get("cooldown_below_c")
        if below is None:
            return None
        below, most = float(below), float(self.settings["cooldown_max_wait_s"])
        out = {"below_c": below, "max_wait_s": most, "waited_s": 0.0, "start_c": None, "reached_c": None,
               "cooled": None}
        if self.temperature is None:
            out["note"] = "no temperature readable (%s): did not wait" % self.temperature_why
            return out
        began = time.monotonic()
        now = out["start_c"] = self.temperature_c()
        poll = max(0.05, float(self.settings["cooldown_poll_s"]))
        while now is not None and now >= below and time.monotonic() - began < most:
            time.sleep(min(poll, max(0.0, most - (time.monotonic() - began))))
            now = self.temperature_c()
        out["waited_s"], out["reached_c"] = time.monotonic() - began, now
        out["cooled"] = now is not None and now < below
        if not out["cooled"]:
            out["note"] = ("could not cool below %.1f °C in %g s (was %s): timed hot"
                           % (below, most, "%.1f °C" % now if now is not None else "unreadable"))
        return out

    def _sample(self):
        throttled = None
        if self.throttle:
            throttled = False
            for source in self.throttle:
                try:
                    throttled = source.read() or throttled
                except Exception as exc:
                    self.error = self.error or "%s: %s" % (source.name, _one_line(exc))
        self.samples.append((time.monotonic(), self.temperature_c(), throttled))

    def _run(self):
        next_at = time.monotonic()
        while True:
            next_at += self.period
            if self._stop.wait(max(0.0, next_at - time.monotonic())):
                return
            self._sample()

    def start(self):
        """A reading now (the timed loop's start), then one every period in a thread."""
        if self.temperature is None and not self.throttle:
            return self
        import threading
        self._sample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heat-sampler")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self):
        """The thread stopped, then a reading now (the timed loop's end)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(5.0)
            self._sample()

    def result(self, cooldown=None):
        """The document's `heat`: the temperatures and throttled share, or why each is not measured."""
        samples = list(self.samples)
        temps = [t for _, t, _ in samples if t is not None]
        out = {"temperature_method": self.temperature.method if self.temperature else
               "not measured: %s" % self.temperature_why,
               "throttle_method": ", ".join(s.method for s in self.throttle) if self.throttle else
               "not measured: %s" % self.throttle_why,
               "temperature_start_c": samples[0][1] if samples else None,
               "temperature_end_c": samples[-1][1] if samples else None,
               "temperature_max_c": max(temps) if temps else None, "throttled_share": None,
               "samples": len(samples), "error": self.error, "cooldown": cooldown}
        seconds = samples[-1][0] - samples[0][0] if len(samples) > 1 else 0.0
        out["sampling_hz"] = (len(samples) - 1) / seconds if seconds > 0 else None
        if self.throttle and seconds > 0:
            # each interval between two readings counts as throttled when the reading that ends it says so (a
            # counter: it rose during the interval)
            held = sum(b[0] - a[0] for a, b in zip(samples, samples[1:]) if b[2])
            out["throttled_share"] = held / seconds
        elif self.throttle:
            out["throttle_method"] += "; not measured: the timed loop ended before a second reading"
        return out


# ---------------------------------------------------------------- device conditions (quiet-device guard)
def _cpu_jiffies():
    """(busy jiffies of every CPU, this process's own utime+stime jiffies) from /proc."""
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()[1:]
        values = [int(v) for v in fields] + [0] * 10
        # user nice system idle iowait irq softirq steal guest guest_nice: busy is user, nice, system, irq and
        # softirq (guest time is inside user already; steal went to other machines)
        busy = values[0] + values[1] + values[2] + values[5] + values[6]
        with open("/proc/self/stat") as handle:
            stat = handle.read()
        own = stat[stat.rindex(")") + 2:].split()
        return {"busy": busy, "own": int(own[11]) + int(own[12])}
    except (IOError, OSError, ValueError, IndexError):
        return None


def _busy_processes(limit=5):
    """Other processes in state R (running or runnable) right now: (count, [{pid, name}] of the first few)."""
    me = os.getpid()
    found = []
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None, []
    for pid in pids:
        if int(pid) == me:
            continue
        try:
            with open("/proc/%s/stat" % pid) as handle:
                stat = handle.read()
        except (IOError, OSError):
            continue
        close = stat.rfind(")")
        if close < 0 or stat[close + 2:close + 3] != "R":
            continue
        found.append({"pid": int(pid), "name": stat[stat.find("(") + 1:close]})
    return len(found), found[:limit]


def _opened(source, settings):
    """A thermal source on this device, or None where it has none (the conditions say nothing of it then)."""
    try:
        return source.open(settings)
    except ThermalUnavailable:
        return None


def _vcgencmd_throttled(settings):
    """`vcgencmd get_throttled`'s line (throttled=0x...), None where there is no vcgencmd (not a Pi)."""
    source = _opened(VcgencmdThrottled, settings)
    return source.last_text if source is not None else None


def _thermal(settings):
    """(hottest thermal zone in C, clock-capping cooling devices engaged now) under the device's sysfs root (the
    target's `thermal.root`: a simulated device's tree), read by the heat monitor's own sources."""
    zones, cooling = _opened(ThermalZones, settings), _opened(ClockCoolingDevices, settings)
    try:
        temperature = zones.read() if zones is not None else None
    except ValueError:  # every zone stopped answering since it was found
        temperature = None
    return temperature, (cooling.engaged() if cooling is not None else [])


def _thermal_throttle_count(settings):
    """Sum of the x86 per-core and per-package thermal throttle counters (None where there are none)."""
    counters = _opened(X86ThrottleCounters, settings)
    return counters.last if counters is not None else None


def _cgroup_cpu_groups():
    """This process's CPU cgroup and every ancestor with a quota: (version, [directory]) or (None, [])."""
    try:
        with open("/proc/self/cgroup") as handle:
            lines = handle.read().splitlines()
    except (IOError, OSError):
        return None, []
    v1_path = v2_path = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2_path = parts[2]
        elif "cpu" in parts[1].split(","):
            v1_path = parts[2]
    if v1_path is not None:
        roots = [r for r in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpuacct,cpu")
                 if os.path.isfile(r + "/cpu.stat")]
        version, path = "v1", v1_path
    elif v2_path is not None and os.path.isfile("/sys/fs/cgroup/cgroup.controllers"):
        roots, version, path = ["/sys/fs/cgroup"], "v2", v2_path
    else:
        return None, []
    if not roots:
        return None, []
    # a container sees its own group as the root of the mount: walk up from the deepest directory that exists
    parts = [p for p in path.split("/") if p]
    dirs = [roots[0] + "/" + "/".join(parts[:n]) if n else roots[0] for n in range(len(parts), -1, -1)]
    return version, [d.rstrip("/") for d in dirs if os.path.isfile(d.rstrip("/") + "/cpu.stat")]


def _cgroup_quota(version, directory):
    """(quota us, period us) of one cgroup, quota None when unlimited."""
    if version == "v1":
        quota, period = _read_first(directory + "/cpu.cfs_quota_us"), _read_first(directory + "/cpu.cfs_period_us")
    else:
        words = (_read_first(directory + "/cpu.max") or "").split()
        quota, period = (words + [None, None])[:2]
    try:
        quota_us = int(quota) if quota not in (None, "max", "-1") else None
        return quota_us, int(period) if period else None
    except ValueError:
        return None, None


def read_cgroup_cpu():
    """The CPU quota and throttling counters of this process's cgroup (and of each ancestor with a quota):
    [{path, version, quota_us, period_us, nr_periods, nr_throttled, throttled_ns}], [] where none is readable.
    cgroup v1 `cpu.stat` has throttled_time in ns, v2 throttled_usec."""
    version, dirs = _cgroup_cpu_groups()
    groups = []
    for n, directory in enumerate(dirs):
        quota_us, period_us = _cgroup_quota(version, directory)
        if n and quota_us is None:
            continue  # an ancestor without a quota throttles nothing
        stat = {}
        try:
            with open(directory + "/cpu.stat") as handle:
                for line in handle:
                    words = line.split()
                    if len(words) == 2 and words[1].isdigit():
                        stat[words[0]] = int(words[1])
        except (IOError, OSError):
            continue
        throttled_ns = stat.get("throttled_time") if version == "v1" else \
            (stat["throttled_usec"] * 1000 if "throttled_usec" in stat else None)
        groups.append({"path": directory, "version": version, "quota_us": quota_us, "period_us": period_us,
                       "nr_periods": stat.get("nr_periods"), "nr_throttled": stat.get("nr_throttled"),
                       "throttled_ns": throttled_ns})
    return groups


def read_cpu_pressure():
    """/proc/pressure/cpu (PSI): total microseconds some (and all) runnable tasks waited for a CPU; None if absent."""
    text = None
    try:
        with open("/proc/pressure/cpu") as handle:
            text = handle.read()
    except (IOError, OSError):
        return None
    found = {}
    for line in text.splitlines():
        words = line.split()
        if words and words[0] in ("some", "full"):
            for word in words[1:]:
                if word.startswith("total="):
                    found[words[0] + "_total_us"] = int(word[6:])
                elif word.startswith("avg10="):
                    found[words[0] + "_avg10"] = float(word[6:])
    return found or None


def _own_cpu():
    """The CPU this process last ran on, and that CPU's current and maximum frequency (kHz) where cpufreq has them."""
    try:
        with open("/proc/self/stat") as handle:
            stat = handle.read()
        cpu = int(stat[stat.rindex(")") + 2:].split()[36])
    except (IOError, OSError, ValueError, IndexError):
        return {}
    base = "/sys/devices/system/cpu/cpu%d/cpufreq/" % cpu
    found = {"cpu": cpu}
    for key, name in (("cur_freq_khz", "scaling_cur_freq"), ("max_freq_khz", "cpuinfo_max_freq"),
                      ("governor", "scaling_governor")):
        text = _read_first(base + name)
        found[key] = int(text) if text and text.isdigit() else text
    return found


def read_conditions(thermal=None):
    """How busy and how hot the device is now: what the host's quiet-device guard judges. `thermal`: the
    target's thermal settings (where the device's temperature is read)."""
    thermal = thermal or {}
    cpufreq = "/sys/devices/system/cpu/cpu0/cpufreq/"
    info = {"monotonic_s": time.monotonic(), "cpu_count": os.cpu_count(), "cpu_jiffies": _cpu_jiffies()}
    try:
        info["clk_tck"] = os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        info["clk_tck"] = 100
    try:
        info["loadavg"] = list(os.getloadavg())
    except (OSError, AttributeError):
        info["loadavg"] = None
    info["n_busy_processes"], info["busy_processes"] = _busy_processes()
    info["cpu_governor"] = _read_first(cpufreq + "scaling_governor")
    for key, name in (("cur_freq_khz", "scaling_cur_freq"), ("max_freq_khz", "cpuinfo_max_freq")):
        text = _read_first(cpufreq + name)
        info[key] = int(text) if text and text.isdigit() else None
    info["temperature_c"], info["cooling_active"] = _thermal(thermal)
    info["thermal_throttle_count"] = _thermal_throttle_count(thermal)
    info["vcgencmd_throttled"] = _vcgencmd_throttled(thermal)
    # why a device runs slower than its usual: a CPU quota, waiting for a CPU, the clock of the CPU it ran on
    info["cgroup_cpu"] = read_cgroup_cpu()
    info["cpu_pressure"] = read_cpu_pressure()
    info["own_cpu"] = _own_cpu()
    return info


# ---------------------------------------------------------------- device speed reference
#: the fixed reference workload; change the name whenever its work changes (a device's usual is kept per name)
REFERENCE_WORKLOAD = "lcg6000-np64k-v1-min3"
#: its size is fixed per device the first time it runs there, so that it takes about this long
REFERENCE_TARGET_MS = 20.0
#: the device's usual: the median of the last this many accepted runs, once there are REFERENCE_MIN_USUAL
REFERENCE_KEEP, REFERENCE_MIN_USUAL = 30, 3
#: this many runs in a row slower than the limit: the device changed, and they become its usual
REFERENCE_RESET_AFTER = 10
REFERENCE_FILE = "speed/reference.json"
#: each timing of the reference is this many equal slices, and counts the fastest (scaled to the whole): a
#: scheduler tick or another process's burst that hits one slice is not a slow device; a device that stays slow
#: (a lower clock, a thermal cap, a co-tenant that keeps a core) slows every slice. A CPU quota, whose pauses can
#: fall between slices, is proven by the cgroup's own throttling counts read beside it.
REFERENCE_SLICES = 3
_REFERENCE_DATA = []


def reference_unit():
    """One unit of the reference workload: deterministic, single-threaded, independent of any runtime.

    Pure-Python integer arithmetic (the interpreter: CPU clock and pipeline) and numpy element-wise arithmetic
    over 256 KiB of float32 (caches and memory; element-wise ufuncs never use BLAS threads)."""
    import numpy as np
    if not _REFERENCE_DATA:
        _REFERENCE_DATA.append(np.arange(65536, dtype=np.float32) / np.float32(65536.0))
        _REFERENCE_DATA.append(np.empty(65536, dtype=np.float32))
    a, b = _REFERENCE_DATA
    x = 12345
    for _ in range(6000):
        x = (x * 1103515245 + 12345) & 0x7fffffff
    for _ in range(8):
        np.multiply(a, np.float32(1.0001), out=b)
        np.add(b, a, out=b)
    return x


def time_reference(units, clock=time.perf_counter):
    """Milliseconds `units` units of the reference workload take now."""
    start = clock()
    for _ in range(units):
        reference_unit()
    return (clock() - start) * 1e3


def reference_key():
    """What the usual is kept per: the workload, this agent and the interpreter and numpy that run it."""
    import numpy as np
    return "%s agent %s python %s numpy %s %s" % (REFERENCE_WORKLOAD, AGENT_VERSION, platform.python_version(),
                                                  np.__version__, platform.machine())


class SpeedReference(object):
    """The device speed reference of one agent run: the fixed workload timed right before and right after the
    timed loop and between its chunks, against the device's own usual time for it.

    The usual is kept on the device (`<workdir>/speed/reference.json`, per `reference_key()`), written under the
    device lock: the median of the last REFERENCE_KEEP runs that were not more than `max_drift` slower than the
    usual of their time. Without a workdir the times are recorded but have no usual to be judged against."""

    def __init__(self, workdir=None, max_drift=None, clock=time.perf_counter):
        self.path = os.path.join(workdir, REFERENCE_FILE) if workdir else None
        self.max_drift, self.clock = max_drift, clock
        self.key = reference_key()
        self.store = self._load()
        self.entry = self.store.get(self.key) or {}
        self.times_ms, self.at, self.cost_ms, self.calibrated = [], [], 0.0, False
        started = clock()
        self.units = self.entry.get("units")
        if not isinstance(self.units, int) or self.units < 1:
            time_reference(1, clock)  # first touch: imports, page faults
            unit_ms = min(time_reference(1, clock) for _ in range(5))
            self.units = max(1, min(1000, int(round(REFERENCE_TARGET_MS / max(unit_ms, 1e-3)))))
            self.entry = {"units": self.units, "unit_ms": unit_ms, "runs": []}
            self.calibrated = True
        else:
            time_reference(1, clock)  # warm the workload's data, as the calibration did
        self.cost_ms += (clock() - started) * 1e3

    def _load(self):
        if not self.path:
            return {}
        try:
            with open(self.path) as handle:
                store = json.load(handle)
            return store if isinstance(store, dict) else {}
        except (IOError, OSError, ValueError):
            return {}

    def time(self, at):
        """Time the workload once, as the fastest of REFERENCE_SLICES slices scaled to the whole; `at` says where
        (before, chunk, after). Returns the seconds it cost."""
        part = max(1, self.units // REFERENCE_SLICES)
        slices = [time_reference(part, self.clock) for _ in range(max(1, self.units // part))]
        self.times_ms.append(min(slices) * self.units / part)
        self.at.append(at)
        self.cost_ms += sum(slices)
        return sum(slices) / 1e3

    def usual(self):
        """(usual ms, how many runs it comes from, whether those runs reset it) from the runs kept so far."""
        runs = [r for r in self.entry.get("runs") or [] if isinstance(r, dict) and r.get("ms")]
        recent = runs[-REFERENCE_RESET_AFTER:]
        if len(recent) >= REFERENCE_RESET_AFTER and not any(r.get("accepted") for r in recent):
            return _median([r["ms"] for r in recent]), len(recent), True
        accepted = [r["ms"] for r in runs if r.get("accepted")][-REFERENCE_KEEP:]
        if len(accepted) < REFERENCE_MIN_USUAL:
            return None, len(accepted), False
        return _median(accepted), len(accepted), False

    def finish(self):
        """This run's figures (Doc.REFERENCE), and the run added to the device's store."""
        ms = sum(self.times_ms) / len(self.times_ms) if self.times_ms else None
        usual, n, reset = self.usual()
        drift = ms / usual - 1.0 if ms and usual else None
        accepted = drift is None or self.max_drift is None or drift <= self.max_drift or reset
        if reset:  # the device has run this slow for REFERENCE_RESET_AFTER runs: that is its usual now
            self.entry["runs"] = [dict(r, accepted=True) for r in (self.entry.get("runs") or [])[-n:]]
        if ms is not None:
            runs = (self.entry.get("runs") or []) + [{"ms": round(ms, 4), "accepted": bool(accepted),
                                                     "at": int(time.time())}]
            self.entry["runs"] = runs[-(REFERENCE_KEEP + REFERENCE_RESET_AFTER):]
            self._save()
        return {"workload": REFERENCE_WORKLOAD, "units": self.units, "times_ms": self.times_ms, "at": self.at,
                "ms": ms, "usual_ms": usual, "usual_runs": n, "usual_reset": reset, "drift": drift,
                "calibrated": self.calibrated, "cost_ms": self.cost_ms, "store": self.path}

    def _save(self):
        if not self.path:
            return
        self.store[self.key] = self.entry
        try:
            directory = os.path.dirname(self.path)
            if not os.path.isdir(directory):
                os.makedirs(directory)
            write_result(self.path, self.store, "%s.%d.part" % (self.path, os.getpid()))
        except (IOError, OSError):
            pass  # a read-only or full device: the run keeps its figures, the usual is not updated


def _median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2.0


# ---------------------------------------------------------------- device lock
def acquire_lock(path, timeout_s, holder):
    """Hold an exclusive flock on the device for this process's life (released on exit or crash)."""
    import fcntl
    import signal
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (IOError, OSError):
        if timeout_s <= 0:
            raise AgentFailure(ErrorCategory.DEVICE_BUSY, "device is locked by another run (%s)" % _read_holder(path),
                               EXIT_BUSY)
        def on_alarm(signum, frame):
            raise AgentFailure(ErrorCategory.DEVICE_BUSY, "device still locked after %ss by another run (%s)"
                               % (timeout_s, _read_holder(path)), EXIT_BUSY)
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(max(1, int(timeout_s)))
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    handle.seek(0)
    handle.truncate()
    handle.write("%s pid=%d\n" % (holder, os.getpid()))
    handle.flush()
    return handle


def _read_holder(path):
    try:
        with open(path) as handle:
            return handle.read().strip() or "unknown holder"
    except (IOError, OSError):
        return "unknown holder"


# ---------------------------------------------------------------- the device's content cache
# <workdir>/cache/<sha256>/<file>: an entry is named by its content. The host uploads it verified; storage may
# corrupt it later (SD cards, eMMC), so every use checks it again, and an entry's directory mtime is its last use.
CACHE_DIR, COMPILED_DIR, PINS_DIR, RUNS_DIR = "cache", "compiled", "pins", "runs"
BUDGET_FILE, SUSPECT_FILE = "cache-budget.json", "storage-suspect.json"
#: beside a compiled-model cache: the cold first use measured when it was filled, and what it was compiled from
COMPILE_RECORD = "harness-compile.json"
#: a pin left by a run that died is ignored after this long (the run would have refreshed it)
PIN_TTL_S = 24 * 3600
_HEX = frozenset("0123456789abcdef")


def entry_digest(path):
    """The sha256 a cached file must have (its directory's name), or None for a file outside the cache."""
    name = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return name if len(name) == 64 and set(name) <= _HEX else None


def file_sha256(path, chunk_bytes=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def _touch(path):
    try:
        os.utime(path, None)
    except (IOError, OSError):
        pass  # a read-only cache still runs; its entries just keep their old last use


def verify_cached_files(paths):
    """Hash each cached file about to be used (model, weights, inputs) before the runtime loads it; returns the
    milliseconds spent. A file whose sha256 is not its entry's name (or that vanished) raises cache_corrupted
    with every such file, so the host can evict and upload them again."""
    started = time.perf_counter()
    corrupted = []
    for path in paths:
        expected = entry_digest(path) if path else None
        if expected is None:
            continue
        try:
            actual = file_sha256(path)
        except (IOError, OSError) as exc:
            actual = "unreadable (%s)" % _one_line(exc)
        if actual != expected:
            corrupted.append({"path": path, "expected_sha256": expected, "actual_sha256": actual})
        else:
            _touch(os.path.dirname(os.path.abspath(path)))
    if corrupted:
        names = ", ".join("%s (sha256 %s, expected %s)" % (os.path.basename(c["path"]), c["actual_sha256"][:16],
                                                           c["expected_sha256"][:16]) for c in corrupted)
        raise AgentFailure(ErrorCategory.CACHE_CORRUPTED, "cached file(s) changed on the device's storage since "
                           "they were uploaded: %s" % names, EXIT_FAILED, {Doc.CORRUPTED_FILES: corrupted})
    return (time.perf_counter() - started) * 1e3


def _tree_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def cache_entries(workdir):
    """Every entry of the device's cache: content entries (cache/<sha256>) and compiled-model caches
    (cache/compiled/<key>), each with its bytes and last use (the directory's mtime)."""
    entries = []
    root = os.path.join(workdir, CACHE_DIR)
    for kind, parent in (("content", root), ("compiled", os.path.join(root, COMPILED_DIR))):
        try:
            names = sorted(os.listdir(parent))
        except OSError:
            continue
        for name in names:
            path = os.path.join(parent, name)
            if not os.path.isdir(path) or (kind == "content" and entry_digest(os.path.join(path, "x")) is None):
                continue
            try:
                last_used = os.stat(path).st_mtime
            except OSError:
                continue
            files = sorted(f for f in os.listdir(path) if not f.startswith(".")) if kind == "content" else []
            entries.append({"key": name, "kind": kind, "path": path, "files": files, "bytes": _tree_bytes(path),
                            "last_used": last_used, "what": compiled_what(path) if kind == "compiled" else []})
    return entries


def compiled_what(path):
    """What a compiled-model entry holds, one line per runtime version in it (from its compile record), e.g.
    'compiled by openvino 2026.0.0 from model.xml (artifact 1a2b3c4d5e6f)'."""
    lines = []
    try:
        subs = sorted(os.listdir(path))
    except OSError:
        return lines
    for sub in subs:
        try:
            with open(os.path.join(path, sub, COMPILE_RECORD)) as handle:
                record = json.load(handle)
            sha = record.get("model_sha256") or ""
            lines.append("compiled by %s %s from %s%s" % (
                record["runtime"], record["runtime_version"], record["model"],
                " (artifact %s)" % sha[:12] if sha else ""))
        except (IOError, OSError, ValueError, KeyError, TypeError, AttributeError):
            lines.append("compiled: %s (no record of what)" % sub)
    return lines


def pinned_keys(workdir, now=None, host_now=0.0):
    """Keys that runs in progress need (their pin files), plus the agent's own entry: never evicted.

    A pin's age is judged by the host's clock when the host gives it (`host_now`, against the host time the pin
    recorded), so a device clock that is wrong or jumps (no RTC, NTP stepping after boot) cannot expire the pin of
    a run in progress; only a pin written without the host's time falls back to the device's own clock."""
    now = now or time.time()
    keys = set()
    own = entry_digest(__file__)
    if own:
        keys.add(own)
    pins = os.path.join(workdir, PINS_DIR)
    for name in (os.listdir(pins) if os.path.isdir(pins) else []):
        path = os.path.join(pins, name)
        try:
            with open(path) as handle:
                pin = json.load(handle)
            pinned_at = pin.get("host_pinned_at")
            age = host_now - pinned_at if host_now and pinned_at else now - os.stat(path).st_mtime
            if age > PIN_TTL_S:
                os.remove(path)  # its run died long ago
                continue
            keys.update(pin.get("keys", []))
        except (IOError, OSError, ValueError, TypeError):
            continue
    return keys


def _safe_name(text):
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:200] or "run"


def cache_budget(workdir, max_bytes=0, keep_free_bytes=0):
    """The cache's budget: the target's cache_max_bytes and free-space floor where it sets them, else defaults
    derived from the free space at the first look (kept in cache-budget.json so they do not shrink as the cache
    fills): keep 10 % of the filesystem free (at most 1 GiB), and let the cache use half of what was left."""
    path = os.path.join(workdir, BUDGET_FILE)
    try:
        with open(path) as handle:
            first = json.load(handle)
    except (IOError, OSError, ValueError):
        st = os.statvfs(workdir)
        free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
        cached = sum(e["bytes"] for e in cache_entries(workdir))
        keep = min(total // 10, 1 << 30)
        first = {"first_free_bytes": free, "total_bytes": total, "first_cache_bytes": cached,
                 "default_keep_free_bytes": keep, "default_max_bytes": max(0, (free + cached - keep) // 2),
                 "first_probe_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            write_result(path, first)
        except (IOError, OSError):
            pass
    return {"max_bytes": int(max_bytes or first["default_max_bytes"]),
            "max_bytes_from": "target" if max_bytes else "default",
            "keep_free_bytes": int(keep_free_bytes or first["default_keep_free_bytes"]),
            "first_probe": first}


def free_bytes(workdir):
    st = os.statvfs(workdir)
    return st.f_bavail * st.f_frsize


def cache_state(workdir, args):
    entries = cache_entries(workdir)
    budget = cache_budget(workdir, args.max_bytes, args.keep_free)
    pinned, own = pinned_keys(workdir, host_now=getattr(args, "host_now", 0.0)), entry_digest(__file__)
    for e in entries:
        e["pinned"] = "agent" if e["key"] == own else "run" if e["key"] in pinned else None
    used = [e["last_used"] for e in entries]
    st = os.statvfs(workdir)
    return {"workdir": workdir, "entries": entries, "n_entries": len(entries),
            "bytes": sum(e["bytes"] for e in entries), "oldest_use": min(used) if used else None,
            "newest_use": max(used) if used else None, "free_bytes": st.f_bavail * st.f_frsize,
            "total_bytes": st.f_blocks * st.f_frsize, "budget": budget, "suspect": read_suspect(workdir)}


def _evict(entry):
    import shutil
    shutil.rmtree(entry["path"], ignore_errors=True)


def make_room(workdir, need_bytes, args):
    """Evict least-recently-used entries that no run in progress needs until `need_bytes` more fit in the budget
    and leave the free-space floor; evict nothing when even that would not be enough."""
    state = cache_state(workdir, args)
    budget = state["budget"]
    limit, keep_free = budget["max_bytes"], budget["keep_free_bytes"]
    cached, free = state["bytes"], state["free_bytes"]
    evictable = sorted((e for e in state["entries"] if not e["pinned"]), key=lambda e: e["last_used"])
    plan, freed = [], 0

    def fits():
        return cached - freed + need_bytes <= limit and free + freed - need_bytes >= keep_free

    for entry in evictable:
        if fits():
            break
        plan.append(entry)
        freed += entry["bytes"]
    numbers = {"need_bytes": need_bytes, "max_bytes": limit, "max_bytes_from": budget["max_bytes_from"],
               "keep_free_bytes": keep_free, "cache_bytes": cached, "free_bytes": free,
               "pinned_bytes": sum(e["bytes"] for e in state["entries"] if e["pinned"]),
               "evictable_bytes": sum(e["bytes"] for e in evictable)}
    if not fits():
        return dict(numbers, fits=False, evicted=[])
    for entry in plan:
        _evict(entry)
    return dict(numbers, fits=True, evicted=[{"key": e["key"], "bytes": e["bytes"], "files": e["files"]}
                                               for e in plan], freed_bytes=freed)


def verify_cache(workdir):
    """Every content entry's files against its name; the bad entries are evicted."""
    bad, checked = [], 0
    for entry in cache_entries(workdir):
        if entry["kind"] != "content":
            continue
        checked += 1
        problems = []
        for name in entry["files"] or [None]:
            if name is None:
                problems.append("empty entry")
                continue
            try:
                actual = file_sha256(os.path.join(entry["path"], name))
            except (IOError, OSError) as exc:
                actual = "unreadable (%s)" % _one_line(exc)
            if actual != entry["key"]:
                problems.append("%s: sha256 %s" % (name, actual))
        if problems:
            _evict(entry)
            bad.append({"key": entry["key"], "bytes": entry["bytes"], "problems": problems})
    if not bad:
        clear_suspect(workdir)
    return {"checked": checked, "bad": bad}


def prune_cache(workdir, older_than_days, host_now=0.0):
    """Evict every entry no run in progress needs that was last used more than `older_than_days` ago."""
    cutoff = time.time() - older_than_days * 86400.0
    pinned = pinned_keys(workdir, host_now=host_now)
    evicted = []
    for entry in cache_entries(workdir):
        if entry["key"] not in pinned and entry["last_used"] <= cutoff:
            _evict(entry)
            evicted.append({"key": entry["key"], "bytes": entry["bytes"], "files": entry["files"]})
    return {"evicted": evicted, "freed_bytes": sum(e["bytes"] for e in evicted)}


def pin_run(workdir, run, keys, host_now=0.0):
    """Record the keys a run needs (never evicted while it lasts) and mark the entries used now. Run folders of
    runs that hold no pin any more (finished, or killed before they could clean up) are removed."""
    pins = os.path.join(workdir, PINS_DIR)
    if not os.path.isdir(pins):
        os.makedirs(pins)
    write_result(os.path.join(pins, _safe_name(run) + ".json"),
                 {"run": run, "keys": sorted(keys), "pid": os.getpid(), "host_pinned_at": host_now or None})
    root = os.path.join(workdir, CACHE_DIR)
    for key in keys:
        for entry in (os.path.join(root, key), os.path.join(root, COMPILED_DIR, key)):
            if os.path.isdir(entry):
                _touch(entry)
    sweep_run_folders(workdir, host_now)


def sweep_run_folders(workdir, host_now=0.0):
    """Remove <workdir>/runs/<run> of every run without a live pin: what an interrupted run left behind."""
    import shutil
    runs = os.path.join(workdir, RUNS_DIR)
    if not os.path.isdir(runs):
        return []
    pinned_keys(workdir, host_now=host_now)  # drops expired pins first
    live = set(n[:-len(".json")] for n in os.listdir(os.path.join(workdir, PINS_DIR)) if n.endswith(".json")) \
        if os.path.isdir(os.path.join(workdir, PINS_DIR)) else set()
    removed = []
    for name in sorted(os.listdir(runs)):
        if _safe_name(name) not in live:
            shutil.rmtree(os.path.join(runs, name), ignore_errors=True)
            removed.append(name)
    return removed


def unpin_run(workdir, run):
    """The run is over: its pin and its run folder (the agent's result files, already fetched) go."""
    import shutil
    try:
        os.remove(os.path.join(workdir, PINS_DIR, _safe_name(run) + ".json"))
    except OSError:
        pass
    shutil.rmtree(os.path.join(workdir, RUNS_DIR, _safe_name(run)), ignore_errors=True)


def read_suspect(workdir):
    try:
        with open(os.path.join(workdir, SUSPECT_FILE)) as handle:
            return json.load(handle)
    except (IOError, OSError, ValueError):
        return None


def mark_suspect(workdir, reason):
    write_result(os.path.join(workdir, SUSPECT_FILE),
                 {"reason": reason, "marked_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def clear_suspect(workdir):
    try:
        os.remove(os.path.join(workdir, SUSPECT_FILE))
    except OSError:
        pass


def cmd_cache(args):
    """The device's cache: list, verify, prune, make room, pin, unpin, evict, mark suspect (JSON on stdout).
    Everything that reads every entry or deletes one holds the device lock, so it never disturbs a
    measurement or removes a file a run is about to use."""
    workdir = os.path.abspath(args.workdir)
    if args.action not in ("pin", "unpin") and args.lock:
        lock_handle = acquire_lock(args.lock, args.lock_timeout, args.holder)  # noqa: F841 (held until exit)
    if args.action == "list":
        return cache_state(workdir, args)
    if args.action == "verify":
        return dict(cache_state(workdir, args), verify=verify_cache(workdir))
    if args.action == "prune":
        return dict(prune_cache(workdir, args.older_than_days, args.host_now), state=cache_state(workdir, args))
    if args.action == "make-room":
        return make_room(workdir, args.need_bytes, args)
    if args.action == "evict":
        wanted = set(args.keys)
        evicted = [e for e in cache_entries(workdir) if e["key"] in wanted]
        for entry in evicted:
            _evict(entry)
        return {"evicted": [e["key"] for e in evicted]}
    if args.action == "suspect":
        mark_suspect(workdir, args.reason)
        return {"suspect": read_suspect(workdir)}
    if args.action == "pin":
        pin_run(workdir, args.run, args.keys, args.host_now)
        return cache_state(workdir, args)
    if args.action == "unpin":
        unpin_run(workdir, args.run)
        return {"unpinned": args.run}
    raise AgentFailure(ErrorCategory.BAD_INPUT, "unknown cache action %r" % args.action, EXIT_BAD_INPUT)


# ---------------------------------------------------------------- storage health
_STORAGE_ERROR_WORDS = ("i/o error", "mmc", "ext4-fs error", "buffer i/o", "blk_update_request", "medium error",
                        "read-only file system", "remounting filesystem read-only")


def _mount_of(path):
    """(mount point, filesystem type, options) of the filesystem holding path, from /proc/mounts."""
    best = ("/", None, [])
    path = os.path.realpath(path)
    try:
        with open("/proc/mounts") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) < 4:
                    continue
                point = parts[1].replace("\\040", " ")
                if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
                    best = (point, parts[2], parts[3].split(","))
    except (IOError, OSError):
        return None
    return best


def storage_health(workdir, with_cache=True):
    """Free and total space of the workdir's filesystem, whether it is mounted read-only, and the I/O error
    counters the device lets an unprivileged user read (SCSI ioerr_cnt, dmesg lines about mmc or I/O errors)."""
    info = {"workdir_free_bytes": None, "workdir_total_bytes": None}
    try:
        st = os.statvfs(workdir)
        info["workdir_free_bytes"], info["workdir_total_bytes"] = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    except OSError:
        pass
    mount = _mount_of(workdir)
    if mount:
        info["mount_point"], info["fs_type"] = mount[0], mount[1]
        info["read_only"] = "ro" in mount[2]
    else:
        info["read_only"] = None
    read_only_mounts = []
    try:
        with open("/proc/mounts") as handle:
            for line in handle:
                parts = line.split()
                # a disk filesystem that is read-only now: the kernel remounts one after errors
                if len(parts) >= 4 and parts[0].startswith("/dev/") and "ro" in parts[3].split(","):
                    read_only_mounts.append(parts[1])
    except (IOError, OSError):
        pass
    info["read_only_mounts"] = read_only_mounts
    io_errors = {}
    sys_block = "/sys/block"
    for name in (sorted(os.listdir(sys_block)) if os.path.isdir(sys_block) else []):
        if name.startswith(("loop", "ram", "zram")):
            continue
        count = _read_first(os.path.join(sys_block, name, "device", "ioerr_cnt"))
        if count:
            try:
                io_errors[name] = int(count, 16)
            except ValueError:
                pass
    info["io_error_counts"] = io_errors
    info["dmesg_errors"], info["dmesg_last_error"], info["dmesg_readable"] = None, None, False
    try:
        import subprocess
        proc = subprocess.Popen(["dmesg"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, _ = proc.communicate(timeout=5)
        if proc.returncode == 0:
            lines = [l for l in out.decode("utf-8", "replace").splitlines()
                     if any(w in l.lower() for w in _STORAGE_ERROR_WORDS) and "error" in l.lower()]
            info["dmesg_readable"], info["dmesg_errors"] = True, len(lines)
            info["dmesg_last_error"] = lines[-1].strip()[:300] if lines else None
    except Exception:
        pass  # no dmesg, or not allowed without root (kernel.dmesg_restrict): unknown, not zero
    info["suspect"] = read_suspect(workdir)
    if with_cache and os.path.isdir(workdir):
        # the first probe fixes the cache's default budget (cache-budget.json), before the cache fills the disk
        entries = cache_entries(workdir)
        budget = cache_budget(workdir)
        info["cache_entries"], info["cache_bytes"] = len(entries), sum(e["bytes"] for e in entries)
        info["cache_default_max_bytes"] = budget["max_bytes"]
        info["cache_default_keep_free_bytes"] = budget["keep_free_bytes"]
    return info


# ---------------------------------------------------------------- inputs and outputs
FEEDS_KEY, OUTPUTS_KEY = "__feeds__", "__outputs__"


class Feeds(object):
    """The evaluation inputs: per model input either one array per sample or one constant for every sample.

    The .npz holds arrays f0, f1, ... and, under __feeds__, a JSON list of
    {"key", "name", "mode": "sample" | "constant"}. A "sample" array holds one
    entry per sample (samples first); each entry is the whole input tensor.
    """

    def __init__(self, arrays, spec):
        self.spec = spec
        self.arrays = arrays
        counts = set(int(arrays[f["key"]].shape[0]) for f in spec if f["mode"] == "sample")
        if len(counts) > 1:
            raise AgentFailure(ErrorCategory.BAD_INPUT, "inputs disagree on the number of samples: %s" % sorted(counts),
                               EXIT_BAD_INPUT)
        self.n_samples = counts.pop() if counts else 1
        self.names = [f["name"] for f in spec]

    @classmethod
    def load(cls, path):
        import numpy as np
        try:
            with np.load(path) as data:
                spec = json.loads(str(data[FEEDS_KEY]))
                arrays = dict((f["key"], data[f["key"]]) for f in spec)
        except Exception as exc:
            raise AgentFailure(ErrorCategory.BAD_INPUT, "cannot read inputs %s: %s" % (path, exc), EXIT_BAD_INPUT)
        return cls(arrays, spec)

    def shapes(self):
        """name -> the shape one sample of that input has."""
        return dict((f["name"], list(self.arrays[f["key"]].shape[1:] if f["mode"] == "sample"
                                     else self.arrays[f["key"]].shape)) for f in self.spec)

    def sample(self, i, order):
        """The feeds of sample i, in the runtime's input order."""
        out = []
        for k in order:
            f = self.spec[k]
            x = self.arrays[f["key"]]
            out.append(contiguous(x[i] if f["mode"] == "sample" else x))
        return out


def contiguous(x):
    """x in C order; a 0-d array stays 0-d (numpy's ascontiguousarray makes it 1-d, which runtimes reject)."""
    import numpy as np
    x = np.asarray(x)  # indexing a scalar input's samples gives numpy scalars, which runtimes reject
    return x if x.flags["C_CONTIGUOUS"] else np.ascontiguousarray(x)


def feed_order(runtime, feeds):
    """For each of the runtime's inputs, the index of the feed that carries it."""
    order = match_names(runtime.input_names, feeds.names)
    if order is None:
        raise AgentFailure(ErrorCategory.BAD_INPUT, "the model's inputs %s do not match the data's %s"
                           % (runtime.input_names, feeds.names), EXIT_BAD_INPUT)
    return order


def collect_outputs(runtime, feeds, order, limit):
    """Every output for samples 0..limit-1: name -> stacked array, or a list when sizes vary per sample."""
    import numpy as np
    per_output = []
    for i in range(limit):
        runtime.infer(runtime.prepare(feeds.sample(i, order)))
        values = runtime.fetch()
        per_output = per_output or [[] for _ in values]  # a model may learn its outputs only by running
        for k, y in enumerate(values):
            per_output[k].append(np.array(y))
    result = []
    for name, values in zip(runtime.output_names, per_output):
        same = len(set(v.shape for v in values)) <= 1
        result.append((name, np.stack(values) if same else values))
    return result


def save_outputs(path, outputs):
    """outputs: [(name, array or list of per-sample arrays)] -> .npz with o<k> (or o<k>_<i>) and __outputs__."""
    import numpy as np
    arrays, spec = {}, []
    for k, (name, value) in enumerate(outputs):
        if isinstance(value, list):
            for i, v in enumerate(value):
                arrays["o%d_%d" % (k, i)] = v
            spec.append({"key": "o%d" % k, "name": name, "ragged": len(value)})
        else:
            arrays["o%d" % k] = value
            spec.append({"key": "o%d" % k, "name": name, "ragged": 0})
    arrays[OUTPUTS_KEY] = np.array(json.dumps(spec))
    tmp = path + ".part.npz"
    try:
        np.savez(tmp, **arrays)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


# ---------------------------------------------------------------- commands
def runtime_class(fmt):
    """The registered runtime of a format; an unknown one is bad input naming the known ones."""
    if fmt not in RUNTIMES:
        raise AgentFailure(ErrorCategory.BAD_INPUT, "unknown format %r; known: %s"
                           % (fmt, ", ".join(sorted(RUNTIMES))), EXIT_BAD_INPUT)
    return RUNTIMES[fmt]


def cmd_run(args):
    if args.lock:
        lock_handle = acquire_lock(args.lock, args.lock_timeout, args.holder)  # noqa: F841 (held until exit)
    # under the lock: nothing evicts or replaces an entry while it is checked and used
    verify_ms = verify_cached_files([args.model, args.weights, args.inputs]) if args.verify_cache else None
    runtime_cls = runtime_class(args.format)
    config = runtime_config(args)
    options = config["options"]
    feeds = Feeds.load(args.inputs)
    # The cooldown: under the device lock (no other cell heats the device while this one waits), after the
    # request is known to be sound (a bad one fails at once), before the model loads: load_ms and the first
    # inference are timed too, and a cold start on a hot device is as skewed as the timed loop.
    heat = HeatMonitor(json.loads(args.thermal) if args.thermal else None)
    cooldown = heat.cool_down()
    baseline = rss_bytes()
    runtime, load_ms, first_use, cache_state = load_runtime(runtime_cls, args, options, feeds)
    result = {Doc.RUNTIME: runtime.name, Doc.RUNTIME_VERSION: str(runtime.version), Doc.THREADS: runtime.threads,
              Doc.RUNTIME_CONFIG: config["name"], Doc.LOAD_MS: load_ms, Doc.COMPILE_CACHE: cache_state,
              Doc.EFFECTIVE_CONFIG: runtime.effective,
              Doc.FALLBACK: "; ".join(runtime.config.fallbacks) or None, Doc.VERIFY_MS: verify_ms,
              Doc.CACHE_REPAIR: runtime.cache_repair}
    result.update(first_use)
    result[Doc.INTERFACE] = runtime.interface()
    result[Doc.PRECISION] = runtime.precision
    order = feed_order(runtime, feeds)
    try:
        first = runtime.prepare(feeds.sample(0, order))
        t0 = time.perf_counter()
        runtime.infer(first)
        result[Doc.FIRST_INFERENCE_MS] = (time.perf_counter() - t0) * 1e3
        for _ in range(args.warmup):
            runtime.infer(first)
        reference = None if args.no_reference else SpeedReference(args.workdir or None, args.max_reference_drift)
        energy = EnergyMeter(json.loads(args.power)) if args.power else None
        if energy is not None:
            energy.measure_idle()  # the model loaded, nothing running
        before = read_conditions(heat.settings)
        if reference is not None:
            reference.time("before")
        if energy is not None:
            energy.start()
        own = runtime.own_latency_s if args.clock == "runtime" and runtime.keeps_own_latency else None
        heat.start()
        try:
            samples_ms, block, iterations, timed_s, timer_s = time_inferences(
                runtime.infer, first, args.iterations, args.min_duration, args.max_duration, own=own,
                between=(lambda: reference.time("chunk")) if reference is not None else None)
        finally:
            heat.stop()
        result[Doc.HEAT] = heat.result(cooldown)
        if energy is not None:
            energy.stop()
            result[Doc.ENERGY] = energy.result(timed_s, iterations)
        if reference is not None:
            reference.time("after")
        result[Doc.LATENCY_CLOCK] = "runtime" if own else "wall"
        result[Doc.CONDITIONS] = {"before": before, "after": read_conditions(heat.settings)}
        if reference is not None:
            result[Doc.REFERENCE] = reference.finish()
        outputs = None
        if args.outputs:
            # The first inference, warm-up and timed iterations ran before these outputs; the host's reference
            # runs from a fresh model. A model that keeps state starts again from its initial state.
            if args.stateful or runtime.holds_state:
                if runtime.reset_state():
                    result[Doc.STATE_RESET] = "reset"
                else:
                    cache_dir, runtime, first = runtime.cache_dir, None, None  # the old model goes first
                    runtime, _ = _load(runtime_cls, args, options, feeds.shapes(), cache_dir=cache_dir)
                    order = feed_order(runtime, feeds)
                    result[Doc.STATE_RESET] = "reloaded"
            limit = feeds.n_samples if args.max_samples <= 0 else min(feeds.n_samples, args.max_samples)
            outputs = collect_outputs(runtime, feeds, order, limit)
    except AgentFailure:
        raise
    except Exception as exc:
        raise AgentFailure(ErrorCategory.INFERENCE_FAILED, "%s failed during inference: %s"
                           % (runtime.name, _one_line(exc)))
    result[Doc.LATENCY] = latency_stats(samples_ms)
    result[Doc.LATENCIES_MS] = samples_ms
    result[Doc.WARMUP_ITERATIONS] = args.warmup
    result[Doc.TIMED_ITERATIONS] = iterations
    result[Doc.BLOCK_SIZE] = block
    result[Doc.TIMED_S] = timed_s
    result[Doc.TIMER_COST_NS] = timer_s * 1e9
    result[Doc.BASELINE_RSS_BYTES] = baseline
    result[Doc.PEAK_RSS_BYTES] = peak_rss_bytes()
    if baseline is not None and result[Doc.PEAK_RSS_BYTES] is not None:
        result[Doc.RSS_INCREASE_BYTES] = result[Doc.PEAK_RSS_BYTES] - baseline
    if outputs is not None:
        save_outputs(args.outputs, outputs)
        result[Doc.N_OUTPUT_SAMPLES] = limit
    if args.profile:
        # after the timed run, in a session of its own: profilers slow what they watch
        try:
            result[Doc.PROFILE] = profile_cell(runtime_cls, args, options, feeds, config, runtime.cache_dir)
        except AgentFailure as exc:
            result[Doc.PROFILE_ERROR] = str(exc)
        except Exception as exc:
            result[Doc.PROFILE_ERROR] = _one_line(exc)
    return result


def cmd_inspect(args):
    """Load the model at the given input sizes and say what this runtime sees: interface, operators, state."""
    runtime_cls = runtime_class(args.format)
    try:
        shapes = json.loads(args.shapes) if args.shapes else {}
        if not isinstance(shapes, dict):
            raise ValueError("expected a mapping of input name to shape")
    except ValueError as exc:
        raise AgentFailure(ErrorCategory.BAD_INPUT, "--shapes is not a mapping of input name to shape: %s" % exc,
                           EXIT_BAD_INPUT)
    if not os.path.isfile(args.model):
        raise AgentFailure(ErrorCategory.BAD_INPUT, "no model file %s" % args.model, EXIT_BAD_INPUT)
    config = runtime_config(args)
    runtime, load_ms = _load(runtime_cls, args, config["options"], shapes)
    try:
        interface, operators = runtime.interface(), runtime.operators()
    except Exception as exc:
        raise AgentFailure(ErrorCategory.LOAD_FAILED, "%s loaded %s but cannot describe it: %s"
                           % (runtime.name, args.model, _one_line(exc)))
    return {Doc.RUNTIME: runtime.name, Doc.RUNTIME_VERSION: str(runtime.version), Doc.LOAD_MS: load_ms,
            Doc.INTERFACE: interface, Doc.OPERATORS: operators, Doc.HOLDS_STATE: bool(runtime.holds_state)}


def runtime_config(args):
    """The runtime configuration the host sent (--runtime-config JSON): name and the user's options."""
    if not args.runtime_config:
        return {"name": args.format, "options": {}}
    try:
        config = json.loads(args.runtime_config)
        options = config.get("options") or {}
        if not isinstance(options, dict):
            raise ValueError("options must be a mapping")
        return {"name": str(config.get("name") or args.format), "options": options}
    except (ValueError, AttributeError) as exc:
        raise AgentFailure(ErrorCategory.BAD_INPUT, "--runtime-config is not a configuration: %s" % exc,
                           EXIT_BAD_INPUT)


def _load(runtime_cls, args, options, shapes, cache_dir=None, profile_prefix=None):
    runtime = runtime_cls(args.threads, options, cache_dir=cache_dir, profile_prefix=profile_prefix)
    started = time.perf_counter()
    try:
        runtime.load(args.model, args.weights or None, shapes)
    except AgentFailure:
        raise
    except Exception as exc:
        raise AgentFailure(ErrorCategory.LOAD_FAILED, "%s could not load %s: %s"
                           % (runtime.name, args.model, _one_line(exc)))
    return runtime, (time.perf_counter() - started) * 1e3


def first_inference_ms(runtime, feeds):
    """The first inference of a freshly loaded runtime on the first sample, in ms (kernels chosen, memory
    allocated, lazy compiles done on the way)."""
    order = feed_order(runtime, feeds)
    prepared = runtime.prepare(feeds.sample(0, order))
    started = time.perf_counter()
    try:
        runtime.infer(prepared)
    except AgentFailure:
        raise
    except Exception as exc:
        raise AgentFailure(ErrorCategory.INFERENCE_FAILED, "%s failed during inference: %s"
                           % (runtime.name, _one_line(exc)))
    return (time.perf_counter() - started) * 1e3


FIRST_USE_KEYS = (Doc.LOAD_COLD_MS, Doc.FIRST_INFERENCE_COLD_MS, Doc.LOAD_WARM_MS, Doc.FIRST_INFERENCE_WARM_MS)


def compiled_cache_dir(runtime_cls, args, options):
    """The runtime version's directory under --cache-dir (the host keys --cache-dir by artifact and options; the
    runtime's version is a level below it, so an upgrade compiles afresh); None without --cache-dir."""
    if not args.cache_dir:
        return None
    version = runtime_cls(args.threads, options).version
    return os.path.join(args.cache_dir, "".join(c if c.isalnum() or c in "._-" else "_" for c in
                                                "%s-%s" % (args.format, version)))


def load_runtime(runtime_cls, args, options, feeds):
    """(runtime, load_ms, first use, cache state) for a timed run.

    With a compiled-model cache (--cache-dir: OpenVINO CACHE_DIR, TensorRT engines, OpenVINO EP blobs) the first
    load of this process is a first use, timed with the first inference after it: cold when the cache was empty
    (the compile included: load_cold_ms, first_inference_cold_ms, kept beside the cache so later runs report them
    too), warm when it was filled (load_warm_ms, first_inference_warm_ms). A cold run then times the warm first
    use in a fresh process (warm_first_use), since this one has the runtime's plugins and kernels loaded already.
    The runtime returned is a second load, from the filled cache: load_ms, whose first inference the caller times.
    Without a cache: the process's only load, first use {} and cache state None."""
    shapes = feeds.shapes()
    cache = compiled_cache_dir(runtime_cls, args, options)
    cold = False
    if cache:
        if not os.path.isdir(cache):
            os.makedirs(cache)
        cold = not [f for f in os.listdir(cache) if f != COMPILE_RECORD]
        _touch(os.path.dirname(cache))  # the compiled entry's last use
    repair = None
    try:
        runtime, first_ms = _load(runtime_cls, args, options, shapes, cache_dir=cache)
    except AgentFailure as exc:
        if not cache or cold or exc.category != ErrorCategory.LOAD_FAILED:
            raise
        # a compiled entry that no longer loads (a damaged blob, a changed driver): discard it and compile once more
        import shutil
        shutil.rmtree(cache, ignore_errors=True)
        os.makedirs(cache)
        cold = True
        repair = "compiled-model cache %s failed to load (%s); discarded and rebuilt" % (cache, exc)
        runtime, first_ms = _load(runtime_cls, args, options, shapes, cache_dir=cache)
    runtime.cache_repair = repair
    if not cache or not runtime.uses_cache():
        return runtime, first_ms, {}, None
    first = first_inference_ms(runtime, feeds)
    record = os.path.join(cache, COMPILE_RECORD)
    if cold:
        first_use = {Doc.LOAD_COLD_MS: first_ms, Doc.FIRST_INFERENCE_COLD_MS: first}
        # what the entry is, for `harness targets --cache`: the runtime and the artifact it was compiled from
        what = {"runtime": runtime.name, "runtime_version": str(runtime.version),
                "model": os.path.basename(args.model), "model_sha256": entry_digest(args.model)}
        with open(record, "w") as handle:
            json.dump(dict(first_use, **what), handle)
    else:
        try:
            with open(record) as handle:
                kept = json.load(handle)
            first_use = {Doc.LOAD_COLD_MS: kept.get(Doc.LOAD_COLD_MS),
                         Doc.FIRST_INFERENCE_COLD_MS: kept.get(Doc.FIRST_INFERENCE_COLD_MS)}
        except (IOError, OSError, ValueError, AttributeError):
            first_use = {}
        first_use.update({Doc.LOAD_WARM_MS: first_ms, Doc.FIRST_INFERENCE_WARM_MS: first})
    del runtime
    if cold:
        first_use.update(warm_first_use(args, first_ms))
    # load_ms is always a second load in this process, from the cache: the first one also paid for loading the
    # runtime's plugins, so a cold and a warm run report the same thing
    runtime, load_ms = _load(runtime_cls, args, options, shapes, cache_dir=cache)
    runtime.cache_repair = repair
    return runtime, load_ms, first_use, "cold" if cold else "warm"


def warm_first_use(args, cold_load_ms):
    """{load_warm_ms, first_inference_warm_ms}: this agent's `first-use` in a fresh process, from the cache just
    filled. Its timeout: 20 times the cold load, at least 2 minutes (a warm load is the faster one)."""
    import subprocess
    argv = [sys.executable, os.path.abspath(__file__), "first-use", "--model", args.model, "--format", args.format,
            "--inputs", args.inputs, "--threads", str(args.threads), "--cache-dir", args.cache_dir]
    if args.weights:
        argv += ["--weights", args.weights]
    if args.runtime_config:
        argv += ["--runtime-config", args.runtime_config]
    timeout_s = max(120.0, 20 * cold_load_ms / 1e3)
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout_s)
        lines = done.stdout.decode("utf-8", "replace").strip().splitlines()
        document = json.loads(lines[-1]) if lines else {}
    except subprocess.TimeoutExpired:
        raise AgentFailure(ErrorCategory.LOAD_FAILED, "the warm first use (a fresh process loading the compiled-model "
                           "cache just filled) took more than %.0f s" % timeout_s)
    except ValueError:
        document = {}
    if document.get(Doc.STATUS) != STATUS_OK:
        stderr = [t for t in done.stderr.decode("utf-8", "replace").splitlines() if t.strip()]
        why = document.get(Doc.ERROR_MESSAGE) or (stderr[-1].strip() if stderr else "exit %s" % done.returncode)
        raise AgentFailure(ErrorCategory.LOAD_FAILED, "a fresh process could not use the compiled-model cache "
                           "just filled: %s%s" % ("%s: " % document[Doc.ERROR_CATEGORY]
                                                 if document.get(Doc.ERROR_CATEGORY) else "", why))
    return dict((key, document.get(key)) for key in (Doc.LOAD_WARM_MS, Doc.FIRST_INFERENCE_WARM_MS))


def cmd_first_use(args):
    """Load the model from its filled compiled-model cache and run the first inference, in this fresh process."""
    runtime_cls = runtime_class(args.format)
    options = runtime_config(args)["options"]
    feeds = Feeds.load(args.inputs)
    runtime, load_ms = _load(runtime_cls, args, options, feeds.shapes(),
                             cache_dir=compiled_cache_dir(runtime_cls, args, options))
    return {Doc.LOAD_WARM_MS: load_ms, Doc.FIRST_INFERENCE_WARM_MS: first_inference_ms(runtime, feeds)}


def profile_cell(runtime_cls, args, options, feeds, config, cache_dir=None):
    """A separate, profiled session: per layer where it ran (and, where the runtime times layers, how long),
    written to --profile; returns the node placement summary for the result."""
    prefix = os.path.join(os.path.dirname(os.path.abspath(args.profile)), "ort-profile")
    runtime, _ = _load(runtime_cls, args, options, feeds.shapes(), cache_dir=cache_dir, profile_prefix=prefix)
    order = feed_order(runtime, feeds)
    prepared = runtime.prepare(feeds.sample(0, order))
    for _ in range(3):  # warm: the first runs allocate and pick kernels (ONNX Runtime's trace keeps them: medians)
        runtime.infer(prepared)
    report = runtime.profile(lambda: runtime.infer(prepared), max(1, args.profile_runs))
    layers = report["layers"]
    placement = {}
    for layer in layers:
        placement[layer["placement"]] = placement.get(layer["placement"], 0) + 1
    document = {"runtime_config": config["name"], "options": config["options"], "runtime": runtime.name,
                "runtime_version": str(runtime.version), "effective_config": runtime.effective,
                "fallback": "; ".join(runtime.config.fallbacks) or None, "runs": args.profile_runs,
                "timed": report.get("timed", False), "nodes": len(layers), "placement": placement,
                "layers": sorted(layers, key=lambda l: -(l.get("time_ms") or 0.0))}
    write_result(args.profile, document)
    return {"nodes": len(layers), "placement": placement}


def _one_line(exc):
    # OpenVINO's first line says only where it was raised ("Exception from src/...:117:"): skip such lines
    text = [t for t in str(exc).strip().splitlines() if t.strip() and not t.startswith("Exception from src/")] \
        or str(exc).strip().splitlines()
    return "%s: %s" % (type(exc).__name__, text[0] if text else "")


def _version_of(module_name):
    try:
        module = __import__(module_name)
        return str(getattr(module, "__version__", "unknown"))
    except Exception:
        return None


def _read_first(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None


#: /proc/cpuinfo flags of int8 dot-product and matrix instructions (x86 VNNI and AMX; Arm dot product, i8mm)
CPU_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "vnni", "asimddp", "i8mm")


def cmd_probe(args):
    """Health probe: what this device is and which runtimes it has."""
    info = {"python": platform.python_version(), "python_executable": sys.executable,
            "machine": platform.machine(), "system": platform.system(), "release": platform.release(),
            "hostname": platform.node(), "cpu_count": os.cpu_count()}
    cpu_model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key = line.lower()
                if cpu_model is None and key.startswith(("model name", "hardware", "cpu model")):
                    cpu_model = line.split(":", 1)[1].strip()
                elif key.startswith(("flags", "features")) and not flags:  # x86 flags, Arm features
                    flags = set(line.split(":", 1)[1].split())
    except (IOError, OSError):
        pass
    info["cpu_model"] = cpu_model
    # the CPU's int8 dot-product / matrix instructions: whether int8 kernels can be faster than float ones
    info["cpu_int8_flags"] = sorted(flags & set(CPU_INT8_FLAGS))
    mem = {}
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                key, value = line.split(":", 1)
                if key in ("MemTotal", "MemAvailable"):
                    mem[key] = int(value.split()[0]) * 1024
    except (IOError, OSError, ValueError):
        pass
    info["mem_total_bytes"], info["mem_available_bytes"] = mem.get("MemTotal"), mem.get("MemAvailable")
    try:
        st = os.statvfs(args.workdir or ".")
        info["disk_free_bytes"] = st.f_bavail * st.f_frsize
    except OSError:
        info["disk_free_bytes"] = None
    info["conditions"] = read_conditions()
    info["cpu_governor"] = _read_first("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    temp = _read_first("/sys/class/thermal/thermal_zone0/temp")
    info["temperature_c"] = float(temp) / 1000.0 if temp and temp.lstrip("-").isdigit() else None
    fingerprint = environment_fingerprint()
    # reused only from a working directory the harness named: a probe run by hand writes nothing where it runs
    keep = bool(args.workdir) and not args.fresh
    saved = _read_saved_runtimes(args.workdir, fingerprint) if keep else None
    # numpy's version is decided by the same environment as the runtimes: reused with them, since importing
    # numpy only to read it would be most of a warm probe's time
    if saved is None:
        saved = {"runtimes": probe_runtimes(), "numpy": _version_of("numpy")}
        if args.workdir:
            _save_runtimes(args.workdir, fingerprint, saved)
        info["runtimes_reused"] = False
    else:
        info["runtimes_reused"] = True
    info["runtimes"], info["numpy"] = saved["runtimes"], saved["numpy"]
    info["environment_fingerprint"] = fingerprint
    # read every time: storage changes, runtimes seldom; the cache's budget only in a working directory named
    info["storage"] = storage_health(args.workdir or ".", with_cache=bool(args.workdir))
    info["agent_version"] = AGENT_VERSION
    return info


def probe_runtimes():
    """Import every runtime (seconds: TensorFlow, OpenVINO): which ones this Python has, and their accelerators."""
    runtimes = {}
    for fmt, cls in sorted(RUNTIMES.items()):
        try:
            rt = cls(1, {})
            runtimes[fmt] = {"available": True, "module": rt.name, "version": str(rt.version)}
            try:  # what a runtime configuration can ask for here: providers, devices (None: nothing to choose)
                accelerators = rt.accelerators()
                if accelerators is not None:
                    runtimes[fmt]["accelerators"] = accelerators
            except Exception as exc:
                runtimes[fmt]["accelerators_error"] = _one_line(exc)
        except AgentFailure as exc:
            runtimes[fmt] = {"available": False, "error": str(exc)}
    return runtimes


#: environment variables that change which runtimes import or what they can use
_FINGERPRINT_ENV = ("PYTHONPATH", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "PATH", "VIRTUAL_ENV")
_SAVED_RUNTIMES = "probe-runtimes.json"


def environment_fingerprint():
    """What decides the runtimes section of the probe, read without importing any runtime: this Python, this
    agent, the environment variables above, and each import directory's modification time (installing,
    removing or upgrading a package adds or removes entries there)."""
    parts = [sys.executable, sys.version, AGENT_VERSION, os.path.abspath(__file__)]
    parts += ["%s=%s" % (name, os.environ.get(name, "")) for name in _FINGERPRINT_ENV]
    own_dir = os.path.dirname(os.path.abspath(__file__))  # its mtime records the cache entry's last use
    for entry in sys.path:
        if os.path.abspath(entry or ".") == own_dir:
            continue
        try:
            parts.append("%s@%d" % (entry, os.stat(entry or ".").st_mtime_ns))
        except (OSError, AttributeError):
            parts.append(entry + "@-")
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:16]


def _read_saved_runtimes(workdir, fingerprint):
    try:
        with open(os.path.join(workdir, _SAVED_RUNTIMES)) as handle:
            saved = json.load(handle)
    except (IOError, OSError, ValueError):
        return None
    if saved.get("fingerprint") != fingerprint or "runtimes" not in saved or "numpy" not in saved:
        return None  # another environment, or written by an agent that did not keep numpy's version
    return saved


def _save_runtimes(workdir, fingerprint, saved):
    path = os.path.join(workdir, _SAVED_RUNTIMES)
    try:
        write_result(path, dict(saved, fingerprint=fingerprint), "%s.%d.tmp" % (path, os.getpid()))
    except (IOError, OSError):  # a read-only workdir only costs the next probe its runtime imports
        pass


def _optional_float(text):
    return None if str(text).lower() in ("none", "null", "") else float(text)


_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def storage_failure(exc, doing):
    """A file the device could not write, as the agent's failure: full, read-only or not ours to write."""
    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return AgentFailure(ErrorCategory.DEVICE_DISK_FULL, "no space left on the device while %s: %s; free space "
                            "there or point the target's workdir at a larger disk" % (doing, _one_line(exc)),
                            EXIT_FAILED)
    if getattr(exc, "errno", None) in (errno.EROFS, errno.EACCES, errno.EPERM):
        return AgentFailure(ErrorCategory.DEVICE_STORAGE_READONLY, "the device's storage cannot be written while "
                            "%s: %s; remount it read-write or fix the workdir's permissions" % (doing, _one_line(exc)),
                            EXIT_FAILED)
    return AgentFailure(ErrorCategory.AGENT_ERROR, "%s failed: %s" % (doing, _one_line(exc)), EXIT_FAILED)


def write_result(path, document, tmp=None):
    """A JSON document (a result, a pin, a mark), atomically; a write that fails leaves no `.part` behind."""
    tmp = tmp or path + ".part"
    try:
        with open(tmp, "w") as handle:
            json.dump(document, handle)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def main(argv=None):
    parser = argparse.ArgumentParser(description="Edge inference agent (runs on the device).")
    sub = parser.add_subparsers(dest="command")
    probe = sub.add_parser("probe", help="print what this device has, as JSON")
    probe.add_argument("--workdir", default="",
                       help="the device's working directory: its free space is reported, and the runtimes found are "
                            "kept there for the next probe while this environment is unchanged (none: nothing kept)")
    probe.add_argument("--fresh", action="store_true",
                       help="import every runtime again even if this environment's fingerprint is unchanged")
    inspect = sub.add_parser("inspect", help="load a model and print its interface and operators, as JSON")
    inspect.add_argument("--model", required=True)
    inspect.add_argument("--format", required=True, help="one of: %s" % ", ".join(sorted(RUNTIMES)))
    inspect.add_argument("--weights", default="", help="OpenVINO .bin, when it is not beside the .xml")
    inspect.add_argument("--shapes", default="", help='input sizes as JSON, {"name": [1, 8, 8, 1]} (dynamic inputs '
                                                      "load at them)")
    inspect.add_argument("--threads", type=int, default=1)
    inspect.add_argument("--runtime-config", default="", help='{"name": ..., "options": {...}} as for run')
    inspect.add_argument("--result", default="", help="also write the JSON document here")
    run = sub.add_parser("run", help="load a model, time it and write a JSON result")
    run.add_argument("--model", required=True)
    run.add_argument("--format", required=True, choices=sorted(RUNTIMES))
    run.add_argument("--weights", default="", help="OpenVINO .bin, when it is not beside the .xml")
    run.add_argument("--inputs", required=True, help=".npz of feeds: per input one array per sample or a constant")
    run.add_argument("--result", required=True, help="where to write the JSON result")
    run.add_argument("--outputs", default="", help="where to write outputs for every sample (.npz)")
    run.add_argument("--warmup", type=int, default=10)
    run.add_argument("--iterations", type=int, default=100, help="time at least this many inferences")
    run.add_argument("--min-duration", type=float, default=1.0, help="time for at least this many seconds")
    run.add_argument("--max-duration", type=float, default=60.0,
                     help="and for at most this many (before --iterations is reached, if need be)")
    run.add_argument("--clock", choices=("runtime", "wall"), default="runtime",
                     help="runtime: the runtime's own figure where it keeps one (OpenVINO's InferRequest.latency, "
                          "as benchmark_app reports); wall: perf_counter around each call (default runtime)")
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--max-samples", type=int, default=0, help="outputs for at most this many samples (0: all)")
    run.add_argument("--stateful", action="store_true",
                     help="the model keeps state between inferences: start it again before its outputs")
    run.add_argument("--runtime-config", default="",
                     help='the runtime configuration as JSON: {"name": ..., "options": {...}} (default: the '
                          "runtime's defaults)")
    run.add_argument("--cache-dir", default="", help="compiled-model cache of this artifact, runtime version "
                                                     "and options (OpenVINO CACHE_DIR, TensorRT engines)")
    run.add_argument("--profile", default="", help="after timing, profile a separate session into this JSON")
    run.add_argument("--profile-runs", type=int, default=10)
    run.add_argument("--lock", default="", help="device lock file held while measuring")
    run.add_argument("--lock-timeout", type=float, default=0.0)
    run.add_argument("--holder", default="harness run", help="who holds the lock, for messages")
    run.add_argument("--verify-cache", action="store_true",
                     help="check the sha256 of each cached file (cache/<sha256>/...) before loading it")
    run.add_argument("--workdir", default="",
                     help="the device's working directory: the device speed reference's usual time is kept there "
                          "(none: the reference is timed, but has no usual to be judged against)")
    run.add_argument("--max-reference-drift", type=_optional_float, default=0.05,
                     help="a run whose reference ran more than this much slower than usual is not added to the "
                          "usual (the target's quiet.max_reference_drift; 'none': every run is)")
    run.add_argument("--no-reference", action="store_true", help="do not time the device speed reference")
    run.add_argument("--power", default="", help='energy per inference from a power sensor, as JSON: {"source": '
                     '"auto"|"ina3221"|"pmic"|"rapl"|"hwmon"|"command"|"none", "root": sysfs root, "rail": ..., '
                     '"command": ..., "unit": "W"|"J", "idle_s": 0.5, "sampling_hz": 20, "min_samples": 5} '
                     '(none given: not measured)')
    run.add_argument("--thermal", default="", help='temperature and throttling around the timed loop, and the '
                     'cooldown before the cell, as JSON: {"root": sysfs root, "vcgencmd": ..., "sampling_hz": 4, '
                     '"cooldown_below_c": null, "cooldown_max_wait_s": 300, "cooldown_poll_s": 1} (none given: '
                     'read /sys, no cooldown)')
    first_use = sub.add_parser("first-use", help="load a model from its filled compiled-model cache and time the "
                               "load and the first inference, as JSON (run starts it in a fresh process)")
    for name in ("--model", "--format", "--inputs", "--cache-dir"):
        first_use.add_argument(name, required=True)
    first_use.add_argument("--weights", default="")
    first_use.add_argument("--threads", type=int, default=1)
    first_use.add_argument("--runtime-config", default="")
    cache = sub.add_parser("cache", help="the device's content cache: list, verify, prune, make room (JSON)")
    cache.add_argument("action", choices=("list", "verify", "prune", "make-room", "evict", "suspect", "pin", "unpin"))
    cache.add_argument("--workdir", required=True)
    cache.add_argument("--max-bytes", type=int, default=0, help="the cache budget (0: derived at the first look)")
    cache.add_argument("--keep-free", type=int, default=0, help="free space to keep (0: derived)")
    cache.add_argument("--need-bytes", type=int, default=0, help="make-room: bytes about to be uploaded")
    cache.add_argument("--older-than-days", type=float, default=0.0, help="prune: entries unused this long")
    cache.add_argument("--run", default="", help="pin/unpin: the run whose keys these are")
    cache.add_argument("--keys", nargs="*", default=[], help="pin: keys the run needs; evict: keys to evict")
    cache.add_argument("--reason", default="", help="suspect: why the storage is suspect")
    cache.add_argument("--host-now", type=float, default=0.0,
                       help="the host's clock (epoch seconds): pins are judged by it, never by the device's clock")
    cache.add_argument("--lock", default="")
    cache.add_argument("--lock-timeout", type=float, default=0.0)
    cache.add_argument("--holder", default="harness targets --cache")
    args = parser.parse_args(argv)
    if args.command == "probe":
        print(json.dumps(cmd_probe(args)))
        return EXIT_OK
    if args.command == "cache":
        try:
            print(json.dumps(dict(cmd_cache(args), status="ok")))
            return EXIT_OK
        except AgentFailure as exc:
            print(json.dumps({"status": "error", Doc.ERROR_CATEGORY: exc.category, Doc.ERROR_MESSAGE: str(exc)}))
            return exc.exit_code
    if args.command not in ("run", "inspect", "first-use"):
        parser.print_help()
        return EXIT_BAD_INPUT
    document = {Doc.AGENT_VERSION: AGENT_VERSION, Doc.STATUS: "ok", Doc.PYTHON: platform.python_version()}
    code = EXIT_OK
    try:
        command = {"run": cmd_run, "inspect": cmd_inspect, "first-use": cmd_first_use}[args.command]
        document.update(command(args))
    except AgentFailure as exc:
        document.update({Doc.STATUS: "error", Doc.ERROR_CATEGORY: exc.category, Doc.ERROR_MESSAGE: str(exc)})
        document.update(exc.details)
        code = exc.exit_code
    except (IOError, OSError) as exc:  # writing outputs or a profile: a full or read-only disk is the device's
        if getattr(exc, "errno", None) not in _STORAGE_ERRNOS:
            raise
        failure = storage_failure(exc, "writing the cell's files")
        document.update({Doc.STATUS: "error", Doc.ERROR_CATEGORY: failure.category, Doc.ERROR_MESSAGE: str(failure)})
        code = EXIT_FAILED
    except Exception as exc:  # a bug or an unexpected runtime error: still a result
        document.update({Doc.STATUS: "error", Doc.ERROR_CATEGORY: ErrorCategory.AGENT_ERROR,
                         Doc.ERROR_MESSAGE: _one_line(exc), Doc.TRACEBACK: traceback.format_exc()[-2000:]})
        code = EXIT_FAILED
    try:
        import numpy
        document[Doc.NUMPY] = numpy.__version__
    except Exception:
        pass
    if args.command in ("inspect", "first-use"):
        print(json.dumps(document))
    try:
        if getattr(args, "result", ""):
            write_result(args.result, document)
    except (IOError, OSError) as exc:  # the device's storage refused the result: say why on stdout, leave no part
        failure = storage_failure(exc, "writing the result %s" % args.result)
        print(json.dumps(dict(document, **{Doc.STATUS: STATUS_ERROR, Doc.ERROR_CATEGORY: failure.category,
                                           Doc.ERROR_MESSAGE: str(failure)})))
        sys.stderr.write("agent: %s: %s\n" % (failure.category, failure))
        return EXIT_FAILED
    if code:
        sys.stderr.write("agent: %s: %s\n" % (document.get(Doc.ERROR_CATEGORY), document.get(Doc.ERROR_MESSAGE)))
    return code


if __name__ == "__main__":
    sys.exit(main())
