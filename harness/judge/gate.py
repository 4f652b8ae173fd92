"""The release gate: a run's table checked against a YAML policy.

    policy = load_policy(Path("policies/default.yaml"))
    result = evaluate(policy, frame, GateInputs(budgets, samples=..., baseline_rows=...))
    result.passed, result.violations
    write_junit(result, path)

`evaluate` is pure; loading the policy reads one file through the strict
loader, so a misspelt key is an error naming the file and the key.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import AbstractSet, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from harness.schema.loader import load_dataclass, read_yaml_mapping
from harness.judge.regression import (DEFAULT_ALPHA, DEFAULT_ASSUMED_RUN_CV, LATENCY_FIGURES, CellBaseline,
                                      RunSpread, compare_latency, history_key)
from harness.schema.results import FAILED, LOST, OK
from harness.core.numbers import finite_or_none
from harness.judge.scores import BYTES_PER_MB, accuracy_measure
from harness.schema.targets import ALL_FORMATS, Budgets
from harness.judge.verdict import gate_exit_code
from harness.judge.gate_rules import (DEVICE_WIDE_ACTIONS, Check, detectability_notes, device_wide, is_noisy,
                                      with_shift_function)
from harness.judge.junit import junit_xml, write_junit
from harness.schema.results import records

LAST_PASSING = "last-passing"
#: the rule of a cell that has no baseline yet (its key's first run): passed, never silently
NO_BASELINE_RULE = "baseline"
NO_BASELINE_MESSAGE = "no baseline yet: first run of this cell"


@dataclass(frozen=True)
class TargetPolicy:
    """What a run must meet on one target. A field left out (null) is not checked.

    Under `targets.<name>` a field overrides the same field of `defaults`.
    """

    #: every checked ok cell: accuracy_retention (top1_agreement without labels) >= this
    min_accuracy_retention: Optional[float] = None
    #: every checked ok cell: latency_p99_ms <= this
    max_latency_p99_ms: Optional[float] = None
    #: every checked ok cell: peak RSS in MB (2**20 bytes) <= this
    max_peak_memory_mb: Optional[float] = None
    #: every checked ok cell: energy per inference above idle in mJ <= this (docs/energy.md); a cell whose energy
    #: was not measured fails it, naming why
    max_energy_mj: Optional[float] = None
    #: take max_latency_p99_ms / max_peak_memory_mb / max_energy_mj from targets/<name>.yaml budgets where not set
    use_target_budgets: Optional[bool] = None
    #: slowdown against the baseline (0.10 = 10 %), judged on the per-iteration samples, for each of
    #: latency_figures
    max_latency_regression: Optional[float] = None
    #: which figures of the latency distribution max_latency_regression judges, each with its own test and
    #: interval: median, mean, p90 (unset: all three). A stall that hits a fraction of inferences moves the
    #: mean and the tail, not the median
    latency_figures: Optional[Tuple[str, ...]] = None
    #: optional absolute floor: latency shifts smaller than this many ms never count as regressions. Unset (the
    #: default) there is none: the judge compares a change with the cell's own measured noise, so a 20 us model
    #: is judged as fairly as a 10 ms one
    min_latency_shift_ms: Optional[float] = None
    #: between-run spread (CV of the run-level median) assumed while a cell has one repeat and too little
    #: history to measure it (default 0.03)
    assumed_run_cv: Optional[float] = None
    #: absolute accuracy drop against the baseline (0.01 = one point)
    max_accuracy_drop: Optional[float] = None
    #: relative peak-memory growth against the baseline
    max_memory_regression: Optional[float] = None
    #: relative growth of energy per inference against the baseline (0.10 = 10 %); judged where both measured it
    max_energy_regression: Optional[float] = None
    #: every model on the target has an ok cell in each of these formats
    required_formats: Optional[Tuple[str, ...]] = None
    #: only these variants are checked (empty or unset: all of them)
    variants: Optional[Tuple[str, ...]] = None
    #: whether a failed or lost cell is allowed ('incompatible' always is)
    allow_failed_cells: Optional[bool] = None
    #: the nightly rule: a regression change point (harness.judge.trends) among the newest N runs of any of a
    #: cell's series fails the gate, and the regression rules compare with the segment since each series' last
    #: change point instead of one earlier run
    nightly_window_runs: Optional[int] = None
    #: when most cells of a device regress at once (device_wide_share of the judged cells, at least 3, of at least
    #: 2 models): 'note' (the default: one note, its cells' latency checks pass; the device moved, not the
    #: models), 'not_judged' (re-run: exit 2, never a baseline) or 'fail' (one violation, device_wide_shift).
    #: A cell slower than the device's shift by more than max_latency_regression stays a model regression
    device_wide_shift: Optional[str] = None
    #: the share of a device's judged cells that makes a device-wide shift (default 0.6)
    device_wide_share: Optional[float] = None

    def __post_init__(self) -> None:
        for name in ("min_accuracy_retention",):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        for name in ("max_latency_p99_ms", "max_peak_memory_mb", "max_energy_mj"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.assumed_run_cv is not None and not 0.0 < self.assumed_run_cv <= 1.0:
            raise ValueError(f"assumed_run_cv is a fraction (0.03 = 3 %), got {self.assumed_run_cv}")
        if self.min_latency_shift_ms is not None and self.min_latency_shift_ms < 0:
            raise ValueError(f"min_latency_shift_ms must not be negative, got {self.min_latency_shift_ms}")
        for name in ("max_latency_regression", "max_accuracy_drop", "max_memory_regression", "max_energy_regression"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 10.0:
                raise ValueError(f"{name} is a fraction (0.10 = 10 %), got {value}")
        if self.device_wide_shift is not None and self.device_wide_shift not in DEVICE_WIDE_ACTIONS:
            raise ValueError(f"device_wide_shift is one of {', '.join(DEVICE_WIDE_ACTIONS)}, got "
                             f"{self.device_wide_shift!r}")
        if self.device_wide_share is not None and not 0.0 < self.device_wide_share <= 1.0:
            raise ValueError(f"device_wide_share is a fraction (0.6 = 60 %), got {self.device_wide_share}")
        if self.nightly_window_runs is not None and not 1 <= self.nightly_window_runs <= 100:
            raise ValueError(f"nightly_window_runs is a number of runs from 1 to 100, got {self.nightly_window_runs}")
        strange = [f for f in self.latency_figures or () if f not in LATENCY_FIGURES]
        if strange or (self.latency_figures is not None and not self.latency_figures):
            raise ValueError(f"latency_figures has unknown or no figure(s) {strange}; known: "
                             f"{', '.join(LATENCY_FIGURES)}")
        unknown = [f for f in self.required_formats or () if f not in ALL_FORMATS]
        if unknown:
            raise ValueError(f"required_formats has unknown format(s) {unknown}; known: {', '.join(ALL_FORMATS)}")

    def merged_over(self, defaults: "TargetPolicy") -> "TargetPolicy":
        """This policy with its unset fields taken from `defaults`."""
        return replace(defaults, **{f.name: getattr(self, f.name) for f in fields(self)
                                    if getattr(self, f.name) is not None})


@dataclass(frozen=True)
class Policy:
    """A release policy file (see policies/default.yaml)."""

    #: 'last-passing' (the newest earlier run that passed the gate) or a run id
    baseline: str = LAST_PASSING
    #: one significance level for every latency regression test
    alpha: float = DEFAULT_ALPHA
    defaults: TargetPolicy = field(default_factory=TargetPolicy)
    #: per-target overrides; every target named here must be in the run
    targets: Dict[str, TargetPolicy] = field(default_factory=dict)
    source_path: str = ""

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be between 0 and 0.5, got {self.alpha}")

    def for_target(self, target: str) -> TargetPolicy:
        override = self.targets.get(target)
        return override.merged_over(self.defaults) if override else self.defaults


def load_policy(path: Path | str) -> Policy:
    """Read a policy file strictly: unknown keys and bad values name the file and key."""
    path = Path(path)
    data = read_yaml_mapping(path)
    data["source_path"] = str(path)
    return load_dataclass(Policy, data, path)


# ---------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class GateResult:
    run_id: str
    policy_path: str
    baseline_id: Optional[str]
    checks: Tuple[Check, ...]
    notes: Tuple[str, ...] = ()

    @property
    def violations(self) -> List[Check]:
        return [c for c in self.checks if not c.passed and not c.skipped]

    @property
    def without_baseline(self) -> List[Check]:
        """Cells whose regression rules had nothing to compare with: the first run of their cell key."""
        return [c for c in self.checks if c.rule == NO_BASELINE_RULE]

    @property
    def not_judged(self) -> List[Check]:
        """Checks that could not be made: cells measured on a noisy device, too few latency samples."""
        return [c for c in self.checks if c.skipped]

    @property
    def passed(self) -> bool:
        return not self.violations

    @property
    def exit_code(self) -> int:
        """0 pass, 1 fail, 2 could not judge (nothing failed, but something must be re-run)."""
        return gate_exit_code(self.passed, len(self.not_judged), len(self.checks) - len(self.not_judged))

    @property
    def verdict(self) -> str:
        return {0: "PASS", 1: "FAIL", 2: "NOT JUDGED"}[self.exit_code]

    def lines(self) -> List[str]:
        """What `harness gate` prints: the verdict, each violation, what was not judged, then the notes."""
        judged = [c for c in self.checks if not c.skipped]
        out = [f"gate {self.verdict}: run {self.run_id}, policy {self.policy_path}, "
               f"{len(judged)} checks, {len(self.violations)} violation(s), {len(self.not_judged)} not judged, "
               + (f"{len(self.without_baseline)} without a baseline, " if self.without_baseline else "")
               + f"baseline {self.baseline_id or 'none'}"]
        out += [f"  VIOLATION [{c.target}] {c.rule}: {c.subject}: {c.message}" for c in self.violations]
        out += [f"  NOT JUDGED [{c.target}] {c.rule}: {c.subject}: {c.message}" for c in self.not_judged]
        out += [f"  NO BASELINE [{c.target}] {c.subject}: {c.message}" for c in self.without_baseline]
        if self.exit_code == 2:
            out.append("  re-run the cells not judged (`make nightly` again, on a quiet device) before releasing")
        out += [f"  note: {n}" for n in self.notes]
        return out




def _identity(row: Mapping[str, Any]) -> Tuple[str, str, str, str]:
    return (str(row.get("model")), str(row.get("variant")), str(row.get("format")), str(row.get("target")))


def _noisy_check(target: str, row: Mapping[str, Any]) -> Check:
    why = row.get("noise_reasons") or "the device was busy or throttling"
    return Check(target, "quiet_device", str(row.get("cell_id")), True,
                 f"measured on a noisy device ({why}): not judged, re-run", skipped=True)


def _cell_checks(tp: TargetPolicy, target: str, rows: Sequence[Mapping[str, Any]],
                 budget: Optional[Budgets]) -> List[Check]:
    checks: List[Check] = []
    max_p99 = tp.max_latency_p99_ms
    max_mb = tp.max_peak_memory_mb
    if tp.use_target_budgets and budget is not None:
        max_p99 = max_p99 if max_p99 is not None else budget.latency_p99_ms
        max_mb = max_mb if max_mb is not None else budget.peak_memory_mb
    max_mj = tp.max_energy_mj if tp.max_energy_mj is not None or not tp.use_target_budgets or budget is None \
        else budget.energy_mj
    for row in rows:
        cell, status = str(row.get("cell_id")), row.get("status")
        if status in (FAILED, LOST):
            why = f"{status}: {row.get('error_category') or ''} {row.get('error_message') or ''}".strip()
            checks.append(Check(target, "cell_status", cell, bool(tp.allow_failed_cells), why))
            continue
        if status != OK:
            continue
        if is_noisy(row):
            checks.append(_noisy_check(target, row))
            continue
        checks.append(Check(target, "cell_status", cell, True, str(status)))
        if tp.min_accuracy_retention is not None:
            retention, source = accuracy_measure(row)
            if retention is None:
                checks.append(Check(target, "min_accuracy_retention", cell, False, "no accuracy measured"))
            else:
                checks.append(Check(target, "min_accuracy_retention", cell, retention >= tp.min_accuracy_retention,
                                    f"{source} {retention:.4f} (minimum {tp.min_accuracy_retention:g})"))
        for rule, value, limit, unit in (
                ("max_latency_p99_ms", finite_or_none(row.get("latency_p99_ms")), max_p99, "ms"),
                ("max_peak_memory_mb", None if finite_or_none(row.get("peak_rss_bytes")) is None
                 else float(row["peak_rss_bytes"]) / BYTES_PER_MB, max_mb, "MB"),
                ("max_energy_mj", finite_or_none(row.get("energy_mj_per_inference")), max_mj, "mJ")):
            if limit is None:
                continue
            if value is None:
                why = row.get("energy_method") if rule == "max_energy_mj" else None
                checks.append(Check(target, rule, cell, False, why if why and "not measured" in str(why)
                                    else "not measured"))
            else:
                checks.append(Check(target, rule, cell, value <= limit, f"{value:.2f} {unit} (maximum {limit:g} {unit})"))
    return checks


def _format_checks(tp: TargetPolicy, target: str, rows: Sequence[Mapping[str, Any]]) -> List[Check]:
    checks: List[Check] = []
    for model in sorted({str(r.get("model")) for r in rows}):
        model_rows = [r for r in rows if str(r.get("model")) == model]
        for fmt in tp.required_formats or ():
            ran = [r for r in model_rows if r.get("format") == fmt and r.get("status") == OK]
            statuses = sorted({str(r.get("status")) for r in model_rows if r.get("format") == fmt})
            message = (f"ok in {len(ran)} cell(s)" if ran else
                       f"no ok {fmt} cell ({', '.join(statuses) if statuses else 'not in the run'})")
            checks.append(Check(target, "required_formats", f"{model}/{fmt}", bool(ran), message))
    return checks


def latency_rule(figure: str) -> str:
    """The gate rule of one latency figure: max_latency_regression (median), max_latency_regression.mean, ..."""
    return "max_latency_regression" if figure == "median" else f"max_latency_regression.{figure}"


def _baseline_checks(tp: TargetPolicy, target: str, rows: Sequence[Mapping[str, Any]],
                     samples: Mapping[str, Any], baseline_rows: Sequence[Mapping[str, Any]],
                     baseline_samples: Mapping[str, Any], alpha: float,
                     history: Mapping[Tuple[str, ...], RunSpread], paired: bool = False,
                     figure_history: Optional[Mapping[str, Mapping[Tuple[str, ...], RunSpread]]] = None,
                     by_history_key: bool = False) -> List[Check]:
    """The regression rules of each cell against its baseline row: matched by (model, variant, format, target),
    or with `by_history_key` by the whole cell key (runtime configuration included: per-cell baselines)."""
    checks: List[Check] = []
    match = (lambda r: tuple(history_key(r))) if by_history_key else _identity
    base_by_id = {match(r): r for r in baseline_rows}
    for row in rows:
        base = base_by_id.get(match(row))
        if base is None or row.get("status") != OK or base.get("status") != OK or is_noisy(row):
            continue
        cell = str(row.get("cell_id"))
        if tp.max_latency_regression is not None:
            if is_noisy(base):
                checks.append(Check(target, "max_latency_regression", cell, True,
                                    f"the baseline's cell was measured on a noisy device "
                                    f"({base.get('noise_reasons') or 'busy or throttling'}): not judged", skipped=True))
            else:
                latency_checks: List[Check] = []
                for figure in tp.latency_figures or LATENCY_FIGURES:
                    spreads = history if figure == "median" else (figure_history or {}).get(figure, {})
                    comparison = compare_latency(
                        baseline_samples.get(str(base.get("cell_id"))), samples.get(cell),
                        min_effect=tp.max_latency_regression, alpha=alpha, history=spreads.get(history_key(row)),
                        assumed_run_cv=DEFAULT_ASSUMED_RUN_CV if tp.assumed_run_cv is None else tp.assumed_run_cv,
                        min_shift_ms=tp.min_latency_shift_ms or 0.0, paired=paired, figure=figure)
                    latency_checks.append(Check(target, latency_rule(figure), cell, not comparison.regressed,
                                                f"{comparison.describe()} (maximum {tp.max_latency_regression:+.0%})",
                                                skipped=not comparison.judged, change=comparison.relative_change))
                checks += with_shift_function(latency_checks, baseline_samples.get(str(base.get("cell_id"))),
                                               samples.get(cell))
        acc_now, acc_base = finite_or_none(row.get("accuracy")), finite_or_none(base.get("accuracy"))
        if tp.max_accuracy_drop is not None and acc_now is not None and acc_base is not None:
            drop = acc_base - acc_now
            checks.append(Check(target, "max_accuracy_drop", cell, drop <= tp.max_accuracy_drop + 1e-12,
                                f"accuracy {acc_base:.4f} -> {acc_now:.4f} (maximum drop {tp.max_accuracy_drop:g})"))
        mem_now, mem_base = finite_or_none(row.get("peak_rss_bytes")), finite_or_none(base.get("peak_rss_bytes"))
        if tp.max_memory_regression is not None and mem_now is not None and mem_base:
            rise = mem_now / mem_base - 1.0
            checks.append(Check(target, "max_memory_regression", cell, rise <= tp.max_memory_regression,
                                f"peak RSS {mem_base / BYTES_PER_MB:.1f} -> {mem_now / BYTES_PER_MB:.1f} MB "
                                f"({rise:+.1%}, maximum {tp.max_memory_regression:+.0%})"))
        mj_now, mj_base = (finite_or_none(r.get("energy_mj_per_inference")) for r in (row, base))
        if tp.max_energy_regression is not None and mj_now is not None and mj_base is not None and mj_base > 0:
            rise = mj_now / mj_base - 1.0
            checks.append(Check(target, "max_energy_regression", cell, rise <= tp.max_energy_regression,
                                f"energy per inference {mj_base:.4g} -> {mj_now:.4g} mJ ({rise:+.1%}, maximum "
                                f"{tp.max_energy_regression:+.0%})"))
    return checks


def _per_cell_checks(tp: TargetPolicy, target: str, rows: Sequence[Mapping[str, Any]], inputs: "GateInputs",
                     alpha: float) -> Tuple[List[Check], List[str]]:
    """The regression rules of each cell against its own key's baseline (GateInputs.cell_baselines), and the
    baseline runs used. A cell whose key has none is named: the first run of this cell."""
    baselines = inputs.cell_baselines or {}
    checks: List[Check] = []
    base_rows: List[Dict[str, Any]] = []
    base_samples: Dict[str, Any] = {}
    run_of: Dict[str, str] = {}
    energy_run_of: Dict[str, str] = {}
    for row in rows:
        if row.get("status") != OK or is_noisy(row):
            continue
        cell = str(row.get("cell_id"))
        found = baselines.get(tuple(history_key(row)))
        if found is None:
            checks.append(Check(target, NO_BASELINE_RULE, cell, True,
                                f"{NO_BASELINE_MESSAGE}; nothing to compare its latency, accuracy, memory or "
                                f"energy with"))
            continue
        base_id = f"{found.run_id}::{found.row.get('cell_id')}"
        # energy against the key's newest passing measurement that has a figure (its run may be an earlier one)
        base_rows.append({**found.row, "cell_id": base_id,
                          "energy_mj_per_inference": found.energy[1] if found.energy else None})
        base_samples[base_id] = found.samples
        run_of[cell] = found.run_id
        if found.energy:
            energy_run_of[cell] = found.energy[0]
    judged = _baseline_checks(tp, target, rows, inputs.samples, base_rows, base_samples, alpha,
                              inputs.history or {}, False, inputs.figure_history, by_history_key=True)

    def baseline_run(check: Check) -> Optional[str]:
        if check.rule == "max_energy_regression":
            return energy_run_of.get(check.subject)
        return run_of.get(check.subject)

    checks += [replace(c, message=f"{c.message}; baseline run {baseline_run(c)}") if baseline_run(c) else c
               for c in judged]
    return checks, sorted(set(run_of.values()) | set(energy_run_of.values()))


def _thresholds(tp: TargetPolicy) -> Dict[str, float]:
    """The smallest shift of each trend figure that counts as a regression change point."""
    from harness.judge.trends import DEFAULT_THRESHOLDS
    latency = tp.max_latency_regression
    return {**DEFAULT_THRESHOLDS,
            **({f: latency for f in LATENCY_FIGURES} if latency is not None else {}),
            **({"peak_memory": tp.max_memory_regression} if tp.max_memory_regression is not None else {}),
            **({"energy": tp.max_energy_regression} if tp.max_energy_regression is not None else {}),
            **({"primary": tp.max_accuracy_drop} if tp.max_accuracy_drop is not None else {})}


def _candidate_cells(rows: Sequence[Mapping[str, Any]], samples: Mapping[str, Any], run_id: str) -> List[Dict]:
    return [{"run_id": run_id or "this run", "gate_status": None, "row": r, "samples": samples.get(str(r.get("cell_id")))}
            for r in rows if r.get("status") == OK and not is_noisy(r)]


def _nightly_checks(tp: TargetPolicy, target: str, rows: Sequence[Mapping[str, Any]], samples: Mapping[str, Any],
                    history_cells: Sequence[Mapping[str, Any]], run_id: str, alpha: float) -> List[Check]:
    """One check per cell: no regression change point among the newest nightly_window_runs of its series."""
    from harness.judge.trends import build_trends, find_change_points, newest_regressions
    window = int(tp.nightly_window_runs or 0)
    # energy's series only where the policy judges energy: a target without a sensor has none anyway
    figures = tuple(tp.latency_figures or LATENCY_FIGURES) + ("peak_memory", "primary") + \
        (("energy",) if tp.max_energy_regression is not None else ())
    candidates = _candidate_cells(rows, samples, run_id)
    keys = {tuple(history_key(c["row"])) for c in candidates}
    trends = [find_change_points(t, alpha=alpha, thresholds=_thresholds(tp))
              for t in build_trends(list(history_cells) + candidates, figures, keys)]
    checks: List[Check] = []
    for cell in candidates:
        key = tuple(history_key(cell["row"]))
        mine = [t for t in trends if t.key == key]
        found = [c for t in mine for c in newest_regressions(t, window)]
        runs = max((len(t.used) for t in mine), default=0)
        message = ("; ".join(c.describe() for c in found) if found else
                   f"no regression change point among the newest {window} runs of its {len(mine)} series "
                   f"({runs} runs{', too few to find one yet' if runs < 4 else ''})")
        checks.append(Check(target, "nightly_change_point", str(cell["row"].get("cell_id")), not found, message))
    return checks


def _segment_baseline(rows: Sequence[Mapping[str, Any]], samples: Mapping[str, Any],
                      history_cells: Sequence[Mapping[str, Any]], alpha: float
                      ) -> Tuple[List[Dict[str, Any]], Dict[str, Any], Dict[str, Any], List[int]]:
    """The nightly baseline of each cell: every run of its median series since the last change point, each run
    one 'repeat' of the baseline (so their spread is the between-run noise, measured), and the candidate's
    repeats pooled into one, since it is one run of that series. Returns (baseline rows, baseline samples,
    candidate samples, segment lengths)."""
    from statistics import median

    from harness.judge.trends import build_trends, cell_figure, find_change_points, last_segment
    from harness.judge.regression import flat_samples
    keys = {tuple(history_key(r)) for r in rows if r.get("status") == OK}
    by_run_key: Dict[Tuple[str, Tuple[str, ...]], Mapping[str, Any]] = {
        (str(c["run_id"]), tuple(history_key(c["row"]))): c for c in history_cells}
    base_rows: List[Dict[str, Any]] = []
    base_samples: Dict[str, Any] = {}
    lengths: List[int] = []
    for trend in build_trends(history_cells, ("median",), keys):
        segment = last_segment(find_change_points(trend, alpha=alpha))
        cells = [by_run_key[(p.run_id, trend.key)] for p in segment if (p.run_id, trend.key) in by_run_key]
        runs = [flat_samples(c["samples"]) for c in cells if c.get("samples") is not None]
        runs = [r for r in runs if len(r)]
        if not cells:
            continue
        segment_id = f"segment::{cells[-1]['row'].get('cell_id')}"
        # energy per inference, like latency, against the whole segment: the median of the runs that measured it
        energies = [e for e in (cell_figure(c["row"], None, "energy") for c in cells) if e is not None]
        base_rows.append({**cells[-1]["row"], "cell_id": segment_id,
                          "energy_mj_per_inference": float(median(energies)) if energies else None})
        base_samples[segment_id] = runs if len(runs) > 1 else (runs[0] if runs else None)
        lengths.append(len(cells))
    candidate = {k: flat_samples(v) for k, v in samples.items()}
    return base_rows, base_samples, candidate, lengths


@dataclass(frozen=True)
class GateInputs:
    """Everything a gate judges a run's table with, besides the policy.

    `budgets` are the targets' budgets (used where use_target_budgets is set); `samples` and `baseline_*` feed
    the regression rules, which are skipped with a note when there is no baseline; `cell_baselines` gives each cell
    key its own baseline instead (the newest passing measurement of that key, in whichever run). `history` maps a cell's
    history key (regression.history_key) to the between-run spread the history store has seen for its median,
    `figure_history` the same by figure for the mean and p90. `history_cells` (History.trend_cells of the runs
    before this one) feed the nightly rule of a target whose policy sets nightly_window_runs: its change points,
    and the segment since the last one as the baseline of the regression rules. `paired`: the baseline rows were
    measured in this run, each repeat right after the candidate's (harness.schema.pairing), so latency is judged
    on the per-round differences. On the `emulated` targets (TargetSpec.emulated: qemu-user) latency and memory
    rules do not apply. `extra_checks` and `extra_notes` come from rules judged outside.
    """

    budgets: Mapping[str, Budgets] = field(default_factory=dict)
    run_id: str = ""
    samples: Mapping[str, Any] = field(default_factory=dict)
    baseline_rows: Optional[Sequence[Mapping[str, Any]]] = None
    baseline_samples: Mapping[str, Any] = field(default_factory=dict)
    baseline_id: Optional[str] = None
    history: Mapping[Tuple[str, ...], RunSpread] = field(default_factory=dict)
    figure_history: Mapping[str, Mapping[Tuple[str, ...], RunSpread]] = field(default_factory=dict)
    history_cells: Optional[Sequence[Mapping[str, Any]]] = None
    emulated: AbstractSet[str] = frozenset()
    paired: bool = False
    #: per-cell baselines (History.cell_baselines): each cell key's newest passing measurement, wherever it was
    #: recorded. When given (not None) they replace baseline_rows: a key without one is the first run of its
    #: cell, named in the verdict (NO_BASELINE_MESSAGE), never silently passed
    cell_baselines: Optional[Mapping[Tuple[str, ...], CellBaseline]] = None
    extra_checks: Sequence[Check] = ()
    extra_notes: Sequence[str] = ()


def evaluate(policy: Policy, frame: Any, inputs: Optional[GateInputs] = None) -> GateResult:
    """Every check of `policy` against a run's table (a DataFrame or rows); pure. A cell measured on a noisy
    device is not judged."""
    inputs = inputs or GateInputs()
    budgets, run_id, samples = inputs.budgets, inputs.run_id, inputs.samples
    baseline_rows, baseline_samples, baseline_id = inputs.baseline_rows, inputs.baseline_samples, inputs.baseline_id
    history, figure_history, history_cells = inputs.history, inputs.figure_history, inputs.history_cells
    emulated, paired = inputs.emulated, inputs.paired
    extra_checks, extra_notes = inputs.extra_checks, inputs.extra_notes
    rows = records(frame)
    checks: List[Check] = []
    notes: List[str] = []
    run_targets = sorted({str(r.get("target")) for r in rows})
    for target in sorted(set(policy.targets) - set(run_targets)):
        checks.append(Check(target, "target_present", target, False,
                            f"the policy names target {target!r} but the run has no cells on it "
                            f"(run targets: {', '.join(run_targets) or 'none'})"))
    if not rows:
        checks.append(Check("-", "cells_present", run_id or "run", False, "the run has no cells"))
    wants_baseline = nightly_baseline = False
    per_cell = inputs.cell_baselines is not None and not paired
    used_baselines: List[str] = []
    for target in run_targets:
        tp = policy.for_target(target)
        target_rows = [r for r in rows if str(r.get("target")) == target]
        checked = [r for r in target_rows if not tp.variants or str(r.get("variant")) in tp.variants]
        if target in emulated:
            tp = replace(tp, max_latency_p99_ms=None, max_peak_memory_mb=None, use_target_budgets=None,
                         max_latency_regression=None, max_memory_regression=None, max_energy_mj=None,
                         max_energy_regression=None)
            checked = [{**r, "noisy": False} for r in checked]
            notes.append(f"{target}: emulated device (qemu-user): latency and memory rules not judged, only "
                         f"whether cells run and their accuracy")
        if tp.use_target_budgets and target not in budgets:
            notes.append(f"{target}: use_target_budgets is set but no budget is known for the target")
        checks += _cell_checks(tp, target, checked, budgets.get(target))
        checks += _format_checks(tp, target, checked)
        nightly = bool(tp.nightly_window_runs) and history_cells is not None and not paired
        if nightly:
            checks += _nightly_checks(tp, target, checked, samples, history_cells or [], run_id, policy.alpha)
        if any(v is not None for v in (tp.max_latency_regression, tp.max_accuracy_drop, tp.max_memory_regression,
                                       tp.max_energy_regression)):
            wants_baseline = True
            seg_rows: List[Dict[str, Any]] = []
            if nightly:
                seg_rows, seg_samples, pooled, lengths = _segment_baseline(checked, samples, history_cells or [],
                                                                           policy.alpha)
            if seg_rows:
                # the segment's own spread between runs is the noise; while it has few runs, the history's
                # longer-run spread is asked too (the judge takes the larger)
                few = min(lengths) < 4
                checks += _baseline_checks(tp, target, checked, pooled, seg_rows, seg_samples, policy.alpha,
                                           (history or {}) if few else {}, paired,
                                           figure_history if few else {})
                notes.append(f"{target}: nightly baseline: each series' runs since its last change point "
                             f"({min(lengths)}-{max(lengths)} runs)")
                nightly_baseline = True
            elif per_cell:
                found, runs = _per_cell_checks(tp, target, checked, inputs, policy.alpha)
                checks += found
                used_baselines += runs
            elif baseline_rows is not None:
                checks += _baseline_checks(tp, target, checked, samples, baseline_rows, baseline_samples or {},
                                           policy.alpha, history or {}, paired, figure_history)
            if tp.max_latency_regression is not None and not paired:
                checks, device_notes = device_wide(target, checks, run_id,
                                                   action=tp.device_wide_shift or DEVICE_WIDE_ACTIONS[0],
                                                   share=tp.device_wide_share,
                                                   max_latency_regression=tp.max_latency_regression)
                notes += device_notes
            if not paired:
                notes += detectability_notes(target, checked, threshold=tp.max_latency_regression,
                                             figures=tp.latency_figures or LATENCY_FIGURES, history=history or {},
                                             figure_history=figure_history or {}, alpha=policy.alpha)
    if wants_baseline and baseline_rows is None and not nightly_baseline and not per_cell:
        notes.append("no baseline run found: regression rules not checked (the first passing run becomes one)")
    first = [c for c in checks if c.rule == NO_BASELINE_RULE]
    if first:
        notes.append(f"{len(first)} cell(s) without a baseline ({NO_BASELINE_MESSAGE}): their regression rules start "
                     f"once a run with them passes the gate")
    checks += list(extra_checks)
    notes += list(extra_notes)
    noisy = [c for c in checks if c.skipped and c.rule == "quiet_device"]
    if noisy:
        notes.append(f"{len(noisy)} cell(s) measured on a busy or throttling device: not judged; re-run them")
    unsampled = [c for c in checks if c.skipped and c.rule.startswith("max_latency_regression")]
    if unsampled:
        notes.append(f"{len(unsampled)} latency comparison(s) not judged (too few samples, or a noisy baseline)")
    if nightly_baseline:
        baseline_id = "the segment since each series' last change point"
    elif per_cell and used_baselines:
        runs = sorted(set(used_baselines))
        baseline_id = (runs[0] if len(runs) == 1 else
                       f"per cell: runs {', '.join(runs[:3])}{f' and {len(runs) - 3} more' if len(runs) > 3 else ''}")
    return GateResult(run_id, policy.source_path,
                      baseline_id if baseline_rows is not None or nightly_baseline or (per_cell and used_baselines)
                      else None,
                      tuple(checks), tuple(notes))


__all__ = ["Check", "GateInputs", "GateResult", "Policy", "TargetPolicy", "evaluate", "is_noisy", "junit_xml",
           "load_policy", "write_junit"]
