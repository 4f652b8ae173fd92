"""The report's energy view: which targets measured energy per inference (docs/energy.md), and for the others,
why not, in the cells' own words ("not measured: no power sensor found: ..."). Pure: rows in, words out."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

from harness.core.numbers import finite_or_none
from harness.report.elements import esc
from harness.schema.results import OK

NOT_MEASURED = "not measured"


def measured_targets(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    """The targets where at least one ok cell has an energy per inference, sorted."""
    return sorted({str(r.get("target")) for r in rows
                   if r.get("status") == OK and finite_or_none(r.get("energy_mj_per_inference")) is not None})


def not_measured_reasons(rows: Sequence[Mapping[str, Any]]) -> Dict[str, List[str]]:
    """For each target where no ok cell has an energy figure: why, each distinct reason once, in the cells' words
    (the "not measured: ..." part of energy_method), or what the rows show where they say nothing."""
    measured = set(measured_targets(rows))
    reasons: Dict[str, List[str]] = {}
    for target in sorted({str(r.get("target")) for r in rows} - measured):
        cells = [r for r in rows if str(r.get("target")) == target]
        ok = [r for r in cells if r.get("status") == OK]
        found: List[str] = []
        for row in ok:
            method = str(row.get("energy_method") or "")
            at = method.find(NOT_MEASURED)
            reason = method[at:] if at >= 0 else ""
            if reason and reason not in found:
                found.append(reason)
        if not ok:
            found = [f"{NOT_MEASURED}: no cell ran on this target"]
        elif not found:
            found = [f"{NOT_MEASURED}: its cells carry no power reading (an agent run without a power setting, "
                     f"or a run recorded before energy was measured)"]
        reasons[target] = found
    return reasons


def section_html(rows: Sequence[Mapping[str, Any]], figures_html: str) -> str:
    """The report's energy section: the panels (figures_html: plots/energy.png, drawn for the targets that measured
    energy), then every other target with why not."""
    reasons = not_measured_reasons(rows)
    missing = "".join(f"<li><b>{esc(target)}</b>: {'; '.join(esc(r) for r in found)}</li>"
                      for target, found in reasons.items())
    return (figures_html
            + (f'<p class="note">No energy figure on {len(reasons)} target(s):</p><ul class="energy-missing">'
               f"{missing}</ul>" if missing else "")
            + '<p class="note">Energy per inference: (mean power while timing - idle power) x timed seconds / '
              "inferences, from the device's own sensor; every energy column is in the results table's "
              "<i>energy</i> group.</p>")
