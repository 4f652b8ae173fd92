"""reports/history/index.html: one small plot per series, change points marked, the noise band, offline; rendered
in headless Chromium."""
from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from harness.history.store import History
from harness.report.trends_page import write_trend_page
from harness.schema.results import make_row


def _record_nights(store: History, nights: int = 20, shift_from: int = 14) -> None:
    """Three cell keys; the onnx one gets 15 % slower from night `shift_from` on, night 5 is noisy."""
    rng = np.random.default_rng(0)
    for night in range(nights):
        rows, samples = [], {}
        for fmt, base in (("tflite", 2.0), ("onnx", 3.0), ("openvino", 4.0)):
            level = base * float(np.exp(rng.normal(0, 0.015))) * (1.15 if fmt == "onnx" and night >= shift_from else 1)
            cell = f"m__reference__{fmt}__local"
            rows.append(make_row(run_id=f"n{night:02d}", cell_id=cell, model="m", variant="reference", format=fmt,
                                 target="local", status="ok", threads=1, peak_rss_bytes=100 * 2 ** 20,
                                 primary_value=0.95, noisy=(night == 5)))
            samples[cell] = level * rng.lognormal(0, 0.05, 200)
        store.record(f"n{night:02d}", rows, samples)


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list = []

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))


def test_the_trend_page_has_one_plot_per_series_with_change_points_and_noise_band(tmp_path):
    store = History(tmp_path / "h.sqlite")
    _record_nights(store)
    page = write_trend_page(store, tmp_path / "reports")
    assert page == tmp_path / "reports" / "history" / "index.html"
    text = page.read_text()
    parser = _Elements()
    parser.feed(text)
    figures = [a for t, a in parser.found if t == "figure"]
    assert len(figures) == 3 and sum("regressed" in a["class"] for a in figures) == 1
    assert figures[0]["data-series"].startswith("m / reference / onnx on local")  # the regression comes first
    marks = [a for t, a in parser.found if t == "line" and "change-point" in a.get("class", "")]
    assert marks and all("regression" in a["class"] for a in marks)
    assert sum(t == "polygon" and a.get("class") == "band" for t, a in parser.found) >= 4  # a band per segment
    assert sum(t == "circle" and a.get("class") == "left-out" for t, a in parser.found) == 3  # noisy night 5
    assert "at run n14" in text
    # offline: nothing to fetch, no script to fail
    assert "<script" not in text and not re.search(r'(src|href)="(https?:)?//', text)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_the_trend_page_renders_in_headless_chromium(tmp_path):
    store = History(tmp_path / "h.sqlite")
    _record_nights(store)
    page = write_trend_page(store, tmp_path / "reports")
    common = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('<figure class="series') == 3 and dom.stdout.count("change-point regression") >= 1
    assert "Uncaught" not in dom.stderr
    shot = tmp_path / "trends.png"
    subprocess.run([*common, "--window-size=1000,700", f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120)
    assert shot.exists() and shot.stat().st_size > 5000


def test_a_run_redraws_only_the_series_it_changed(tmp_path, monkeypatch):
    """Cards are kept by a digest of their points: a new night of one cell key remakes that card alone, and a
    gate verdict recorded for an old run (a point's status) remakes the cards it shows in."""
    from harness.report import trends_page

    store = History(tmp_path / "h.sqlite")
    _record_nights(store, nights=8, shift_from=99)
    reports = tmp_path / "reports"
    made: list = []
    original = trends_page.series_card
    monkeypatch.setattr(trends_page, "series_card", lambda figures: made.append(
        next(iter(figures.values())).key[2]) or original(figures))
    first = write_trend_page(store, reports).read_text()
    assert sorted(made) == ["onnx", "openvino", "tflite"]
    made.clear()
    write_trend_page(store, reports)  # nothing recorded since: every card is reused
    assert made == []
    rows = [make_row(run_id="n08", cell_id="m__reference__onnx__local", model="m", variant="reference",
                     format="onnx", target="local", status="ok", threads=1, peak_rss_bytes=100 * 2 ** 20,
                     primary_value=0.95)]
    store.record("n08", rows, {"m__reference__onnx__local": 3.0 * np.random.default_rng(1).lognormal(0, 0.05, 200)})
    page = write_trend_page(store, reports).read_text()
    assert made == ["onnx"]
    assert first.count("<figure") == page.count("<figure") == 3 and "8 runs" in page  # night 5 is noisy, not used
    assert len(list((reports / "history" / "cards").glob("*.json"))) == 3  # the onnx card's old digest is gone
    made.clear()
    store.mark_gate("n03", None, judged=False)  # night 3 of every series is now shown as not judged
    write_trend_page(store, reports)
    assert sorted(made) == ["onnx", "openvino", "tflite"]
