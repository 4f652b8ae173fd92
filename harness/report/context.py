"""What the HTML and Markdown renderers show, computed once by build_context (harness.report)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List

from harness.judge.scores import CellScore, CrossArchParity, Disagreement, PairParity, PortabilityScore, Recommendation
from harness.report.findings import DisagreementGroup
from harness.report.int8 import Int8Finding
from harness.schema.results import OK
from harness.schema.targets import Budgets


#: up to this many cells, the results table shows everything a heatmap or the memory bars would (one row per
#: cell, its parity and peak memory): those plots are not drawn (they cost about a second of a warm rerun)
TABLE_ENOUGH_CELLS = 4


@dataclass(frozen=True)
class ImageRef:
    #: path relative to the run directory, e.g. plots/parity_digits_cnn.png
    src: str
    title: str


@dataclass
class ReportContext:
    """Everything the HTML and Markdown renderers show, computed once."""

    run_id: str
    generated_at: str
    frame: Any
    devices: Dict[str, Dict[str, Any]]
    budgets: Dict[str, Budgets]
    budget_notes: List[str]
    cell_scores: List[CellScore]
    portability: List[PortabilityScore]
    recommendations: List[Recommendation]
    parity: Any
    pairs: Dict[str, List[PairParity]]
    disagreements: List[Disagreement]
    images: Dict[str, List[ImageRef]] = field(default_factory=dict)
    #: targets whose device Python was emulated (qemu-user): latency and memory shown, not judged
    emulated: FrozenSet[str] = frozenset()
    #: each target's architecture, as its probe reported it
    arches: Dict[str, str] = field(default_factory=dict)
    #: cells on another architecture than x86_64 against the same cells on x86_64 devices
    cross_arch: List[CrossArchParity] = field(default_factory=list)
    #: per model: its source format, interface and where its evaluation and calibration data came from
    models: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    #: per cell id: its per-layer profile and op placement (harness.report.profiles)
    profiles: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    #: per cell id: a failed conversion's whole diagnostic (the row's message is its most specific line)
    diagnostics: Dict[str, str] = field(default_factory=dict)
    #: the disagreements grouped by cause (harness.report.findings.disagreement_groups)
    disagreement_groups: List[DisagreementGroup] = field(default_factory=list)
    #: the run's manifest.json (what was planned, when), {} when it has none
    manifest: Dict[str, Any] = field(default_factory=dict)
    #: the gate's verdict on this run (a harness.judge.gate.GateResult) when `harness gate` wrote the report
    gate: Any = None
    #: what happened to the run beyond its cells, e.g. "history not recorded: ..." (RunResults.notes)
    run_notes: List[str] = field(default_factory=list)
    #: quantized cells not faster than their float parent, with what their profiles say (harness.report.int8)
    int8_findings: List[Int8Finding] = field(default_factory=list)

    @property
    def rows(self) -> List[Dict[str, Any]]:
        """The table's rows, made once (every section of the page reads them)."""
        cached = self.__dict__.get("_rows")
        if cached is None or cached[0] is not self.frame:
            cached = (self.frame, self.frame.to_dict(orient="records"))
            self.__dict__["_rows"] = cached
        return cached[1]

    @property
    def status_counts(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for status in self.frame["status"]:
            counts[str(status)] = counts.get(str(status), 0) + 1
        return counts

    @property
    def failures(self) -> List[Dict[str, Any]]:
        return [r for r in self.rows if r.get("status") != OK]

    @property
    def metric_errors(self) -> Dict[str, List[str]]:
        """The user metric's errors, each with the cells it left without a primary figure."""
        found: Dict[str, List[str]] = {}
        for r in self.rows:
            error = r.get("evaluation_error")
            if isinstance(error, str) and error:
                found.setdefault(error, []).append("/".join(str(r.get(c)) for c in ("model", "variant", "format",
                                                                                   "target")))
        return found
