"""The benchmark's pure core against captured output of the real tools, and a smoke run of the tools themselves.

The samples in tests/data/bench/ are unedited console output of
benchmark_app (OpenVINO 2026.4.1) and litert-benchmark (ai-edge-litert 2.3.0)
and an agent result, captured on this machine (paths shortened).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness.bench import report
from harness.bench.memory import run_controller
from harness.bench.overhead import agent_time_from_documents, process_wall_from_log
from harness.bench.vendor import (
    BenchError,
    Pairing,
    choose_iterations,
    median_ratio,
    paired_ratio,
    parse_agent_result,
    parse_benchmark_app,
    parse_litert_benchmark,
    run_agent,
    run_benchmark_app,
    run_litert_benchmark,
    write_random_inputs,
)

DATA = Path(__file__).parent / "data" / "bench"


def test_benchmark_app_microsecond_latencies_are_read_as_milliseconds():
    parsed = parse_benchmark_app((DATA / "benchmark_app_digits.txt").read_text())
    assert parsed["median_ms"] == pytest.approx(0.02432)
    assert parsed["mean_ms"] == pytest.approx(0.14749)
    assert parsed["max_ms"] == pytest.approx(7.35798)
    assert parsed["count"] == 200
    assert parsed["first_inference_ms"] == pytest.approx(15.55)
    assert parsed["settings"]["INFERENCE_PRECISION_HINT"] == "float32"
    assert parsed["settings"]["precision"] == "f32"  # named as the agent names it
    assert parsed["settings"]["INFERENCE_NUM_THREADS"] == "1"
    assert parsed["settings"]["NUM_STREAMS"] == "1"


def test_benchmark_app_millisecond_latencies():
    parsed = parse_benchmark_app((DATA / "benchmark_app_convnet.txt").read_text())
    assert (parsed["median_ms"], parsed["mean_ms"], parsed["min_ms"], parsed["count"]) == (2.73, 3.77,
                                                                                         parsed["min_ms"], 100)
    assert 0 < parsed["min_ms"] <= parsed["median_ms"] <= parsed["max_ms"]


def test_benchmark_app_error_output_is_a_clear_error():
    text = "[ ERROR ] Input image is dynamic. Provide data shapes!\nException: Input image is dynamic."
    with pytest.raises(BenchError, match="no median latency.*dynamic"):
        parse_benchmark_app(text)


def test_litert_benchmark_results_block():
    parsed = parse_litert_benchmark((DATA / "litert_benchmark_convnet.txt").read_text())
    assert (parsed["median_ms"], parsed["mean_ms"], parsed["min_ms"], parsed["max_ms"]) == (3.08, 3.10, 2.95, 3.83)
    assert parsed["count"] == 100
    assert parsed["init_ms"] == 3.11


def test_litert_benchmark_prints_too_coarsely_for_the_digits_model():
    # 0.01 ms resolution: a ~10 µs model reads as 0.01 ms, which is why the bench adds a bigger model.
    parsed = parse_litert_benchmark((DATA / "litert_benchmark_digits.txt").read_text())
    assert parsed["median_ms"] == 0.01 and parsed["count"] == 200
    with pytest.raises(BenchError):
        parse_litert_benchmark("Model loaded\n")


def test_agent_result_median_is_its_p50():
    document = json.loads((DATA / "agent_result_convnet.json").read_text())
    parsed = parse_agent_result(document)
    assert parsed["median_ms"] == document["latency"]["p50_ms"]
    assert parsed["count"] == len(document["latencies_ms"]) == 100
    with pytest.raises(BenchError, match="load_failed"):
        parse_agent_result({"status": "error", "error_category": "load_failed", "error_message": "bad file"})


def test_ratio_is_median_over_median_and_pairing_flags_5_percent():
    assert median_ratio([1.0, 1.2, 1.1], [1.0, 1.0, 2.0]) == pytest.approx(1.1)
    assert median_ratio([], [1.0]) is None
    # paired: round by round, so a load spike that hits both runs of a round cancels
    assert paired_ratio([1.0, 2.0, 1.1], [1.0, 2.0, 0.5]) == pytest.approx(1.0)
    pairing = Pairing("m", "tflite", "litert-benchmark", 1, 100, "f32", agent_ms=[1.04, 1.0], vendor_ms=[1.0, 1.0])
    doc = pairing.to_dict()
    assert doc["ratio"] == pytest.approx(1.02) and doc["within_5_percent"] is True
    assert doc["ratio_of_minima"] == pytest.approx(1.0)
    assert doc["round_ratios"] == pytest.approx([1.04, 1.0])
    assert Pairing("m", "tflite", "x", 1, 1, "f32", [1.2], [1.0]).to_dict()["within_5_percent"] is False


def test_choose_iterations_targets_a_duration_within_bounds():
    assert choose_iterations(5.0, 1.0) == 200
    assert choose_iterations(0.001, 1.0) == 50000   # a ~1 us model: capped, still ~50 ms of timed work
    assert choose_iterations(100.0, 1.0) == 100


def test_agent_time_counts_timed_parts_and_estimates_the_rest():
    docs = [{"status": "ok", "load_ms": 100.0, "first_inference_ms": 10.0, "latencies_ms": [1.0, 2.0, 3.0],
             "warmup_iterations": 10, "n_output_samples": 5},
            {"status": "error"}]
    timed, untimed = agent_time_from_documents(docs)
    assert timed == pytest.approx(0.116)
    assert untimed == pytest.approx(0.030)  # (10 warm-up + 5 outputs) x the 2 ms median


def test_process_wall_log_sums_per_command():
    text = "100.0 101.5 run\n200.0 200.25 probe\n300.0 300.5 run\nbroken\n"
    assert process_wall_from_log(text) == pytest.approx({"run": 2.0, "probe": 0.25})


def test_markdown_shows_errors_and_ratios():
    pairing = Pairing("m", "openvino", "benchmark_app", 1, 100, "", agent_ms=[2.0], vendor_ms=[2.0]).to_dict()
    failed = Pairing("m", "tflite", "litert-benchmark", 1, 0, "f32", error="litert-benchmark exited 1").to_dict()
    doc = {"machine": report.machine(), "settings": {}, "fidelity": [pairing, failed], "notes": ["a note"]}
    text = report.markdown(doc)
    row = ("| m | openvino | benchmark_app | default (None/None) | 1 | 100 | 1 | 2.0000 | 2.0000 | "
           "1.000 | 1.000 | 1.000 |")
    assert row in text
    assert "error: litert-benchmark exited 1" in text and "- a note" in text


def test_controller_peak_memory_is_recorded_for_a_real_command():
    run = run_controller(["models"])
    assert run.exit_code == 0, run.stdout_tail
    assert "digits_cnn" in run.stdout_tail
    # A Python process with the harness imported: tens of MiB, and its own peak is at most the tree's.
    assert 10 * 2**20 < run.controller_peak_rss_bytes < 2**31
    assert run.tree_max_rss_bytes >= run.controller_peak_rss_bytes * 0.95


def test_vendor_tools_and_agent_run_on_a_real_model(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from helpers import artifact_for

    tflite, openvino = Path(artifact_for("tflite").files[0]), Path(artifact_for("openvino").files[0])
    shape = (1, 8, 8, 1)
    lite = run_litert_benchmark(tflite, threads=1, iterations=20, warmup=2)
    assert lite.count == 20 and lite.median_ms >= 0
    ov = run_benchmark_app(openvino, shape, threads=1, iterations=20, precision="f32")
    assert ov.count == 20 and 0 < ov.median_ms < 100
    inputs = write_random_inputs(tmp_path / "in.npz", shape)
    agent = run_agent(openvino, "openvino", inputs, threads=1, iterations=20, warmup=2, ov_precision="f32")
    assert agent.count == 20 and 0 < agent.median_ms < 100
    assert agent.settings["precision"] == ov.settings["precision"] == "f32"
    with pytest.raises(BenchError, match="benchmark_app exited"):
        run_benchmark_app(tmp_path / "missing.xml", shape, threads=1, iterations=2)


def test_litert_benchmark_mean_comes_from_its_throughput_line_at_0_1_percent():
    """The digits model's 0.01 ms avg is 25.29 MB/s of one 8x8x1 float32 input: 9.65 µs; the ConvNet's 3.10 ms
    avg is 15.12 MB/s of 64x64x3 float32, 3.100 ms, the two figures agreeing where both are fine enough."""
    digits = parse_litert_benchmark((DATA / "litert_benchmark_digits.txt").read_text(), input_bytes=8 * 8 * 4)
    assert digits["mean_ms"] == digits["mean_from_throughput_ms"] == pytest.approx(256 / 2**20 / 25.29 * 1e3)
    convnet = parse_litert_benchmark((DATA / "litert_benchmark_convnet.txt").read_text(), input_bytes=64 * 64 * 3 * 4)
    assert convnet["mean_ms"] == pytest.approx(3.10, rel=0.002)
    assert parse_litert_benchmark((DATA / "litert_benchmark_digits.txt").read_text())["mean_ms"] == 0.01
