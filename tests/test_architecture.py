"""The package's layering, read from the source with ``ast`` (nothing is imported or run).

Three rules (docs/overview.md):

1. Only ``mt3_demo/ui/`` imports Gradio. Every ``import`` statement counts, wherever it stands:
   at module level, inside a function, under ``if TYPE_CHECKING:``.
2. ``mt3_demo/models/`` never imports ``mt3_demo.manager``, ``mt3_demo.pipeline`` or ``mt3_demo.ui``
   (the models are the bottom floor: the manager and the pipeline use them, not the reverse).
   Every import statement counts, as in rule 1.
3. No import cycles among the modules of ``mt3_demo``. What counts: an import that runs when its
   module is imported, i.e. one at module level, including inside a module-level ``try``/``if``,
   except under ``if TYPE_CHECKING:``. An import inside a function body is deferred by design (to
   keep start-up light, e.g. matplotlib and scipy load only when used) and is not an edge. The edge
   goes to the module named: ``from .pkg import name`` is an edge to ``pkg.name`` when that is a
   module, else to ``pkg`` (its ``__init__``); the parent packages Python initialises on the way are
   not edges, so a package ``__init__`` that re-exports its submodules does not make a cycle with
   them.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mt3_demo"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_nodes(tree: ast.Module, run_at_import_only: bool) -> list[ast.Import | ast.ImportFrom]:
    """The import statements of a module; with ``run_at_import_only``, only those that execute when
    the module is imported (not in function bodies, not under ``if TYPE_CHECKING:``)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if run_at_import_only:
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    continue
                if isinstance(child, ast.If) and is_type_checking(child.test):
                    for other in child.orelse:
                        visit_one(other)
                    continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        visit(node)

    visit(tree)
    return found


def imported_names(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute dotted names an import statement reaches (``from x import y`` gives ``x.y`` if that is
    a module of this package, else ``x``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package(module) else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    names = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        names.append(sub if sub in MODULES else target)
    return names


def imports_of(module: str, run_at_import_only: bool) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    return {name for node in import_nodes(tree, run_at_import_only) for name in imported_names(module, node)}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_module_table_is_the_package():
    # The rules below are only as good as the list of modules they walk.
    assert "mt3_demo.manager" in MODULES and "mt3_demo.ui.layout" in MODULES
    assert "mt3_demo.models.mt3.adapter" in MODULES and len(MODULES) > 40


def test_relative_imports_resolve_to_package_modules():
    # A wrong resolution would silently drop edges: every relative import must name a real module.
    for module in MODULES:
        tree = ast.parse(MODULES[module].read_text())
        for node in import_nodes(tree, run_at_import_only=False):
            if isinstance(node, ast.ImportFrom) and node.level:
                for name in imported_names(module, node):
                    assert name in MODULES, f"{module}: relative import resolves to unknown {name}"


def test_only_ui_imports_gradio():
    offenders = sorted(m for m in MODULES if not within(m, "mt3_demo.ui")
                       and any(within(n, "gradio") for n in imports_of(m, run_at_import_only=False)))
    assert offenders == []
    # The rule sees the imports it is about: ui/ does import gradio.
    assert any(within(n, "gradio") for n in imports_of("mt3_demo.ui.layout", run_at_import_only=False))


@pytest.mark.parametrize("upper", ["mt3_demo.manager", "mt3_demo.pipeline", "mt3_demo.ui"])
def test_models_do_not_import_the_floors_above(upper):
    offenders = sorted(m for m in MODULES if within(m, "mt3_demo.models")
                       and any(within(n, upper) for n in imports_of(m, run_at_import_only=False)))
    assert offenders == []


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of a directed graph as a list of nodes (first = last), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for nxt in sorted(graph[node]):
            if colour[nxt] == GREY:
                return stack[stack.index(nxt):] + [nxt]
            if colour[nxt] == WHITE and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        colour[node] = BLACK
        return None

    for node in sorted(graph):
        if colour[node] == WHITE and (cycle := dfs(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    # The checker itself: a planted cycle is found, a chain is not.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles_in_the_package():
    graph = {m: {n for n in imports_of(m, run_at_import_only=True) if n in MODULES and n != m} for m in MODULES}
    assert sum(map(len, graph.values())) > 50  # the graph is really built from the imports
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph))
