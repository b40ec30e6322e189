"""The package's dependencies flow one way: facts <- encoders/engine <- loaded_models <- identity
<- webui.

Every ``import`` in the source counts, also those inside functions (lazy imports still make a
dependency), except those under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hyperlora_ext"
WEBUI_MODULES = ("modules", "networks", "network", "network_lora", "backend", "ldm_patched")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            inside.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return inside


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every module ``path`` imports (ours resolved to the deepest known module, others raw)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                child = f"{module}.{alias.name}"
                found.add(child if child in known else module)
    return found - {name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, known) for p in paths}


def _ours(graph: dict[str, set[str]], module: str) -> set[str]:
    return {m for m in graph[module] if m in graph}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among our modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for dep in sorted(_ours(graph, module)):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        state[module] = 2
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_the_graph_is_read(graph):
    assert "hyperlora_ext.webui.host" in _ours(graph, "hyperlora_ext.webui.job")
    assert "hyperlora_ext.facts" in _ours(graph, "hyperlora_ext.args")


def test_no_import_cycles(graph):
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_a_cycle_would_be_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_engine_never_imports_the_webui(graph):
    for module, deps in graph.items():
        if module.startswith("hyperlora_ext.webui"):
            continue
        bad = {
            d
            for d in deps
            if d.startswith("hyperlora_ext.webui") or d.split(".")[0] in WEBUI_MODULES
        }
        assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("hyperlora_ext.facts", "hyperlora_ext."),  # errors only
        ("hyperlora_ext.args", "hyperlora_ext.encoders"),
        ("hyperlora_ext.args", "hyperlora_ext.identity"),
        ("hyperlora_ext.export", "hyperlora_ext.args"),
        ("hyperlora_ext.identity", "hyperlora_ext.args"),
        ("hyperlora_ext.loaded_models", "hyperlora_ext.identity"),
        ("hyperlora_ext.webui.job", "hyperlora_ext.webui.api"),
        ("hyperlora_ext.webui.a1111", "hyperlora_ext.webui.host"),
        ("hyperlora_ext.webui.forge", "hyperlora_ext.webui.host"),
    ],
)
def test_dependencies_point_one_way(graph, module, forbidden):
    allowed = {"hyperlora_ext.errors"} if module == "hyperlora_ext.facts" else set()
    bad = {d for d in _ours(graph, module) - allowed if d.startswith(forbidden)}
    assert not bad, f"{module} imports {sorted(bad)}"
