"""index.html: one offline page (inline CSS, a little inline script, PNGs beside it; nothing from the network).

The top of the page is one screen: the verdict, what was run, the findings that need attention and the
recommendation per target. The detail follows: the results table (sticky identity columns, column groups
a click away, sorting and filtering), plots, failures by device, disagreements by cause, devices.
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from harness.schema.results import METRIC_PREFIX, OK
from harness.report.findings import findings, first_line, fix_for, group_line, is_true, measuring_state, what_was_run
from harness.report.markdown import failure_groups
from harness.report.int8 import section_html as int8_section
from harness.report.profiles import section_html

from harness.report.context import TABLE_ENOUGH_CELLS, ImageRef, ReportContext
from harness.report.elements import esc, fmt, table

_CSS = """
body { font-family: system-ui, sans-serif; margin: 0.8em auto; max-width: 1400px; padding: 0 1em; color: #222;
       font-size: 16px; line-height: 1.35; }
h1 { font-size: 1.35em; margin: 0.2em 0; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; font-size: 1.25em; }
#top h2 { border: 0; margin: 0.6em 0 0.2em; font-size: 1.05em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.ok td.status { color: #176d17; } tr.failed td.status, tr.lost td.status { color: #b00020; font-weight: bold; }
tr.incompatible td.status { color: #8a6d00; } tr.skipped td.status { color: #666; }
.fits { color: #176d17; } .nofit { color: #b00020; }
.emulated { background: #fff6d6; border-left: 4px solid #c9a000; padding: 4px 8px; font-size: 0.9em; }
.wrap { overflow-x: auto; } figure { display: inline-block; margin: 0.5em 1em 1em 0; max-width: 100%; }
figcaption { font-size: 0.9em; color: #555; max-width: 60em; } .note { color: #555; font-size: 0.9em; }
pre { white-space: pre-wrap; margin: 0; font-size: 0.95em; }
.verdict { font-size: 1.05em; margin: 0.2em 0; } .verdict b { margin-right: 0.3em; }
.v0 { color: #176d17; } .v1 { color: #b00020; } .v2 { color: #8a5a00; } .vnone { color: #555; }
.run-facts { margin: 0.3em 0; font-size: 0.9em; color: #333; } .run-facts span { margin-right: 1.1em; }
.run-facts span b { color: #555; font-weight: normal; }
ul.findings, ul.recs { margin: 0.2em 0; padding-left: 1.2em; font-size: 0.92em; }
ul.findings li { margin: 0.1em 0; } li.bad::marker { color: #b00020; } li.warn::marker { color: #c98000; }
li.info::marker { color: #777; } ul.recs li { margin: 0.05em 0; }
nav { font-size: 0.9em; margin: 0.6em 0; }
.controls { font-size: 0.9em; margin: 0.4em 0; } .controls select, .controls button { font-size: 1em; margin-right: 0.4em; }
.controls button[aria-pressed="true"] { background: #dde8ff; }
.scroll { overflow: auto; max-height: 85vh; border: 1px solid #ddd; }
table.results { margin: 0; } table.results thead th { position: sticky; top: 0; z-index: 2; cursor: pointer; }
table.results th.sticky, table.results td.sticky { position: sticky; background: #fff; z-index: 1; }
table.results thead th.sticky { z-index: 3; background: #f3f3f3; }
table.results th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.results th[aria-sort="descending"]::after { content: " \\25BC"; }
table.results .opt { display: none; }
table.results td.busy::after { content: " busy"; color: #8a5a00; font-size: 0.85em; }
dl.probe { margin: 0.2em 0; font-size: 0.95em; } dl.probe dt { font-weight: bold; color: #444; }
dl.probe dd { margin: 0 0 0.2em 1.2em; } details > summary { cursor: pointer; }
"""

#: the results table's column groups: the default view, then what a click shows
DEFAULT_RESULT_COLUMNS = ["status", "primary_value", "primary_retention", "latency_p50_ms", "latency_p99_ms",
                          "peak_rss_bytes", "artifact_size_bytes"]
STICKY_RESULT_COLUMNS = ["model", "variant", "format", "runtime_config", "target"]
FILTER_COLUMNS = ["target", "format", "status"]

# Sorting, filtering and column groups of the results table; sticky first columns. No network, works from file://.
_SCRIPT = """
(function () {
  var table = document.getElementById('results-table');
  if (!table) return;
  var body = table.tBodies[0];
  function stick() {
    var left = 0;
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length && heads[i].classList.contains('sticky'); i++) {
      var col = i;
      heads[i].style.left = left + 'px';
      for (var r = 0; r < body.rows.length; r++) body.rows[r].cells[col].style.left = left + 'px';
      left += heads[i].getBoundingClientRect().width;
    }
  }
  function key(cell) {
    var v = cell.getAttribute('data-v');
    if (v === null) v = cell.textContent;
    var n = Number(v);
    return (v.trim() !== '' && isFinite(n)) ? n : v.toLowerCase();
  }
  table.tHead.addEventListener('click', function (e) {
    var th = e.target.closest('th');
    if (!th) return;
    var col = Array.prototype.indexOf.call(th.parentNode.cells, th);
    var dir = th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending';
    Array.prototype.forEach.call(th.parentNode.cells, function (c) { c.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', dir);
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      var blankX = x === '', blankY = y === '';
      if (blankX || blankY) return blankX - blankY;  /* blanks last either way */
      var order = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === 'number' ? -1 : 1);
      return dir === 'ascending' ? order : -order;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
  var selects = document.querySelectorAll('#results select[data-filter]');
  function filter() {
    var shown = 0;
    Array.prototype.forEach.call(body.rows, function (r) {
      var keep = Array.prototype.every.call(selects, function (s) {
        return s.value === '' || r.getAttribute('data-' + s.getAttribute('data-filter')) === s.value;
      });
      r.hidden = !keep;
      if (keep) shown++;
    });
    document.getElementById('results-count').textContent = shown + ' of ' + body.rows.length + ' cells';
  }
  Array.prototype.forEach.call(selects, function (s) { s.addEventListener('change', filter); });
  Array.prototype.forEach.call(document.querySelectorAll('#results button[data-group]'), function (b) {
    b.addEventListener('click', function () {
      var on = b.getAttribute('aria-pressed') !== 'true';
      b.setAttribute('aria-pressed', on ? 'true' : 'false');
      var cells = table.querySelectorAll('.g-' + b.getAttribute('data-group'));
      Array.prototype.forEach.call(cells, function (c) { c.style.display = on ? 'table-cell' : ''; });
      stick();
    });
  });
  filter();
  stick();
})();
"""


def _figures(images: Sequence["ImageRef"]) -> str:
    return "".join(f'<figure><img src="{esc(i.src)}" alt="{esc(i.title)}"><figcaption>{esc(i.title)}</figcaption>'
                   f"</figure>" for i in images)


#: the devices table: one row per device (device_row); the full probe is behind a disclosure in the last column
DEVICE_COLUMNS = ["device", "arch", "CPU", "Python", "runtimes", "reachable", "while measuring", "storage",
                  "budgets", "probe"]


def _runtime_text(runtimes: Any) -> str:
    """'tflite: ai-edge-litert 2.3.0; onnx: onnxruntime 1.31.1; openvino: none' from a probe's runtimes."""
    if not isinstance(runtimes, Mapping):
        return ""
    parts = []
    for fmt_name, info in sorted(runtimes.items()):
        if isinstance(info, Mapping) and info.get("available"):
            version = str(info.get("version") or "").split("-")[0]
            parts.append(f"{fmt_name}: {info.get('module')} {version}".rstrip())
        else:
            parts.append(f"{fmt_name}: none")
    return "; ".join(parts)


def probe_fields_html(value: Any, key: str = "") -> str:
    """A probe document as nested fields: mappings as definition lists, lists of plain values on one line."""
    if isinstance(value, Mapping):
        if not value:
            return "<i>none</i>"
        return '<dl class="probe">' + "".join(f"<dt>{esc(k)}</dt><dd>{probe_fields_html(v, str(k))}</dd>"
                                             for k, v in value.items()) + "</dl>"
    if isinstance(value, (list, tuple)):
        if not value:
            return "<i>none</i>"
        if all(not isinstance(v, (Mapping, list, tuple)) for v in value):
            return esc(", ".join(fmt(v, key) for v in value))
        return "".join(probe_fields_html(v, key) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return esc(fmt(value, key)) if value is not None else "<i>unknown</i>"


def device_row(target: str, probe: Optional[Mapping[str, Any]], budget: Any, measuring: str,
               emulated: bool = False) -> List[str]:
    """One row of the devices table, as HTML cells in the order of DEVICE_COLUMNS."""
    probe = probe or {}
    cpu = " ".join(str(p) for p in (probe.get("cpu_model"), f"× {probe['cpu_count']}" if probe.get("cpu_count")
                                    else None) if p)
    reachable = probe.get("reachable")
    budgets = (f"p99 {budget.latency_p99_ms:g} ms, peak {budget.peak_memory_mb:g} MB" if budget is not None else "")
    arch = str(probe.get("machine") or "") + (" (emulated)" if emulated else "")
    details = (f"<details><summary>probe</summary>{probe_fields_html(dict(probe))}</details>" if probe
               else "no probe recorded")
    return [esc(target), esc(arch), esc(cpu), esc(probe.get("python") or ""), esc(_runtime_text(probe.get("runtimes"))),
            "" if reachable is None else ("yes" if reachable else "<b>no</b>"), esc(measuring),
            storage_cell(probe), esc(budgets), details]


def storage_cell(probe: Mapping[str, Any]) -> str:
    """The devices table's storage column: suspect storage first and loud, then space, errors and the cache."""
    rows = storage_rows(probe)
    return "<br>".join(("<b>" + esc(f"{key}: {text}") + "</b>") if key == "storage SUSPECT"
                       else esc(f"{key.replace('storage: ', '')}: {text}") for key, text in rows)


def _section_devices(ctx: "ReportContext") -> str:
    targets = sorted(set(ctx.devices) | set(ctx.budgets))
    if not targets:
        return "<p>No device was probed.</p>"
    rows = ctx.rows
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in device_row(
        target, ctx.devices.get(target), ctx.budgets.get(target), measuring_state(rows, target),
        target in ctx.emulated)) + "</tr>" for target in targets)
    notes = "".join(f'<p class="emulated">{esc(_emulated_text(ctx, t))}</p>' for t in targets if t in ctx.emulated)
    return (notes + '<div class="wrap"><table id="devices-table"><thead><tr>'
            + "".join(f"<th>{esc(c)}</th>" for c in DEVICE_COLUMNS) + f"</tr></thead><tbody>{body}</tbody></table></div>"
            '<p class="note">While measuring: quiet, or busy when other processes, load, heat or throttling went past '
            "the target's <code>quiet:</code> limits while a cell was timed (its latencies are not judged).</p>")


#: probe keys storage_rows shows (the rest of the probe is listed field by field)


def storage_rows(probe: Mapping[str, Any]) -> List[Tuple[str, str]]:
    """The device's storage health for its table: free and total space of the workdir's filesystem, read-only
    mounts, I/O errors, its cache against the budget, and a storage marked suspect (a cached file corrupted again
    after a fresh upload)."""
    storage = probe.get("storage") if isinstance(probe.get("storage"), Mapping) else {}
    cache = probe.get("cache") if isinstance(probe.get("cache"), Mapping) else {}
    rows: List[Tuple[str, str]] = []
    suspect = probe.get("storage_suspect") or (storage.get("suspect") or {}).get("reason")
    if suspect:
        rows.append(("storage SUSPECT", str(suspect)))
    if storage:
        ro = storage.get("read_only")
        rows.append(("storage: workdir filesystem",
                     f"{fmt(storage.get('workdir_free_bytes'), 'free_bytes')} free of "
                     f"{fmt(storage.get('workdir_total_bytes'), 'total_bytes')} "
                     f"({storage.get('fs_type') or '?'} on {storage.get('mount_point') or '?'}, "
                     f"{'READ-ONLY' if ro else 'read-write' if ro is not None else 'mode unknown'})"))
        counts = storage.get("io_error_counts") or {}
        dmesg = (f"{storage.get('dmesg_errors')} storage error line(s) in dmesg"
                 + (f", last: {storage.get('dmesg_last_error')}" if storage.get("dmesg_last_error") else "")
                 if storage.get("dmesg_readable") else "dmesg not readable without root")
        rows.append(("storage: I/O errors", "; ".join(
            [f"{dev}: {n}" for dev, n in sorted(counts.items())] + [dmesg]
            + ([f"read-only mounts: {', '.join(storage['read_only_mounts'])}"] if storage.get("read_only_mounts")
               else []))))
    if cache:
        budget = cache.get("budget") or {}
        rows.append(("storage: cache", f"{cache.get('n_entries')} entries, {fmt(cache.get('bytes'), 'bytes')} of a "
                     f"{fmt(budget.get('max_bytes'), 'max_bytes')} budget "
                     f"({'cache_max_bytes' if budget.get('max_bytes_from') == 'target' else 'default'}), keeps "
                     f"{fmt(budget.get('keep_free_bytes'), 'keep_free_bytes')} free"))
    return rows


def _emulated_text(ctx: "ReportContext", target: str) -> str:
    arch = ctx.arches.get(target, "another architecture")
    return (f"Emulated: {target}'s Python ran {arch} code under qemu-user. Whether a model loads and runs there, "
            f"and what it outputs, is real; its latency and memory are recorded but not representative of the "
            f"board (emulation is about 200x slower), and scores, recommendations and the gate do not judge them.")


def _emulated_note(ctx: "ReportContext") -> str:
    if not ctx.emulated:
        return ""
    return (f'<p class="emulated">Latency and memory on emulated targets ({esc(", ".join(sorted(ctx.emulated)))}) '
            f"are not representative: recorded, not judged.</p>")


def _section_models(ctx: "ReportContext") -> str:
    """Each model's source, its inputs and outputs as profiled, and where its data came from."""
    if not ctx.models:
        return "<p>The run's manifest records no model interfaces (a run from before they were recorded).</p>"
    parts = []
    for name, doc in sorted(ctx.models.items()):
        tensors = [[kind, t.get("name"), "x".join(str(d) for d in t.get("shape") or []) or "scalar", t.get("dtype")]
                   for kind in ("inputs", "outputs") for t in doc.get(kind, [])]
        notes = "".join(f'<p class="note">{esc(n)}</p>' for n in doc.get("data", []))
        parts.append(f"<h3>{esc(name)} ({esc(doc.get('source_format', ''))})</h3>{notes}"
                     + table(["", "name", "shape", "dtype"], tensors))
    return "".join(parts)


def result_column_groups(columns: Sequence[str]) -> Dict[str, List[str]]:
    """The results table's columns by group: 'default' (shown), then the groups a click shows."""
    from harness.schema import results as schema
    named = [("errors", schema.STATUS_COLUMNS), ("accuracy", schema.ACCURACY_COLUMNS),
             ("latency", schema.LATENCY_COLUMNS), ("noise", schema.NOISE_COLUMNS), ("heat", schema.HEAT_COLUMNS),
             ("energy", schema.ENERGY_COLUMNS), ("memory", schema.MEMORY_COLUMNS),
             ("artifact", schema.ARTIFACT_COLUMNS), ("runtime", schema.RUNTIME_COLUMNS),
             ("time", schema.TIME_COLUMNS), ("ids", ["run_id", "cell_id"])]
    groups: Dict[str, List[str]] = {"sticky": [c for c in STICKY_RESULT_COLUMNS if c in columns],
                                    "default": [c for c in DEFAULT_RESULT_COLUMNS if c in columns]}
    taken = set(groups["sticky"]) | set(groups["default"])
    for name, members in named:
        groups[name] = [c for c in members if c in columns and c not in taken]
        taken |= set(groups[name])
    groups["accuracy"] += [c for c in columns if c not in taken and c.startswith(METRIC_PREFIX)]
    taken |= set(groups["accuracy"])
    groups["other"] = [c for c in columns if c not in taken]
    return {name: members for name, members in groups.items() if members}


def _sort_value(value: Any) -> str:
    try:
        if value is None or value != value:
            return ""
    except (TypeError, ValueError):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(float(value))
    return str(value)


def _section_results(ctx: "ReportContext") -> str:
    records = ctx.rows
    if not records:
        return "<p>The run has no cells.</p>"
    groups = result_column_groups([str(c) for c in ctx.frame.columns])
    shown = [(c, g) for g, members in groups.items() for c in members]
    text_columns = set(STICKY_RESULT_COLUMNS) | {"status", "error_category", "error_message"}
    filters = []
    for column in FILTER_COLUMNS:
        values = sorted({str(r.get(column)) for r in records})
        filters.append(f'<select data-filter="{column}" aria-label="{column}"><option value="">every {column}</option>'
                       + "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in values) + "</select>")
    buttons = "".join(f'<button type="button" data-group="{g}" aria-pressed="false">{g}</button>'
                      for g in groups if g not in ("sticky", "default"))
    head = "".join(f'<th class="{_column_class(g)}" title="{esc(c)}">{esc(_HEADINGS.get(c, c))}</th>'
                   for c, g in shown)
    body = []
    for record in records:
        status = str(record.get("status"))
        attrs = "".join(f' data-{c}="{esc(record.get(c))}"' for c in FILTER_COLUMNS)
        cells = []
        for column, group in shown:
            value = record.get(column)
            text = fmt(value, column)
            if column == "target" and str(value) in ctx.emulated:
                text += " (emulated)"
            classes = [_column_class(group)] + ([] if column in text_columns else ["num"])
            if column == "status":
                classes.append("status")
                if status == OK and is_true(record.get("noisy")):
                    classes.append("busy")
            cells.append(f'<td class="{" ".join(c for c in classes if c)}" data-v="{esc(_sort_value(value))}">'
                         f"{esc(text)}</td>")
        body.append(f'<tr class="{esc(status)}"{attrs}>' + "".join(cells) + "</tr>")
    return (_emulated_note(ctx)
            + f'<div class="controls">show {"".join(filters)} <span id="results-count">{len(records)} cells</span>'
            f"<br>more columns: {buttons} <span class=\"note\">(click a heading to sort)</span></div>"
            f'<div class="scroll"><table id="results-table" class="results"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>"
            '<p class="note">primary: the recipe\'s metric, else accuracy, else top-1 agreement, else output SNR '
            "(the column <code>primary_metric</code> names it); retention: against the reference. "
            "<i>busy</i>: timed while the device was busy, latencies not judged. Every column is in "
            "<code>results.csv</code>.</p>")


_HEADINGS = {"primary_value": "primary", "primary_retention": "retention", "latency_p50_ms": "p50 ms",
             "latency_p99_ms": "p99 ms", "peak_rss_bytes": "peak memory", "artifact_size_bytes": "size",
             "runtime_config": "configuration"}


def _column_class(group: str) -> str:
    if group == "sticky":
        return "sticky"
    if group == "default":
        return ""
    return f"opt g-{group}"


def _part(value: Optional[float]) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _section_scores(ctx: "ReportContext") -> str:
    if not ctx.portability:
        return "<p>No scores: the run has no cells.</p>"
    rows = [[s.model, s.variant or "(best of all)", f"{s.score:.3f}",
             f"{len(s.deployed_targets)}/{len(s.targets)}", _part(s.accuracy), _part(s.latency), _part(s.memory),
             s.weakest, s.explain()] for s in ctx.portability]
    score_table = table(["model", "variant", "score", "deploys", "accuracy", "latency", "memory", "weakest", "why"],
                        rows, [False, False, True, True, True, True, True, False, False])
    cells = [[c.model, c.variant, c.format, c.target, c.status, f"{c.score:.3f}", _part(c.parts.accuracy),
              "not judged" if c.emulated else _part(c.parts.latency),
              "not judged" if c.emulated else _part(c.parts.memory), "; ".join(c.notes)] for c in ctx.cell_scores]
    cell_table = table(["model", "variant", "format", "target", "status", "score", "accuracy", "latency", "memory",
                        "notes"], cells, [False] * 5 + [True] * 4 + [False], [c.status for c in ctx.cell_scores],
                       {4: "status"})
    return ('<p class="note">score = deploys &times; accuracy &times; latency &times; memory per cell, each part in '
            "[0, 1]: deploys is 1 when the cell ran; accuracy is the retention of the primary figure "
            "(the recipe's metric, else accuracy, else top-1 agreement, else output SNR / 40 dB); latency is min(1, budget p99 / p99); memory is min(1, budget MB / peak MB). A model or variant "
            "takes its best cell per target and the mean over its targets; the parts shown are means over the "
            "targets where it deploys.</p>" + _emulated_note(ctx) + score_table + "<details><summary>every cell's score</summary>"
            + cell_table + "</details>")


def _section_recommendations(ctx: "ReportContext") -> str:
    if not ctx.recommendations:
        return "<p>No recommendations: the run has no cells.</p>"
    rows, classes = [], []
    for r in ctx.recommendations:
        rows.append([r.target, r.model, "yes" if r.fits else "NONE FITS",
                     r.choice, fmt(r.accuracy), fmt(r.latency_p99_ms),
                     fmt(r.peak_memory_mb), r.reason])
        classes.append("fits" if r.fits else "nofit")
    return table(["target", "model", "fits", "recommended", "accuracy", "p99 ms", "peak MB", "reason"], rows,
                 [False, False, False, False, True, True, True, False], classes)


def _disagreements(ctx: "ReportContext") -> str:
    """Pairs of cells of the same model and variant that disagree, one line per cause; the pairs behind it."""
    n_pairs = sum(len(p) for p in ctx.pairs.values())
    if not ctx.disagreements:
        if n_pairs:
            return f'<p id="disagreements">All {n_pairs} pairs of cells with the same model and variant agree.</p>'
        return ('<p class="note" id="disagreements">No cell kept its outputs (outputs/*.npz), so cells were compared '
                "only with the reference.</p>")
    figures = {(p.cell_a, p.cell_b): p for model_pairs in ctx.pairs.values() for p in model_pairs}
    items = []
    for group in ctx.disagreement_groups:
        rows = [[d.cell_a, d.cell_b, fmt((figures.get((d.cell_a, d.cell_b)) or figures.get((d.cell_b, d.cell_a))
                                           ).top1_agreement if (d.cell_a, d.cell_b) in figures or (d.cell_b, d.cell_a)
                                          in figures else None), d.reason] for d in group.pairs]
        explanation = f'<br><span class="note">{esc(group.explanation)}</span>' if group.explanation else ""
        items.append(f'<li class="cause"><details><summary>{esc(group_line(group))}</summary>'
                     + table(["cell", "cell", "top-1 agreement", "why"], rows) + f"</details>{explanation}</li>")
    return (f'<h3 id="disagreements">Cells that disagree with each other: {len(ctx.disagreements)} of {n_pairs} '
            f"pairs, {len(ctx.disagreement_groups)} cause{'s' if len(ctx.disagreement_groups) != 1 else ''}</h3>"
            '<p class="note">Pairs of cells with the same model and variant; a pair disagrees when any top-1 '
            "prediction differs or its outputs differ by more than 1e-4. Open a cause for its pairs.</p>"
            f"<ul>{''.join(items)}</ul>")


def _section_parity(ctx: "ReportContext") -> str:
    out = [_figures(ctx.images.get("parity", []))]
    if len(ctx.parity):
        rows = [[r["model"], r["variant"], r["format"], r["target"], r["status"], fmt(r["top1_agreement"]),
                 fmt(r["max_abs_diff"]), fmt(r["cosine_similarity"])] for r in ctx.parity.to_dict(orient="records")]
        out.append("<details><summary>parity table</summary>" + table(
            ["model", "variant", "format", "target", "status", "top-1 agreement", "max abs diff", "cosine"], rows,
            [False] * 5 + [True] * 3, [str(r[4]) for r in rows], {4: "status"}) + "</details>")
    out.append(_disagreements(ctx))
    out.append(_cross_arch(ctx))
    return "".join(out)


def _cross_arch(ctx: "ReportContext") -> str:
    """Each cell on a non-x86_64 device against the same (model, variant, format) on x86_64 devices."""
    if not ctx.cross_arch:
        return ""
    from harness.judge.scores import CROSS_ARCH_ATOL, CROSS_ARCH_RTOL
    flagged = [c for c in ctx.cross_arch if not c.agrees and c.baseline_agrees and not c.verdict.startswith("not")]
    rows = [[c.model, c.variant, c.format, f"{c.target} ({c.arch})", ", ".join(c.baseline_targets),
             fmt(c.top1_agreement), fmt(c.max_abs_diff), str(c.n_samples), fmt(c.reference_top1),
             fmt(c.baseline_reference_top1), c.verdict] for c in ctx.cross_arch]
    classes = ["ok" if c.agrees else "failed" for c in ctx.cross_arch]
    head = ("<h3>Across architectures</h3>"
            f'<p class="note">Every output array of each cell on a device of another architecture against the same '
            f"model, variant and format on {esc(ctx.cross_arch[0].baseline_arch)} devices that ran the same runtime and "
            f"version where any did, else on all of them (worst over those devices and outputs). A cell differs when a top-1 prediction differs or |difference| &gt; {CROSS_ARCH_ATOL:g} + "
            f"{CROSS_ARCH_RTOL:g} &times; max |output|: float rounding from fused multiply-adds stays below that, "
            f"one int8 rounding step (a NEON/AVX kernel difference) does not.</p>")
    if flagged:
        head += ("<p><b>Agree on x86_64, differ on Arm:</b> "
                 + esc("; ".join(f"{c.model}/{c.variant}/{c.format} on {c.target} ({c.arch}): top-1 "
                                 f"{fmt(c.top1_agreement)}, max abs diff {fmt(c.max_abs_diff)}" for c in flagged))
                 + "</p>")
    else:
        head += (f"<p>No cell that agrees on {esc(ctx.cross_arch[0].baseline_arch)} differs on another architecture "
                 f"({len(ctx.cross_arch)} compared).</p>")
    return head + table(["model", "variant", "format", "device", "compared with", "top-1 agreement", "max abs diff",
                         "samples", "device vs reference (top-1)", "x86_64 vs reference (top-1)", "verdict"], rows,
                        [False] * 5 + [True] * 5 + [False], classes, {10: "status"})


def _section_failures(ctx: "ReportContext") -> str:
    """Cells that did not run, by device, cells with the same status, category and message together, with the
    one-line reason, the fix where the harness knows it, and the full message behind a disclosure. A user metric
    that raised is said first: its cells ran, but their primary figure is unavailable."""
    broken = "".join(f'<p class="note">The metric failed on {len(cells)} cell(s) ({esc(", ".join(cells))}): '
                     f"{esc(error)}. Their primary figure is unavailable.</p>" for error, cells in ctx.metric_errors.items())
    failures = ctx.failures
    if not failures:
        return broken + "<p>Every cell ran.</p>"
    parts = [broken]
    for target, groups in failure_groups(failures).items():
        n = sum(len(g[3]) for g in groups)
        rows = []
        for status, category, message, cells in groups:
            listed = ", ".join(cells[:3]) + (f" and {len(cells) - 3} more" if len(cells) > 3 else "")
            reason = first_line(message)
            full = (f"<details><summary>{esc(reason)}</summary><pre>{esc(message)}</pre></details>"
                    if reason != " ".join(message.split()) else esc(reason))
            rows.append(f'<tr class="{esc(status)}"><td class="num">{len(cells)}</td><td>{esc(listed)}</td>'
                        f'<td class="status">{esc(status)}</td><td>{esc(category)}</td><td>{full}</td>'
                        f"<td>{esc(fix_for(category, ctx.run_id))}</td></tr>")
        parts.append(f'<h3 id="failures-{esc(target)}">{esc(target)}: {n} cell{"s" if n != 1 else ""}</h3>'
                     '<div class="wrap"><table><thead><tr><th>cells</th><th>which</th><th>status</th><th>category</th>'
                     f"<th>reason</th><th>fix</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>")
    texts = {ctx.diagnostics[str(r.get("cell_id"))]: f"{r.get('model')}/{r.get('variant')}/{r.get('format')}"
             for r in failures if str(r.get("cell_id")) in ctx.diagnostics}
    parts += [f"<details><summary>{esc(label)}: the converter's whole diagnostic</summary><pre>{esc(text)}</pre>"
              "</details>" for text, label in texts.items()]
    return "".join(parts)


_VERDICT_MARK = {0: "\u2714", 1: "\u2716", 2: "\u26a0"}


def _verdict_html(ctx: "ReportContext") -> str:
    """The gate's verdict (when the run was gated) and the run's, as summary.md puts them."""
    from harness.judge.verdict import run_verdict
    verdict = run_verdict(ctx.rows)
    gate = ctx.gate
    if gate is not None:
        gate_line = (f'<p class="verdict v{gate.exit_code}"><b>Gate: {_VERDICT_MARK[gate.exit_code]} '
                     f"{esc(gate.verdict)}</b> {len(gate.violations)} violation(s), {len(gate.not_judged)} not judged, "
                     f"baseline {esc(gate.baseline_id or 'none')} (exit {gate.exit_code})</p>")
    else:
        gate_line = (f'<p class="verdict vnone"><b>Gate: not gated yet</b> <code>harness gate --run '
                     f"{esc(ctx.run_id)}</code> judges it</p>")
    return gate_line + (f'<p class="verdict v{verdict.exit_code}"><b>Run: {_VERDICT_MARK[verdict.exit_code]} '
                        f"{esc(verdict.summary)}</b> (exit {verdict.exit_code})</p>")


def _recommendation_line(r: Any) -> str:
    where = f"{r.variant}/{r.runtime_config or r.format}" if r.variant else ""
    if r.fits:
        figures = ", ".join(x for x in (f"{r.accuracy:.3f}" if r.accuracy is not None else "",
                                        f"p99 {r.latency_p99_ms:.3g} ms" if r.latency_p99_ms is not None else "",
                                        f"{r.peak_memory_mb:.0f} MB" if r.peak_memory_mb is not None else "") if x)
        return f"<b>{esc(r.target)}</b>: {esc(r.model)} {esc(where)} ({esc(figures)})"
    return f'<b>{esc(r.target)}</b>: {esc(r.model)} <span class="nofit">none fits</span>: {esc(r.reason)}'


def _code_spans(escaped: str) -> str:
    """`x` in already escaped text as <code>x</code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def _top(ctx: "ReportContext", max_recommendations: int = 6) -> str:
    """One screen: the verdict, what was run, the findings that need attention, the recommendation per target."""
    facts = "".join(f"<span><b>{esc(label)}</b> {esc(value)}</span>" for label, value in what_was_run(ctx.manifest,
                                                                                                       ctx.rows))
    counts = ", ".join(f"{n} {s}" for s, n in sorted(ctx.status_counts.items())) or "no cells"
    found = findings(ctx.rows, ctx.disagreement_groups, sorted(ctx.emulated), [*ctx.run_notes, *ctx.budget_notes],
                     int8_slow=ctx.int8_findings)
    items = "".join(f'<li class="{f.severity}">{_code_spans(esc(f.text))} <a href="#{esc(f.link)}">details</a></li>'
                    for f in found)
    attention = (f'<ul class="findings" id="findings">{items}</ul>' if found
                 else '<p id="findings">Nothing needs attention: every cell ran, agrees and was timed on a quiet '
                      "device.</p>")
    recs = ctx.recommendations[:max_recommendations]
    more = len(ctx.recommendations) - len(recs)
    rec_html = ('<ul class="recs">' + "".join(f"<li>{_recommendation_line(r)}</li>" for r in recs)
                + (f'<li><a href="#recommendations">{more} more</a></li>' if more > 0 else "") + "</ul>"
                if recs else "<p>No recommendation: the run has no cells.</p>")
    return (f'<header id="top"><h1>Run {esc(ctx.run_id)}</h1>{_verdict_html(ctx)}'
            f'<p class="run-facts">{facts}<span><b>cells</b> {len(ctx.frame)}: {esc(counts)}</span></p>'
            f"<h2>Needs attention</h2>{attention}"
            f'<h2>Recommendation per target <a class="note" href="#recommendations">(why)</a></h2>{rec_html}</header>')


def _section_energy(ctx: "ReportContext") -> str:
    from harness.report.energy import section_html
    return section_html(ctx.rows, _figures(ctx.images.get("energy", []))) if len(ctx.frame) else "<p>No cell ran.</p>"


def _no_memory_plot(ctx: "ReportContext") -> str:
    if not len(ctx.frame):
        return "<p>No cell ran.</p>"
    return (f'<p class="note">Each cell\'s peak memory is in the <a href="#results">results table</a>; the bars are '
            f"drawn for runs of more than {TABLE_ENOUGH_CELLS} cells.</p>")


def render_html(ctx: "ReportContext") -> str:
    sections = [
        ("results", "Results", _section_results(ctx)),
        ("pareto", "Accuracy against p99 latency, per target",
         _figures(ctx.images.get("pareto", [])) or "<p>No cell ran.</p>"),
        ("energy", "Accuracy against energy per inference, per target", _section_energy(ctx)),
        ("failures", "Cells that did not run", _section_failures(ctx)),
        ("parity", "Parity with the reference and between cells", _section_parity(ctx)),
        ("devices", "Devices", _section_devices(ctx)),
        ("recommendations", "Recommendation per target", _section_recommendations(ctx)),
        ("scores", "Portability scores", _section_scores(ctx)),
        ("memory", "Memory per cell", _figures(ctx.images.get("memory", [])) or _no_memory_plot(ctx)),
        ("models", "Models and data", _section_models(ctx)),
        ("int8", "Quantized cells not faster than the reference", int8_section(ctx.int8_findings)),
        ("layers", "Layers and op placement", section_html(ctx.rows, ctx.profiles)),
    ]
    nav = " &middot; ".join(f'<a href="#{key}">{esc(title)}</a>' for key, title, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{esc(title)}</h2>{content}</section>' for key, title, content in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Run {esc(ctx.run_id)}</title><style>{_CSS}</style></head><body>"
            f"{_top(ctx)}<nav>{nav}</nav>{body}"
            f'<p class="note">generated {esc(ctx.generated_at)} &middot; <a href="../history/index.html" '
            f'id="trends-link">nightly trends</a></p><script>{_SCRIPT}</script></body></html>\n')
