"""End to end on the default target: build, convert, run the agent as a process, collate."""
import json

import pandas as pd
import pytest

from harness.cli import main
from harness.run.pipeline import run_profile
from harness.run.plan import RunSettings
from harness.schema.recipes import load_recipe
from harness.schema.results import COLUMNS
from harness.schema.targets import load_target
from helpers import ROOT, digits_build, session_cache_dir
from harness.prepare.cache import ContentCache

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    digits_build()  # trains into the session cache once
    return run_profile([load_recipe("digits_cnn", ROOT / "models")], [load_target("local", ROOT / "targets")],
                       settings=RunSettings(warmup=2, iterations=20, min_duration_s=0.3),
                       reports_dir=tmp_path_factory.mktemp("reports"), cache=ContentCache(session_cache_dir()))


def test_one_row_per_format_all_measured(outcome):
    frame = outcome.frame
    assert sorted(frame["format"]) == ["onnx", "openvino", "tflite"]
    assert (frame["status"] == "ok").all(), frame[["format", "error_message"]]
    assert set(frame["target"]) == {"local"} and set(frame["variant"]) == {"reference"}
    assert outcome.missing == []


def test_results_table_columns_and_units(outcome):
    frame = outcome.frame
    assert list(frame.columns) == COLUMNS
    assert all(c in frame for c in ("latency_p50_ms", "latency_p99_ms", "peak_rss_bytes", "artifact_size_bytes"))
    for _, row in frame.iterrows():
        # milliseconds, not seconds or microseconds: a tiny CNN runs in well under 50 ms and above 100 ns
        assert 1e-4 < row["latency_p50_ms"] <= row["latency_p99_ms"] < 50
        assert row["latency_min_ms"] <= row["latency_p50_ms"] <= row["latency_max_ms"]
        # bytes: a Python process with a runtime is tens of MiB
        assert 20 * 2**20 < row["peak_rss_bytes"] < 4 * 2**30
        # at least 20 iterations and 0.3 s: a ~20 us model runs thousands, in blocks that keep the timer under 1 %
        assert row["timed_iterations"] > 1000 and row["timed_s"] >= 0.3 and row["warmup_iterations"] == 2
        assert row["block_size"] >= 1 and row["repeats"] == 1
        assert len(row["artifact_sha256"]) == 64 and row["artifact_size_bytes"] > 10_000
        assert 0.9 < row["accuracy"] <= 1 and 0.9 < row["accuracy_retention"] <= 1.1
        assert row["runtime_version"] and row["python_version"] and row["numpy_version"]
    fp32 = frame[frame["format"] != "openvino"]  # OpenVINO may compute in bf16 by default: a real difference
    assert (fp32["top1_agreement"] == 1.0).all() and (fp32["max_abs_diff"] < 1e-3).all()


def test_tables_written_and_cells_recorded(outcome):
    root = outcome.run_dir.root
    csv = pd.read_csv(root / "results.csv")
    parquet = pd.read_parquet(root / "results.parquet")
    assert list(csv.columns) == COLUMNS and list(parquet.columns) == COLUMNS and len(parquet) == 3
    assert json.loads((root / "results.json").read_text())[0]["model"] == "digits_cnn"
    cell = json.loads(next((root / "cells").glob("*onnx*")).read_text())
    assert len(cell["latencies_ms"]) * cell["row"]["block_size"] == cell["row"]["timed_iterations"]
    assert cell["operators"]["Conv"] == 2
    assert (root / "devices" / "local.json").exists()


def test_second_profile_converts_nothing_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    args = ["profile", "--iterations", "5", "--warmup", "1", "--reports-dir", str(tmp_path / "r"), "--no-report"]
    assert main(args) == 0
    first = capsys.readouterr().err
    assert "building reference model" in first and "converting keras to onnx" in first
    assert main(args) == 0
    second = capsys.readouterr()
    assert "training" not in second.err and "converting" not in second.err
    assert "all 3 artifacts reused, nothing converted" in second.err
    assert "3 cells: 3 ok" in second.out
