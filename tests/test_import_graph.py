"""The packages depend one way: studies -> search_spaces -> trainables, cluster -> trainables; no circle.

Every ``import`` of every module is read with ``ast`` (also the late ones inside functions and the
``TYPE_CHECKING`` ones: a type a module names is a dependency all the same).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainables", "search_spaces", "studies", "cluster")
ALLOWED = {
    "trainables": set(),
    "search_spaces": {"trainables"},
    "studies": {"search_spaces", "trainables", "cluster"},
    "cluster": {"trainables"},
}
MODULES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Top-level package names ``path`` imports (relative imports resolve to its own package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(_module_name(path).split(".")[0] if node.level else (node.module or "").split(".")[0])
    return found & set(PACKAGES)


def module_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (full dotted names, for finding circles)."""
    names = {_module_name(p) for p in MODULES}
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        me = _module_name(path)
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            deps.update(t for t in targets if t in names and t != me)
        graph[me] = deps
    return graph


@pytest.mark.parametrize("path", MODULES, ids=[_module_name(p) for p in MODULES])
def test_dependencies_point_one_way(path: Path) -> None:
    package = path.relative_to(ROOT).parts[0]
    wrong = imports(path) - ALLOWED[package] - {package}
    assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}; {package} may import only {sorted(ALLOWED[package])}"


def test_no_package_circle() -> None:
    edges = {pkg: set() for pkg in PACKAGES}
    for path in MODULES:
        edges[path.relative_to(ROOT).parts[0]] |= imports(path) - {path.relative_to(ROOT).parts[0]}
    for pkg, deps in edges.items():
        for dep in deps:
            assert pkg not in edges[dep], f"{pkg} <-> {dep}"


def test_no_module_circle_across_packages() -> None:
    """No import circle between modules of different packages (a strongly connected component)."""
    graph = module_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
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
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            components.append(component)

    for v in graph:
        if v not in index:
            visit(v)
    crossing = [sorted(c) for c in components if len({m.split(".")[0] for m in c}) > 1]
    assert not crossing, f"import circles across packages: {crossing}"


def test_the_checker_sees_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from studies.spec import StudySpec\n")
    assert imports(bad) == {"studies"}
