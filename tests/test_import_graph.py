"""The packages depend one way: studies -> search_spaces -> trainables, cluster -> trainables; no module circle.

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


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
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


def module_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules it imports (full dotted names), from every import statement in it.

    Late imports inside functions and ``TYPE_CHECKING`` imports count: a circle they hold is a circle all the
    same, only hidden. ``from pkg import name`` points at the module ``pkg.name`` when there is one (else at
    ``pkg``); the ``__init__`` Python runs first on the way to a submodule is its order, not a dependency.
    """
    paths = sorted(p for pkg in packages for p in (root / pkg).rglob("*.py"))
    names = {_module_name(p, root) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        me = _module_name(path, root)
        package = me if path.name == "__init__.py" else me.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, up level - 1 packages
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in names else base for a in node.names]
            deps.update(t for t in targets if t in names and t != me)
        graph[me] = deps
    return graph


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: its strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(circles)


def _describe(graph: dict[str, set[str]], circle: list[str]) -> str:
    return "; ".join(f"{m} -> {', '.join(sorted(graph[m] & set(circle)))}" for m in circle)


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


def test_no_module_circle() -> None:
    """No import circle between any two project modules, in one package or across packages."""
    graph = module_graph()
    circles = find_circles(graph)
    assert not circles, "import circles (module -> the modules of its circle it imports):\n" + "\n".join(
        _describe(graph, c) for c in circles)


# Plug-in folders that must not reach into one another: what they share lives in the core
# (``trainables.serving``: input column, per-row errors; ``SelectionContext.load_model``: a saved model).
SEPARATE = {"trainables.retro": ("trainables.property",), "trainables.selection": ("trainables.property",),
            "trainables.property": ("trainables.retro",)}


def test_plugin_folders_do_not_reach_into_each_other() -> None:
    graph = module_graph()
    wrong = [f"{m} -> {d}" for m, deps in graph.items() for d in deps for folder, banned in SEPARATE.items()
             if (m == folder or m.startswith(folder + ".")) and any(d == b or d.startswith(b + ".") for b in banned)]
    assert not wrong, wrong


def test_the_circle_finder_sees_a_planted_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": set(), "f": {"f"}}
    assert find_circles(graph) == [["a", "b", "c"]]
    assert find_circles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_late_and_type_only_imports_make_a_circle(tmp_path: Path) -> None:
    """A circle held only by an import inside a function and a ``TYPE_CHECKING`` import is found."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub import b\n    return b\n")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..c import C\n")
    (pkg / "c.py").write_text("import pkg.a\nclass C: ...\n")
    graph = module_graph(tmp_path, ("pkg",))
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert find_circles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    (pkg / "c.py").write_text("class C: ...\n")  # cut one edge: no circle
    assert find_circles(module_graph(tmp_path, ("pkg",))) == []


def test_the_checker_sees_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from studies.spec import StudySpec\n")
    assert imports(bad) == {"studies"}
