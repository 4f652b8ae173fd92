"""The report as a person sees it: opened in headless Chromium at 1366x768, on three runs made here.

- the default local run (digits_cnn, reference, three formats, this CPU);
- a farm run with every variant on the three simulated devices;
- a run with failed, skipped, lost and noisy cells on two devices (rows written as the pipeline writes them).

Each run keeps a screenshot of its first screen as <run>/top-1366x768.png (under the test's reports directory).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from browser import Browser, chromium_path
from harness.report import write_report
from harness.schema.run_results import RunResults
from harness.schema.results import make_row, results_frame
from harness.schema.rundir import RunDir
from harness.schema.targets import Budgets, TargetSpec

VIEWPORT = (1366, 768)
SCREENSHOT = "top-1366x768.png"
MB = 1 << 20


@pytest.fixture(scope="module")
def browser():
    if chromium_path() is None:
        pytest.fail("chromium is not installed: `make system-deps` (apt-get install -y chromium) installs it",
                    pytrace=False)
    with Browser() as running:
        yield running


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    from harness.prepare.cache import ContentCache
    from harness.run.pipeline import run_profile
    from harness.run.plan import RunSettings
    from harness.schema.recipes import load_recipe
    from harness.schema.targets import load_target
    from helpers import ROOT, digits_build, session_cache_dir

    digits_build()
    outcome = run_profile([load_recipe("digits_cnn", ROOT / "models")], [load_target("local", ROOT / "targets")],
                          settings=RunSettings(warmup=2, iterations=20, min_duration_s=0.2, profile=False),
                          reports_dir=tmp_path_factory.mktemp("reports"), cache=ContentCache(session_cache_dir()))
    write_report(outcome)  # what `harness profile` does after the run (harness.commands.publish)
    return outcome.run_dir


@pytest.fixture(scope="module")
def farm_run(farm, tmp_path_factory):
    from harness.prepare.cache import ContentCache
    from harness.run.pipeline import run_profile
    from harness.run.plan import RunSettings
    from harness.schema.recipes import load_recipe
    from harness.schema.targets import load_target
    from helpers import ROOT, digits_build, session_cache_dir

    digits_build()
    recipe = load_recipe("digits_cnn", ROOT / "models")
    outcome = run_profile([recipe], [load_target(farm.target_file(n)) for n in farm.target_names],
                          variants={recipe.name: [v.name for v in recipe.variants]},
                          settings=RunSettings(warmup=2, iterations=20, min_duration_s=0.0, profile=False),
                          reports_dir=tmp_path_factory.mktemp("reports"), cache=ContentCache(session_cache_dir()))
    write_report(outcome)
    return outcome.run_dir


BROKEN_TARGETS = {"edge-a": TargetSpec(name="edge-a", budgets=Budgets(latency_p99_ms=5.0, peak_memory_mb=200.0)),
                  "edge-b": TargetSpec(name="edge-b", budgets=Budgets(latency_p99_ms=50.0, peak_memory_mb=300.0))}


def _row(run_id, variant, fmt, target, status="ok", category=None, message=None, noisy=False, precision=None,
         p99=2.0):
    ok = status == "ok"
    return make_row(run_id=run_id, cell_id=f"digits_cnn__{variant}__{fmt}__{target}", model="digits_cnn",
                    variant=variant, format=fmt, runtime_config=fmt, target=target, status=status,
                    accuracy=0.95 if ok else None, reference_accuracy=0.96 if ok else None,
                    accuracy_retention=0.95 / 0.96 if ok else None, primary_metric="accuracy" if ok else None,
                    primary_value=0.95 if ok else None, primary_retention=0.95 / 0.96 if ok else None,
                    top1_agreement=0.99 if ok else None, max_abs_diff=1e-6 if ok else None,
                    latency_p50_ms=p99 / 1.4 if ok else None, latency_p99_ms=p99 if ok else None,
                    peak_rss_bytes=80 * MB if ok else None, artifact_size_bytes=150_000, precision=precision,
                    noisy=noisy if ok else None,
                    noise_reasons="other processes kept 1.40 CPUs busy while timing (max 0.5): pip" if noisy else None,
                    error_category=category, error_message=message,
                    started_at="2026-12-01T10:00:00+00:00", duration_s=1.5)


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    """Failed (two causes, one with a many-line message), skipped (edge-b has no ONNX runtime), lost, noisy."""
    run_id = "run-broken"
    run = RunDir.create(run_id, tmp_path_factory.mktemp("reports"))
    rows = [
        _row(run_id, "reference", "tflite", "edge-a", noisy=True),
        _row(run_id, "reference", "onnx", "edge-a", noisy=True, p99=3.0),
        _row(run_id, "reference", "openvino", "edge-a", precision="bf16", p99=1.5),
        _row(run_id, "int8", "tflite", "edge-a", p99=0.9),
        _row(run_id, "int8", "onnx", "edge-a", "failed", "load_failed",
             "onnxruntime could not load /d/cache/ab12/model.onnx: ConvInteger(10) is not implemented\n"
             "  at onnxruntime/core/session/inference_session.cc:1534\n  stack frame 2\n  stack frame 3"),
        _row(run_id, "int8", "openvino", "edge-a", "failed", "conversion_failed",
             "OpenVINO conversion of digits_cnn/int8 failed: Cannot create QuantizeLinear layer"),
        _row(run_id, "reference", "tflite", "edge-b", noisy=True, p99=12.0),
        _row(run_id, "reference", "onnx", "edge-b", "skipped", "unsupported_on_target",
             "edge-b does not list runtime 'onnx'"),
        _row(run_id, "int8", "onnx", "edge-b", "skipped", "unsupported_on_target", "edge-b does not list runtime 'onnx'"),
        _row(run_id, "int8", "tflite", "edge-b", "lost", "device_lost", "edge-b went away while the cell ran"),
    ]
    reference = np.random.default_rng(0).normal(size=(50, 10))
    for row in rows:
        run.write_cell({"row": row, "latencies_ms": [row["latency_p50_ms"] or 0.0] * 20})
        if row["status"] == "ok":
            shift = 0.05 if row["precision"] == "bf16" else (0.2 if row["variant"] == "int8" else 0.0)
            np.savez(run.outputs_path(row["cell_id"]), output_0=reference + shift)
    runtimes = {"tflite": {"available": True, "module": "ai-edge-litert", "version": "2.3.0"},
                "onnx": {"available": True, "module": "onnxruntime", "version": "1.31.1"},
                "openvino": {"available": True, "module": "openvino", "version": "2026.4.1-22982-e213"}}
    for target, python, available in (("edge-a", "3.11.2", runtimes),
                                      ("edge-b", "3.8.10", {"tflite": runtimes["tflite"],
                                                            "onnx": {"available": False, "error": "No module named 'onnxruntime'"}})):
        run.write_device(target, {"python": python, "machine": "aarch64" if target == "edge-b" else "x86_64",
                                  "cpu_model": f"{target} CPU", "cpu_count": 4, "reachable": True,
                                  "mem_total_bytes": 4096 * MB, "runtimes": available,
                                  "conditions": {"loadavg": [0.5, 0.4, 0.3], "cpu_jiffies": {"busy": 10, "own": 2}}})
    run.write_tables(results_frame(run.rows()))
    write_report(RunResults.load(run), BROKEN_TARGETS)
    return run


RUNS = ["local_run", "farm_run", "broken_run"]


@pytest.fixture(params=RUNS)
def opened(request, browser):
    """(run directory, the report opened in a 1366x768 tab)."""
    run: RunDir = request.getfixturevalue(request.param)
    return run, browser.open(run.root / "index.html", *VIEWPORT)


def _frame(run: RunDir):
    import pandas as pd
    return pd.read_parquet(run.root / "results.parquet")


@pytest.mark.slow
def test_verdict_and_findings_are_on_the_first_screen_without_script_errors(opened):
    run, tab = opened
    tab.screenshot(run.root / SCREENSHOT)
    width, height = VIEWPORT
    boxes = tab.evaluate("""Array.from(document.querySelectorAll('#top .verdict, #findings, #findings li'))
        .map(e => { const r = e.getBoundingClientRect(); return [e.className, r.top, r.bottom, r.right]; })""")
    assert len(boxes) >= 3, boxes
    for name, top, bottom, right in boxes:
        assert 0 <= top and bottom <= height and right <= width, f"{name} lies outside the first screen: {boxes}"
    verdict = tab.evaluate("Array.from(document.querySelectorAll('#top .verdict')).map(e => e.textContent)")
    assert verdict[0].startswith("Gate: ") and verdict[1].startswith("Run: ")
    facts = tab.evaluate("document.querySelector('#top .run-facts').textContent")
    frame = _frame(run)
    for target in set(frame["target"]):
        assert target in facts
    assert "when " in facts and "measuring took " in facts
    assert tab.script_errors == []
    # every image came from beside the page and loaded: nothing from the network
    images = tab.evaluate("Array.from(document.images).map(i => [i.src, i.complete && i.naturalWidth > 0])")
    assert images and all(src.startswith("file://") and loaded for src, loaded in images), images
    assert (run.root / SCREENSHOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_findings_name_what_needs_attention(opened):
    run, tab = opened
    frame = _frame(run)
    lines = tab.evaluate("Array.from(document.querySelectorAll('#findings li')).map(e => e.textContent)")
    links = tab.evaluate("Array.from(document.querySelectorAll('#findings li a')).map(a => a.getAttribute('href'))")
    assert len(links) == len(lines) and all(tab.evaluate(f"!!document.getElementById('{h[1:]}')") for h in links)
    measured = frame[frame["status"] == "ok"]
    noisy = int(measured["noisy"].fillna(False).astype(bool).sum())
    if noisy:
        assert any(f"{noisy} of {len(measured)} measured cells were timed on a busy device" in line for line in lines)
    for target, group in frame[frame["status"] == "skipped"].groupby("target"):
        assert any(line.startswith(f"{target} has no ") and f"{len(group)} cell" in line for line in lines), lines
    not_run = frame[frame["status"].isin(["failed", "lost", "incompatible"])]
    if len(not_run):
        assert sum(int(re.match(r"(\d+) cells? ", line).group(1)) for line in lines
                   if re.match(r"\d+ cells? (failed|lost|could not run) on ", line)) == len(not_run)


@pytest.mark.slow
def test_devices_table_has_one_row_per_device(opened):
    run, tab = opened
    expected = set(_frame(run)["target"])
    rows = tab.evaluate("Array.from(document.querySelectorAll('#devices-table tbody tr')).map(r => r.cells[0].textContent)")
    assert sorted(rows) == sorted(expected)
    # the probe is behind a disclosure, as nested fields, never a Python dict literal
    assert tab.evaluate("document.querySelectorAll('#devices-table details > dl.probe').length") == len(expected)
    assert "{'" not in tab.evaluate("document.getElementById('devices').textContent")
    assert tab.evaluate("Array.from(document.querySelectorAll('#devices-table details')).every(d => !d.open)")


@pytest.mark.slow
def test_disagreements_one_line_per_cause_with_the_pairs_behind_it(opened):
    run, tab = opened
    causes = tab.evaluate("""Array.from(document.querySelectorAll('#parity li.cause')).map(li =>
        [li.querySelector('summary').textContent, li.querySelectorAll('tbody tr').length, li.querySelector('details').open])""")
    names = [summary.split(":")[0] for summary, _, _ in causes]
    assert len(names) == len(set(names)), names
    for summary, n_pairs, is_open in causes:
        assert re.search(rf": {n_pairs} pairs?\b", summary) and not is_open, summary
    frame = _frame(run)
    bf16 = frame[(frame["status"] == "ok") & (frame["precision"].astype(str).str.lower() == "bf16")]
    others = frame[(frame["status"] == "ok") & (frame["format"] != "openvino")]
    if len(bf16) and len(others):   # OpenVINO's bf16 default against f32 elsewhere: one line, however many pairs
        assert len([n for n in names if n.startswith("openvino (bf16)")]) == 1, names
    n_pairs = sum(n for _, n, _ in causes)
    if n_pairs > len(causes):
        assert len(causes) < n_pairs


def _column(tab, heading: str):
    return tab.evaluate(f"""(() => {{
        const heads = Array.from(document.querySelectorAll('#results-table thead th')).map(h => h.textContent);
        const col = heads.indexOf({heading!r});
        return Array.from(document.querySelectorAll('#results-table tbody tr')).filter(r => !r.hidden)
            .map(r => r.cells[col].getAttribute('data-v'));
    }})()""")


@pytest.mark.slow
def test_results_table_sorts_filters_and_keeps_identity_columns_in_view(opened):
    run, tab = opened
    frame = _frame(run)
    # the default view fits the screen; the first columns stay in view when more columns scroll
    assert tab.evaluate("(s => s.scrollWidth <= s.clientWidth)(document.querySelector('#results .scroll'))")
    tab.evaluate("""['latency', 'accuracy', 'runtime'].forEach(g =>
        document.querySelector(`#results button[data-group="${g}"]`).click())""")
    assert tab.evaluate("(s => s.scrollWidth > s.clientWidth)(document.querySelector('#results .scroll'))")
    shift = tab.evaluate("""(() => { const s = document.querySelector('#results .scroll');
        const cell = document.querySelector('#results-table tbody tr td.sticky:nth-child(5)');
        const before = cell.getBoundingClientRect().left; s.scrollLeft = 600;
        return [before, cell.getBoundingClientRect().left, s.scrollLeft]; })()""")
    assert shift[2] > 0 and abs(shift[0] - shift[1]) < 1, shift
    # sorting by p99: ascending, blanks last; again: descending
    tab.evaluate("Array.from(document.querySelectorAll('#results-table thead th')).find(h => h.textContent == 'p99 ms').click()")
    values = [float(v) for v in _column(tab, "p99 ms") if v]
    assert values == sorted(values) and len(values) == frame["latency_p99_ms"].notna().sum()
    assert _column(tab, "p99 ms")[len(values):] == [""] * (len(frame) - len(values))
    tab.evaluate("Array.from(document.querySelectorAll('#results-table thead th')).find(h => h.textContent == 'p99 ms').click()")
    values = [float(v) for v in _column(tab, "p99 ms") if v]
    assert values == sorted(values, reverse=True)
    # filtering by target, format and status, one after the other
    for column in ("target", "format", "status"):
        value = sorted(set(frame[column]))[-1]
        tab.evaluate(f"""(s => {{ s.value = {value!r}; s.dispatchEvent(new Event('change')); }})(
            document.querySelector('#results select[data-filter="{column}"]'))""")
        shown = _column(tab, column if column != "runtime_config" else "configuration")
        assert shown and set(shown) == {value}
        assert len(shown) == int((frame[column] == value).sum())
        assert tab.evaluate("document.getElementById('results-count').textContent") == f"{len(shown)} of {len(frame)} cells"
        tab.evaluate(f"""(s => {{ s.value = ''; s.dispatchEvent(new Event('change')); }})(
            document.querySelector('#results select[data-filter="{column}"]'))""")
    assert len(_column(tab, "target")) == len(frame)
    assert tab.script_errors == []


@pytest.mark.slow
def test_plots_come_first_with_accuracy_against_latency_and_are_shown_at_full_size(opened):
    from harness.report.plots import MIN_FONT_PT
    run, tab = opened
    images = tab.evaluate("""Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth,
        i.getBoundingClientRect().width])""")
    assert images[0][0] == "plots/pareto.png"
    body_px = float(tab.evaluate("getComputedStyle(document.body).fontSize")[:-2])
    for src, natural, shown in images:  # the smallest text of a plot, at the size it is shown, >= 80 % of body text
        assert MIN_FONT_PT * 100 / 72 * shown / natural >= 0.8 * body_px, (src, natural, shown)


@pytest.mark.slow
def test_energy_against_accuracy_sits_beside_latency_or_the_report_says_why_not(opened, browser):
    """The farm's simulated sensors measure energy on each device: a panel per device, right after the latency
    panels. This VM has no sensor (the local run) and the broken run's rows carry no reading: the section says so
    in the cells' words, with no empty plot."""
    run, tab = opened
    frame = _frame(run)
    images = tab.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
    order = [src for src, _ in images]
    text = tab.evaluate("document.querySelector('#energy').innerText")
    measured = set(frame.loc[frame["energy_mj_per_inference"].notna() & (frame["status"] == "ok"), "target"])
    if measured:
        assert order[:2] == ["plots/pareto.png", "plots/energy.png"], order
        assert all(width > 0 for src, width in images if src == "plots/energy.png"), "the PNG loaded"
    else:
        assert "plots/energy.png" not in order, "no empty plot"
    for target in sorted(set(frame["target"])):
        line = f"{target}: not measured"
        if target in measured:
            assert line not in text
            continue
        methods = [m for m in frame.loc[(frame["target"] == target) & (frame["status"] == "ok"), "energy_method"]
                   .dropna() if "not measured" in m]
        assert (f"{target}: {methods[0][methods[0].index('not measured'):]}" if methods else line) in text, text
    print(f"\n{run.root.name}: energy on {sorted(measured)}; section: {text[:600]}")
    section = browser.open(run.root / "index.html", 1366, 900, fragment="#energy")
    section.screenshot(run.root / "energy-1366x900.png")  # looked at by a person: docs/energy.md


@pytest.mark.slow
def test_a_farm_run_long_enough_to_measure_energy_draws_a_panel_per_device(farm, browser, tmp_path):
    """Each simulated device's sensor (harness.farm.sim_power) read over 1 s of timing per cell: energy on every
    device, so one panel per device and no reason listed; the section's screenshot is kept beside the report."""
    from harness.prepare.cache import ContentCache
    from harness.run.pipeline import run_profile
    from harness.run.plan import RunSettings
    from harness.schema.recipes import load_recipe
    from harness.schema.targets import load_target
    from helpers import ROOT, digits_build, session_cache_dir

    digits_build()
    recipe = load_recipe("digits_cnn", ROOT / "models")
    outcome = run_profile([recipe], [load_target(farm.target_file(n)) for n in farm.target_names],
                          variants={recipe.name: ["prune50"]},
                          settings=RunSettings(warmup=2, iterations=20, min_duration_s=1.0, profile=False),
                          reports_dir=tmp_path / "reports", cache=ContentCache(session_cache_dir()))
    write_report(outcome)
    frame = outcome.frame
    ok = frame[frame["status"] == "ok"]
    assert set(ok["target"]) == set(farm.target_names)
    assert ok["energy_mj_per_inference"].notna().all(), ok[["cell_id", "energy_method"]].to_string()
    tab = browser.open(outcome.run_dir.root / "index.html", 1366, 900, fragment="#energy")
    shot = tab.screenshot(outcome.run_dir.root / "energy-1366x900.png")
    print(f"\nscreenshot: {shot}")
    assert tab.evaluate("document.querySelector('#energy img').getAttribute('src')") == "plots/energy.png"
    assert tab.evaluate("document.querySelector('#energy img').naturalWidth") == 2 * 620, "two panels a row"
    assert "No energy figure" not in tab.evaluate("document.querySelector('#energy').innerText")
    assert tab.script_errors == []


def test_no_plot_text_is_smaller_than_the_minimum(tmp_path, monkeypatch):
    """Every text on every figure (ticks, labels, legends, annotations) is at least MIN_FONT_PT."""
    from matplotlib.text import Text

    from harness.report import plots
    sizes = {}
    real_save = plots._save

    def measuring_save(fig, path):
        fig.canvas.draw() if hasattr(fig.canvas, "draw") else None
        texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
        sizes[Path(path).name] = min(t.get_fontsize() for t in texts)
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", measuring_save)
    run = RunDir.create("run-fonts", tmp_path)
    for i, (variant, fmt, target) in enumerate([(v, f, t) for v in ("reference", "int8", "prune", "fp16", "distilled")
                                                for f in ("tflite", "onnx") for t in ("edge-a", "edge-b")]):
        row = _row("run-fonts", variant, fmt, target, p99=1.0 + i)
        if target == "edge-a":
            row.update(energy_mj_per_inference=0.4 + 0.05 * i, energy_method="rapl /sys/class/powercap")
        run.write_cell({"row": row, "latencies_ms": [1.0] * 20})
        np.savez(run.outputs_path(row["cell_id"]), output_0=np.eye(10)[np.arange(40) % 10] + 0.01 * i)
    run.write_tables(results_frame(run.rows()))
    write_report(RunResults.load(run), BROKEN_TARGETS)
    assert {"pareto.png", "energy.png", "memory.png", "parity_digits_cnn.png", "pairwise_digits_cnn.png"} <= set(sizes)
    assert min(sizes.values()) >= plots.MIN_FONT_PT, sizes


def test_budgets_are_drawn_only_where_they_fit_the_data(tmp_path):
    from harness.report.plots import budget_in_range
    assert budget_in_range(20.0, [5.0, 12.0]) and not budget_in_range(20.0, [0.02, 0.3])
    run = RunDir.create("run-budgets", tmp_path)
    # more cells than the results table alone shows well, so the memory bars are drawn too
    for variant in ("reference", "int8", "prune", "fp16", "distilled"):
        row = _row("run-budgets", variant, "tflite", "edge-b", p99=0.3)     # edge-b's budget is 50 ms
        run.write_cell({"row": row, "latencies_ms": [0.2] * 20})
    run.write_tables(results_frame(run.rows()))
    page = write_report(RunResults.load(run), BROKEN_TARGETS).read_text()
    assert "p99 budgets not drawn, far beyond the data: edge-b 50 ms (slowest cell 0.3 ms)" in page
    assert "budgets not drawn, far beyond the largest cell (80 MB): edge-b 300 MB" in page
