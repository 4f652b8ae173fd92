"""reports/history/index.html: one small plot per nightly series, change points marked, the noise band shaded.

Each plot is one cell key (model, variant, format, runtime configuration, target) with its three latency
figures as lines (median solid, mean dashed, p90 dotted) over the recorded runs. A vertical line marks each
change point of any of them (red: a regression, grey: another change), and the band around the median is the
noise of each segment between change points (its median +- 2 robust standard deviations of the run-level
medians). Memory, primary-figure and energy change points are listed under the plot. Plots with a regression come
first. The page is plain HTML with inline SVG: no script, no file beside it, readable offline.

Every run rewrites the page, but a series' card (its change points and plot) is made again only when its
points changed: cards are kept under history/cards/ by a digest of what they show, so a run redraws the
series it added a point to, and a long history's other series cost a file read each.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from harness.core.files import atomic_write_text
from harness.judge.trends import (LATENCY_TREND_FIGURES, Trend, build_trends, describe_detectability,
                                  find_change_points, series_label, trend_detectability)
from harness.report.elements import esc

TRENDS_DIR = "history"
#: the kept series cards, beside the page (the page never refers to them: each is inlined)
CARDS_DIR = "cards"
WIDTH, HEIGHT, PAD = 300, 110, 6
LINE_STYLES = {"median": "", "mean": ' stroke-dasharray="5 3"', "p90": ' stroke-dasharray="1 2"'}

_CSS = """
body{font:13px system-ui,sans-serif;margin:16px;color:#222}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(310px,1fr));gap:10px}
figure.series{margin:0;border:1px solid #ccc;border-radius:4px;padding:6px;background:#fff}
figure.series.regressed{border:2px solid #c0392b}
figcaption{font-size:12px;line-height:1.3}
figcaption .value{color:#555}
ul.changes{margin:2px 0 0 16px;padding:0;font-size:11px}
li.regression{color:#c0392b}
.legend{font-size:12px;color:#555}
.detectable{font-size:11px;color:#555}
svg .band{fill:#3b7dd8;opacity:.15}
svg .median,svg .mean,svg .p90{fill:none;stroke:#3b7dd8;stroke-width:1.5}
svg line.change-point{stroke:#999;stroke-width:1.5;stroke-dasharray:3 2}
svg line.change-point.regression{stroke:#c0392b;stroke-width:2}
svg circle.left-out{fill:#e67e22}
"""


def _x(i: int, n: int) -> float:
    return PAD + (WIDTH - 2 * PAD) * (i / max(n - 1, 1))


def _plot(latency: Dict[str, Trend]) -> str:
    """Inline SVG of one cell key's latency figures: lines, the median's noise band, change points."""
    median = latency.get("median") or next(iter(latency.values()))
    runs = [p.run_id for p in median.points]
    n = len(runs)
    index = {r: i for i, r in enumerate(runs)}
    values = [p.value for t in latency.values() for p in t.used if p.value]
    if not values:
        return ""
    low, high = min(values), max(values)
    low, high = (low * 0.97, high * 1.03) if high > low else (low * 0.9, high * 1.1)

    def y(v: float) -> float:
        return PAD + (HEIGHT - 2 * PAD) * (1 - (v - low) / (high - low))

    parts: List[str] = []
    # the noise band: each segment of the median's used runs, its median +- 2 robust SDs of log value
    used = median.used
    bounds = [0] + [c.index for c in median.change_points] + [len(used)]
    for a, b in zip(bounds, bounds[1:]):
        seg = np.log([p.value for p in used[a:b]])
        if len(seg) == 0:
            continue
        centre = float(np.median(seg))
        spread = 1.4826 * float(np.median(np.abs(seg - centre))) if len(seg) > 2 else 0.0
        top = [(_x(index[p.run_id], n), y(min(high, math.exp(centre + 2 * spread)))) for p in used[a:b]]
        bottom = [(_x(index[p.run_id], n), y(max(low, math.exp(centre - 2 * spread)))) for p in used[a:b]]
        if len(top) == 1:  # one run: a sliver, so a lone segment still shows
            top = [(top[0][0] - 2, top[0][1]), (top[0][0] + 2, top[0][1])]
            bottom = [(bottom[0][0] - 2, bottom[0][1]), (bottom[0][0] + 2, bottom[0][1])]
        points = " ".join(f"{px:.1f},{py:.1f}" for px, py in top + bottom[::-1])
        parts.append(f'<polygon class="band" points="{points}"><title>noise band: median '
                     f'{math.exp(centre):.4g} ms +- {2 * spread:.1%}</title></polygon>')
    for figure, trend in latency.items():
        pts = [(_x(index[p.run_id], n), y(p.value)) for p in trend.used if p.run_id in index]
        if pts:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
            parts.append(f'<polyline class="{figure}" points="{path}"{LINE_STYLES.get(figure, "")}>'
                         f"<title>{esc(figure)}</title></polyline>")
    for p in median.points:  # noisy and unjudged runs: shown, never used
        if p.status != "ok" and p.value and low <= p.value <= high:
            parts.append(f'<circle class="left-out" cx="{_x(index[p.run_id], n):.1f}" cy="{y(p.value):.1f}" r="2.5">'
                         f"<title>{esc(p.run_id)}: {esc(p.status)}, not used</title></circle>")
    for trend in latency.values():
        for c in trend.change_points:
            if c.run_id not in index:
                continue
            x = _x(index[c.run_id], n) - (WIDTH - 2 * PAD) / max(n - 1, 1) / 2
            kind = "change-point regression" if c.regression else "change-point"
            parts.append(f'<line class="{kind}" data-figure="{esc(c.figure)}" x1="{x:.1f}" x2="{x:.1f}" y1="{PAD}" '
                         f'y2="{HEIGHT - PAD}"><title>{esc(c.describe())}</title></line>')
    return (f'<svg width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">'
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fafafa"/>{"".join(parts)}</svg>')


@dataclass(frozen=True)
class Card:
    """One series' figure on the page, with what the page sorts and counts by."""

    label: str
    regressed: bool
    regressions: int
    html: str


def series_card(figures: Mapping[str, Trend]) -> Card:
    """The card of one cell key from its trends, which carry their change points (find_change_points)."""
    key = next(iter(figures.values())).key
    latency = {f: figures[f] for f in LATENCY_TREND_FIGURES if f in figures}
    changes = [c for t in figures.values() for c in t.change_points]
    regressions = sum(c.regression for c in changes)
    label = series_label(key, "latency").rsplit(":", 1)[0]
    newest = latency.get("median")
    last = f"{newest.used[-1].value:.4g} ms median, {len(newest.used)} runs" if newest and newest.used else ""
    detectable = describe_detectability({f: trend_detectability(t) for f, t in latency.items()}) if latency else ""
    items = "".join(f'<li class="{"regression" if c.regression else "change"}">{esc(c.describe())}</li>'
                    for c in changes)
    html = (f'<figure class="series{" regressed" if regressions else ""}" data-series="{esc(label)}" '
            f'data-change-points="{len(changes)}">{_plot(latency) if latency else ""}'
            f'<figcaption><b>{esc(label)}</b> <span class="value">{esc(last)}</span>'
            f'{f"<br><span class=detectable>{esc(detectable)}</span>" if detectable else ""}'
            f'{f"<ul class=changes>{items}</ul>" if items else ""}</figcaption></figure>')
    return Card(label, regressions > 0, regressions, html)


def _source_digest() -> str:
    # the code that finds change points and draws a card: a card kept by an older harness is made again
    from harness.judge import trends
    digest = hashlib.sha256()
    for path in (Path(__file__), Path(trends.__file__)):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def card_digest(figures: Mapping[str, Trend], alpha: Optional[float], source: str) -> str:
    """What a card shows depends on: the series' points (run, value, status, gate verdict) per figure, the change
    points' significance level, and the code."""
    doc = {"alpha": alpha, "source": source, "key": list(next(iter(figures.values())).key),
           "figures": {f: [[p.run_id, p.value, p.status, p.gate_status] for p in t.points]
                       for f, t in sorted(figures.items())}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


class CardStore:
    """The cards of the last page, one JSON file per digest under history/cards/."""

    def __init__(self, folder: Path):
        self.folder = folder

    def get(self, digest: str) -> Optional[Card]:
        try:
            return Card(**json.loads((self.folder / f"{digest}.json").read_text()))
        except (OSError, ValueError, TypeError):  # not kept, or unreadable: made again
            return None

    def put(self, digest: str, card: Card) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / f"{digest}.json", json.dumps(asdict(card)))

    def keep_only(self, digests: Set[str]) -> None:
        """Remove the cards the page no longer shows (their series gained a point, or went)."""
        for path in self.folder.glob("*.json"):
            if path.stem not in digests:
                path.unlink(missing_ok=True)


def trend_page_html(cards: Sequence[Card], where: str) -> str:
    """The page: the cards, those with a regression first, then by label."""
    ordered = sorted(cards, key=lambda c: (not c.regressed, c.label))
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Nightly trends</title>'
            f"<style>{_CSS}</style></head><body><h1>Nightly trends</h1>"
            f"<p>{len(cards)} series from {esc(where)}, {sum(c.regressions for c in cards)} regression change "
            f"point(s) &middot; generated {generated}</p><p class=legend>median solid, mean dashed, p90 dotted; "
            f"shaded: the median's noise band per segment (&plusmn;2 robust SD); vertical lines: change points (red: "
            f"regression); orange dots: noisy or unjudged runs, not used. Hover for values.</p>"
            f'<div class="grid">{"".join(c.html for c in ordered) or "<p>No runs recorded yet.</p>"}</div>'
            f"</body></html>\n")


def write_trend_page(store, reports_dir: Path | str, alpha: Optional[float] = None) -> Path:
    """reports/history/index.html from every series in the history store; only the cards of series whose points
    changed since the last page are made again."""
    kwargs = {} if alpha is None else {"alpha": alpha}
    by_key: Dict[Tuple[str, ...], Dict[str, Trend]] = {}
    for t in build_trends(store.trend_figure_cells()):
        by_key.setdefault(t.key, {})[t.figure] = t
    path = Path(reports_dir) / TRENDS_DIR / "index.html"
    kept = CardStore(path.parent / CARDS_DIR)
    source = _source_digest()
    cards, digests = [], set()
    for figures in by_key.values():
        digest = card_digest(figures, alpha, source)
        card = kept.get(digest)
        if card is None:
            card = series_card({f: find_change_points(t, **kwargs) for f, t in figures.items()})
            kept.put(digest, card)
        cards.append(card)
        digests.add(digest)
    kept.keep_only(digests)
    atomic_write_text(path, trend_page_html(cards, store.where))
    return path
