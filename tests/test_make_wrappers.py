"""The make wrappers pass every value they are given as data: never run as make or shell syntax.

Each test runs the real `make` on the real Makefile, with VENV pointing at a stand-in virtual environment whose
bin/harness and bin/python only print the arguments they got (its .installed stamp is newer than constraints.txt
and setup.cfg, so scripts/venv.sh installs nothing). Every variable carries make's $(shell ...), the shell's
$(...) and backquotes, quotes and a semicolon, each aimed at creating a sentinel file; the test asserts that no
sentinel appears and that the value reached the program as one literal argument (or, for the variables split on
white space, as the same words).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="GNU make is not installed")

#: the stand-in for bin/harness and bin/python: one line with the program's name, its arguments and $FOO
FAKE_TOOL = """#!{python}
import json, os, sys
print("FAKE-ARGV " + json.dumps({{"program": os.path.basename(sys.argv[0]), "argv": sys.argv[1:],
                                  "FOO": os.environ.get("FOO")}}))
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""


def payload(sentinels: Path, tag: str) -> str:
    """A value that creates a sentinel file under every kind of evaluation that might reach it."""
    s = sentinels
    return (f"v {tag} $(shell touch {s}/{tag}-make) `touch {s}/{tag}-backquote` $(touch {s}/{tag}-dollar) "
            f"${{shell touch {s}/{tag}-brace}} $$(touch {s}/{tag}-double) '\"; touch {s}/{tag}-semicolon #\n`touch {s}/{tag}-line`")


def fake_venv(where: Path, *, stamped: bool = True) -> Path:
    (where / "bin").mkdir(parents=True, exist_ok=True)
    for name in ("harness", "python"):
        tool = where / "bin" / name
        tool.write_text(FAKE_TOOL.format(python=sys.executable))
        tool.chmod(0o755)
    if stamped:
        stamp = where / ".installed"
        stamp.touch()
        future = max((ROOT / f).stat().st_mtime for f in ("constraints.txt", "setup.cfg")) + 3600
        os.utime(stamp, (future, future))
    return where


def run_make(target: str, variables: dict, env_variables: dict | None = None, extra_env: dict | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE") and k not in variables}
    env.update(env_variables or {})
    env.update(extra_env or {})
    argv = [MAKE, "--no-print-directory", "-C", str(ROOT), target] + [f"{k}={v}" for k, v in variables.items()]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def calls(result) -> list:
    return [json.loads(line[len("FAKE-ARGV "):]) for line in result.stdout.splitlines()
            if line.startswith("FAKE-ARGV ")]


def after(argv: list, flag: str) -> str:
    assert argv.count(flag) == 1, (flag, argv)
    return argv[argv.index(flag) + 1]


@pytest.fixture
def setup(tmp_path):
    sentinels = tmp_path / "sentinels"
    sentinels.mkdir()
    venv = fake_venv(tmp_path / payload(sentinels, "VENV"))
    return sentinels, venv


def assert_no_sentinel(sentinels: Path, result) -> None:
    made = sorted(p.name for p in sentinels.iterdir())
    assert not made, f"make or the shell ran a value: {made}\n{result.stdout}\n{result.stderr}"


# (target, {variable: flag the value follows, or None for a variable split into words at the end})
WRAPPERS = {
    "profile-recipe": ("profile", {"MODEL": "--model", "TARGET": "--target", "VARIANTS": "--variants",
                                   "FORMATS": "--formats"}, ["ARGS"]),
    "profile-file": ("profile", {"MODEL_FILE": "--model-file", "DATA": "--data", "TARGET": "--target"},
                     ["SHAPES", "ARGS"]),
    "gate": ("gate", {"RUN": "--run", "POLICY": "--policy"}, ["ARGS"]),
    "farm-up": ("farm-up", {"ARCH": "--arch"}, ["DEVICES"]),
    "nightly": ("nightly", {"MODEL": "--model", "REPEATS": "--repeats", "VARIANTS": "--variants"}, ["ARGS"]),
    "bench": ("bench", {}, ["ARGS"]),
    "test": ("test", {}, ["ARGS"]),
    "farm-down": ("farm-down", {}, []),
}


def check_wrapper(case, sentinels, venv, *, on_command_line: bool):
    target, single, split = WRAPPERS[case]
    values = {name: payload(sentinels, name) for name in [*single, *split]}
    given = {"VENV": str(venv), "PYTHON": payload(sentinels, "PYTHON"), "FOO": payload(sentinels, "FOO"), **values}
    # make test first runs scripts/system-deps.sh, which installs missing Debian packages when root: here it
    # only ever reports them, as for a user who is not root (an `id` that says 1000)
    not_root = sentinels.parent / "not-root"
    not_root.mkdir(exist_ok=True)
    (not_root / "id").write_text("#!/bin/sh\necho 1000\n")
    (not_root / "id").chmod(0o755)
    path = {"PATH": f"{not_root}{os.pathsep}{os.environ.get('PATH', '')}"}
    if on_command_line:
        result = run_make(target, given, extra_env=path)
    else:  # as CI exports them: the environment
        result = run_make(target, {}, env_variables=given, extra_env=path)
    if target == "test" and result.returncode != 0 and "system-deps" in result.stderr:
        pytest.skip("make test first needs the Debian packages scripts/system-deps.sh names")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_no_sentinel(sentinels, result)
    (call,) = calls(result)
    argv = call["argv"]
    assert call["program"] == ("python" if target in ("bench", "test") else "harness")
    for name, flag in single.items():
        assert after(argv, flag) == values[name], name
    for name in split:
        words = values[name].split()
        if name == "SHAPES":  # one --input-shape per word
            assert [argv[i + 1] for i, a in enumerate(argv) if a == "--input-shape"] == words
        elif name == "DEVICES":
            start = argv.index("--devices") + 1
            assert argv[start:start + len(words)] == words
        else:  # ARGS: the last words
            assert argv[-len(words):] == words, name
    if on_command_line:
        assert call["FOO"] == given["FOO"], "a variable given on make's command line reaches the recipe's " \
                                            "environment as its raw text, as make always exported it"
    return argv


@pytest.mark.parametrize("case", sorted(WRAPPERS))
def test_command_line_values_reach_the_program_as_literal_words(setup, case):
    sentinels, venv = setup
    argv = check_wrapper(case, sentinels, venv, on_command_line=True)
    expected_start = {"profile": ["profile"], "gate": ["gate"], "farm-up": ["farm", "up"], "farm-down": ["farm", "down"],
                      "nightly": ["farm", "run"], "bench": ["-m", "harness.bench"], "test": ["-m", "pytest"]}
    assert argv[:len(expected_start[WRAPPERS[case][0]])] == expected_start[WRAPPERS[case][0]]


@pytest.mark.parametrize("case", sorted(WRAPPERS))
def test_environment_values_reach_the_program_as_literal_words(setup, case):
    sentinels, venv = setup
    check_wrapper(case, sentinels, venv, on_command_line=False)


def test_python_builds_a_missing_venv_as_one_literal_program_name(tmp_path):
    """PYTHON runs only when VENV has no Python: the stand-in records its arguments and fails, which stops make."""
    sentinels = tmp_path / "sentinels"
    sentinels.mkdir()
    tools = fake_venv(tmp_path / payload(sentinels, "TOOLS"), stamped=False)
    python = tools / "bin" / "python"
    fresh = tmp_path / payload(sentinels, "FRESH") / "venv"
    result = run_make("venv", {"PYTHON": str(python), "VENV": str(fresh)}, extra_env={"FAKE_EXIT": "1"})
    assert result.returncode != 0
    assert_no_sentinel(sentinels, result)
    (call,) = calls(result)
    assert call["argv"] == ["-m", "venv", "--", str(fresh)]


def test_a_value_with_a_newline_and_only_white_space_words(setup):
    sentinels, venv = setup
    model_file = f"a\nb $(shell touch {sentinels}/nl)\n`touch {sentinels}/nl2`"
    result = run_make("profile", {"VENV": str(venv), "MODEL_FILE": model_file, "ARGS": "  \t --quiet \n -q "})
    assert result.returncode == 0, result.stderr
    assert_no_sentinel(sentinels, result)
    (call,) = calls(result)
    assert after(call["argv"], "--model-file") == model_file and call["argv"][-2:] == ["--quiet", "-q"]


def test_shell_and_shellflags_given_to_make_are_ignored(setup):
    sentinels, venv = setup
    result = run_make("gate", {"VENV": str(venv), "SHELL": f"$(shell touch {sentinels}/shell)",
                               ".SHELLFLAGS": f"-c touch {sentinels}/flags;"})
    assert result.returncode == 0, result.stderr
    assert_no_sentinel(sentinels, result)
    assert len(calls(result)) == 1


def test_defaults_still_apply_when_nothing_is_given(setup):
    _, venv = setup
    expected = {"profile": ["profile", "--model", "digits_cnn", "--target", "local"],
                "gate": ["gate", "--run", "latest", "--policy", "policies/default.yaml"],
                "nightly": ["farm", "run", "--model", "digits_cnn", "--repeats", "3"],
                "farm-up": ["farm", "up"], "bench": ["-m", "harness.bench"]}
    for target, argv in expected.items():
        result = run_make(target, {"VENV": str(venv)})
        assert result.returncode == 0, result.stderr
        assert [c["argv"] for c in calls(result)] == [argv], target


def test_the_makefiles_own_variables_cannot_be_replaced(setup):
    """PY, HARNESS and the quoting functions are the Makefile's: a value given for one is ignored, never run."""
    sentinels, venv = setup
    given = {name: payload(sentinels, name) for name in
             ("PY", "HARNESS", "q", "qw", "qwords", "newline", "CALLER_VARIABLES", "STAMP", "v", "u", "w", "s")}
    for target in ("profile", "bench", "farm-down"):
        result = run_make(target, {"VENV": str(venv), "ARGS": "a b", "SHAPES": "x=1", **given})
        assert result.returncode == 0, result.stdout + result.stderr
        assert_no_sentinel(sentinels, result)
        assert len(calls(result)) == 1, result.stdout
