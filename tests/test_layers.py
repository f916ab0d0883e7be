"""The layers are as docs/design.md draws them: every import of every module, parsed with
`ast`, against the drawings; and ``import hitpool`` loads neither program."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "hitpool"
DESIGN = ROOT / "docs" / "design.md"
PARTS = ("hit", "hitd", "demo")

Edges = set[tuple[str, str, str]]  # (importer, imported, "──>" at import time | "··>" lazily)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module imported, at import time?) for each hitpool import in the file; imports
    under ``if TYPE_CHECKING`` are only for type checkers and left out."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, eager: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, eager)
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            eager = False
        if isinstance(node, ast.Import):
            found.extend((alias.name, eager) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                # `from . import durations` imports the module hitpool.durations.
                sub = f"{target}.{alias.name}"
                is_module = (SRC.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                found.append((sub if is_module else target, eager))
        for child in ast.iter_child_nodes(node):
            visit(child, eager)

    visit(ast.parse(path.read_text()), True)
    return [(target, eager) for target, eager in found if target.split(".")[0] == "hitpool"]


def _real(node_of: dict[str, str]) -> Edges:
    """The edges between nodes (a node is what `node_of` maps a module to)."""
    eager: set[tuple[str, str]] = set()
    lazy: set[tuple[str, str]] = set()
    for path in SRC.rglob("*.py"):
        src = node_of.get(_module_name(path))
        if src is None:
            continue
        for target, at_import in _imports(path):
            dst = node_of.get(target)
            if dst is not None and dst != src:
                (eager if at_import else lazy).add((src, dst))
    return {(a, b, "──>") for a, b in eager} | {(a, b, "··>") for a, b in lazy - eager}


def _drawn(marker: str) -> tuple[Edges, set[str]]:
    """The drawing's edges, and every node it names."""
    text = DESIGN.read_text()
    block = text.split(f"<!-- layers: {marker} -->", 1)[1].split("```", 2)[1]
    edges: Edges = set()
    names: set[str] = set()
    for line in block.splitlines():
        m = re.match(r"^(\S+)\s+(──>|··>)((?:\s+[\w.]+,?)*)(?:\s{2,}\S.*)?$", line)
        if m is None:
            assert not line.strip(), f"cannot read {line!r} in the {marker} drawing"
            continue
        names.add(m.group(1))
        for dst in m.group(3).replace(",", " ").split():
            edges.add((m.group(1), dst, m.group(2)))
            names.add(dst)
    return edges, names


def _part(module: str) -> str:
    parts = module.split(".")
    return "hitpool." + parts[1] if len(parts) > 1 and parts[1] in PARTS else "hitpool"


def test_the_parts_import_each_other_as_drawn() -> None:
    modules = {_module_name(p) for p in SRC.rglob("*.py")}
    node_of = {m: _part(m) for m in modules}
    drawn, names = _drawn("the parts")
    assert names == set(node_of.values())
    assert _real(node_of) == drawn


def test_the_library_modules_import_each_other_as_drawn() -> None:
    node_of = {}
    for path in SRC.glob("*.py"):
        name = _module_name(path)
        if _part(name) == "hitpool":
            node_of[name] = "__init__" if name == "hitpool" else name.rpartition(".")[2]
    drawn, names = _drawn("the library")
    assert names == set(node_of.values())  # every library module, those importing nothing too
    assert _real(node_of) == drawn


@pytest.mark.parametrize(
    "code",
    [
        "import hitpool",
        "import hitpool; hitpool.Dispatcher; hitpool.pipeline.throttle",
        "from hitpool import *",
    ],
)
def test_import_hitpool_loads_neither_program(code: str) -> None:
    check = (
        f"{code}\nimport sys\n"
        "print(sorted(m for m in sys.modules if m.startswith(('hitpool.hit', 'hitpool.demo'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_task_alias_is_hitds_and_imported_when_first_used() -> None:
    check = (
        "import sys, hitpool\n"
        "assert 'hitpool.hitd' not in sys.modules\n"
        "import hitpool.hitd\n"
        "assert hitpool.task is hitpool.hitd.task\n"
        "print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "ok"
