"""No import circle among the ``medtransfer`` modules: data flows forward, and a registry never imports its entries.

The graph is read from the source (``ast``), so every ``import`` counts wherever it stands: at module level,
inside a function (a lazy import still reaches back), and under ``if TYPE_CHECKING:`` (a circle that only type
hints close is still a module that knows its user). ``from package import name`` points at ``package.name``
when that is a module, else at the package; ``import a.b.c`` points at ``a.b.c`` alone (Python imports the
parent packages first, but that is the tree, not a dependency the code chose).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def module_files(src: Path = SRC, package: str = "medtransfer") -> dict[str, Path]:
    files = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def imported(module: str, path: Path, known: set[str]) -> dict[str, int]:
    """The project modules ``module`` imports, each with the first line that does."""
    found: dict[str, int] = {}
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                targets.append(f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source)
        for target in targets:
            if target in known and target != module:
                found.setdefault(target, node.lineno)
    return found


def import_graph(src: Path = SRC) -> tuple[dict[str, dict[str, int]], dict[str, Path]]:
    files = module_files(src)
    known = set(files)
    return {module: imported(module, path, known) for module, path in files.items()}, files


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One shortest circle through each strongly connected group of modules (Tarjan, then breadth-first)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:  # recursion depth is bounded by the module count (~200)
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    found = []
    for group in groups:
        start = min(group)
        paths = {start: [start]}
        frontier = [start]
        while frontier and start not in {n for f in frontier for n in graph[f]}:
            nxt = []
            for node in frontier:
                for dep in sorted(graph[node]):
                    if dep in group and dep not in paths:
                        paths[dep] = [*paths[node], dep]
                        nxt.append(dep)
            frontier = nxt
        last = next(f for f in frontier if start in graph[f])
        found.append([*paths[last], start])
    return found


def describe(circle: list[str], graph: dict[str, dict[str, int]], files: dict[str, Path]) -> str:
    steps = [f"  {a} -> {b}  ({files[a].relative_to(SRC)}:{graph[a][b]})"
             for a, b in zip(circle, circle[1:], strict=False)]
    return "\n".join(steps)


def test_no_import_circle_in_src():
    graph, files = import_graph()
    found = circles(graph)
    assert not found, "import circles among src/medtransfer modules:\n" + "\n\n".join(
        describe(c, graph, files) for c in found)


def test_the_checker_sees_a_circle_through_a_lazy_or_type_only_import(tmp_path):
    package = tmp_path / "medtransfer"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from medtransfer.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from . import c\n")
    (package / "sub" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                         "    from medtransfer.sub.b import f\n")
    (package / "d.py").write_text("import medtransfer.sub.c\n")  # no circle: only c points back at nothing
    files = module_files(tmp_path)
    graph = {m: imported(m, p, set(files)) for m, p in files.items()}
    assert graph["medtransfer.sub"] == {"medtransfer.sub.b": 1}
    assert graph["medtransfer.sub.b"] == {"medtransfer.sub.c": 2}
    assert circles(graph) == [["medtransfer.sub.b", "medtransfer.sub.c", "medtransfer.sub.b"]]


@pytest.mark.parametrize("registry, entries", [
    ("medtransfer.backbones.registry", "medtransfer.backbones.families"),
    ("medtransfer.probe.registry", "medtransfer.probe.heads"),
    ("medtransfer.adapt.registry", "medtransfer.adapt.methods"),
])
def test_a_registry_imports_none_of_its_entries(registry, entries):
    """As timm's ``_registry.py``: the table and its lookups know no entry; the entries import the registry."""
    graph, _ = import_graph()
    reached, todo = set(), [registry]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in reached:
                reached.add(dep)
                todo.append(dep)
    family = {m for m in graph if m.startswith(entries) and m != registry}
    assert not reached & family, f"{registry} imports entries: {sorted(reached & family)}"


def test_benchmarks_use_the_package_not_test_helpers():
    """A benchmark measures what users run: the public API, or a module of benchmarks/ itself."""
    root = SRC.parent
    test_modules = {p.stem for p in (root / "tests").rglob("*.py")}
    for script in sorted((root / "benchmarks").glob("*.py")):
        tree = ast.parse(script.read_text(), str(script))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                top = name.split(".")[0]
                assert top not in test_modules and top != "tests", f"{script.name}:{node.lineno} imports {name}"
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value != "tests", f"{script.name}:{node.lineno} reaches into tests/"
