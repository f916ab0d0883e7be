#!/usr/bin/env python3
"""Checks on the modules mypyc compiles (`COMPILED` in src/hitpool/_build.py) that mypy does
not make: code that is correct Python but that the compiled build gets wrong.

- No `await` (nor `async with` / `async for`) inside an `except` block. Compiled coroutines
  that await while an exception is being handled have crashed the interpreter (a bare `raise`
  after the await, in a coroutine awaited by another compiled one: cf. python/mypy#12867) and
  left a stale `sys.exc_info()` that an interpreted caller's bare `raise` re-raised. The fix:
  catch into a variable, leave the `except`, then await and re-raise the variable.
- No variable read in a `finally` block that the `try` (or its `except` blocks) assigns.
  mypyc types the variable by its narrowed type at the point of the read: `x = None` before
  the `try`, `x = Outcome(...)` inside, and `if x is not None` in the `finally` raised
  TypeError ("tuple object expected; got None") when the `try` was left by an exception
  before the assignment. Do the work after the `try` statement, or read only names the
  `try` does not assign.
- No attribute whose C field name is a C keyword: mypyc stores `self.x` in a struct field
  named `_x`, so `self._thread` becomes `__thread`, a GCC keyword, and the C does not compile.

    scripts/check_compiled.py [FILE.py ...]     (default: every module of COMPILED)

Prints one line per finding (file:line: what and the fix) and exits 1 when there is any.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"

# GCC and C11 spellings that `_` + a Python attribute name can produce.
C_KEYWORDS = frozenset(
    {
        "__thread",
        "__asm",
        "__asm__",
        "__attribute",
        "__attribute__",
        "__inline",
        "__inline__",
        "__restrict",
        "__restrict__",
        "__const",
        "__const__",
        "__volatile",
        "__volatile__",
        "__signed",
        "__signed__",
        "__typeof",
        "__typeof__",
        "__real",
        "__real__",
        "__imag",
        "__imag__",
        "__complex",
        "__complex__",
        "__extension__",
        "__label__",
        "__alignof",
        "__alignof__",
        "_Bool",
        "_Atomic",
        "_Complex",
        "_Generic",
        "_Imaginary",
        "_Noreturn",
        "_Alignas",
        "_Alignof",
        "_Static_assert",
        "_Thread_local",
    }
)


def compiled_files() -> list[Path]:
    """The source file of each module in COMPILED (_build.py is loaded on its own: it imports
    nothing from the package at module level)."""
    spec = importlib.util.spec_from_file_location("_hitpool_build", SRC / "hitpool" / "_build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    files = []
    for name in build.COMPILED:
        path = SRC.joinpath(*name.split("."))
        files.append(path / "__init__.py" if path.is_dir() else path.with_suffix(".py"))
    return files


def _missing(files: list[Path]) -> list[str]:
    return [f"{f}: listed in COMPILED (src/hitpool/_build.py) but missing" for f in files]


def _awaits(node: ast.AST) -> Iterator[ast.AST]:
    """The awaits in `node`'s body that run in its frame (not in a nested function), and not
    in a nested except block (that one is reported with its own line)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(
            child,
            ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef | ast.ExceptHandler,
        ):
            continue
        if isinstance(child, ast.Await | ast.AsyncWith | ast.AsyncFor):
            yield child
        yield from _awaits(child)


def _names(nodes: list[ast.stmt] | list[ast.ExceptHandler], ctx: type) -> Iterator[ast.Name]:
    """The names used with `ctx` (ast.Load or ast.Store) in `nodes`, outside nested functions."""
    stack: list[ast.AST] = list(nodes)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ctx):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def findings(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Try | ast.TryStar) and node.finalbody:
            assigned = {n.id for n in _names([*node.body, *node.handlers], ast.Store)}
            assigned |= {h.name for h in node.handlers if h.name}
            # A name the finally block assigns itself (a loop variable) holds its own value.
            assigned -= {n.id for n in _names(node.finalbody, ast.Store)}
            for name in _names(node.finalbody, ast.Load):
                if name.id in assigned:
                    yield (
                        f"{path}:{name.lineno}: {name.id} is read in a finally block and "
                        f"assigned in its try (line {node.lineno}) in a compiled module: "
                        "the compiled build trusts its narrowed type; read it after the try"
                    )
        if isinstance(node, ast.ExceptHandler):
            for aw in _awaits(node):
                what = {ast.AsyncWith: "async with", ast.AsyncFor: "async for"}.get(
                    type(aw), "await"
                )
                yield (
                    f"{path}:{aw.lineno}: {what} inside an except block (line {node.lineno}) "
                    "in a compiled module: catch into a variable, await after the except"
                )
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
            and "_" + node.attr in C_KEYWORDS
        ):
            yield (
                f"{path}:{node.lineno}: self.{node.attr} becomes the C field _{node.attr}, "
                "a C keyword, in the compiled build: rename the attribute"
            )


def _line_number(finding: str) -> int:
    return int(finding.split(":")[1])


def main(argv: list[str]) -> int:
    files = [Path(a) for a in argv] if argv else compiled_files()
    missing = _missing([f for f in files if not f.is_file()])
    if missing:
        print("\n".join(missing))
        return 1
    problems = [line for f in files for line in sorted(findings(f), key=_line_number)]
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
