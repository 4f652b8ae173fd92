"""Measurement fidelity: the agent's median latency next to the vendors' own tools.

OpenVINO's `benchmark_app` and LiteRT's `litert-benchmark` ship in the
runtime wheels. Each pairing runs the agent and the vendor tool on the same
model file with the same thread count and iteration count, alternately
(agent first in even rounds, vendor first in odd ones, so drift in the
machine's load hits both), and reports the median over rounds of the
ratio agent / vendor within each round (with the ratio of the medians and
of the minima beside it).

Parsing is pure (text in, numbers out) so it is tested against captured
output of the real tools in tests/data/bench/.
"""
from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from harness.bench.errors import BenchError
from harness.bench.models import BenchModel

AGENT = Path(__file__).resolve().parents[1] / "agent" / "agent.py"
TOOL_TIMEOUT_S = 300.0




@dataclass(frozen=True)
class ToolRun:
    """One run of one tool: its median and mean per-inference latency, as the tool itself reports them."""

    tool: str
    median_ms: float
    mean_ms: Optional[float]
    count: Optional[int]
    wall_s: float
    #: what the tool says it ran with (precision, streams, threads), for the record
    settings: Dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- parsing (pure)
_UNIT_TO_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3}
_BA_STAT = re.compile(r"^\[ INFO \]\s+(Median|Average|Min|Max):\s+([0-9.]+)\s*(ns|us|µs|ms|s)\s*$", re.M)
_BA_COUNT = re.compile(r"^\[ INFO \]\s+Count:\s+(\d+) iterations", re.M)
_BA_FIRST = re.compile(r"First inference took\s+([0-9.]+)\s*ms")
_BA_SETTING = re.compile(r"^\[ INFO \]\s+(NUM_STREAMS|INFERENCE_NUM_THREADS|INFERENCE_PRECISION_HINT|PERFORMANCE_HINT|"
                         r"ENABLE_CPU_PINNING):\s+(.+?)\s*$", re.M)


def parse_benchmark_app(text: str) -> Dict[str, Any]:
    """Median/average/min/max latency (ms), count and settings from benchmark_app's console output.

    benchmark_app prints latencies with two decimals in a unit it picks
    (`24.32 us`, `2.73 ms`); its JSON report rounds to 0.01 ms, so the console is the finer source.
    """
    stats = {m.group(1).lower(): float(m.group(2)) * _UNIT_TO_MS[m.group(3)] for m in _BA_STAT.finditer(text)}
    if "median" not in stats:
        tail = " | ".join(text.strip().splitlines()[-3:])
        raise BenchError(f"benchmark_app printed no median latency; its output ended: {tail}")
    count = _BA_COUNT.search(text)
    first = _BA_FIRST.search(text)
    settings = {m.group(1): _clean_setting(m.group(2)) for m in _BA_SETTING.finditer(text)}
    settings["precision"] = precision_name(settings.get("INFERENCE_PRECISION_HINT"))
    return {"median_ms": stats["median"], "mean_ms": stats.get("average"), "min_ms": stats.get("min"),
            "max_ms": stats.get("max"), "count": int(count.group(1)) if count else None,
            "first_inference_ms": float(first.group(1)) if first else None, "settings": settings}


_PRECISION_NAMES = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def precision_name(value: Optional[str]) -> Optional[str]:
    """OpenVINO's element type as the agent reports it ('f32', 'bf16'); benchmark_app prints 'float32'."""
    return _PRECISION_NAMES.get(value, value) if value else value


def _clean_setting(value: str) -> str:
    match = re.match(r"<Type: '(\w+)'>", value)
    return match.group(1) if match else value


_LR_STAT = re.compile(r"^Inference \((avg|median|min|max|std|p5|p95)\):\s+([0-9.]+) ms(?: \((\d+) runs\))?", re.M)
_LR_INIT = re.compile(r"^Model initialization:\s+([0-9.]+) ms", re.M)
_LR_THROUGHPUT = re.compile(r"^Throughput:\s+([0-9.]+) MB/s", re.M)


def parse_litert_benchmark(text: str, input_bytes: Optional[int] = None) -> Dict[str, Any]:
    """Median/avg/min/max latency (ms) and run count from litert-benchmark's results block.

    The tool prints milliseconds with two decimals: below about 1 ms its
    resolution (0.01 ms) is a large share of the value. Its throughput line,
    (input bytes / 2**20) / mean seconds with two decimals, carries the mean to
    about 0.1 % at any size: with `input_bytes` the mean comes from it
    (`mean_from_throughput_ms`).
    """
    stats, count = {}, None
    for m in _LR_STAT.finditer(text):
        stats[m.group(1)] = float(m.group(2))
        if m.group(3):
            count = int(m.group(3))
    if "median" not in stats:
        tail = " | ".join(text.strip().splitlines()[-3:])
        raise BenchError(f"litert-benchmark printed no median latency; its output ended: {tail}")
    init = _LR_INIT.search(text)
    throughput = _LR_THROUGHPUT.search(text)
    fine = (input_bytes / 2**20) / float(throughput.group(1)) * 1e3 \
        if input_bytes and throughput and float(throughput.group(1)) > 0 else None
    return {"median_ms": stats["median"], "mean_ms": fine if fine is not None else stats.get("avg"),
            "mean_from_throughput_ms": fine, "min_ms": stats.get("min"),
            "max_ms": stats.get("max"), "count": count, "init_ms": float(init.group(1)) if init else None}


def parse_agent_result(document: Dict[str, Any]) -> Dict[str, Any]:
    """The agent's own JSON result: median (p50) and mean of its timed iterations."""
    if document.get("status") != "ok":
        raise BenchError(f"the agent failed: {document.get('error_category')}: {document.get('error_message')}")
    latency = document.get("latency") or {}
    return {"median_ms": float(latency["p50_ms"]), "mean_ms": latency.get("mean_ms"), "count": latency.get("count"),
            "precision": document.get("precision"), "runtime": document.get("runtime"),
            "load_ms": document.get("load_ms")}


def median_ratio(agent_ms: List[float], vendor_ms: List[float]) -> Optional[float]:
    """Median of the agent's per-round medians over the vendor's; None without data."""
    if not agent_ms or not vendor_ms:
        return None
    vendor = statistics.median(vendor_ms)
    return statistics.median(agent_ms) / vendor if vendor > 0 else None


def paired_ratio(agent_ms: List[float], vendor_ms: List[float]) -> Optional[float]:
    """Median over rounds of agent/vendor within the round.

    The two runs of a round are seconds apart, so load that other processes
    put on a shared machine mostly hits both; the median then drops the
    rounds where it did not. This is the headline figure.
    """
    ratios = [a / v for a, v in zip(agent_ms, vendor_ms) if v > 0]
    return statistics.median(ratios) if ratios else None


# ---------------------------------------------------------------- running the tools
def tool_path(name: str) -> str:
    """A console script of this Python's environment (the wheels put them beside the interpreter)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    raise BenchError(f"{name} not found beside {sys.executable}; it ships in the "
                     f"{'openvino' if name == 'benchmark_app' else 'ai-edge-litert'} wheel: run `make venv`")


def _run(argv: List[str], what: str) -> tuple:
    started = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} ran past {TOOL_TIMEOUT_S:.0f}s: {' '.join(argv)}") from None
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise BenchError(f"{what} exited {proc.returncode}: {tail} (command: {' '.join(argv)})")
    return proc, wall


def run_benchmark_app(xml: Path, input_shape: tuple, threads: int, iterations: int,
                      precision: str = "f32") -> ToolRun:
    """benchmark_app, synchronous, one stream, `threads` threads, the model's own (dynamic) batch dimension.

    -data_shape keeps the model as the agent loads it (the IR from ONNX has a
    dynamic batch); -shape would reshape it to static, a different program.
    """
    argv = [tool_path("benchmark_app"), "-m", str(xml), "-d", "CPU", "-hint", "none", "-nstreams", "1",
            "-nthreads", str(threads), "-api", "sync", "-niter", str(iterations),
            "-data_shape", "[" + ",".join(str(d) for d in input_shape) + "]"]
    if precision:
        argv += ["-infer_precision", precision]
    proc, wall = _run(argv, "benchmark_app")
    parsed = parse_benchmark_app(proc.stdout + proc.stderr)
    return ToolRun("benchmark_app", parsed["median_ms"], parsed["mean_ms"], parsed["count"], wall, parsed["settings"])


def run_litert_benchmark(tflite: Path, threads: int, iterations: int, warmup: int,
                         input_bytes: Optional[int] = None) -> ToolRun:
    argv = [tool_path("litert-benchmark"), "--model", str(tflite), "--num_threads", str(threads),
            "--num_runs", str(iterations), "--warmup_runs", str(warmup)]
    proc, wall = _run(argv, "litert-benchmark")
    parsed = parse_litert_benchmark(proc.stdout, input_bytes)
    return ToolRun("litert-benchmark", parsed["median_ms"], parsed["mean_ms"], parsed["count"], wall,
                   {"api": "CompiledModel (XNNPACK)", "init_ms": parsed["init_ms"]})


def write_random_inputs(path: Path, input_shape: tuple, seed: int = 0, name: str = "input") -> Path:
    """One random sample of a single-input model, in the agent's feeds format (the agent matches the name,
    or by position when there is one input)."""
    import numpy as np
    from harness.agent.agent import FEEDS_KEY
    sample = np.random.RandomState(seed).uniform(-1, 1, (1,) + tuple(input_shape)).astype("float32")
    spec = [{"key": "f0", "name": name, "mode": "sample"}]
    np.savez(path, f0=sample, **{FEEDS_KEY: np.array(json.dumps(spec))})
    return path


def run_agent(model: Path, fmt: str, inputs: Path, threads: int, iterations: int, warmup: int,
              ov_precision: str = "", workdir: Optional[Path] = None) -> ToolRun:
    """The harness's device agent as the pipeline runs it (a child process), timing only, no output pass."""
    with tempfile.TemporaryDirectory(prefix="bench-agent-", dir=workdir) as tmp:
        result = Path(tmp) / "result.json"
        argv = [sys.executable, str(AGENT), "run", "--model", str(model), "--format", fmt, "--inputs", str(inputs),
                "--result", str(result), "--warmup", str(warmup), "--iterations", str(iterations),
                # the count decides, as for the vendor tool (the agent's own default also times for >= 1 s)
                "--min-duration", "0", "--threads", str(threads)]
        if ov_precision:  # a runtime configuration, as a target's `runtimes:` would give it
            argv += ["--runtime-config", json.dumps({"name": f"openvino-{ov_precision}",
                                                     "options": {"precision": ov_precision}})]
        started = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
        wall = time.perf_counter() - started
        if not result.exists():
            raise BenchError(f"the agent wrote no result (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
        parsed = parse_agent_result(json.loads(result.read_text()))
    return ToolRun("agent", parsed["median_ms"], parsed["mean_ms"], parsed["count"], wall,
                   {"runtime": parsed["runtime"], "precision": parsed["precision"], "load_ms": parsed["load_ms"]})


# ---------------------------------------------------------------- the comparison
@dataclass
class Pairing:
    """The agent against one vendor tool on one model file."""

    model: str
    fmt: str
    vendor_tool: str
    threads: int
    iterations: int
    precision: str
    agent_ms: List[float] = field(default_factory=list)
    vendor_ms: List[float] = field(default_factory=list)
    #: per round, each side's mean (ms): litert-benchmark's from its throughput line, 0.1 % steps
    agent_mean_ms: List[Optional[float]] = field(default_factory=list)
    vendor_mean_ms: List[Optional[float]] = field(default_factory=list)
    agent_settings: Dict[str, Any] = field(default_factory=dict)
    vendor_settings: Dict[str, Any] = field(default_factory=dict)
    error: str = ""
    note: str = ""

    @property
    def ratio(self) -> Optional[float]:
        return paired_ratio(self.agent_ms, self.vendor_ms)

    def to_dict(self) -> Dict[str, Any]:
        doc = asdict(self)
        doc["agent_median_ms"] = statistics.median(self.agent_ms) if self.agent_ms else None
        doc["vendor_median_ms"] = statistics.median(self.vendor_ms) if self.vendor_ms else None
        doc["ratio"] = self.ratio
        doc["ratio_of_medians"] = median_ratio(self.agent_ms, self.vendor_ms)
        doc["ratio_of_minima"] = (min(self.agent_ms) / min(self.vendor_ms)
                                  if self.agent_ms and self.vendor_ms and min(self.vendor_ms) > 0 else None)
        means = [(a, v) for a, v in zip(self.agent_mean_ms, self.vendor_mean_ms) if a and v]
        doc["ratio_of_means"] = paired_ratio([a for a, _ in means], [v for _, v in means]) if means else None
        doc["within_5_percent"] = None if self.ratio is None else abs(self.ratio - 1.0) <= 0.05
        doc["round_ratios"] = [a / v for a, v in zip(self.agent_ms, self.vendor_ms) if v > 0]
        # what each side actually computed in (the plugin's default is bf16 on CPUs with AVX-512 BF16)
        doc["precision_used"] = (f"{self.agent_settings.get('precision')}/{self.vendor_settings.get('precision')}"
                                 if self.fmt == "openvino" else "f32")
        return doc


def choose_iterations(per_inference_ms: float, target_s: float, low: int = 100, high: int = 50000) -> int:
    """Enough iterations for about target_s of timed work, within [low, high]."""
    if per_inference_ms <= 0:
        return high
    return int(min(high, max(low, round(target_s * 1e3 / per_inference_ms))))


def compare(model: BenchModel, fmt: str, rounds: int, threads: int, target_s: float, warmup: int = 10,
            precision: str = "f32", workdir: Optional[Path] = None,
            log: Callable[[str], None] = lambda s: None) -> Pairing:
    """Alternate the agent and the vendor tool for `rounds` rounds on one model file."""
    vendor_tool = "benchmark_app" if fmt == "openvino" else "litert-benchmark"
    pairing = Pairing(model.name, fmt, vendor_tool, threads, 0, precision if fmt == "openvino" else "f32",
                      note=model.note)
    path = model.files[fmt]
    try:
        with tempfile.TemporaryDirectory(prefix="bench-inputs-", dir=workdir) as tmp:
            inputs = write_random_inputs(Path(tmp) / "inputs.npz", model.input_shape)
            ov_precision = precision if fmt == "openvino" else ""
            probe = run_agent(path, fmt, inputs, threads, 20, warmup, ov_precision, workdir)
            pairing.iterations = choose_iterations(probe.median_ms, target_s)

            def agent() -> ToolRun:
                return run_agent(path, fmt, inputs, threads, pairing.iterations, warmup, ov_precision, workdir)

            def vendor() -> ToolRun:
                if fmt == "openvino":
                    return run_benchmark_app(path, model.input_shape, threads, pairing.iterations, precision)
                return run_litert_benchmark(path, threads, pairing.iterations, warmup,
                                            4 * math.prod(model.input_shape))  # one float32 input

            for r in range(rounds):
                order = (("agent", agent), ("vendor", vendor))
                for who, fn in order if r % 2 == 0 else order[::-1]:
                    run = fn()
                    (pairing.agent_ms if who == "agent" else pairing.vendor_ms).append(run.median_ms)
                    (pairing.agent_mean_ms if who == "agent" else pairing.vendor_mean_ms).append(run.mean_ms)
                    if who == "agent":
                        pairing.agent_settings = run.settings
                    else:
                        pairing.vendor_settings = run.settings
                log(f"  {model.name} {fmt} round {r + 1}/{rounds}: agent {pairing.agent_ms[-1]:.4f} ms, "
                    f"{vendor_tool} {pairing.vendor_ms[-1]:.4f} ms")
    except BenchError as exc:
        pairing.error = str(exc)
        log(f"  {model.name} {fmt}: {exc}")
    return pairing


def fidelity(models: List[BenchModel], rounds: int, threads: int, target_s: float,
             ov_precisions: tuple = ("f32",), workdir: Optional[Path] = None,
             log: Callable[[str], None] = lambda s: None) -> List[Pairing]:
    pairings = []
    for model in models:
        for fmt in ("tflite", "openvino"):
            if fmt not in model.files:
                continue
            for precision in (ov_precisions if fmt == "openvino" else ("f32",)):
                pairings.append(compare(model, fmt, rounds, threads, target_s, precision=precision,
                                        workdir=workdir, log=log))
    return pairings


def load_average() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
