"""The public surface is what docs/design.md documents, and nothing else; the error trees
drawn in the docstrings are the classes' own."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import hitpool
import hitpool.hitd
import hitpool.hitd.errors
from hitpool import _errors

DESIGN = Path(__file__).resolve().parents[1] / "docs" / "design.md"


def documented_names(heading: str, module: str) -> set[str]:
    """The names in the first column of the table after the line naming what `module`
    exports, in the section `heading`."""
    section = DESIGN.read_text().split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    table = section.split(f"Everything `{module}` exports", 1)[1].split("\n\n", 2)[1]
    names: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Za-z_]+)`", line.split("|")[1]))
    return names


def test_exports_are_what_the_design_documents() -> None:
    assert documented_names("Public API", "import hitpool") == set(hitpool.__all__) - {
        "__version__"
    }
    assert documented_names("Public API", "hitpool.hitd") == set(hitpool.hitd.__all__)


def test_every_export_exists_and_all_is_sorted() -> None:
    for module in (hitpool, hitpool.hitd):
        for name in module.__all__:
            assert hasattr(module, name), name
        assert list(module.__all__) == sorted(module.__all__)


def drawn_tree(module: ModuleType) -> dict[str, str]:
    """child -> parent, from the ``* Name`` bullets of the module's docstring."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (module.__doc__ or "").splitlines():
        m = re.match(r"^( *)\* (\w+)", line)
        if m is None:
            continue
        depth, name = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    return parents


def test_each_error_tree_is_drawn_as_the_classes_are() -> None:
    for module in (_errors, hitpool.hitd.errors):
        tree = drawn_tree(module)
        defined = {
            name
            for name, obj in vars(module).items()
            if isinstance(obj, type)
            and issubclass(obj, Exception)
            and obj.__module__ == module.__name__
        }
        assert set(tree) == defined - {"HitpoolError"}
        for child, parent in tree.items():
            assert getattr(module, child).__bases__[0].__name__ == parent, child


def test_every_error_derives_from_the_base() -> None:
    errors = [getattr(hitpool, n) for n in hitpool.__all__] + [
        getattr(hitpool.hitd, n) for n in hitpool.hitd.__all__
    ]
    errors = [e for e in errors if isinstance(e, type) and issubclass(e, BaseException)]
    assert len(errors) == 9
    assert all(issubclass(e, hitpool.HitpoolError) for e in errors)
