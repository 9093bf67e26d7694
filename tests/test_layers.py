"""The package's layers: imports point downward only (pyproject's import-linter contract), and no
two modules import each other, directly or around a circle, lazy imports included
(imports for type checking only never run, so they are left out)."""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def _module_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), ignoring a module's
    imports of the packages that contain it (``from morse.data import x`` inside morse.data)."""
    edges = {
        module: {
            target for target in graph.find_modules_directly_imported_by(module)
            if not module.startswith(target + ".")
        }
        for module in graph.modules
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in edges.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return cycles


def test_imports_respect_the_layers_contract():
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_no_module_imports_itself_around_a_cycle():
    graph = grimp.build_graph(
        "morse", cache_dir=None, exclude_type_checking_imports=True
    )
    assert _module_cycles(graph) == []


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_cycle_finder_reports_a_circle_and_only_a_circle(edges, expected):
    graph = grimp.ImportGraph()
    for module in edges:
        graph.add_module(f"p.{module}")
    for module, targets in edges.items():
        for target in targets:
            graph.add_import(importer=f"p.{module}", imported=f"p.{target}")
    assert _module_cycles(graph) == [[f"p.{m}" for m in cycle] for cycle in expected]
