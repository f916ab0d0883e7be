#!/usr/bin/env python3
"""Print pyproject.toml's requirements, one a line, for `pip install -r /dev/stdin`:

    scripts/requirements.py build runtime dev bench

`build` is [build-system] requires (setuptools and the pinned mypy, whose mypyc compiles the
hot modules), `runtime` is [project] dependencies, any other word names an optional extra. The
compiled venv installs these itself and then builds the wheel without isolation, so one pin in
pyproject.toml serves `pip install .` and `make` alike.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def requirements(groups: list[str]) -> list[str]:
    doc = tomllib.loads(PYPROJECT.read_text())
    extras = doc["project"].get("optional-dependencies", {})
    out: list[str] = []
    for group in groups:
        if group == "build":
            out += doc["build-system"]["requires"]
        elif group == "runtime":
            out += doc["project"]["dependencies"]
        elif group in extras:
            out += extras[group]
        else:
            known = ", ".join(["build", "runtime", *extras])
            raise SystemExit(f"requirements.py: no group {group!r} (groups: {known})")
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1:])))
