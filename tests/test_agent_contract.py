"""The agent's contract with the host: its error categories, its document's keys and its runtime base class.

The agent (harness/agent/agent.py) never imports the harness, so nothing but these tests keeps the two sides
speaking the same words: every category the agent can write is one of the host's `Category`, every key of its
document is one of `Doc`, and every runtime is a `Runtime` whose optional parts callers use without probing.
"""
from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from harness.agent import agent
from harness.schema.results import Category, UnknownCategoryWarning

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "harness" / "agent" / "agent.py"


def _constants(cls) -> dict:
    return {k: v for k, v in vars(cls).items() if k.isupper() and isinstance(v, str)}


# ---------------------------------------------------------------- error categories
def test_every_agent_category_is_a_host_category():
    assert set(agent.ErrorCategory.ALL) == set(_constants(agent.ErrorCategory).values())
    host = {c.value for c in Category}
    assert set(agent.ErrorCategory.ALL) <= host, set(agent.ErrorCategory.ALL) - host
    for value in agent.ErrorCategory.ALL:
        assert Category.parse(value, strict=True).value == value


def _category_expressions(tree: ast.AST):
    """Every expression the agent uses as a failure's category: AgentFailure's first argument and any value
    written under the document's error_category key."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "AgentFailure":
            yield node.args[0] if node.args else node.keywords[0].value
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Attribute) and key.attr == "ERROR_CATEGORY" or \
                        isinstance(key, ast.Constant) and key.value == "error_category":
                    yield value


def test_the_agent_names_its_categories_only_through_ErrorCategory():
    tree = ast.parse(AGENT.read_text())
    seen = list(_category_expressions(tree))
    assert len(seen) > 10
    known = set(_constants(agent.ErrorCategory))
    for expr in seen:
        text = ast.unparse(expr)
        if text in ("exc.category", "failure.category"):  # an AgentFailure's own, made by the calls checked here
            continue
        assert isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and \
            expr.value.id == "ErrorCategory" and expr.attr in known, \
            f"agent.py line {expr.lineno}: category {text} is not an ErrorCategory constant"


def test_an_unknown_category_is_visible_and_strict_parsing_refuses_it(caplog):
    with pytest.raises(ValueError):
        Category.parse("made_up_by_a_newer_agent", strict=True)
    with pytest.warns(UnknownCategoryWarning, match="made_up_by_a_newer_agent"):
        assert Category.parse("made_up_by_a_newer_agent") is Category.AGENT_FAILED
    assert "made_up_by_a_newer_agent" in caplog.text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Category.parse(Category.CONVERSION_FAILED) is Category.CONVERSION_FAILED  # known: quiet


def test_tests_make_an_unknown_category_a_failure():
    with pytest.raises(UnknownCategoryWarning):
        Category.parse("made_up_by_a_newer_agent")


# ---------------------------------------------------------------- runtimes
REQUIRED = ("import_runtime", "load", "interface", "prepare", "infer", "fetch")


@pytest.mark.parametrize("fmt", sorted(agent.RUNTIMES))
def test_every_runtime_is_a_Runtime_with_the_required_methods(fmt):
    cls = agent.RUNTIMES[fmt]
    assert issubclass(cls, agent.Runtime) and cls.fmt == fmt
    for name in REQUIRED:
        assert getattr(cls, name) is not getattr(agent.Runtime, name), f"{cls.__name__} lacks {name}"


def _probes(path: Path):
    """getattr/hasattr on a runtime object (in the agent also on self: a runtime's methods)."""
    names = {"runtime", "rt", "self"} if path == AGENT else {"runtime", "rt"}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "hasattr") and \
                node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in names:
            yield f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}"


def test_nobody_probes_a_runtime_for_its_optional_parts():
    files = [AGENT, *(ROOT / "harness" / "run").rglob("*.py"), *(ROOT / "harness" / "prepare").rglob("*.py"),
             *(ROOT / "harness" / "bench").rglob("*.py")]
    assert [p for f in files for p in _probes(f)] == []


class Doubler(agent.Runtime):
    """The smallest runtime: only what every runtime must have; numpy doubles the input."""
    loads: list = []

    def import_runtime(self):
        return "doubler", "1.0"

    def load(self, path, weights=None, shapes=None):
        Doubler.loads.append({"options": dict(self.config.options), "cache_dir": self.cache_dir,
                              "profile_prefix": self.profile_prefix})
        self.input_names, self.output_names = ["x"], ["y"]
        self.effective = {"threads": self.threads}
        if self.cache_dir:
            Path(self.cache_dir, "engine.bin").write_bytes(b"compiled")

    def interface(self):
        if self.config.get("explode"):
            raise RuntimeError("a bug")
        return agent._describe(["x"], [([2], "float32")], ["y"], [([2], "float32")])

    def prepare(self, feeds):
        return feeds[0]

    def infer(self, prepared):
        self.last = prepared * 2

    def fetch(self):
        return [self.last]

    def uses_cache(self):
        return self.cache_dir is not None


@pytest.fixture
def doubler(monkeypatch, tmp_path):
    monkeypatch.setitem(agent.RUNTIMES, "doubler", Doubler)
    # a cold run times its warm first use in a fresh process of the agent, where this test's runtime does not
    # exist: here the same command runs in this process (tests/test_runtime_configs.py runs the real one)
    monkeypatch.setattr(agent, "warm_first_use", lambda args, cold_ms: agent.cmd_first_use(args))
    monkeypatch.setattr(Doubler, "fmt", "doubler")
    monkeypatch.setattr(Doubler, "loads", [])
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, f0=np.arange(6, dtype="float32").reshape(3, 2),
             **{agent.FEEDS_KEY: np.array(json.dumps([{"key": "f0", "name": "x", "mode": "sample"}]))})
    model = tmp_path / "m.doubler"
    model.write_bytes(b"")

    def run(*extra, options=None, inputs=inputs):
        result = tmp_path / "result.json"
        argv = ["run", "--model", str(model), "--format", "doubler", "--inputs", str(inputs), "--result",
                str(result), "--warmup", "1", "--iterations", "5", "--min-duration", "0", "--max-duration", "0.05",
                *extra]
        if options is not None:
            argv += ["--runtime-config", json.dumps({"name": "mine", "options": options})]
        code = agent.main(argv)
        return code, json.loads(result.read_text())
    return run


def test_a_minimal_runtime_runs_on_the_base_class_defaults(doubler, tmp_path):
    options = {"threads": 2, "fallback": "allow"}
    cache = tmp_path / "cache"
    code, doc = doubler("--outputs", str(tmp_path / "out.npz"), "--profile", str(tmp_path / "profile.json"),
                        "--cache-dir", str(cache), options=options)
    assert code == agent.EXIT_OK and doc[agent.Doc.STATUS] == "ok", doc
    assert set(doc) <= agent.Doc.keys(), set(doc) - agent.Doc.keys()
    assert doc[agent.Doc.LATENCY_CLOCK] == "wall" and doc[agent.Doc.PRECISION] is None
    assert doc[agent.Doc.THREADS] == 2 and doc[agent.Doc.N_OUTPUT_SAMPLES] == 3
    assert doc[agent.Doc.PROFILE] == {"nodes": 0, "placement": {}}   # the default profile: no per-layer view
    assert doc[agent.Doc.COMPILE_CACHE] == "cold"
    assert all(doc[key] > 0 for key in agent.FIRST_USE_KEYS)
    # the user's options stay what the user wrote; the cache and the profile trace are the runtime's own fields
    # loads: the cold first use, the warm first use, the timed runtime, the profiled one
    assert [load["options"] for load in Doubler.loads] == [options] * 4
    versioned = str(cache / "doubler-1.0")
    assert [(load["cache_dir"], load["profile_prefix"] is not None) for load in Doubler.loads] == \
        [(versioned, False), (versioned, False), (versioned, False), (versioned, True)]
    assert json.loads((tmp_path / "profile.json").read_text())["options"] == options
    _, again = doubler("--cache-dir", str(cache), options=options)
    assert again[agent.Doc.COMPILE_CACHE] == "warm"
    assert Doubler(1, {}).accelerators() is None and Doubler(1, {}).uses_cache() is False


def test_failure_documents_use_the_documented_keys_and_categories(doubler, tmp_path):
    code, doc = doubler(inputs=tmp_path / "missing.npz")
    assert code == agent.EXIT_BAD_INPUT and doc[agent.Doc.ERROR_CATEGORY] == agent.ErrorCategory.BAD_INPUT
    assert set(doc) <= agent.Doc.keys()
    code, doc = doubler(options={"explode": True})
    assert code == agent.EXIT_FAILED and doc[agent.Doc.ERROR_CATEGORY] == agent.ErrorCategory.AGENT_ERROR
    assert agent.Doc.TRACEBACK in doc and set(doc) <= agent.Doc.keys()
    assert Category.parse(doc[agent.Doc.ERROR_CATEGORY], strict=True) is Category.AGENT_ERROR


# ---------------------------------------------------------------- statistics
def test_the_host_pools_repeats_with_the_agents_own_statistics():
    from harness.run import measurement

    assert measurement.latency_stats is agent.latency_stats
    a, b = [1.0, 2.0, 3.0, 10.0], [2.5, 2.0]
    row, extras = measurement.combine_repeats([{"latencies_ms": a}, {"latencies_ms": b}])
    pooled = np.asarray(a + b)
    assert row["latency_p50_ms"] == float(np.percentile(pooled, 50))
    assert row["latency_p99_ms"] == float(np.percentile(pooled, 99))
    assert row["latency_std_ms"] == float(pooled.std()) and row["latency_max_ms"] == 10.0
    assert extras["latencies_ms"] == a + b
    assert measurement.combine_repeats([{}])[0]["latency_p50_ms"] is None
