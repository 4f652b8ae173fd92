"""`python -m harness.bench` (`make bench`): fidelity, overhead, scaling and memory, into reports/bench/.

    python -m harness.bench              # the full bench (about 6-10 minutes on 2 cores)
    python -m harness.bench --quick      # fewer rounds, shorter runs, 1 and 3 devices
    python -m harness.bench --only fidelity,overhead
    python -m harness.bench --only calibration --reruns 10 --repeats 3   # the gate calibration alone
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
import shutil
import sys
import tempfile
import time
from pathlib import Path

from harness.prepare.cache import DEFAULT_CACHE_DIR
from harness.bench import report
from harness.bench.memory import ControllerRun  # noqa: F401 (re-exported for readers of bench.json's shape)
from harness.bench.models import BENCH_DIR, models_for_fidelity
from harness.bench.overhead import Workspace, overhead, timed_profile
from harness.bench.scaling import scaling
from harness.bench.vendor import fidelity, load_average

STEPS = ("overhead", "fidelity", "scaling", "calibration", "nightly", "paired", "distributed", "cache_verify")
#: bench.json sections a step writes
SECTIONS = ("overhead", "fidelity", "scaling", "calibration", "nightly", "paired_calibration", "distributed",
            "cache_verify")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 rounds of 0.3 s runs, 1 warm rerun, 1 and 3 devices")
    p.add_argument("--only", default=",".join(STEPS), help=f"comma-separated steps of {', '.join(STEPS)} (default all)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds per pairing (default 9; quick 3)")
    p.add_argument("--target-s", type=float, default=None,
                   help="timed seconds per tool run; sets the iteration count per model (default 0.6; quick 0.3)")
    p.add_argument("--threads", type=int, default=1, help="threads for every tool (default 1)")
    p.add_argument("--ov-precision", default="f32,default",
                   help="OpenVINO precisions to pair, 'default' = the plugin's own choice (default f32,default)")
    p.add_argument("--warm-runs", type=int, default=None, help="warm profile reruns (default 3; quick 1)")
    p.add_argument("--history-runs", type=int, default=100,
                   help="earlier runs in the history store before the warm profiles, as a nightly farm has (default "
                        "100): the trend page drawn after each run reads them all")
    p.add_argument("--devices", default=None, help="device counts for scaling (default 1,3,6; quick 1,3)")
    p.add_argument("--preload", action="store_true",
                   help="scaling: import the transport plugins before the nightly starts (the registry loads them "
                        "once under a lock, so this should change nothing)")
    p.add_argument("--reruns", type=int, default=None, help="calibration: reruns per cell (default 10; quick 4)")
    p.add_argument("--repeats", type=int, default=None,
                   help="calibration: interleaved agent runs per rerun (default 3; quick 2)")
    p.add_argument("--quota-reruns", type=int, default=None,
                   help="calibration: reruns under a 90 %% CPU quota (default 5; quick 2; 0 to skip)")
    p.add_argument("--duration", type=float, default=None,
                   help="calibration: seconds each agent run measures (default 1.0; quick 0.5)")
    p.add_argument("--quiet-max-other-busy-cpus", type=float, default=None, metavar="CPUS",
                   help="calibration: the quiet-device guard's max_other_busy_cpus for judging reruns (default: the "
                        "target default, 0.5); a VM that always shares a core with another tenant needs about 1.2")
    p.add_argument("--quiet-max-load-per-cpu", type=float, default=None, metavar="LOAD",
                   help="calibration: the guard's max_load_per_cpu (default: the target default, 1.0)")
    p.add_argument("--reanalyse", type=Path, default=None, metavar="SAMPLES",
                   help="calibration: analyse a calibration-samples.json.gz again (e.g. with other guard limits), "
                        "measuring nothing")
    p.add_argument("--out", type=Path, default=Path("reports/bench"), help="where bench.json and bench.md go")
    p.add_argument("--keep", action="store_true", help="keep the bench's workspace (caches, run directories)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    steps = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        print(f"harness.bench: unknown step(s) {unknown}; known: {', '.join(STEPS)}", file=sys.stderr)
        return 2
    rounds = args.rounds or (3 if args.quick else 9)
    target_s = args.target_s or (0.3 if args.quick else 0.6)
    warm_runs = args.warm_runs if args.warm_runs is not None else (1 if args.quick else 3)
    sizes = tuple(int(n) for n in (args.devices or ("1,3" if args.quick else "1,3,6")).split(","))
    precisions = tuple("" if p == "default" else p for p in args.ov_precision.split(","))

    def log(line: str) -> None:
        print(line, flush=True)

    started = time.perf_counter()
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    ws = Workspace(Path(tempfile.mkdtemp(prefix="work-", dir=BENCH_DIR)).resolve()).create()
    doc = {"machine": report.machine(), "load_average_start": load_average(), "notes": [],
           "settings": {"rounds": rounds, "target_s_per_run": target_s, "threads": args.threads,
                        "warm_runs": warm_runs, "devices": list(sizes), "quick": args.quick,
                        "ov_precisions": [p or "default" for p in precisions]}}
    memory_runs = []
    try:
        # Overhead first: its cold profile also builds the digits artifacts the other steps use.
        if "calibration" in steps:
            from harness.schema.targets import QuietLimits
            from harness.bench.calibration import calibration, reanalyse
            defaults = QuietLimits()
            limits = QuietLimits(
                max_other_busy_cpus=defaults.max_other_busy_cpus if args.quiet_max_other_busy_cpus is None
                else args.quiet_max_other_busy_cpus,
                max_load_per_cpu=defaults.max_load_per_cpu if args.quiet_max_load_per_cpu is None
                else args.quiet_max_load_per_cpu)
            reruns = args.reruns or (4 if args.quick else 10)
            repeats = args.repeats or (2 if args.quick else 3)
            quota_reruns = args.quota_reruns if args.quota_reruns is not None else (2 if args.quick else 5)
            duration = args.duration or (0.5 if args.quick else 1.0)
            if args.reanalyse:
                log(f"calibration: analysing {args.reanalyse} again (nothing measured)")
                previous = json.loads((args.reanalyse.parent / "bench.json").read_text()).get("calibration", {})
                cal = {**previous, **reanalyse(args.reanalyse, limits)}
                cal["quiet_limits"] = asdict(limits)
            else:
                log(f"calibration: {reruns} reruns x {repeats} repeats per cell, {quota_reruns} under a CPU quota")
                cal = calibration(BENCH_DIR / "models", ws.root / "calibration", reruns, repeats, quota_reruns,
                                  duration, log, limits)
                raw = cal.pop("raw")
                args.out.mkdir(parents=True, exist_ok=True)
                import gzip  # every sample, for re-analysis: tens of MB as plain JSON
                with gzip.open(args.out / "calibration-samples.json.gz", "wt", encoding="utf-8") as handle:
                    json.dump(raw, handle)
            doc["calibration"] = cal
        if "nightly" in steps:
            from harness.bench.nightly import nightly_calibration
            reruns = args.reruns or (4 if args.quick else 10)
            quota_reruns = args.quota_reruns if args.quota_reruns is not None else (2 if args.quick else 5)
            repeats = args.repeats or (2 if args.quick else 3)
            duration = args.duration or 0.5
            log(f"nightly calibration: {reruns} reruns x {repeats} repeats per cell, {quota_reruns} under a CPU quota")
            doc["nightly"] = nightly_calibration(BENCH_DIR / "models", ws.root / "nightly", reruns, quota_reruns,
                                                 duration, args.out, log, repeats=repeats)
        if "paired" in steps:
            from harness.schema.pairing import PAIRED_MIN_DURATION_S, PAIRED_REPEATS
            from harness.bench.paired import paired_calibration
            reruns = args.reruns or (4 if args.quick else 10)
            repeats = args.repeats or (4 if args.quick else PAIRED_REPEATS)
            quota_reruns = args.quota_reruns if args.quota_reruns is not None else (1 if args.quick else 2)
            duration = args.duration or PAIRED_MIN_DURATION_S
            log(f"paired calibration: {reruns} reruns x {repeats} rounds x 2 sides per cell, {quota_reruns} with the "
                "candidate side under a CPU quota")
            paired = paired_calibration(BENCH_DIR / "models", ws.root / "paired", reruns, repeats, quota_reruns,
                                        duration, log)
            args.out.mkdir(parents=True, exist_ok=True)
            import gzip
            with gzip.open(args.out / "paired-calibration-samples.json.gz", "wt", encoding="utf-8") as handle:
                json.dump(paired.pop("raw"), handle)
            doc["paired_calibration"] = paired
        if "overhead" in steps or "scaling" in steps or "fidelity" in steps:
            log("overhead: cold profile, then warm reruns (digits_cnn on the local target)")
            doc["overhead"] = overhead(ws, warm_runs if "overhead" in steps else 0, log,
                                       args.history_runs if "overhead" in steps else 0)
            if "overhead" in steps:
                no_report = timed_profile(ws, "warm-no-report", extra=("--no-report",))
                doc["overhead"]["warm_no_report"] = no_report.to_dict()
                log(f"  warm profile --no-report: {no_report.run['wall_s']:.1f}s wall")
            memory_runs += [dict(doc["overhead"]["cold"]["run"], label="cold profile")]
            memory_runs += [dict(w["run"], label=f"{w['label']} profile") for w in doc["overhead"]["warm"]]
        if "fidelity" in steps:
            log(f"fidelity: agent vs benchmark_app / litert-benchmark, {rounds} alternating rounds")
            models = models_for_fidelity(ws.cache_dir, BENCH_DIR / "models", DEFAULT_CACHE_DIR)
            if not any(m.name == "efficientnet_lite0" for m in models):
                doc["notes"].append("EfficientNet-Lite0 artifacts were not in the harness cache; "
                                    "the fidelity comparison used digits_cnn and the bench ConvNet")
            pairings = fidelity(models, rounds, args.threads, target_s, precisions, log=log)
            doc["fidelity"] = [p.to_dict() for p in pairings]
        if "scaling" in steps:
            log(f"scaling: nightly over {', '.join(map(str, sizes))} simulated device(s)")
            doc["scaling"] = scaling(ws, sizes, preload=args.preload, log=log)
            memory_runs += [dict(r, label=f"nightly, {r['devices']} device(s)") for r in doc["scaling"]["runs"]]
        if "distributed" in steps:
            from harness.bench.distributed import distributed_bench
            doc["distributed"] = distributed_bench(ws.root / "distributed", log, quick=args.quick)
        if "cache_verify" in steps:
            from harness.bench.cache_verify import verify_cost
            log("cache_verify: a 20 MB model's cell with and without the sha256 check of its cached files")
            doc["cache_verify"] = verify_cost(ws.root / "cache_verify", log)
        if "overhead" not in steps:
            doc.pop("overhead", None)
        doc["memory"] = {"runs": memory_runs,
                         "peak_controller_rss_bytes": max((r.get("controller_peak_rss_bytes") or 0
                                                           for r in memory_runs), default=None)}
    finally:
        if not args.keep:
            shutil.rmtree(ws.root, ignore_errors=True)
        else:
            doc["workspace"] = str(ws.root)
    doc["load_average_end"] = load_average()
    doc["total_wall_s"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    earlier = args.out / "bench.json"
    if earlier.exists():  # a run of some steps keeps the sections of the others from the last run
        try:
            kept = {k: v for k, v in json.loads(earlier.read_text()).items() if k in SECTIONS and k not in doc}
        except ValueError:
            kept = {}
        if kept:
            doc.update(kept)
            doc["notes"].append(f"sections kept from the earlier bench.json (not re-run): {', '.join(sorted(kept))}")
    (args.out / "bench.json").write_text(json.dumps(doc, indent=1, default=str))
    (args.out / "bench.md").write_text(report.markdown(doc))
    log(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.md'} ({doc['total_wall_s']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
