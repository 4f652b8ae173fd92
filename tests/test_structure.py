"""The house: the import graph of harness/ points down the stages and has no cycles.

Every import counts, also those inside functions (lazy imports are still dependencies).
Run `python -m pytest tests/test_structure.py -q` to see any cycle or upward import by name.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[1] / "harness"

#: stage packages, lowest first; a module may import only from its own stage or a lower one
STAGES = [
    {"core", "agent"},
    {"schema"},
    {"judge", "zoo", "farm"},
    {"prepare", "history"},
    {"report"},
    {"run"},
    {"commands"},
    {"bench", "cli"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph() -> Dict[str, Set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: Dict[str, Set[str]] = {}
    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in files}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    deps.add(target if target in files else base)
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def stage_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    for rank, members in enumerate(STAGES):
        if top in members:
            return rank
    raise AssertionError(f"{module}: not in a stage package; add it to STAGES or move it into one")


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_imports_point_down_the_stages():
    graph = import_graph()
    upward = [f"{m} -> {d}" for m in sorted(graph) if m != "harness" for d in sorted(graph[m])
              if d != "harness" and stage_of(d) > stage_of(m)]
    assert upward == []


def test_the_run_knows_nothing_of_the_report_or_the_history():
    graph = import_graph()
    leaks = [f"{m} -> {d}" for m in sorted(graph) if m.startswith("harness.run") for d in sorted(graph[m])
             if d.startswith(("harness.report", "harness.history"))]
    assert leaks == []


#: the one file allowed to be long: the device agent stays a single file a device can run on its own
LONG_FILES = {"agent/agent.py"}


def test_no_module_is_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 600 and str(p.relative_to(ROOT)) not in LONG_FILES}
    assert long == {}


def test_top_level_holds_only_stage_packages_and_the_cli():
    loose = sorted(p.name for p in ROOT.glob("*.py"))
    assert loose == ["__init__.py", "cli.py"]


def test_agent_never_imports_harness():
    agent = ROOT / "agent" / "agent.py"
    assert import_graph()["harness.agent.agent"] == set()
    assert "harness" not in {n.split(".")[0] for n in _absolute_imports(agent)}


def _absolute_imports(path: Path) -> Set[str]:
    names: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return names
