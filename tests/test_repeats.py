"""Repeats on the local target: independent agent runs per cell, interleaved across cells, with their spread."""
import json

import pytest

from harness.prepare.cache import ContentCache
from harness.run.measurement import combine_repeats
from harness.run.pipeline import run_profile
from harness.run.plan import RunSettings
from harness.schema.recipes import load_recipe
from harness.schema.targets import QuietLimits, load_target
from helpers import ROOT, digits_build, session_cache_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    digits_build()
    return run_profile([load_recipe("digits_cnn", ROOT / "models")], [load_target("local", ROOT / "targets")],
                       settings=RunSettings(warmup=2, iterations=20, min_duration_s=0.2, repeats=3),
                       reports_dir=tmp_path_factory.mktemp("reports"), cache=ContentCache(session_cache_dir()))


def test_every_cell_carries_three_repeats_and_their_spread(outcome):
    frame = outcome.frame
    assert (frame["status"] == "ok").all(), frame[["format", "error_message"]]
    assert list(frame["repeats"]) == [3, 3, 3]
    assert frame["latency_repeat_cv"].notna().all() and (frame["latency_repeat_cv"] < 1.0).all()
    assert (frame["timed_s"] >= 3 * 0.2).all(), "each repeat timed for at least min_duration_s"
    assert frame["noisy"].notna().all(), "every cell was judged quiet or noisy from the agent's readings"
    samples = outcome.latency_samples()
    for cell in frame["cell_id"]:
        record = json.loads(outcome.run_dir.cell_path(cell).read_text())
        assert len(record["repeat_latencies_ms"]) == 3 == len(record["conditions"])
        assert len(samples[cell]) == 3, "the regression judge gets each repeat apart"
        assert sum(map(len, record["repeat_latencies_ms"])) == len(record["latencies_ms"])


def test_repeats_are_interleaved_across_the_cells_of_a_device(outcome):
    """A B C A B C: each repeat round covers every cell before the next round starts."""
    agent_dir = outcome.run_dir.root / "agent"
    cells = list(outcome.frame["cell_id"])
    finished = {(cell, k): (agent_dir / (f"{cell}.json" if k == 1 else f"{cell}.repeat{k}.json")).stat().st_mtime
                for cell in cells for k in (1, 2, 3)}
    for k in (1, 2):
        assert max(finished[(c, k)] for c in cells) < min(finished[(c, k + 1)] for c in cells)


def test_combining_repeats_is_pure_and_flags_a_noisy_repeat():
    quiet = {"before": {"monotonic_s": 0, "clk_tck": 100, "cpu_jiffies": {"busy": 0, "own": 0}},
             "after": {"monotonic_s": 1, "clk_tck": 100, "cpu_jiffies": {"busy": 100, "own": 100}}}
    busy = {"before": quiet["before"], "after": {**quiet["after"], "cpu_jiffies": {"busy": 250, "own": 100}}}
    docs = [{"latencies_ms": [1.0] * 20, "timed_iterations": 20, "timed_s": 1.0, "block_size": 1,
             "conditions": quiet},
            {"latencies_ms": [1.1] * 20, "timed_iterations": 40, "timed_s": 1.0, "block_size": 2,
             "conditions": busy}]
    row, extras = combine_repeats(docs, QuietLimits())
    assert row["repeats"] == 2 and row["timed_iterations"] == 60 and row["block_size"] == 2
    assert row["latency_repeat_cv"] == pytest.approx(0.0674, abs=1e-3)
    assert row["noisy"] is True and row["noise_reasons"].startswith("repeat 2: other processes kept 1.50 CPUs")
    assert extras["repeat_latencies_ms"] == [[1.0] * 20, [1.1] * 20] and len(extras["latencies_ms"]) == 40
    one, extras = combine_repeats(docs[:1], QuietLimits())
    assert one["noisy"] is False and one["latency_repeat_cv"] is None and "repeat_latencies_ms" not in extras
    assert combine_repeats([{"latencies_ms": [1.0] * 20}])[0]["noisy"] is None, "an old agent reads nothing"
