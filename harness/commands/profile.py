"""`harness profile` / `harness run`: build, push, run and collate a matrix of cells."""
from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Tuple

from harness.commands.arguments import input_shape, integer, number, run_id
from harness.core.errors import ConfigError, HarnessError
from harness.schema.pairing import MANIFEST_KEY as PAIRED_KEY, PAIRED_MIN_DURATION_S, PAIRED_REPEATS, baseline_name
from harness.core.progress import Progress
from harness.schema.rundir import REPORTS_DIR, RunDir
from harness.core.names import is_valid_name

if TYPE_CHECKING:
    from harness.run.dispatch import Dispatcher

#: what `harness profile` with no model profiles, where this directory has its recipe (this repository does)
DEFAULT_MODEL = "digits_cnn"


def default_model() -> str:
    """The default recipe, or one line saying what to pass where the directory has none (a team's own
    repository after `harness init`: its models come as files)."""
    from harness.schema.recipes import MODELS_DIR, list_recipe_names, recipe_path
    if recipe_path(DEFAULT_MODEL).exists():
        return DEFAULT_MODEL
    known = list_recipe_names()
    raise ConfigError(MODELS_DIR, f"no model named and no {DEFAULT_MODEL} recipe here to default to; pass "
                      f"--model-file YOUR_MODEL (an ONNX, TFLite, Keras, SavedModel, TorchScript or .pt2 file)"
                      + (f" or --model NAME of a recipe here ({', '.join(known)})" if known else ""))


SUMMARY_FLOATS = {"primary_value": "{:.4f}", "primary_retention": "{:.3f}", "max_abs_diff": "{:.2e}",
                  "output_snr_db": "{:.1f}", "latency_p50_ms": "{:.3f}", "latency_p99_ms": "{:.3f}"}


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", action="append", default=None, metavar="NAME",
                   help="model recipe (models/NAME.yaml or a path); repeat for several; 'all' for every recipe "
                        f"(default: {DEFAULT_MODEL}, where models/ has its recipe, unless --model-file is given)")
    own = p.add_argument_group("your own model file", "profile a model file your build produced, on your data")
    own.add_argument("--model-file", action="append", default=None, metavar="PATH",
                     help="a .onnx, .tflite, OpenVINO .xml (+ .bin), Keras .keras/.h5, SavedModel directory, "
                          "TorchScript .pt or torch.export .pt2; converted to the other formats where a converter "
                          "exists and compared output by output with the file run on this host")
    own.add_argument("--baseline-model-file", action="append", default=None, metavar="PATH",
                     help="the previous release's file, one per --model-file, in the same order: measured in the "
                          "same run as a baseline twin (model NAME.baseline), every cell right after its candidate's, "
                          f"round after round, so device drift cancels and `harness gate` judges the candidate "
                          f"against it (default then: --repeats {PAIRED_REPEATS}, --min-duration "
                          f"{PAIRED_MIN_DURATION_S})")
    own.add_argument("--source-format", default="", metavar="FMT",
                     help="the file's format when its name does not say (onnx, tflite, openvino, keras, "
                          "savedmodel, torchscript, torch_export)")
    own.add_argument("--input-shape", action="append", default=[], metavar="NAME=DIMS", type=input_shape,
                     help="fix an input's dynamic dimensions, e.g. image=1x3x640x640 (repeat per input; "
                          "NAME=scalar for a 0-d input)")
    own.add_argument("--data", default="", metavar="PATH",
                     help="evaluation data: an .npz with one array per input name (samples first, or one constant "
                          "of the input's shape) and optional 'labels'; or a directory of images (one image input). "
                          "Default: seeded random inputs (accuracy empty, parity holds)")
    own.add_argument("--calibration", default="", metavar="PATH",
                     help="calibration samples for int8 variants, same convention as --data (default: a split of "
                          "--data disjoint from evaluation)")
    own.add_argument("--metric", default="", metavar="MODULE:FUNCTION",
                     help="your metric: (outputs by name, labels) -> {figure: number}, higher is better; "
                          "reported as metric_<figure> columns with their retention")
    own.add_argument("--task", default="", choices=["classification", "outputs"],
                     help="classification: top-1/top-5 on labels and agreement; outputs: parity only "
                          "(default: classification when --data has integer labels)")
    own.add_argument("--class-output", default="", metavar="NAME",
                     help="the output that carries class scores when the model has several (default: the first)")
    own.add_argument("--samples", type=integer(1), default=16, metavar="N",
                     help="random samples to generate when no --data is given (default 16)")
    p.add_argument("-t", "--target", action="append", default=None, metavar="NAME",
                   help="target (targets/NAME.yaml or a path); repeat for several (default: local)")
    p.add_argument("--variants", default="", metavar="LIST",
                   help="compressed variants to add to the reference: comma-separated names declared in the recipe, "
                        "'all' (every first attempt) and 'int8_alternatives' (the other int8 settings: ort_int8_u8, "
                        "ort_int8_qoperator, ort_int8_per_tensor, ort_int8_keep_float, ov_int8_mixed, named after "
                        "each ort_int8 or ov_int8 variant), e.g. all,ort_int8_u8 (default: none; compression is opt-in)")
    p.add_argument("--formats", default="", metavar="LIST",
                   help="only these formats, comma-separated (tflite, onnx, openvino, torch): nothing else is "
                        "converted or measured (default: every format the model converts to, or the recipe's "
                        "`formats:`)")
    p.add_argument("--warmup", type=integer(0), default=10, help="warm-up iterations before timing (default 10)")
    p.add_argument("--iterations", type=integer(1), default=100,
                   help="time at least this many inferences per agent run (default 100)")
    p.add_argument("--min-duration", type=number(0), default=None, metavar="S",
                   help="time each agent run for at least S seconds (default 1; "
                        f"{PAIRED_MIN_DURATION_S} with --baseline-model-file)")
    p.add_argument("--max-duration", type=number(0, above=True), default=60.0, metavar="S",
                   help="and for at most S seconds, even before --iterations is reached (default 60)")
    p.add_argument("--repeats", type=integer(1), default=None, metavar="N",
                   help="independent agent runs per cell, interleaved across a device's cells; the regression "
                        f"judge weighs their spread (default 1; make nightly uses 3; {PAIRED_REPEATS} with "
                        "--baseline-model-file)")
    p.add_argument("--threads", type=integer(1), default=None, help="runtime threads (default: the target's `threads`)")
    p.add_argument("--max-samples", type=integer(0, "0: every sample"), default=0,
                   help="evaluate at most this many samples per cell (default 0: the whole evaluation split)")
    p.add_argument("--runtime-config", action="append", default=[], metavar="NAME",
                   help="only the targets' runtime configurations with this name (repeat for several; a list-form "
                        "runtime's default is named after it, e.g. onnx); default: every configuration")
    p.add_argument("--no-profile", action="store_true",
                   help="no per-layer profile / op placement pass after each cell's timed run")
    p.add_argument("--timeout", type=number(0, above=True), default=None, metavar="S",
                   help="per-cell agent timeout in seconds (default: the target's command_timeout_s)")
    p.add_argument("--run-id", type=run_id, default=None, help="name of the run directory (default: a timestamp)")
    p.add_argument("--reports-dir", type=Path, default=REPORTS_DIR, help="where runs are written (default reports/)")
    p.add_argument("--no-report", action="store_true", help="write the tables only, no HTML report or history")
    p.add_argument("--history", default=None, metavar="PATH|postgresql://...",
                   help="history store the run is recorded in (default $HARNESS_HISTORY, else "
                        ".harness/history.sqlite)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="a dask scheduler: build steps and device jobs run on its workers, a target with `site:` on "
                        "a worker started with --resources \"site-<site>=1\" (default: $DASK_SCHEDULER_ADDRESS, "
                        "else everything runs here, one thread per device); needs the `distributed` extra")


def register(subparsers) -> None:
    for name, help_ in (("profile", "profile models on targets (the default model on this machine's CPU)"),
                        ("run", "the same as profile; with --resume RUN_ID, finish only what a run is missing")):
        p = subparsers.add_parser(
            name, help=help_, description=f"{help_[0].upper()}{help_[1:]}. Each model (a recipe, or your own file with "
            "--model-file) is read or built (cached), run on this host for the reference outputs, compressed into "
            "the requested variants, converted to every format a converter reaches and checked against the "
            "source's interface; every (model, variant, format, target) cell then runs on its device, is compared "
            "with the reference output by output, and ends as one row of reports/<run-id>/results.csv.",
            formatter_class=argparse.HelpFormatter)
        add_run_options(p)
        if name == "run":
            p.add_argument("--resume", metavar="RUN_ID", type=run_id, default=None,
                           help="complete run RUN_ID: run only the cells that have no result or were lost")
        p.set_defaults(func=cmd_profile)


def resolve_variants(recipes, spec: str):
    if not spec:
        return {}
    from harness.prepare.recipes import ALTERNATIVES_GROUP

    chosen = {}
    for recipe in recipes:
        declared = [v.name for v in recipe.variants]
        firsts = [v.name for v in recipe.variants if not v.alternative_of]
        groups = {"all": firsts, ALTERNATIVES_GROUP: [v.name for v in recipe.variants if v.alternative_of]}
        names: List[str] = []
        for name in (s.strip() for s in spec.split(",") if s.strip()):
            names += [n for n in groups.get(name, [name]) if n not in names]
        unknown = [n for n in names if n not in declared]
        if unknown and len(recipes) == 1:
            alternatives = [n for n in declared if n not in firsts]
            raise ConfigError(recipe.source_path or "--variants", f"no variant(s) {unknown} declared; declared: "
                              f"{', '.join(firsts) or 'none'}" + (f"; alternatives ('{ALTERNATIVES_GROUP}'): "
                                                                  f"{', '.join(alternatives)}" if alternatives else ""),
                              "variants")
        chosen[recipe.name] = [n for n in names if n in declared]
    return chosen


def pick_formats(recipes: list, spec: str) -> list:
    """The recipes limited to the formats `--formats` names (each recipe keeps the order of its own list)."""
    from dataclasses import replace

    from harness.schema.targets import ALL_FORMATS

    names = [s.strip() for s in (spec or "").split(",") if s.strip()]
    if not names:
        return recipes
    unknown = [n for n in names if n not in ALL_FORMATS]
    if unknown:
        raise ConfigError("--formats", f"unknown format(s) {unknown}; known: {', '.join(ALL_FORMATS)}")
    return [replace(r, formats=tuple(names)) for r in recipes]


def file_recipes(args) -> Tuple[list, Dict[str, str]]:
    """One recipe per --model-file, with the flags' shapes, data, metric and task; and one baseline twin per
    --baseline-model-file with the same settings. Returns (recipes, twin name -> candidate name)."""
    from dataclasses import replace

    from harness.schema.interface import parse_shape_flag
    from harness.prepare.recipes import recipe_for_file

    shapes = dict(parse_shape_flag(text) for text in args.input_shape)
    model_files, baseline_files = args.model_file or [], getattr(args, "baseline_model_file", None) or []
    if baseline_files and len(baseline_files) != len(model_files):
        raise ConfigError("--baseline-model-file", f"{len(baseline_files)} given for {len(model_files)} --model-file; "
                          "give one baseline per model file, in the same order")

    def recipe(path: str):
        return recipe_for_file(Path(path), args.source_format, shapes, args.data, args.calibration, args.metric,
                               args.task, random_samples=args.samples, class_output=args.class_output)

    recipes = [recipe(path) for path in model_files]
    names = [r.name for r in recipes]
    if baseline_files and len(set(names)) != len(names):
        raise ConfigError("--model-file", f"two files are both named {sorted(n for n in names if names.count(n) > 1)[0]!r};"
                          " a paired run names each baseline after its candidate, so give the files distinct names")
    pairs: Dict[str, str] = {}
    for candidate, path in zip(list(recipes), baseline_files):
        twin = replace(recipe(path), name=baseline_name(candidate.name))
        pairs[twin.name] = candidate.name
        recipes.append(twin)
    return recipes, pairs


def resumed_recipes(manifest) -> list:
    """The recipes a run was made with: recipe files by path, --model-file recipes from the manifest."""
    from harness.schema.loader import load_dataclass
    from harness.schema.recipes import ModelRecipe, load_recipe

    recipes = [load_recipe(m) for m in manifest.get("model_sources") or [] if m]
    recipes += [load_dataclass(ModelRecipe, doc, Path("manifest.json"), prefix=f"recipes.{name}")
                for name, doc in manifest.get("recipes", {}).items()]
    return recipes


def cmd_profile(args) -> int:
    from harness.commands.publish import preload_report_libraries, publish
    from harness.core.logs import RUN_LOG_NAME, log_to_file
    from harness.run.pipeline import run_profile
    from harness.prepare.recipes import with_int8_alternatives
    from harness.run.plan import RunSettings
    from harness.schema.recipes import list_recipe_names, load_recipe
    from harness.schema.targets import run_target
    from harness.judge.verdict import run_verdict

    progress = Progress(quiet=args.quiet)
    resume = getattr(args, "resume", None)
    model_names, target_names, variant_spec = args.model, args.target, args.variants
    run_id = args.run_id
    if run_id is not None and not is_valid_name(run_id):
        raise HarnessError(f"--run-id {run_id!r}: a run id names a directory under {args.reports_dir}/, so it must "
                           "be letters, digits, '_', '-' or '.' (e.g. --run-id nightly-2026-01-31)")
    settings_doc = {}
    if resume:
        run = RunDir(args.reports_dir / resume)
        if not run.manifest_path.exists():
            raise ConfigError(run.manifest_path, f"no run {resume!r} to resume: the file does not exist "
                              f"(runs are listed under {args.reports_dir}/)")
        manifest = run.read_manifest()
        # A built-in target (local outside the repo) has no file: its name finds it again.
        sources = manifest.get("target_sources") or [""] * len(manifest["targets"])
        target_names = target_names or [src or name for src, name in zip(sources, manifest["targets"])]
        variants_by_model = manifest.get("variants", {})
        settings_doc = manifest.get("settings", {})
        run_id = resume
    if resume:
        # the formats the run was limited to (--formats) hold for its resume too
        recipes = pick_formats([with_int8_alternatives(r) for r in resumed_recipes(manifest)],
                               ",".join(settings_doc.get("formats") or []))
        pairs = dict(manifest.get(PAIRED_KEY) or {})
    else:
        recipes, pairs = file_recipes(args)
        if not model_names:
            model_names = [] if recipes else [default_model()]
        if model_names == ["all"]:
            model_names = list_recipe_names()
        recipes += [with_int8_alternatives(load_recipe(m)) for m in model_names]
        recipes = pick_formats(recipes, args.formats)
    targets = [run_target(t) for t in (target_names or ["local"])]
    variants = ({r.name: variants_by_model.get(r.name, []) for r in recipes} if resume
                else resolve_variants(recipes, variant_spec))
    settings = RunSettings.from_manifest(settings_doc) if resume else RunSettings(
        warmup=args.warmup, iterations=args.iterations, threads=args.threads, max_samples=args.max_samples,
        cell_timeout_s=args.timeout, profile=not args.no_profile, runtime_configs=tuple(args.runtime_config),
        formats=tuple(f.strip() for f in args.formats.split(",") if f.strip()),
        min_duration_s=args.min_duration if args.min_duration is not None else
        PAIRED_MIN_DURATION_S if pairs else 1.0, max_duration_s=args.max_duration,
        repeats=args.repeats if args.repeats is not None else PAIRED_REPEATS if pairs else 1)
    if pairs and settings.repeats < 2:
        progress(f"note: a paired run of {settings.repeats} repeat cannot measure its own noise; the gate then "
                 f"assumes one (use --repeats {PAIRED_REPEATS})")
    if not args.no_report:
        preload_report_libraries()
    with chosen_dispatcher(getattr(args, "scheduler", None), progress) as dispatcher:
        results = run_profile(recipes, targets, variants, settings, run_id=run_id, reports_dir=args.reports_dir,
                              progress=progress, resume=bool(resume), dispatcher=dispatcher, pairs=pairs,
                              on_start=lambda run: log_to_file(run.root / RUN_LOG_NAME))
    if not args.no_report:
        published = publish(results, targets, getattr(args, "history", None), progress)
        if published.history_error:  # said in every mode, -q too: a nightly series silently missing a night is worse
            print(f"harness: history not recorded: {published.history_error}; record it later with "
                  f"`harness history --record {results.run_id}` (the exit code is the run's own)", file=sys.stderr)
    print_summary(results, scheduler=getattr(args, "scheduler", None))
    return run_verdict(results.rows, results.missing).exit_code


@contextmanager
def chosen_dispatcher(scheduler: Optional[str], progress: Progress) -> Iterator[Dispatcher]:
    """Where the run's builds and device jobs go: a dask cluster's workers when a scheduler is named
    (--scheduler, else DASK_SCHEDULER_ADDRESS), its client closed afterwards; else threads on this host."""
    from harness.run.dask import DaskDispatcher, connect, scheduler_address
    from harness.run.dispatch import ThreadDispatcher

    address = scheduler_address(scheduler)
    if not address:
        yield ThreadDispatcher()  # no scheduler: threads here, and dask is never imported
        return
    client = connect(address)
    try:
        progress(f"dask scheduler {address}: {len(client.scheduler_info(n_workers=-1).get('workers', {}))} worker(s)")
        yield DaskDispatcher(client)
    finally:
        client.close()


def print_summary(results, stream=None, scheduler: Optional[str] = None) -> None:
    from harness.schema.results import SUMMARY_COLUMNS
    stream = stream or sys.stdout
    frame = results.frame[SUMMARY_COLUMNS].copy()
    frame["peak_rss_MiB"] = frame.pop("peak_rss_bytes") / 2**20
    frame["size_KiB"] = frame.pop("artifact_size_bytes") / 1024
    for column, fmt in SUMMARY_FLOATS.items():
        frame[column] = frame[column].map(lambda v, f=fmt: "" if v != v or v is None else f.format(v))
    for column in ("peak_rss_MiB", "size_KiB"):
        frame[column] = frame[column].map(lambda v: "" if v != v else f"{v:.1f}")
    print("", file=stream)
    print(frame.to_string(index=False), file=stream)
    run = results.run_dir
    counts = results.frame["status"].value_counts().to_dict()
    print(f"\n{len(results.frame)} cells: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), file=stream)
    for line in storage_lines(results):
        print(line, file=stream)
    if results.missing:
        from harness.run.dask import scheduler_address
        from harness.schema.results import Category
        address = scheduler_address(scheduler)
        if not address and Category.WORKER_LOST.value in set(results.frame["error_category"].dropna().astype(str)):
            address = "tcp://SCHEDULER:PORT"  # the lost cells were on dask workers: they go back to its workers
        flag = f" --scheduler {address}" if address else ""
        print(f"missing, lost or device busy: {len(results.missing)} cell(s); finish them with "
              f"`harness run --resume {run.run_id}{flag}`", file=stream)
    print(f"results: {run.root}/results.csv (also .parquet, .json)", file=stream)
    if (run.root / "index.html").exists():
        print(f"report:  {run.root}/index.html", file=stream)


def storage_lines(results) -> list:
    """The summary's lines about device storage: cells whose cache entry was repaired, devices marked suspect."""
    frame = results.frame
    lines = []
    repaired = frame[frame["cache_repair"].notna()] if "cache_repair" in frame else frame.iloc[0:0]
    for _, row in repaired.iterrows():
        lines.append(f"cache repaired: {row['cell_id']}: {row['cache_repair']}")
    for name, probe in sorted(results.devices.items()):
        if probe.get("storage_suspect"):
            lines.append(f"STORAGE SUSPECT on {name}: {probe['storage_suspect']} (cells failed as cache_corrupted; "
                         f"check it with `harness targets {name} --cache --verify`)")
    return lines
