"""The report's PNG images, drawn with matplotlib's Agg renderer.

Figures are built from `matplotlib.figure.Figure` directly, never through
pyplot, so no global state or display backend is touched and the report can
be written from any thread or headless machine. Each function writes one PNG
and returns its path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from harness.schema.results import OK
from harness.core.numbers import finite_or_none
from harness.judge.scores import BYTES_PER_MB, PairParity, accuracy_measure, pareto_front
from harness.schema.targets import Budgets

_PNG_META = {"Software": None}  # no version string: identical inputs give identical files
_DPI = 100
#: the smallest text on any plot, in points: at 100 dpi shown 1:1 that is 13.9 px, over 80 % of the page's 16 px
MIN_FONT_PT = 10.0
#: above this many cells the between-cells heatmap shows (configuration, target) groups instead of cells
MAX_PAIRWISE_CELLS = 16
#: a budget line is drawn when it lies within this factor of the data's largest value (else it squashes the data)
BUDGET_RANGE_FACTOR = 3.0


def budget_in_range(budget: float, values: Sequence[float], factor: float = BUDGET_RANGE_FACTOR) -> bool:
    """Whether a budget line fits the plotted data's range (drawing it would not squash the data)."""
    finite = [v for v in values if v == v]
    return bool(finite) and budget <= factor * max(finite)


def _figure(width_in: float, height_in: float):
    from matplotlib.figure import Figure
    return Figure(figsize=(width_in, height_in), dpi=_DPI, layout="constrained")


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata=_PNG_META)
    return path




def parity_heatmap(table: Any, model: str, path: Path) -> Path:
    """Cells (variant/format) x targets, coloured by top-1 agreement with the reference.

    Each square also prints the cosine similarity and max abs difference; a
    cell that did not run is grey with its status.
    """
    sub = table[table["model"] == model]
    rows = sorted({f"{v}/{f}" for v, f in zip(sub["variant"], sub["format"])})
    cols = sorted(set(sub["target"]))
    values = np.full((len(rows), len(cols)), np.nan)
    labels: Dict[Tuple[int, int], str] = {}
    for rec in sub.to_dict(orient="records"):
        i, j = rows.index(f"{rec['variant']}/{rec['format']}"), cols.index(rec["target"])
        top1 = finite_or_none(rec.get("top1_agreement"))
        if rec.get("status") == OK and top1 is not None:
            values[i, j] = top1
            cos, mad = finite_or_none(rec.get("cosine_similarity")), finite_or_none(rec.get("max_abs_diff"))
            labels[(i, j)] = (f"{top1:.1%}\ncos {cos:.4f}" if cos is not None else f"{top1:.1%}") + \
                             (f"\n|d| {mad:.1e}" if mad is not None else "")
        else:
            labels[(i, j)] = str(rec.get("status"))
    fig = _figure(max(6.0, 1.9 * len(cols) + 3.5), max(2.4, 0.75 * len(rows) + 1.6))
    ax = fig.add_subplot()
    import matplotlib
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="#cccccc")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.9, vmax=1.0, aspect="auto")
    for (i, j), text in labels.items():
        ax.text(j, i, text, ha="center", va="center", fontsize=MIN_FONT_PT)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_title(f"{model}: top-1 agreement\nwith the reference", fontsize=10)
    fig.colorbar(image, ax=ax, label="top-1 agreement (clipped at 90 %)")
    return _save(fig, path)


def _short(cell_id: str) -> str:
    """model__variant__format__target -> variant/format@target (the title names the model)."""
    parts = cell_id.split("__")
    return f"{parts[1]}/{parts[2]}@{parts[3]}" if len(parts) == 4 else cell_id


def pairwise_heatmap(pairs: Sequence[PairParity], cells: Sequence[str], path: Path, title: str,
                     group_of: Mapping[str, str] | None = None) -> Path:
    """Top-1 agreement between every two cells' outputs. Above MAX_PAIRWISE_CELLS cells, and with `group_of`
    (cell id -> e.g. 'configuration@target'), one square per two groups instead: the worst pair of cells of the
    same variant between them."""
    labels = [_short(c) for c in cells]
    index = {c: i for i, c in enumerate(cells)}
    if group_of and len(cells) > MAX_PAIRWISE_CELLS:
        labels = sorted({group_of.get(c, _short(c)) for c in cells})
        index = {c: labels.index(group_of.get(c, _short(c))) for c in cells}
        title += " (worst pair per group)"
    grouped = len(labels) < len(cells)
    matrix = np.full((len(labels), len(labels)), np.nan)
    if not grouped:
        np.fill_diagonal(matrix, 1.0)
    for pair in pairs:
        if grouped and pair.cell_a.split("__")[1:2] != pair.cell_b.split("__")[1:2]:
            continue  # groups are compared variant by variant: a variant's own accuracy is not a disagreement
        if pair.cell_a in index and pair.cell_b in index:
            a, b = index[pair.cell_a], index[pair.cell_b]
            matrix[a, b] = matrix[b, a] = np.fmin(matrix[a, b], pair.top1_agreement)  # fmin skips the NaN start
    size = max(4.0, 0.6 * len(labels) + 3.0)
    fig = _figure(size + 1.5, size)
    ax = fig.add_subplot()
    import matplotlib
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=matplotlib.colormaps["RdYlGn"].with_extremes(bad="#eeeeee"),
                      vmin=0.9, vmax=1.0)
    if len(labels) <= 12:
        for a in range(len(labels)):
            for b in range(len(labels)):
                if matrix[a, b] == matrix[a, b]:
                    ax.text(b, a, f"{matrix[a, b]:.1%}", ha="center", va="center", fontsize=MIN_FONT_PT)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=MIN_FONT_PT)
    ax.set_yticks(range(len(labels)), labels, fontsize=MIN_FONT_PT)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="top-1 agreement")
    return _save(fig, path)


def _cell_label(rec: Mapping[str, Any]) -> str:
    return f"{rec.get('model')}/{rec.get('variant')}/{rec.get('format')}"


def _accuracy_points(rows: Sequence[Mapping[str, Any]], x_column: str
                     ) -> Tuple[List[Tuple[float, float]], List[str], str]:
    """(x, accuracy) of the ok cells that have both, their names, and the y axis's label."""
    points: List[Tuple[float, float]] = []
    names: List[str] = []
    ylabel = "accuracy"
    for rec in rows:
        x = finite_or_none(rec.get(x_column))
        if rec.get("status") != OK or x is None:
            continue  # a failed or skipped cell has no accuracy: it says nothing about the axis
        accuracy = finite_or_none(rec.get("accuracy"))
        if accuracy is None:
            accuracy, source = accuracy_measure(rec)
            ylabel = "accuracy (top-1 agreement\nwhere no labels)"
        if accuracy is not None:
            points.append((x, accuracy))
            names.append(f"{rec.get('variant')}/{rec.get('format')}")
    return points, names, ylabel


def _draw_front(ax: Any, points: Sequence[Tuple[float, float]], names: Sequence[str], empty: str) -> None:
    """The cells as points, the Pareto front (less x, more accuracy) red, stepped and named."""
    if points:
        xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
        front = pareto_front(points)
        on_front = np.zeros(len(points), dtype=bool)
        on_front[front] = True
        ax.scatter(xs[~on_front], ys[~on_front], color="#7f7f7f", label="cell", zorder=3)
        ax.scatter(xs[on_front], ys[on_front], color="#d62728", label="Pareto front", zorder=4)
        ax.step(xs[front], ys[front], where="post", color="#d62728", alpha=0.6, zorder=2)
        for k in front:  # the front's cells are the choices; naming every cell makes the panel unreadable
            ax.annotate(names[k], (xs[k], ys[k]), textcoords="offset points", xytext=(5, 5 if k % 2 == 0 else -13),
                        fontsize=MIN_FONT_PT)
    else:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, fontsize=MIN_FONT_PT)


def _draw_accuracy_latency(ax: Any, rows: Sequence[Mapping[str, Any]], target: str, budget: Budgets,
                           emulated: bool) -> None:
    points, names, ylabel = _accuracy_points(rows, "latency_p99_ms")
    _draw_front(ax, points, names, "no cell ran on this target")
    if not emulated and budget_in_range(budget.latency_p99_ms, [p[0] for p in points]):
        ax.axvline(budget.latency_p99_ms, color="#1f77b4", linestyle="--",
                   label=f"p99 budget {budget.latency_p99_ms:g} ms")
    ax.set_xlabel("p99 latency (ms)" + (" under emulation:\nnot representative" if emulated else ""))
    ax.set_ylabel(ylabel)
    ax.set_title(target + (" (emulated)" if emulated else ""))
    ax.grid(True, alpha=0.3)
    if points:
        ax.legend(loc="lower right", fontsize=MIN_FONT_PT)


def accuracy_vs_latency(rows: Sequence[Mapping[str, Any]], target: str, budget: Budgets, path: Path,
                        emulated: bool = False) -> Path:
    """Accuracy against p99 latency of the ok cells on one target, with the Pareto front and the budget
    (no budget line on an emulated target, whose latency is not representative)."""
    fig = _figure(7.0, 4.5)
    _draw_accuracy_latency(fig.add_subplot(), rows, target, budget, emulated)
    return _save(fig, path)


def accuracy_vs_latency_by_target(rows: Sequence[Mapping[str, Any]], budgets: Mapping[str, Budgets], path: Path,
                                  emulated: Sequence[str] = ()) -> Path:
    """One panel per target (two per row): accuracy against p99 latency, the Pareto front's cells named, the
    p99 budget where it fits the panel's range."""
    targets = sorted(budgets)
    columns = 1 if len(targets) == 1 else 2
    n_rows = max(1, -(-len(targets) // columns))
    fig = _figure(6.2 * columns, 4.2 * n_rows)
    for k, target in enumerate(targets):
        ax = fig.add_subplot(n_rows, columns, k + 1)
        _draw_accuracy_latency(ax, [r for r in rows if str(r.get("target")) == target], target, budgets[target],
                               target in emulated)
    return _save(fig, path)


def energy_vs_accuracy_by_target(rows: Sequence[Mapping[str, Any]], budgets: Mapping[str, Budgets],
                                  targets: Sequence[str], path: Path) -> Path:
    """One panel per target (two per row), beside the latency panels: accuracy against energy per inference
    (mJ above idle, docs/energy.md) of the ok cells that measured it, the Pareto front's cells named, the
    target's energy budget where it fits the panel's range. Only `targets`: those where some cell measured it."""
    columns = 1 if len(targets) == 1 else 2
    n_rows = max(1, -(-len(targets) // columns))
    fig = _figure(6.2 * columns, 4.2 * n_rows)
    for k, target in enumerate(targets):
        ax = fig.add_subplot(n_rows, columns, k + 1)
        points, names, ylabel = _accuracy_points([r for r in rows if str(r.get("target")) == target],
                                                 "energy_mj_per_inference")
        _draw_front(ax, points, names, "no cell measured energy on this target")
        budget = budgets.get(target, Budgets()).energy_mj
        if budget is not None and budget_in_range(budget, [p[0] for p in points]):
            ax.axvline(budget, color="#2ca02c", linestyle="--", label=f"energy budget {budget:g} mJ")
        ax.set_xlabel("energy per inference above idle (mJ)")
        ax.set_ylabel(ylabel)
        ax.set_title(target)
        ax.grid(True, alpha=0.3)
        if points:
            ax.legend(loc="best", fontsize=MIN_FONT_PT)  # where it hides the fewest cells
    return _save(fig, path)


def memory_per_cell(rows: Sequence[Mapping[str, Any]], budgets: Mapping[str, Budgets], path: Path) -> Path:
    """Peak RSS of every ok cell as horizontal bars, with each target's memory budget."""
    measured = [(f"{_cell_label(r)} @ {r.get('target')}", float(r["peak_rss_bytes"]) / BYTES_PER_MB,
                 str(r.get("target"))) for r in rows
                if r.get("status") == OK and finite_or_none(r.get("peak_rss_bytes")) is not None]
    targets = sorted({t for _, _, t in measured})
    import matplotlib
    palette = matplotlib.colormaps["tab10"]
    colours = {t: palette(i % 10) for i, t in enumerate(targets)}
    fig = _figure(9.0, min(60.0, max(2.5, 0.3 * len(measured) + 1.5)))
    ax = fig.add_subplot()
    if measured:
        ys = np.arange(len(measured))
        ax.barh(ys, [m for _, m, _ in measured], color=[colours[t] for _, _, t in measured])
        ax.set_yticks(ys, [n for n, _, _ in measured], fontsize=MIN_FONT_PT)
        ax.invert_yaxis()
        for target in targets:
            budget = budgets.get(target, Budgets()).peak_memory_mb
            if budget_in_range(budget, [m for _, m, _ in measured]):
                ax.axvline(budget, color=colours[target], linestyle="--", label=f"{target} budget {budget:g} MB")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=MIN_FONT_PT)
    else:
        ax.text(0.5, 0.5, "no cell measured memory", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("peak RSS (MB = 2**20 bytes)")
    ax.set_title("peak memory per cell")
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)
