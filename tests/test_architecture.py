"""The package's shape: no import cycle anywhere in ``src/oodgen`` (lazy imports inside functions and
``TYPE_CHECKING`` blocks count too: a lower layer never imports a higher one)."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "oodgen").rglob("*.py"):
        rel = p.relative_to(SRC).with_suffix("")
        out[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """{module: the oodgen modules it imports anywhere in its source}."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(max(0, node.level - 1)):
                    base = base.rsplit(".", 1)[0]
                mod = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
                for alias in node.names:
                    target = f"{mod}.{alias.name}" if f"{mod}.{alias.name}" in mods else mod
                    if target in mods and target != name:
                        graph[name].add(target)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in mods and a.name != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_src():
    graph = import_graph()
    assert "oodgen.bench.jobs" in graph["oodgen.bench.executors"]          # the graph sees real imports
    assert cycles(graph) == []


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_run_sits_below_the_bench():
    """`oodgen run` reaches no bench module (its printed summary is oodgen.summary), and within the bench
    the jobs, the tables and the method evaluation reach no executor."""
    graph = import_graph()
    assert "oodgen.summary" in graph["oodgen.run"]
    assert {m for m in reachable(graph, "oodgen.run") if m.startswith("oodgen.bench")} == set()
    for low in ("oodgen.bench.jobs", "oodgen.bench.tables", "oodgen.bench.methods", "oodgen.bench.core"):
        assert not reachable(graph, low) & {"oodgen.bench.executors", "oodgen.bench.cli", "oodgen.bench"}, low


def function_lengths() -> dict[str, int]:
    """{module:function: lines (decorators and docstring included)} of every function in ``src/oodgen``."""
    out = {}
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[f"{name}:{node.name}"] = node.end_lineno - min([node.lineno] + [d.lineno for d in node.decorator_list]) + 1
    return out


def test_short_functions():
    """`oodgen run` reads as its steps (load, fit, evaluate, save); no function grows past a screen."""
    lengths = function_lengths()
    assert lengths["oodgen.run:run"] <= 60, lengths["oodgen.run:run"]
    assert {k: v for k, v in lengths.items() if v > 80} == {}
