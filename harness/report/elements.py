"""HTML pieces every report section uses: escaping, number formatting, tables."""
from __future__ import annotations

import html
from typing import Any, Iterable, Mapping, Sequence

from harness.judge.scores import BYTES_PER_MB


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN and pandas NA
    except (TypeError, ValueError):
        return False


def fmt(value: Any, column: str = "") -> str:
    """A cell's text: bytes as MB, fractions with 4 digits, blanks for missing."""
    if _is_missing(value):
        return ""
    if column.endswith("_bytes"):
        return f"{float(value) / BYTES_PER_MB:.1f} MB"
    if isinstance(value, float):
        if value == 0 or (1e-3 <= abs(value) < 1e5):
            return f"{value:.4g}"
        return f"{value:.2e}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] | None = None,
          row_classes: Sequence[str] | None = None, cell_classes: Mapping[int, str] | None = None) -> str:
    """An escaped HTML table; values are strings already formatted."""
    numeric = numeric or [False] * len(headers)
    out = ['<div class="wrap"><table><thead><tr>', *(f"<th>{esc(h)}</th>" for h in headers), "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        klass = f' class="{esc(row_classes[i])}"' if row_classes else ""
        out.append(f"<tr{klass}>")
        for j, value in enumerate(row):
            classes = (["num"] if numeric[j] else []) + ([cell_classes[j]] if cell_classes and j in cell_classes else [])
            attr = f' class="{" ".join(classes)}"' if classes else ""
            out.append(f"<td{attr}>{esc(value)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)
