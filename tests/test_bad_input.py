"""Bad input through the real `harness` command: one clear line naming the file, the field and what to do.

Malformed and incomplete target, model recipe and policy files, and names with
spaces, quotes and ';' in them, each end as exit code 3 (configuration error)
with a single line on stderr and never a traceback; nothing is built or run.
"""
from __future__ import annotations

import subprocess

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.core.errors import ConfigError
from harness.judge.gate import load_policy
from helpers import ROOT

HARNESS = str(ROOT / ".venv" / "bin" / "harness")
EXIT_CONFIG = 3
RECIPE = yaml.safe_load((ROOT / "models" / "digits_cnn.yaml").read_text())


def harness(*argv, cwd=ROOT):
    return subprocess.run([HARNESS, *argv], cwd=cwd, capture_output=True, text=True, timeout=120)


def recipe_with(**changes):
    doc = {k: v for k, v in RECIPE.items() if k not in changes or changes[k] is not None}
    doc.update({k: v for k, v in changes.items() if v is not None})
    return yaml.safe_dump(doc)


def assert_one_clear_line(result, path, *fragments, code=EXIT_CONFIG):
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0], "the message names the file"
    for fragment in fragments:
        assert fragment in lines[0]


TARGETS = [
    ("syntax", "transport: ssh\nhost: [unclosed\n", ["is not valid YAML at line 3"]),
    ("empty", "", ["file is empty; expected a mapping of fields"]),
    ("list", "- host: pi\n", ["expected a mapping of fields at the top level"]),
    ("typo", "name: t\nhots: pi.local\n", ["field 'hots'", "unknown field; known fields here:", "host,"]),
    ("no-host", "name: t\ntransport: ssh\nuser: pi\n", ["field 'host'", "is required for an ssh target"]),
    ("port", "name: t\nport: twenty-two\n", ["field 'port'", "expected an integer, got 'twenty-two'"]),
    ("budget", "name: t\nbudgets: {latency_p99_ms: fast}\n", ["field 'budgets.latency_p99_ms'", "expected a number"]),
    ("policy", "name: t\nhost_key_policy: ignore\n", ["field 'host_key_policy'", "must be one of 'reject', "
                                                                                   "'accept-new'"]),
    ("runtime", "name: t\nruntimes: [tensorrt]\n", ["field 'runtimes[0]'", "known: tflite, onnx, openvino"]),
    ("name", "name: \"my 'device'; rm -rf /\"\n", ["field 'name'", "must be letters, digits"]),
]


@pytest.mark.parametrize("case, text, fragments", TARGETS, ids=[c[0] for c in TARGETS])
def test_bad_target_file_is_one_clear_line(tmp_path, case, text, fragments):
    path = tmp_path / f"my target; '{case}'.yaml"  # the file's own name has spaces, quotes and ';'
    path.write_text(text)
    result = harness("profile", "-t", str(path), "--reports-dir", str(tmp_path / "reports"), "-q")
    assert_one_clear_line(result, path, *fragments)
    assert not (tmp_path / "reports").exists(), "nothing ran"


RECIPES = [
    ("no-source", dict(source=None), [], ["field 'source'", "required field is missing"]),
    ("zoo-format", dict(source={"builder": "digits_cnn", "format": "jax"}), [],
     ["field 'source.format'", "a zoo builder makes 'keras' or 'torch_module'"]),
    ("builder", dict(source={"builder": "resnet9000", "format": "keras"}), [],
     ["field 'source.builder'", "unknown model builder 'resnet9000'; known:", "digits_cnn"]),
    ("file-and-builder", dict(source={"builder": "digits_cnn", "format": "keras", "path": "m.onnx"}), [],
     ["field 'source'", "exactly one of source.path"]),
    ("metric", dict(metric="no_such_module:score"), [],
     ["field 'metric'", "cannot import 'no_such_module'"]),
    ("loader", dict(data={"loader": "json:no_such_function"}), [],
     ["field 'data.loader'", "json has no function 'no_such_function'"]),
    ("dataset", dict(data={"dataset": "imagenet"}), [], ["field 'data.dataset'", "unknown dataset 'imagenet'; known:"]),
    ("compressor", dict(variants=[{"name": "v", "compressor": "magic"}]), ["--variants", "v"],
     ["field 'variants[0].compressor'", "unknown compressor 'magic'; known:", "tflite_int8"]),
    ("variant", {}, ["--variants", "prune99"], ["field 'variants'", "no variant(s) ['prune99'] declared; declared:"]),
    ("shape", dict(inputs=[{"name": "image", "shape": [1, -1, 8, 1]}]), [], ["field 'inputs[0].shape'", "0 or more"]),
    ("format", dict(formats=["tflite", "coreml"]), [], ["field 'formats'", "known: tflite, onnx, openvino"]),
    ("variant-name", dict(variants=[{"name": "v 1; x", "compressor": "tflite_int8"}]), [],
     ["field 'variants[0].name'", "variant name 'v 1; x' must be letters"]),
]


@pytest.mark.parametrize("case, changes, extra, fragments", RECIPES, ids=[c[0] for c in RECIPES])
def test_bad_model_recipe_is_one_clear_line(tmp_path, case, changes, extra, fragments):
    path = tmp_path / f"my model; '{case}'.yaml"
    path.write_text(recipe_with(**changes))
    result = harness("profile", "-m", str(path), *extra, "--reports-dir", str(tmp_path / "reports"), "-q")
    assert_one_clear_line(result, path, *fragments)
    assert not (tmp_path / "reports").exists(), "nothing was built or run"


def test_missing_recipe_named_with_shell_characters_lists_the_known_ones(tmp_path):
    name = "digits; touch PWNED $(touch PWNED2)"
    result = harness("profile", "-m", name, "--reports-dir", str(tmp_path / "reports"), "-q", cwd=ROOT)
    assert_one_clear_line(result, f"models/{name}.yaml", "no such model recipe; known models:", "digits_cnn")
    assert not (ROOT / "PWNED").exists() and not (ROOT / "PWNED2").exists()


def test_profile_with_no_model_outside_a_repository_with_recipes_says_what_to_pass(tmp_path):
    """A team's repository after `harness init` has no models/digits_cnn.yaml to default to: one line saying
    to pass --model-file, naming the recipes that are there."""
    result = harness("profile", "-q", cwd=tmp_path)
    assert_one_clear_line(result, "models", "no model named", "--model-file YOUR_MODEL")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.yaml").write_text(recipe_with(name="mine"))
    result = harness("profile", "-q", cwd=tmp_path)
    assert_one_clear_line(result, "models", "--model NAME of a recipe here (mine)")
    assert not (tmp_path / "reports").exists(), "nothing was built or run"


POLICIES = [
    ("type", "defaults:\n  min_accuracy_retention: high\n", ["field 'defaults.min_accuracy_retention'",
                                                             "expected a number, got 'high'"]),
    ("typo", "defaults:\n  min_acc: 0.9\n", ["field 'defaults.min_acc'", "unknown field; known fields here:",
                                            "min_accuracy_retention"]),
    ("format", "defaults:\n  required_formats: [tensorrt]\n", ["field 'defaults'", "unknown format(s) ['tensorrt']"]),
    ("shape", "defaults: [1, 2]\n", ["field 'defaults'", "expected a mapping, got list"]),
    ("syntax", "defaults:\n  min_accuracy_retention: [0.9\n", ["is not valid YAML at line"]),
    ("target", "targets:\n  pi4: {max_latency_p99_ms: -}\n", ["field 'targets.pi4.max_latency_p99_ms'"]),
]


@pytest.mark.parametrize("case, text, fragments", POLICIES, ids=[c[0] for c in POLICIES])
def test_bad_policy_file_is_one_clear_line(tmp_path, case, text, fragments):
    path = tmp_path / f"release policy; '{case}'.yaml"
    path.write_text(text)
    result = harness("gate", "--policy", str(path), "--run", "no-such-run", "--reports-dir", str(tmp_path))
    assert_one_clear_line(result, path, *fragments)


def test_run_id_with_spaces_and_semicolon_is_refused_before_anything_runs(tmp_path):
    result = harness("profile", "--run-id", "nightly; rm -rf x", "--reports-dir", str(tmp_path / "reports"), "-q")
    assert "Traceback" not in result.stderr and result.returncode == 3, "a user error"
    (line,) = result.stderr.strip().splitlines()
    assert "--run-id: 'nightly; rm -rf x'" in line and "letters, digits" in line
    assert not (tmp_path / "reports").exists()


# ---------------------------------------------------------------- property-based: the policy loader
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False),
                    st.text(max_size=10))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
RULES = ["min_accuracy_retention", "max_latency_p99_ms", "max_peak_memory_mb", "use_target_budgets",
         "max_latency_regression", "min_latency_shift_ms", "max_accuracy_drop", "max_memory_regression",
         "allow_failed_cells", "required_formats", "variants", "bogus"]
rules = st.dictionaries(st.sampled_from(RULES), values, max_size=4)
policies = st.fixed_dictionaries({}, optional={"baseline": values, "alpha": values, "defaults": rules,
                                               "targets": st.dictionaries(st.sampled_from(["pi4", "x86"]), rules,
                                                                          max_size=2),
                                               "bogus": values})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=st.one_of(policies, values))
def test_policy_loader_returns_a_policy_or_a_config_error_naming_the_file(tmp_path, document):
    path = tmp_path / "policy; 'x'.yaml"
    path.write_text(yaml.safe_dump(document))
    try:
        policy = load_policy(path)
    except ConfigError as exc:
        assert str(exc).startswith(str(path)), "every policy error names its file first"
        assert "\n" not in str(exc)
        return
    for target in ("pi4", "x86", "other"):
        policy.for_target(target)  # a loaded policy is usable for every target
