"""The run report: index.html with its PNG images, and summary.md, for healthy and broken runs."""
from __future__ import annotations

import argparse
import struct
import time
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from harness.commands import report as report_command
from harness.report import write_report
from harness.schema.run_results import RunResults
from harness.schema.results import make_row, results_frame
from harness.schema.rundir import RunDir
from harness.schema.targets import Budgets, TargetSpec

MB = 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TARGETS = {"local": TargetSpec(name="local", budgets=Budgets(latency_p99_ms=20.0, peak_memory_mb=600.0)),
           "pi4": TargetSpec(name="pi4", budgets=Budgets(latency_p99_ms=50.0, peak_memory_mb=300.0))}


class Page(HTMLParser):
    """Collects what a reader's browser would fetch, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.images, self.links, self.scripts, self.ids, self.text = [], [], 0, set(), []
        self.script_sources = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in ("link", "a") and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "script":
            self.scripts += 1
            if attrs.get("src"):
                self.script_sources.append(attrs["src"])
        if attrs.get("id"):
            self.ids.add(attrs["id"])

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def assert_valid_png(path: Path) -> None:
    """Signature, an IHDR with a real size, every chunk's CRC, and IEND; then decode it."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    offset, chunks = 8, []
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind, body = data[offset + 4:offset + 8], data[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"{path}: bad CRC in {kind!r}"
        chunks.append(kind)
        offset += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 200 and height >= 150
    import matplotlib.image
    assert matplotlib.image.imread(path).shape[:2] == (height, width)


def cell_row(run_id, variant, fmt, target, status="ok", p99=4.0, mem_mb=150.0, accuracy=0.95, max_abs=1e-6):
    ok = status == "ok"
    return make_row(run_id=run_id, cell_id=f"digits_cnn__{variant}__{fmt}__{target}", model="digits_cnn",
                    variant=variant, format=fmt, target=target, status=status,
                    accuracy=accuracy if ok else None, reference_accuracy=0.95 if ok else None,
                    accuracy_retention=accuracy / 0.95 if ok else None, top1_agreement=0.99 if ok else None,
                    max_abs_diff=max_abs if ok else None, cosine_similarity=0.9999 if ok else None,
                    latency_p99_ms=p99 if ok else None, latency_p50_ms=p99 / 1.3 if ok else None,
                    peak_rss_bytes=mem_mb * MB if ok else None,
                    error_category=None if ok else "conversion",
                    error_message=None if ok else "op <Gather> not supported & no fallback")


def write_run(reports: Path, run_id: str, specs, outputs: bool = True) -> RunDir:
    run = RunDir.create(run_id, reports)
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(60, 10))
    for spec in specs:
        row = cell_row(run_id, **spec)
        run.write_cell({"row": row, "latencies_ms": [row["latency_p50_ms"] or 0.0] * 20})
        if outputs and row["status"] == "ok":
            np.savez(run.outputs_path(row["cell_id"]), output_0=reference + row["max_abs_diff"] * 0.9)
    run.write_device("local", {"python": "3.11.2", "machine": "x86_64", "cpu_model": "Test CPU", "cpu_count": 2,
                               "mem_total_bytes": 24 * 1024 * MB, "cpu_governor": "performance",
                               "runtimes": {"onnx": {"available": True, "module": "onnxruntime", "version": "1.31.1"},
                                            "tflite": {"available": False, "error": "no tflite runtime"}}})
    run.write_tables(results_frame(run.rows()))
    return run


MIXED = [dict(variant="reference", fmt="onnx", target="local"),
         dict(variant="reference", fmt="tflite", target="local", p99=3.0),
         dict(variant="reference", fmt="openvino", target="local", p99=6.0, max_abs=2e-3),
         dict(variant="int8", fmt="tflite", target="local", p99=2.0, accuracy=0.93, max_abs=0.3),
         dict(variant="reference", fmt="onnx", target="pi4", p99=60.0, mem_mb=400.0),
         dict(variant="reference", fmt="tflite", target="pi4", status="failed")]


def test_report_has_every_section_and_valid_images(tmp_path):
    run = write_run(tmp_path, "run-mixed", MIXED)
    started = time.monotonic()
    index = write_report(RunResults.load(run), TARGETS)
    assert time.monotonic() - started < 10.0
    assert index == run.root / "index.html"
    page = parse(index)
    assert {"devices", "results", "scores", "recommendations", "parity", "pareto", "memory", "failures"} <= page.ids
    assert page.scripts == 1 and page.script_sources == []                  # one inline script, nothing fetched
    # works offline: in-page links, and the history's trend page beside the runs
    assert all(link.startswith("#") or link == "../history/index.html" for link in page.links), page.links
    srcs = set(page.images)
    assert srcs == {"plots/parity_digits_cnn.png", "plots/pairwise_digits_cnn.png", "plots/pareto.png",
                    "plots/memory.png"}
    assert page.images[0] == "plots/pareto.png"                              # accuracy against latency comes first
    for src in srcs:
        assert_valid_png(run.root / src)
    text = " ".join(page.text)
    assert "Test CPU" in text and "onnxruntime 1.31.1" in text and "tflite: none" in text
    assert "op <Gather> not supported & no fallback" in text                 # escaped in the source ...
    assert "op &lt;Gather&gt; not supported &amp; no fallback" in index.read_text()
    assert "NONE FITS" in text and "closest miss: p99 60.00 ms > 50 ms (+20%)" in text
    assert "digits_cnn__reference__onnx__local" in text                      # cells that disagree
    assert "max abs diff 1.80e-03 > 0.0001" in text


def test_markdown_summary_for_ci_logs(tmp_path):
    run = write_run(tmp_path, "run-mixed", MIXED)
    write_report(RunResults.load(run), TARGETS)
    summary = (run.root / "summary.md").read_text()
    assert summary.startswith("## Run run-mixed\n\n**Run: ❌ CELLS FAILED: 1 of 6 cell(s)")   # the verdict first
    assert "6 cells: 1 failed, 5 ok." in summary
    assert "| digits_cnn | int8 |" in summary and "| local | digits_cnn | reference/tflite |" in summary
    assert "### Failures (1)" in summary
    assert "**pi4**: 1 cell(s)" in summary and "| 1: digits_cnn/reference/tflite | failed | conversion |" in summary
    assert summary.index("### Failures") < summary.index("### Portability scores")


def test_markdown_groups_failures_by_device_not_one_line_per_cell(tmp_path):
    specs = [dict(variant=v, fmt=f, target="pi4", status="failed") for v in ("reference", "int8")
             for f in ("onnx", "tflite")] + [dict(variant="reference", fmt="onnx", target="local")]
    run = write_run(tmp_path, "run-down", specs)
    write_report(RunResults.load(run), TARGETS)
    summary = (run.root / "summary.md").read_text()
    assert "**pi4**: 4 cell(s)" in summary
    assert summary.count("Gather> not supported") == 1, "one line for four cells with the same message"
    assert "| 4: digits_cnn/int8/onnx, digits_cnn/int8/tflite, digits_cnn/reference/onnx, " in summary


def test_gate_puts_its_verdict_and_regressions_with_intervals_at_the_top_of_the_summary(tmp_path):
    from harness.judge.gate import Check, GateResult
    from harness.report import write_summary
    run = write_run(tmp_path, "run-gated", MIXED)
    write_report(RunResults.load(run), TARGETS)
    result = GateResult("run-gated", "p.yaml", "night1", (
        Check("local", "max_latency_regression", "digits_cnn__reference__onnx__local", False,
              "median 0.02 -> 0.022 ms (+10.0%, 95% CI +6.1%..+14.0%, p=0.0003; noise: history)"),
        Check("local", "cell_status", "digits_cnn__reference__tflite__local", True, "ok")))
    summary = write_summary(RunResults.load(run), result, tmp_path).read_text()
    assert summary.startswith("## Run run-gated\n\n**Gate: ❌ FAIL**: 1 violation(s)")
    assert summary.index("### Latency regressions (1)") < summary.index("### Failures")
    assert "+10.0%, 95% CI +6.1%..+14.0%" in summary


def test_report_when_every_cell_failed(tmp_path):
    specs = [dict(variant="reference", fmt=f, target="local", status="failed") for f in ("onnx", "tflite")]
    run = write_run(tmp_path, "run-failed", specs)
    page = parse(write_report(RunResults.load(run), TARGETS))
    assert "plots/pairwise_digits_cnn.png" not in page.images
    for src in page.images:
        assert_valid_png(run.root / src)
    text = " ".join(page.text)
    assert "none fits; no cell ran (failed)" in text and text.count("op <Gather> not supported") >= 2
    assert "### Failures (2)" in (run.root / "summary.md").read_text()


def test_report_of_a_run_with_no_cells(tmp_path):
    run = RunDir.create("run-empty", tmp_path)
    page = parse(write_report(RunResults.load(run), None, targets_dir=tmp_path / "no-targets"))
    assert page.images == [] and "The run has no cells." in " ".join(page.text)


def test_rewriting_a_report_drops_stale_images(tmp_path):
    run = write_run(tmp_path, "run-mixed", MIXED)
    write_report(RunResults.load(run), TARGETS)
    (run.root / "plots" / "pareto_gone.png").write_bytes(PNG_SIGNATURE)
    write_report(RunResults.load(run), TARGETS)
    assert not (run.root / "plots" / "pareto_gone.png").exists()


def test_unknown_target_budget_is_noted_not_fatal(tmp_path):
    run = write_run(tmp_path, "run-mixed", MIXED[:1], outputs=False)
    index = write_report(RunResults.load(run), None, targets_dir=tmp_path / "no-targets")
    text = " ".join(parse(index).text)
    # `local` is built in (issue 31): its budgets stand where no targets/local.yaml is
    assert "local: the run did not record its budgets" in text and "the built-in local target's used" in text
    assert "No cell kept its outputs" in text


def test_report_command_writes_and_prints(tmp_path, capsys):
    write_run(tmp_path, "run-mixed", MIXED)
    parser = argparse.ArgumentParser()
    report_command.register(parser.add_subparsers())
    args = parser.parse_args(["report", "latest", "--reports-dir", str(tmp_path), "--markdown"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "## Run run-mixed" in out and out.strip().endswith("run-mixed/index.html")


def test_report_scores_against_the_budgets_recorded_in_the_run(tmp_path):
    """After the target file changed (or `make farm-down` removed it), the run keeps the budgets it ran under."""
    from dataclasses import asdict

    from harness.report import build_context, recorded_budgets
    run = write_run(tmp_path, "run-recorded", MIXED)
    specs = [asdict(TargetSpec(name="local", budgets=Budgets(latency_p99_ms=2.5, peak_memory_mb=600.0))),
             asdict(TargetSpec(name="pi4", budgets=Budgets(latency_p99_ms=80.0, peak_memory_mb=900.0)))]
    run.write_manifest({"run_id": "run-recorded", "target_specs": specs})
    ctx = build_context(RunResults.load(run), TARGETS, tmp_path / "no-targets")
    assert ctx.budgets["local"].latency_p99_ms == 2.5 and ctx.budgets["pi4"].peak_memory_mb == 900.0
    assert ctx.budget_notes == []
    assert recorded_budgets({"target_specs": [{"name": "x", "budgets": {"latency_p99_ms": "fast"}}, "junk"]}) == {}


def test_summary_says_which_cells_were_measured_on_a_noisy_device(tmp_path):
    run = RunDir.create("run-noisy", tmp_path)
    for fmt, noisy in (("onnx", True), ("tflite", False)):
        row = dict(cell_row("run-noisy", variant="reference", fmt=fmt, target="local"), noisy=noisy,
                   noise_reasons="other processes kept 1.40 CPUs busy while timing (max 0.5): pip" if noisy else None)
        run.write_cell({"row": row, "latencies_ms": [1.0] * 20})
    run.write_tables(results_frame(run.rows()))
    write_report(RunResults.load(run), TARGETS)
    summary = (run.root / "summary.md").read_text()
    assert "**⚠️ 1 cell(s) measured on a busy or throttling device**" in summary
    assert "other processes kept 1.40 CPUs busy while timing" in summary
