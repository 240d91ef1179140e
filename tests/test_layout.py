"""The package's shape, as CONTRIBUTING.md describes it: layers whose imports
point one way (down), no import circle, no module over ~600 lines.

Read from the source with ``ast`` (every import, also the ones inside
functions and under TYPE_CHECKING), so a change that breaks the shape fails
here, not in a review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "uwsgigw"

# Low to high: a module may import from its own layer and the ones below.
LAYERS = [
    # the package's face (__version__ only) and the leaves everything uses
    {"uwsgigw", "uwsgigw.log", "uwsgigw.exitcodes", "uwsgigw._cdecoder", "uwsgigw._fastpath"},
    {"uwsgigw.config"},
    {"uwsgigw.app", "uwsgigw.protocol"},
    {"uwsgigw.cycle"},
    {"uwsgigw.observe"},
    {"uwsgigw.process"},
    {"uwsgigw.wsgi"},
    {"uwsgigw.asgi"},
    {"uwsgigw.backend"},
    {"uwsgigw.server", "uwsgigw.healthcheck", "uwsgigw.demo", "uwsgigw.devnginx",
     "uwsgigw.preflight"},
    {"uwsgigw.cli"},
    {"uwsgigw.__main__"},
]
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """The layer of a module: its own entry, else its subpackage's."""
    name = module
    while True:
        for i, layer in enumerate(LAYERS):
            if name in layer:
                return i
        name = name.rpartition(".")[0]
        if name in ("", "uwsgigw"):  # a new top-level module must say where it stands
            raise AssertionError("no layer for %s: add it to LAYERS (and to "
                                 "CONTRIBUTING.md)" % module)


def imports_of(path: Path) -> set[str]:
    """The uwsgigw modules ``path`` imports (a package's submodules when it
    imports them by name: ``from . import log``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("uwsgigw"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("uwsgigw"):
                continue
            for alias in node.names:
                sub = target + "." + alias.name
                found.add(sub if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists()
                          or (PACKAGE.parent / sub.replace(".", "/")).is_dir() else target)
    found.discard(name)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    mine = layer_of(module_name(path))
    up = sorted(m for m in imports_of(path) if layer_of(m) > mine)
    assert not up, "%s (layer %d) imports from higher layers: %s" % (
        module_name(path), mine, ", ".join("%s (%d)" % (m, layer_of(m)) for m in up))


def test_no_import_circle():
    graph = {module_name(p): imports_of(p) for p in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if nxt in graph and state.get(nxt) is None:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if state.get(start) is None:
            visit(start, [start])


@pytest.mark.parametrize("path", MODULES + sorted((PACKAGE.parent / "csrc").glob("*.[ch]")),
                         ids=lambda p: p.name)
def test_no_module_over_600_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, "%s has %d lines: split it by job" % (path.name, lines)
