"""The public surface is what the README documents, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import hitpool

README = Path(__file__).resolve().parents[1] / "README.md"


def documented_names() -> set[str]:
    text = README.read_text()
    section = text.split("### Public API", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`([A-Za-z_]+)`", first_cell))
    return names


def test_exports_are_what_the_readme_documents() -> None:
    exported = set(hitpool.__all__) - {"__version__"}
    assert documented_names() == exported


def test_every_export_exists_and_all_is_sorted() -> None:
    for name in hitpool.__all__:
        assert hasattr(hitpool, name), name
    assert list(hitpool.__all__) == sorted(hitpool.__all__)


def test_every_error_derives_from_the_base() -> None:
    errors = [
        getattr(hitpool, n)
        for n in hitpool.__all__
        if n.endswith(("Error", "Full", "Closed", "Cancelled", "Unavailable", "Task"))
    ]
    errors = [e for e in errors if isinstance(e, type)]
    assert len(errors) == 9
    assert all(issubclass(e, hitpool.HitpoolError) for e in errors)
