"""Per-layer profiles and op placement: each cell's ten most expensive layers, and where nodes ran across
runtime configurations and targets ("17 of 212 nodes ran on CPUExecutionProvider under ort-trt on jetson").

The agent writes one profile per cell (reports/<run>/profiles/<cell>.json) from a session of its own after the
timed run: ONNX Runtime's profiler, OpenVINO's performance counters, TFLite's delegate placement, torch.profiler.
Pure functions over those documents, plus the HTML section.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from harness.report.elements import esc, fmt, table

PROFILES_DIR = "profiles"
TOP_LAYERS = 10


def load_profiles(run_root: Path) -> Dict[str, Dict[str, Any]]:
    """cell id -> its profile document (cells without one, or with an unreadable one, are left out)."""
    out: Dict[str, Dict[str, Any]] = {}
    for path in sorted((Path(run_root) / PROFILES_DIR).glob("*.json")):
        try:
            out[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return out


def top_layers(profile: Mapping[str, Any], n: int = TOP_LAYERS) -> List[Mapping[str, Any]]:
    """The n layers that took longest (a profile without times: its first n layers, as listed)."""
    layers = list(profile.get("layers") or [])
    if profile.get("timed"):
        layers.sort(key=lambda layer: -(layer.get("time_ms") or 0.0))
    return layers[:n]


def _where(row: Mapping[str, Any]) -> str:
    return f"under {row.get('runtime_config') or row.get('format')} on {row.get('target')}"


def placement_sentences(rows: Sequence[Mapping[str, Any]], profiles: Mapping[str, Mapping[str, Any]]) -> List[str]:
    """Per profiled cell, where its nodes ran: 'all 6 nodes ran on XNNPACK under xnnpack on pi4', or one
    sentence per place when they were split ('17 of 212 nodes ran on CPUExecutionProvider under ort-trt on
    jetson'), the place with most nodes first."""
    out = []
    for row in rows:
        profile = profiles.get(str(row.get("cell_id")))
        if not profile or not profile.get("placement"):
            continue
        placement: Dict[str, int] = dict(profile["placement"])
        total = sum(placement.values())
        what = f"{row.get('model')}/{row.get('variant')}/{row.get('format')}"
        if len(placement) == 1:
            place = next(iter(placement))
            out.append(f"{what}: all {total} nodes ran on {place} {_where(row)}")
            continue
        for place, count in sorted(placement.items(), key=lambda kv: (-kv[1], kv[0])):
            out.append(f"{what}: {count} of {total} nodes ran on {place} {_where(row)}")
    return out


@dataclass(frozen=True)
class PlacementDiff:
    """One (model, variant, format) across the cells that profiled it: nodes whose placement differs."""

    model: str
    variant: str
    format: str
    #: column labels, one per cell: 'config on target'
    cells: Tuple[str, ...]
    #: (node, its placement in each cell, '' where the cell has no such node)
    nodes: Tuple[Tuple[str, Tuple[str, ...]], ...]
    n_nodes: int


def placement_diffs(rows: Sequence[Mapping[str, Any]], profiles: Mapping[str, Mapping[str, Any]]
                    ) -> List[PlacementDiff]:
    """For each artifact profiled in two or more cells (configurations or targets), the nodes that ran in
    different places (a node missing from a cell counts: an optimised graph fuses nodes away)."""
    groups: Dict[Tuple[str, str, str], List[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        if str(row.get("cell_id")) in profiles:
            groups[(str(row.get("model")), str(row.get("variant")), str(row.get("format")))].append(row)
    diffs = []
    for (model, variant, format_name), cells in sorted(groups.items()):
        if len(cells) < 2:
            continue
        cells = sorted(cells, key=lambda r: (str(r.get("target")), str(r.get("runtime_config"))))
        where = [{layer.get("name"): str(layer.get("placement")) for layer in
                  profiles[str(r["cell_id"])].get("layers") or []} for r in cells]
        names = sorted(set().union(*[set(w) for w in where]))
        differing = tuple((name, tuple(w.get(name, "") for w in where)) for name in names
                          if len({w.get(name, "") for w in where}) > 1)
        diffs.append(PlacementDiff(model, variant, format_name,
                                   tuple(f"{r.get('runtime_config') or format_name} on {r.get('target')}" for r in cells),
                                   differing, len(names)))
    return diffs


def section_html(rows: Sequence[Mapping[str, Any]], profiles: Mapping[str, Mapping[str, Any]]) -> str:
    """The report's 'Layers and op placement' section."""

    if not profiles:
        return "<p>No cell was profiled (profiles are made after each cell's timed run unless --no-profile).</p>"
    parts = ["<p>From a separate session after each cell's timed run, so the timed figures are not "
             "slowed by the profiler. Files: <code>profiles/&lt;cell&gt;.json</code>.</p>"]
    sentences = placement_sentences(rows, profiles)
    if sentences:
        parts.append("<ul>" + "".join(f"<li>{esc(s)}</li>" for s in sentences) + "</ul>")
    for diff in placement_diffs(rows, profiles):
        title = f"{diff.model}/{diff.variant}/{diff.format}: "
        if not diff.nodes:
            parts.append(f"<p>{esc(title)}every one of {diff.n_nodes} nodes ran in the same place in "
                         f"{esc(', '.join(diff.cells))}.</p>")
            continue
        shown = diff.nodes[:40]
        parts.append(f"<h3>{esc(title)}{len(diff.nodes)} of {diff.n_nodes} nodes placed differently</h3>"
                     + table(["node", *diff.cells], [[name, *(p or "(not in graph)" for p in places)]
                                                     for name, places in shown])
                     + (f"<p>and {len(diff.nodes) - len(shown)} more</p>" if len(diff.nodes) > len(shown) else ""))
    for row in rows:
        profile = profiles.get(str(row.get("cell_id")))
        if not profile:
            continue
        layers = top_layers(profile)
        timed = bool(profile.get("timed"))
        head = ["layer", "type", "ran on", "exec type", "precision"] + (["time ms"] if timed else [])
        body = [[layer.get("name"), layer.get("type"), layer.get("placement"), layer.get("exec_type") or "",
                 layer.get("precision") or ""] + ([fmt(layer.get("time_ms"))] if timed else []) for layer in layers]
        label = (f"{row.get('cell_id')}: {'the ten most expensive' if timed else 'the first'} of "
                 f"{profile.get('nodes')} layers" + ("" if timed else " (this runtime gives no per-layer times)"))
        if profile.get("fallback"):
            label += f"; fallback: {profile['fallback']}"
        parts.append(f"<details><summary>{esc(label)}</summary>"
                     + table(head, body, [False] * 5 + ([True] if timed else [])) + "</details>")
    return "".join(parts)
