"""The floors and rooms of the house, as rules on the import graph (ARCHITECTURE.md).

The graph is read from the source with ``ast`` (nothing is imported): every ``import`` and
``from ... import`` anywhere in a module (function-local imports included, they run too), except
those under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fer_models", "client", "server", "simulation", "benchmarks")
#: fer_models' sub-packages from the bottom floor up: a module may import its own sub-package and the ones before it.
CORE_LAYERS = ("common", "config", "data", "models", "privacy", "training", "audit", "serving", "federation")
FLOWER = ("flwr",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, *, package: str) -> list[tuple[str, int]]:
    """(imported dotted name, line) for every import that runs; relative imports resolved against ``package``."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.append((base, node.lineno))
            found.extend((f"{base}.{alias.name}", node.lineno) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> tuple[dict[str, Path], dict[str, dict[str, int]], dict[str, list[tuple[str, int]]]]:
    modules = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    edges: dict[str, dict[str, int]] = defaultdict(dict)  # ours -> ours, with the line
    external: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for target, line in _imports(ast.parse(path.read_text(), filename=str(path)), package=package):
            resolved = target
            while resolved and resolved not in modules:
                resolved = resolved.rpartition(".")[0]
            if resolved and resolved != name:
                edges[name].setdefault(resolved, line)
            elif not resolved:
                external[name].append((target, line))
    return modules, edges, external


MODULES, EDGES, EXTERNAL = _graph()


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(ROOT)}:{line}"


def _top(module: str) -> str:
    return module.split(".")[0]


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "fer_models" or len(parts) < 2 or parts[1] not in CORE_LAYERS:
        return None
    return CORE_LAYERS.index(parts[1])


def test_the_graph_is_read_from_every_package():
    assert {_top(m) for m in MODULES} == set(PACKAGES)
    assert sum(len(v) for v in EDGES.values()) > 300  # a parser that found nothing would pass every rule below


def test_the_core_imports_no_flower_and_nothing_above_it():
    bad = [f"{_where(m, line)} imports {t}" for m, targets in EXTERNAL.items() if _top(m) == "fer_models"
           for t, line in targets if t.split(".")[0] in FLOWER]
    bad += [f"{_where(m, line)} imports {t}" for m, targets in EDGES.items() if _top(m) == "fer_models"
            for t, line in targets.items() if _top(t) != "fer_models"]
    assert not bad, "fer_models/ is plain PyTorch: move the code up a floor, or the shared part down:\n" + "\n".join(bad)


def test_every_core_module_lives_in_a_named_room():
    loose = sorted(m for m in MODULES if _top(m) == "fer_models" and m != "fer_models" and _layer(m) is None)
    assert not loose, f"core modules outside fer_models' sub-packages {CORE_LAYERS}: {loose}"


def test_core_rooms_import_only_their_own_floor_or_the_ones_below():
    bad = [f"{_where(m, line)}: {m} ({CORE_LAYERS[_layer(m)]}) imports {t} ({CORE_LAYERS[_layer(t)]})"
           for m, targets in EDGES.items() if _layer(m) is not None
           for t, line in targets.items() if _layer(t) is not None and _layer(t) > _layer(m)]
    assert not bad, f"upward arrows inside fer_models/ (floors from the bottom: {', '.join(CORE_LAYERS)}):\n" + \
        "\n".join(bad)


def test_client_and_server_never_import_each_other_and_never_the_top_floor():
    bad = [f"{_where(m, line)} imports {t}" for m, targets in EDGES.items() if _top(m) in ("client", "server")
           for t, line in targets.items() if _top(t) in ({"client", "server"} - {_top(m)}) | {"simulation", "benchmarks"}]
    assert not bad, "client/ and server/ share code only through fer_models/:\n" + "\n".join(bad)


def test_nothing_in_the_product_imports_benchmarks_and_benchmarks_import_no_app():
    bad = [f"{_where(m, line)} imports {t}" for m, targets in EDGES.items() if _top(m) != "benchmarks"
           for t, line in targets.items() if _top(t) == "benchmarks"]
    bad += [f"{_where(m, line)} imports {t}" for m, targets in EDGES.items() if _top(m) == "benchmarks"
            for t, line in targets.items() if _top(t) in ("client", "server")]
    assert not bad, "benchmarks measure through fer_models/ and the fedfer command, never an app module:\n" + \
        "\n".join(bad)


def _cycles(nodes: set[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(set(edges.get(start, ())) & nodes)))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(set(edges.get(child, ())) & nodes))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


@pytest.mark.parametrize("top", ["fer_models", "client", "server", "simulation"])
def test_no_circles_between_modules(top):
    nodes = {m for m in MODULES if _top(m) == top}
    circles = _cycles(nodes, {m: set(t) for m, t in EDGES.items()})
    assert not circles, f"import circles inside {top}/ (break each by moving the shared part down):\n" + \
        "\n".join(" <-> ".join(c) for c in circles)


def test_the_cycle_finder_finds_a_circle():
    # the control: a rule that can fail
    assert _cycles({"a", "b", "c"}, {"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a", "b"}, {"a": {"b"}}) == []
