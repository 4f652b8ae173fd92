"""Decisions from a results table: portability scores, parity and recommendations.

Pure functions over the collated table (a pandas frame with
harness.schema.results.COLUMNS) and per-target budgets; no I/O.

Portability score
-----------------
For one cell (model, variant, format, target) the score is the product of
four parts, each in [0, 1], so the weakest part shows why a score is low:

    deploys   1 if the cell ran (status 'ok'), else 0
    accuracy  the primary figure's retention against the reference, clipped to [0, 1]
              (the recipe's metric, else accuracy, else top-1 agreement, else output SNR; 0 if none)
    latency   min(1, budget p99 ms / measured p99 ms)
    memory    min(1, budget MB / measured peak RSS MB)     (MB = 2**20 bytes)

On each target a (model, variant) takes its best format; a model takes its
best variant and format. The portability score is the mean of those
per-target scores over the targets the model was planned for (every target
that has a row for it, failed ones included). The accuracy, latency and memory
parts shown next to it are means over the targets where it deploys.

Emulated targets (TargetSpec.emulated: an Arm Python under qemu-user) show
whether a cell loads, runs and what it outputs; their timings and memory are
not representative. Their latency and memory parts are 1 (not judged), they
are left out of the latency and memory means, and recommendations on them
judge accuracy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import AbstractSet, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from harness.schema.results import OK, UNAVAILABLE
from harness.schema.targets import Budgets
from harness.core.numbers import finite_or_none
from harness.schema.results import records

BYTES_PER_MB = 1024 * 1024
PARTS = ("deploys", "accuracy", "latency", "memory")




def peak_memory_mb(row: Mapping[str, Any]) -> Optional[float]:
    peak = finite_or_none(row.get("peak_rss_bytes"))
    return peak / BYTES_PER_MB if peak is not None else None


def accuracy_measure(row: Mapping[str, Any]) -> Tuple[Optional[float], str]:
    """Retention of the cell's primary figure against the reference (its metric, accuracy, top-1 agreement or
    output SNR), and which figure it is; rows recorded before the primary figure fall back to accuracy."""
    if row.get("primary_metric") == UNAVAILABLE:  # the user's metric raised: no other figure stands in for it
        return None, "primary figure unavailable (the metric raised)"
    primary = finite_or_none(row.get("primary_retention"))
    if primary is not None:
        return primary, f"{row.get('primary_metric') or 'primary'} retention"
    retention = finite_or_none(row.get("accuracy_retention"))
    if retention is not None:
        return retention, "accuracy_retention"
    agreement = finite_or_none(row.get("top1_agreement"))
    if agreement is not None:
        return agreement, "top1_agreement"
    return None, ""


# ---------------------------------------------------------------- scores
@dataclass(frozen=True)
class ScoreParts:
    """The four parts of a cell's score, each in [0, 1]."""

    deploys: float
    accuracy: float
    latency: float
    memory: float

    @property
    def score(self) -> float:
        return self.deploys * self.accuracy * self.latency * self.memory


@dataclass(frozen=True)
class CellScore:
    model: str
    variant: str
    format: str
    target: str
    cell_id: str
    status: str
    parts: ScoreParts
    #: why a part is below 1, e.g. "p99 25.0 ms > budget 20.0 ms"
    notes: Tuple[str, ...] = ()
    #: measured on an emulated device: latency and memory parts are 1, not judged
    emulated: bool = False

    @property
    def score(self) -> float:
        return self.parts.score


@dataclass(frozen=True)
class PortabilityScore:
    """A model's (variant None) or a variant's score over its targets."""

    model: str
    variant: Optional[str]
    score: float
    targets: Tuple[str, ...]
    deployed_targets: Tuple[str, ...]
    #: means over the targets where it deploys; None where it deploys nowhere
    accuracy: Optional[float]
    latency: Optional[float]
    memory: Optional[float]
    #: the best cell per target (None for a target with no rows)
    per_target: Tuple[CellScore, ...] = field(default=())

    @property
    def deploys(self) -> float:
        return len(self.deployed_targets) / len(self.targets) if self.targets else 0.0

    @property
    def weakest(self) -> str:
        """The part that costs the most, for a one-word 'why'."""
        if self.deploys < 1.0:
            return "deploys"
        parts = {"accuracy": self.accuracy, "latency": self.latency, "memory": self.memory}
        name, value = min(((k, v) for k, v in parts.items() if v is not None), key=lambda kv: kv[1],
                          default=("", 1.0))
        return name if value < 1.0 else ""

    def explain(self) -> str:
        reasons = [f"{c.target}: {'; '.join(c.notes)}" for c in self.per_target if c.notes]
        return " | ".join(reasons) if reasons else "fits every target's budget at full accuracy"


def score_cell(row: Mapping[str, Any], budget: Budgets, emulated: bool = False) -> CellScore:
    """The score of one result row against its target's budget (latency and memory not judged if emulated)."""
    status = str(row.get("status") or "")
    ident = dict(model=str(row.get("model")), variant=str(row.get("variant")), format=str(row.get("format")),
                 target=str(row.get("target")), cell_id=str(row.get("cell_id")), status=status, emulated=emulated)
    if status != OK:
        reason = row.get("error_category") or row.get("error_message") or "no measurement"
        return CellScore(parts=ScoreParts(0.0, 0.0, 0.0, 0.0), notes=(f"{row.get('format')}: {status} ({reason})",),
                         **ident)
    notes: List[str] = []
    retention, source = accuracy_measure(row)
    if retention is None:
        accuracy = 0.0
        notes.append("no accuracy or agreement measured")
    else:
        accuracy = min(1.0, max(0.0, retention))
        if accuracy < 1.0:
            notes.append(f"{source} {retention:.3f}")
    if emulated:  # qemu's timings and RSS say nothing about the board's
        return CellScore(parts=ScoreParts(1.0, accuracy, 1.0, 1.0), notes=tuple(notes), **ident)
    latency = _budget_part(finite_or_none(row.get("latency_p99_ms")), budget.latency_p99_ms, "p99 {:.2f} ms",
                           "ms", "p99 latency", notes)
    memory = _budget_part(peak_memory_mb(row), budget.peak_memory_mb, "peak {:.1f} MB", "MB", "peak memory", notes)
    return CellScore(parts=ScoreParts(1.0, accuracy, latency, memory), notes=tuple(notes), **ident)


def _budget_part(measured: Optional[float], budget: float, measured_fmt: str, unit: str, quantity: str,
                 notes: List[str]) -> float:
    """min(1, budget / measured); 0 when nothing was measured. Says why in notes when below 1."""
    if measured is None:
        notes.append(f"no {quantity} measured")
        return 0.0
    part = min(1.0, budget / measured) if measured > 0 else 1.0
    if part < 1.0:
        notes.append(f"{measured_fmt.format(measured)} > budget {budget:g} {unit}")
    return part


def _best(cells: Sequence[CellScore], rows_by_id: Mapping[str, Mapping[str, Any]]) -> CellScore:
    """Highest score; ties go to the lower p99, then to the name for determinism."""
    def key(c: CellScore) -> Tuple[float, float, str]:
        p99 = finite_or_none(rows_by_id[c.cell_id].get("latency_p99_ms"))
        return (-c.score, p99 if p99 is not None else math.inf, c.cell_id)
    best = min(cells, key=key)
    if best.status != OK:  # nothing deployed: keep every failure's reason visible
        notes = tuple(n for c in sorted(cells, key=lambda c: c.cell_id) for n in c.notes)
        return CellScore(best.model, best.variant, best.format, best.target, best.cell_id, best.status,
                         best.parts, notes, best.emulated)
    return best


def _aggregate(model: str, variant: Optional[str], cells: Sequence[CellScore],
               rows_by_id: Mapping[str, Mapping[str, Any]]) -> PortabilityScore:
    by_target: Dict[str, List[CellScore]] = {}
    for cell in cells:
        by_target.setdefault(cell.target, []).append(cell)
    best = [_best(by_target[t], rows_by_id) for t in sorted(by_target)]
    deployed = [c for c in best if c.status == OK]

    def mean(part: str) -> Optional[float]:
        judged = [c for c in deployed if part == "accuracy" or not c.emulated]
        return float(np.mean([getattr(c.parts, part) for c in judged])) if judged else None

    return PortabilityScore(
        model=model, variant=variant,
        score=float(np.mean([c.score for c in best])) if best else 0.0,
        targets=tuple(c.target for c in best), deployed_targets=tuple(c.target for c in deployed),
        accuracy=mean("accuracy"), latency=mean("latency"), memory=mean("memory"), per_target=tuple(best))


def score_cells(frame: Any, budgets: Mapping[str, Budgets], emulated: AbstractSet[str] = frozenset()
                ) -> List[CellScore]:
    """Every row scored against its target's budget (Budgets() where none is given).

    `emulated` names the targets whose latency and memory are not judged.
    """
    return [score_cell(r, budgets.get(str(r.get("target")), Budgets()), str(r.get("target")) in emulated)
            for r in records(frame)]


def portability_scores(frame: Any, budgets: Mapping[str, Budgets], emulated: AbstractSet[str] = frozenset()
                       ) -> List[PortabilityScore]:
    """One score per model (variant None) followed by one per (model, variant)."""
    rows = records(frame)
    rows_by_id = {str(r.get("cell_id")): r for r in rows}
    cells = score_cells(rows, budgets, emulated)
    out: List[PortabilityScore] = []
    for model in sorted({c.model for c in cells}):
        model_cells = [c for c in cells if c.model == model]
        out.append(_aggregate(model, None, model_cells, rows_by_id))
        for variant in sorted({c.variant for c in model_cells}):
            out.append(_aggregate(model, variant, [c for c in model_cells if c.variant == variant], rows_by_id))
    return out


# ---------------------------------------------------------------- parity
PARITY_METRICS = ("top1_agreement", "max_abs_diff", "cosine_similarity")


def parity_table(frame: Any) -> "Any":
    """Every cell's agreement with the reference outputs, one row per cell."""
    import pandas as pd
    rows = records(frame)
    columns = ["model", "variant", "format", "runtime_config", "target", "cell_id", "status", *PARITY_METRICS]
    table = pd.DataFrame([{**{c: r.get(c) for c in columns}, "config_label": config_label(r)} for r in rows],
                         columns=columns + ["config_label"])
    for metric in PARITY_METRICS:
        table[metric] = pd.to_numeric(table[metric], errors="coerce").astype("float64")
    return table.sort_values(["model", "variant", "format", "runtime_config", "target"], kind="stable",
                             na_position="first").reset_index(drop=True)


def config_label(row: Mapping[str, Any]) -> str:
    """'' for a runtime's default configuration, else '@name' (how cells read in pivots: reference/onnx@ort-trt)."""
    options, name = row.get("runtime_options"), row.get("runtime_config")
    return f"@{name}" if isinstance(options, str) and options and isinstance(name, str) else ""


def parity_pivot(table: Any, model: str, metric: str = "top1_agreement") -> "Any":
    """Rows 'variant/format', columns target, values `metric` (NaN where the cell did not run)."""
    sub = table[table["model"] == model].copy()
    sub["cell"] = sub["variant"].astype(str) + "/" + sub["format"].astype(str) + sub["config_label"].astype(str)
    return sub.pivot_table(index="cell", columns="target", values=metric, aggfunc="first", dropna=False)


@dataclass(frozen=True)
class PairParity:
    """Agreement between two cells' outputs on the same evaluation samples."""

    cell_a: str
    cell_b: str
    top1_agreement: float
    max_abs_diff: float
    n_samples: int


def pairwise_parity(outputs: Mapping[str, np.ndarray]) -> List[PairParity]:
    """Top-1 agreement and max abs difference for every pair of cells (first min(len) samples)."""
    ids = sorted(outputs)
    pairs: List[PairParity] = []
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            n = min(len(outputs[a]), len(outputs[b]))
            if n == 0:
                continue
            xa = np.asarray(outputs[a][:n], dtype=np.float64).reshape(n, -1)
            xb = np.asarray(outputs[b][:n], dtype=np.float64).reshape(n, -1)
            if xa.shape != xb.shape:
                continue
            pairs.append(PairParity(a, b, float((xa.argmax(1) == xb.argmax(1)).mean()),
                                    float(np.abs(xa - xb).max()), n))
    return pairs


@dataclass(frozen=True)
class Disagreement:
    cell_a: str
    cell_b: str
    reason: str


def disagreements(pairs: Sequence[PairParity], same_group: Mapping[str, str],
                  atol: float = 1e-4) -> List[Disagreement]:
    """Pairs that should agree (same group, e.g. model/variant) but do not.

    A pair disagrees when any top-1 prediction differs or when outputs differ
    by more than `atol` (OpenVINO's bf16 default shows up here at ~1e-3).
    """
    found: List[Disagreement] = []
    for pair in pairs:
        if same_group.get(pair.cell_a) is None or same_group.get(pair.cell_a) != same_group.get(pair.cell_b):
            continue
        reasons = []
        if pair.top1_agreement < 1.0:
            reasons.append(f"top-1 agree on {pair.top1_agreement:.1%} of {pair.n_samples} samples")
        if pair.max_abs_diff > atol:
            reasons.append(f"max abs diff {pair.max_abs_diff:.2e} > {atol:g}")
        if reasons:
            found.append(Disagreement(pair.cell_a, pair.cell_b, "; ".join(reasons)))
    return found


# ---------------------------------------------------------------- parity across architectures
#: a foreign-architecture cell differs when top-1 differs or |a - b| > CROSS_ARCH_ATOL + CROSS_ARCH_RTOL * max|b|:
#: float noise from fused multiply-adds stays well below; one int8 rounding step (a quantization scale) does not
CROSS_ARCH_ATOL = 1e-4
CROSS_ARCH_RTOL = 1e-4


@dataclass(frozen=True)
class OutputComparison:
    """Two cells' outputs compared array by array (every key of their .npz; first min(len) samples)."""

    top1_agreement: Optional[float]
    max_abs_diff: Optional[float]
    #: the largest |output| of the second cell, for the relative part of the tolerance
    max_abs_b: float
    n_samples: int
    #: why they could not be compared ('' when they could)
    problem: str = ""

    def agrees(self, atol: float = CROSS_ARCH_ATOL, rtol: float = CROSS_ARCH_RTOL) -> bool:
        if self.problem:
            return False
        if self.top1_agreement is not None and self.top1_agreement < 1.0:
            return False
        return self.max_abs_diff is None or self.max_abs_diff <= atol + rtol * self.max_abs_b


def compare_outputs(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> OutputComparison:
    """Key by key: top-1 agreement (min over outputs with more than one value per sample), max abs difference.

    Works for one output ('output_0') or many (keys named after the model's outputs); outputs that
    only one side has, or whose shapes differ, make the pair not comparable and say so.
    """
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        return OutputComparison(None, None, 0.0, 0, f"output names differ ({', '.join(only)} on one side only)")
    top1: List[float] = []
    diffs: List[float] = []
    max_b, n_samples = 0.0, 0
    for key in sorted(a):
        xa, xb = np.asarray(a[key]), np.asarray(b[key])
        n = min(len(xa), len(xb)) if xa.ndim and xb.ndim else 0
        if n == 0 or xa.shape[1:] != xb.shape[1:]:
            return OutputComparison(None, None, 0.0, 0, f"output {key!r}: shapes {xa.shape} and {xb.shape}")
        n_samples = n if not n_samples else min(n_samples, n)
        if not (np.issubdtype(xa.dtype, np.number) or xa.dtype == bool) or \
                not (np.issubdtype(xb.dtype, np.number) or xb.dtype == bool):
            diffs.append(0.0 if np.array_equal(xa[:n], xb[:n]) else math.inf)
            continue
        fa = xa[:n].astype(np.float64).reshape(n, -1)
        fb = xb[:n].astype(np.float64).reshape(n, -1)
        if fa.size:
            diffs.append(float(np.abs(fa - fb).max()))
            max_b = max(max_b, float(np.abs(fb).max()))
        if fa.shape[1] > 1:
            top1.append(float((fa.argmax(1) == fb.argmax(1)).mean()))
    return OutputComparison(min(top1) if top1 else None, max(diffs) if diffs else None, max_b, n_samples)


@dataclass(frozen=True)
class CrossArchParity:
    """One (model, variant, format) on a device of another architecture against the same cell elsewhere."""

    model: str
    variant: str
    format: str
    #: the foreign-architecture device, e.g. sim-pi4-arm64 (aarch64)
    target: str
    arch: str
    #: the devices of the baseline architecture (e.g. x86_64) it is compared with: those that ran the same
    #: runtime and version where there are any (so an architecture difference is not a version difference)
    baseline_targets: Tuple[str, ...]
    baseline_arch: str
    #: worst over those devices (and over outputs)
    top1_agreement: Optional[float]
    max_abs_diff: Optional[float]
    n_samples: int
    #: the cells' own agreement with the reference (results columns)
    reference_top1: Optional[float]
    baseline_reference_top1: Optional[float]
    #: the baseline devices agree with each other (True with only one of them)
    baseline_agrees: bool
    agrees: bool
    verdict: str
    #: the runtime and version of the cell, e.g. "ai-edge-litert 2.3.0"
    runtime: str = ""
    #: baseline devices left out of the comparison because they ran another runtime or version, and
    #: whether the cell agrees with them too
    other_runtime_targets: Tuple[str, ...] = ()
    agrees_with_other_runtimes: Optional[bool] = None


def _runtime_of(row: Mapping[str, Any]) -> str:
    return " ".join(str(row.get(c)) for c in ("runtime", "runtime_version") if row.get(c) not in (None, "")
                    and row.get(c) == row.get(c))


def cross_arch_parity(frame: Any, outputs: Mapping[str, Mapping[str, np.ndarray]], arches: Mapping[str, str],
                      baseline_arch: str = "x86_64", atol: float = CROSS_ARCH_ATOL,
                      rtol: float = CROSS_ARCH_RTOL) -> List[CrossArchParity]:
    """Every ok cell on a device whose architecture is not `baseline_arch`, against the same
    (model, variant, format) on the baseline architecture's devices; pure.

    `outputs` maps a cell id to all its output arrays; `arches` a target to its architecture
    (what its probe reported). A cell whose outputs agree among the baseline devices but not
    on the other architecture is what a NEON/AVX rounding difference looks like. Where baseline
    devices ran the same runtime and version as the cell, only they are compared (two versions of
    a runtime can round int8 differently on one architecture); the others are reported apart.
    """
    rows = [r for r in records(frame) if r.get("status") == OK and str(r.get("cell_id")) in outputs]
    by_cell: Dict[Tuple[str, str, str, str], List[Mapping[str, Any]]] = {}
    for r in rows:
        # a runtime configuration (TensorRT fp16, OpenVINO bf16) is compared only with the same configuration
        by_cell.setdefault((str(r["model"]), str(r["variant"]), str(r["format"]), config_label(r)), []).append(r)
    found: List[CrossArchParity] = []
    for (model, variant, fmt, _), cell_rows in sorted(by_cell.items()):
        base = sorted((r for r in cell_rows if arches.get(str(r["target"])) == baseline_arch),
                      key=lambda r: str(r["target"]))
        foreign = sorted((r for r in cell_rows if arches.get(str(r["target"])) not in (None, "", baseline_arch)),
                         key=lambda r: str(r["target"]))
        if not base or not foreign:
            continue
        for r in foreign:
            target, runtime = str(r["target"]), _runtime_of(r)
            same = [b for b in base if runtime and _runtime_of(b) == runtime]
            compared = same or base
            others = [b for b in base if b not in compared]
            mine = outputs[str(r["cell_id"])]
            base_outputs = [outputs[str(b["cell_id"])] for b in compared]
            baseline_agrees = all(compare_outputs(x, y).agrees(atol, rtol)
                                  for i, x in enumerate(base_outputs) for y in base_outputs[i + 1:])
            base_ref = [v for v in (finite_or_none(b.get("top1_agreement")) for b in compared) if v is not None]
            comparisons = [compare_outputs(mine, b) for b in base_outputs]
            problems = [c.problem for c in comparisons if c.problem]
            top1s = [c.top1_agreement for c in comparisons if c.top1_agreement is not None]
            diffs = [c.max_abs_diff for c in comparisons if c.max_abs_diff is not None]
            agrees = all(c.agrees(atol, rtol) for c in comparisons) and not problems
            arch = arches[target]
            scope = f"{baseline_arch} ({runtime})" if same else baseline_arch
            if problems:
                verdict = f"not comparable: {problems[0]}"
            elif agrees:
                verdict = f"agrees with {scope}"
            elif baseline_agrees:
                verdict = f"agrees on {scope}, differs on {arch}"
            else:
                verdict = f"differs on {arch}; the {scope} devices differ among themselves too"
            if not same and runtime and not problems:
                verdict += f" (no {baseline_arch} device ran {runtime})"
            with_others = (all(compare_outputs(mine, outputs[str(b["cell_id"])]).agrees(atol, rtol) for b in others)
                           if others else None)
            if with_others is False:
                verdict += (f"; other runtime versions on {baseline_arch} ("
                            + ", ".join(f"{b['target']}: {_runtime_of(b)}" for b in others) + ") differ from it")
            found.append(CrossArchParity(
                model, variant, fmt, target, arch, tuple(str(b["target"]) for b in compared), baseline_arch,
                min(top1s) if top1s else None, max(diffs) if diffs else None,
                min((c.n_samples for c in comparisons), default=0), finite_or_none(r.get("top1_agreement")),
                min(base_ref) if base_ref else None, baseline_agrees, agrees, verdict, runtime,
                tuple(str(b["target"]) for b in others), with_others))
    return found


# ---------------------------------------------------------------- Pareto front
def pareto_front(points: Sequence[Tuple[float, float]]) -> List[int]:
    """Indices of the (latency, accuracy) points no other point beats on both.

    Lower latency and higher accuracy are better; returned in order of latency.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: List[int] = []
    best_accuracy = -math.inf
    for i in order:
        if points[i][1] > best_accuracy:
            front.append(i)
            best_accuracy = points[i][1]
    return front


# ---------------------------------------------------------------- recommendations
@dataclass(frozen=True)
class Recommendation:
    """The most accurate cell of a model that fits a target, or the closest miss."""

    model: str
    target: str
    fits: bool
    cell_id: Optional[str]
    variant: Optional[str]
    format: Optional[str]
    accuracy: Optional[float]
    latency_p99_ms: Optional[float]
    peak_memory_mb: Optional[float]
    reason: str
    #: the runtime configuration, where it is not the runtime's default (None: the default)
    runtime_config: Optional[str] = None

    @property
    def choice(self) -> str:
        """'ov_int8/openvino on ov-cpu-f32' ('reference/onnx' for a runtime's default configuration)."""
        if not self.variant:
            return ""
        return f"{self.variant}/{self.format}" + (f" on {self.runtime_config}" if self.runtime_config else "")


def _rank_accuracy(row: Mapping[str, Any]) -> float:
    for column in ("primary_retention", "accuracy", "accuracy_retention", "top1_agreement"):
        value = finite_or_none(row.get(column))
        if value is not None:
            return value
    return -math.inf


def _overshoot(row: Mapping[str, Any], budget: Budgets) -> Tuple[float, List[str]]:
    """How far past its budget a cell is (0 = fits), and why."""
    worst, why = 0.0, []
    p99, peak = finite_or_none(row.get("latency_p99_ms")), peak_memory_mb(row)
    for name, value, limit, unit in (("p99", p99, budget.latency_p99_ms, "ms"),
                                     ("peak memory", peak, budget.peak_memory_mb, "MB")):
        if value is None:
            worst = math.inf
            why.append(f"{name} not measured")
        elif value > limit:
            worst = max(worst, value / limit - 1.0)
            why.append(f"{name} {value:.2f} {unit} > {limit:g} {unit} (+{value / limit - 1.0:.0%})")
    return worst, why


def recommend(frame: Any, budgets: Mapping[str, Budgets], emulated: AbstractSet[str] = frozenset()
              ) -> List[Recommendation]:
    """Per (model, target): the most accurate ok cell within both budgets, else the closest miss.

    On an emulated target every ok cell counts as within budget: only accuracy is judged.
    """
    rows = records(frame)
    out: List[Recommendation] = []
    for model, target in sorted({(str(r["model"]), str(r["target"])) for r in rows}):
        budget = budgets.get(target, Budgets())
        cells = [r for r in rows if str(r["model"]) == model and str(r["target"]) == target]
        ok = [r for r in cells if r.get("status") == OK]
        measured = [(r, *((0.0, []) if target in emulated else _overshoot(r, budget))) for r in ok]
        fitting = [r for r, over, _ in measured if over == 0.0]

        def rec(r: Mapping[str, Any], fits: bool, reason: str) -> Recommendation:
            return Recommendation(model, target, fits, str(r["cell_id"]), str(r["variant"]), str(r["format"]),
                                  finite_or_none(r.get("accuracy")) if finite_or_none(r.get("accuracy")) is not None
                                  else accuracy_measure(r)[0],
                                  finite_or_none(r.get("latency_p99_ms")), peak_memory_mb(r), reason,
                                  config_label(r)[1:] or None)

        if fitting:
            best = max(fitting, key=lambda r: (_rank_accuracy(r), -(finite_or_none(r.get("latency_p99_ms")) or 0.0),
                                               str(r["cell_id"])))
            out.append(rec(best, True, f"most accurate of {len(fitting)} cell(s) that ran; emulated device: "
                                       f"latency and memory not judged" if target in emulated else
                           f"most accurate of {len(fitting)} cell(s) within p99 "
                           f"{budget.latency_p99_ms:g} ms and {budget.peak_memory_mb:g} MB"))
        elif measured:
            closest, _, why = min(measured, key=lambda m: (m[1], -_rank_accuracy(m[0]), str(m[0]["cell_id"])))
            out.append(rec(closest, False, "none fits; closest miss: " + "; ".join(why)))
        else:
            statuses = ", ".join(sorted({str(r.get("status")) for r in cells}))
            out.append(Recommendation(model, target, False, None, None, None, None, None, None,
                                      f"none fits; no cell ran ({statuses})"))
    return out
