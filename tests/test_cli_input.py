"""User errors on the command line: exit 3 and one clear line, from the real `harness` process.

Exit 3 is a user error (running again cannot help), 2 an infrastructure failure a CI job may retry; argparse's
own errors, out-of-range numbers, runs and metrics that do not exist all exit 3, before anything runs.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HARNESS = str(Path(sys.executable).parent / "harness")


def harness(*argv, cwd=ROOT, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([HARNESS, *argv], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def assert_user_error(result, *fragments) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 3, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# (command words, flag, bad value, the range the message names)
NUMERIC_FLAGS = [
    (["profile"], "--samples", "0", "at least 1"),
    (["profile"], "--samples", "-5", "at least 1"),
    (["profile"], "--samples", "many", "at least 1"),
    (["profile"], "--max-samples", "-3", "at least 0 (0: every sample)"),
    (["profile"], "--warmup", "-1", "at least 0"),
    (["profile"], "--iterations", "0", "at least 1"),
    (["profile"], "--repeats", "0", "at least 1"),
    (["profile"], "--threads", "0", "at least 1"),
    (["profile"], "--threads", "1.5", "at least 1"),
    (["profile"], "--min-duration", "-0.1", "at least 0"),
    (["profile"], "--max-duration", "0", "greater than 0"),
    (["profile"], "--max-duration", "inf", "greater than 0"),
    (["profile"], "--timeout", "0", "greater than 0"),
    (["profile"], "--timeout", "nan", "greater than 0"),
    (["run"], "--iterations", "-1", "at least 1"),
    (["farm", "run"], "--repeats", "-2", "at least 1"),
    (["farm", "up"], "--devices", "0", "at least 1"),
    (["history"], "--min-effect", "-0.05", "at least 0"),
    (["history"], "--min-shift-ms", "-1", "at least 0"),
    (["targets"], "--older-than", "-1", "at least 0"),
    (["targets"], "--wait", "-5", "at least 0"),
]


@pytest.mark.parametrize("command, flag, value, allowed", NUMERIC_FLAGS,
                         ids=[f"{' '.join(c)} {f} {v}" for c, f, v, _ in NUMERIC_FLAGS])
def test_numeric_flag_out_of_range_is_one_line_naming_flag_and_range(tmp_path, command, flag, value, allowed):
    where = ["--reports-dir", str(tmp_path / "reports")] if command[0] in ("profile", "run") else []
    result = harness(*command, f"{flag}={value}", *where, cwd=tmp_path)
    assert_user_error(result, f"argument {flag}", allowed, repr(value), f"harness {' '.join(command)}")
    assert not (tmp_path / "reports").exists(), "refused before anything ran"


def test_every_numeric_flag_has_a_range_checked_type():
    """No command keeps a bare int or float: each numeric flag is read by a type that checks its range."""
    import argparse

    from harness.cli import build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in set(action.choices.values()):
                    yield from parsers(sub)

    bare = [f"{p.prog} {'/'.join(a.option_strings)}" for p in parsers(build_parser()) for a in p._actions
            if a.type in (int, float)]
    assert not bare, f"numeric flags without a range check: {bare}"


@pytest.mark.parametrize("shape, fragment", [
    ("x=0x3x8x8", "every dimension must be 1 or more"),
    ("x=1x3x-8x8", "every dimension must be 1 or more"),
    ("x=1xax8", "dimensions must be integers"),
    ("1x3x8x8", "is not NAME=DIMS"),
])
def test_input_shape_with_an_empty_or_malformed_dimension_is_refused(tmp_path, shape, fragment):
    result = harness("profile", "--model-file", str(tmp_path / "m.onnx"), "--input-shape", shape,
                     "--reports-dir", str(tmp_path / "reports"), cwd=tmp_path)
    assert_user_error(result, "argument --input-shape", repr(shape), fragment)


def test_a_run_id_that_is_no_plain_name_is_refused(tmp_path):
    for flag in ("--run-id", "--resume"):
        result = harness("run", flag, "../elsewhere", "--reports-dir", str(tmp_path / "reports"), cwd=tmp_path)
        assert_user_error(result, f"argument {flag}", "'../elsewhere'", "letters, digits")


@pytest.mark.parametrize("argv, fragments", [
    (["profile", "--no-such-flag"], ["harness profile: error: unrecognized arguments: --no-such-flag",
                                     "harness profile --help"]),
    (["farm", "up", "--no-such-flag", "x"], ["harness farm up: error: unrecognized arguments: --no-such-flag x"]),
    (["no-such-command"], ["invalid choice: 'no-such-command'", "harness --help"]),
    (["gate"], ["harness gate: error:", "required: --policy"]),
    (["history", "--figure", "p42"], ["argument --figure: invalid choice: 'p42'"]),
])
def test_argparse_errors_exit_3_with_one_short_line(tmp_path, argv, fragments):
    line = assert_user_error(harness(*argv, cwd=tmp_path), *fragments)
    assert "usage:" not in line and len(line) < 400, "the whole usage text is left to --help"


def test_no_command_prints_help_and_exits_3(tmp_path):
    for argv in ([], ["farm"]):
        result = harness(*argv, cwd=tmp_path)
        assert result.returncode == 3 and "Traceback" not in result.stderr and "usage:" in result.stdout


def test_missing_runs_and_unknown_names_are_user_errors(tmp_path):
    reports, db = tmp_path / "reports", str(tmp_path / "h.sqlite")
    (reports / "older").mkdir(parents=True)
    policy = str(ROOT / "policies" / "default.yaml")
    cases = [
        (["gate", "--policy", policy, "--run", "typo", "--reports-dir", str(reports), "--db", db],
         ["no such run directory", "typo", "recent runs: older"]),
        (["gate", "--policy", policy, "--reports-dir", str(reports), "--db", db],
         ["holds no run with a results.parquet", "harness profile"]),
        (["history", "--compare", "typo", "--reports-dir", str(reports), "--db", db], ["no such run directory", "typo"]),
        (["history", "--record", "typo", "--reports-dir", str(reports), "--db", db], ["no such run directory", "typo"]),
        (["report", "typo", "--reports-dir", str(reports)], ["no such run directory", "typo"]),
        (["history", "--model", "m", "--target", "t", "--metric", "p42", "--db", db], ["unknown metric 'p42'"]),
        (["history", "--model", "m", "--db", db], ["--model/--target", "go together"]),
        (["history", "--db", "mysql://u@db/x"], ["unknown kind of URL"]),
        (["run", "--resume", "typo", "--reports-dir", str(reports)], ["no run 'typo' to resume"]),
        (["targets", "--prune"], ["add --cache"]),
    ]
    for argv, fragments in cases:
        assert_user_error(harness(*argv, cwd=tmp_path), *fragments)


@pytest.mark.parametrize("argv", [["history"], ["models"], ["targets"], ["--help"], ["profile", "--help"]])
def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path, argv):
    """`harness history | head`: the reader leaves before harness writes; no BrokenPipeError, no traceback."""
    env = dict(os.environ, HARNESS_HISTORY=str(tmp_path / "h.sqlite"))
    proc = subprocess.Popen([HARNESS, *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before the first line
    stderr = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    assert stderr == "", stderr
    assert code in (0, 141), "0 when everything was written, else 128 + SIGPIPE as a shell reports it"


def test_history_piped_into_head_exits_quietly(tmp_path):
    """The real pipeline: `head -1` leaves after one line of a long listing."""
    db = tmp_path / "h.sqlite"
    script = f"set -o pipefail; {HARNESS} models | head -1 >/dev/null; echo models=$?; " \
             f"{HARNESS} history --db {db} | head -c 1 >/dev/null; echo history=$?"
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    codes = dict(line.split("=") for line in done.stdout.split())
    assert set(codes.values()) <= {"0", "141"}, codes
