"""A run is read once: `harness profile` hands the results it collated to the summary, the report and the history
without reading them back; `harness gate` and `harness report` load a run directory once."""
from collections import Counter

import pandas as pd
import pytest

from harness.cli import main
from harness.schema.rundir import RunDir

pytestmark = pytest.mark.slow


@pytest.fixture
def counted(monkeypatch):
    """How often the run's manifest, its cell records and its parquet table are read."""
    reads: Counter = Counter()
    read_manifest, iter_cells, read_parquet = RunDir.read_manifest, RunDir.iter_cells, pd.read_parquet

    def count(name, original):
        def reading(*args, **kwargs):
            reads[name] += 1
            return original(*args, **kwargs)
        return reading

    monkeypatch.setattr(RunDir, "read_manifest", count("manifest", read_manifest))
    monkeypatch.setattr(RunDir, "iter_cells", count("cells", iter_cells))
    monkeypatch.setattr(pd, "read_parquet", count("parquet", read_parquet))
    return reads


def test_profile_then_gate_read_the_run_once_each(tmp_path, monkeypatch, counted):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))  # digits_cnn trains in about a second
    reports, history = tmp_path / "reports", tmp_path / "history.sqlite"
    code = main(["profile", "-t", "local", "--formats", "onnx", "--warmup", "1", "--iterations", "5",
                 "--min-duration", "0", "--max-samples", "20", "--no-profile", "--run-id", "once",
                 "--reports-dir", str(reports), "--history", str(history), "-q"])
    assert code == 0
    assert (reports / "once" / "index.html").exists() and (reports / "once" / "results.parquet").exists()
    # the manifest it wrote is handed to collation, not read back; the cells are read once, the parquet never
    assert counted == Counter({"cells": 1}), counted

    counted.clear()
    policy = tmp_path / "policy.yaml"
    policy.write_text("defaults:\n  max_latency_p99_ms: 1000\n")
    assert main(["gate", "--run", "once", "--policy", str(policy), "--reports-dir", str(reports),
                 "--history", str(history)]) in (0, 2)
    assert counted == Counter({"manifest": 1, "cells": 1}), counted

    counted.clear()
    assert main(["report", "once", "--reports-dir", str(reports)]) == 0
    assert counted == Counter({"manifest": 1, "cells": 1}), counted
