"""The layers point one way: each imports only from the layers below it, and nothing imports in a circle.

The order is written once, in the README's table of where each concern lives (its rows, top to
bottom, are the layers from the bottom up); this test reads it from there. Every module of every
layer is imported, and every import in it (at the top, inside a function, or under TYPE_CHECKING)
is checked against the order.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from tests.program import PROJECT_DIR

TOP_LEVEL = {"__main__.py"}  # the program: may import any layer but the host set-up and the engine
NOT_FOR_THE_PROGRAM = {"hypervisor", "engine"}


def layer_order() -> list[str]:
    """The README's table, `| folder/ | what |` rows in order (cloudinit/ holds no Python)."""
    readme = (PROJECT_DIR / "README.md").read_text()
    table = readme.split("Where each concern lives", 1)[1]
    rows = re.findall(r"^\| `([a-z]+)/` \|", table, re.M)
    return [r for r in rows if r != "tests" and (PROJECT_DIR / r / "__init__.py").exists()]


LAYERS = layer_order()


def modules() -> list[Path]:
    return sorted(p for layer in LAYERS for p in (PROJECT_DIR / layer).rglob("*.py"))


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import of the project's own layers in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, n.split(".")[0]) for n in names if n.split(".")[0] in LAYERS]
    return found


def test_the_readme_names_every_layer():
    packages = {p.parent.name for p in PROJECT_DIR.glob("*/__init__.py")} - {"tests"}
    assert set(LAYERS) == packages, f"the README's table misses {packages - set(LAYERS)}"
    assert LAYERS[0] == "lab"  # the spec is the bottom floor


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PROJECT_DIR)))
def test_a_module_imports_only_from_below(path: Path):
    rel = path.relative_to(PROJECT_DIR)
    own = LAYERS.index(rel.parts[0])
    upward = [f"{rel}:{line} imports {pkg}/" for line, pkg in project_imports(path) if LAYERS.index(pkg) > own]
    assert not upward, f"imports from a higher layer (order: {' < '.join(LAYERS)}): {upward}"
    importlib.import_module(".".join(rel.with_suffix("").parts).removesuffix(".__init__"))


def test_the_program_leaves_the_host_setup_and_the_engine_alone():
    for name in TOP_LEVEL:
        wrong = [
            f"{name}:{line} imports {pkg}/"
            for line, pkg in project_imports(PROJECT_DIR / name)
            if pkg in NOT_FOR_THE_PROGRAM
        ]
        assert not wrong, wrong


def test_no_module_imports_in_a_circle():
    """Within a layer too: module-level imports between the project's modules form no cycle."""
    graph: dict[str, set[str]] = {}
    names = {".".join(p.relative_to(PROJECT_DIR).with_suffix("").parts).removesuffix(".__init__"): p for p in modules()}
    for name, path in names.items():
        deps = set()
        for node in ast.parse(path.read_text()).body:  # module level: what runs at import
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in names and t != name}
        graph[name] = deps
    seen: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for dep in sorted(graph[node]):
            if seen.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(dep) :], dep]))
            if dep not in seen:
                visit(dep, [*stack, dep])
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen:
            visit(node, [node])


def test_no_import_inside_a_function_dodges_a_cycle():
    """Imports sit at the top of a module; only the heavy, optional matplotlib may wait for its use."""
    late = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        names = [a.name for a in inner.names] if isinstance(inner, ast.Import) else [inner.module or ""]
                        if any(n.split(".")[0] in LAYERS for n in names):
                            late.append(f"{path.relative_to(PROJECT_DIR)}:{inner.lineno}")
    assert not late, late
