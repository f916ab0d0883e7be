"""Which build is running: the pure-Python source, or the hot modules compiled by mypyc.

`COMPILED` is the one list of modules the build compiles (setup.py reads it from this file
without importing the package). Whole clusters are listed together: a compiled class calling
an interpreted one (or the reverse) pays a Python call at the seam, and an interpreted subclass
of a compiled class runs slower than either (`ThreadDispatcher` on a compiled `Core`).

This module itself is never compiled: it must answer the same way in either build, and it
imports nothing it names, so `hit --version` stays cheap.
"""

from __future__ import annotations

import functools
import importlib.machinery
import sys
from pathlib import Path

COMPILED: tuple[str, ...] = (
    # The dispatcher cluster: both shells with the core they share, and its one way to wait.
    "hitpool._core",
    "hitpool._parking",
    "hitpool.dispatcher",
    "hitpool.threads",
    "hitpool.durations",
    # hit's request path, with the pure numbers under every request: pacing and latency.
    "hitpool.schedule",
    "hitpool.hit.client",
    "hitpool.hit.engine",
    "hitpool.hit.stats",
    "hitpool.hit.tally",
    # hitd's request and job path, with the stores it is tested against on every commit.
    "hitpool.hitd.h1",
    "hitpool.hitd.http",
    "hitpool.hitd.jsonin",
    "hitpool.hitd.messages",
    "hitpool.hitd.app",
    "hitpool.hitd.intake",
    "hitpool.hitd.halves",
    "hitpool.hitd.metrics",
    "hitpool.hitd.runner",
    "hitpool.hitd.lifecycle",
    "hitpool.hitd.store.base",
    "hitpool.hitd.store._codec",
    "hitpool.hitd.store.sqlite",
    "hitpool.hitd.store.sqlite_ops",
)

_PACKAGE_DIR = Path(__file__).resolve().parent


def _is_extension(module: str) -> bool:
    """True when `module` is (or, not yet imported, would be) loaded from a C extension."""
    loaded = sys.modules.get(module)
    if loaded is not None:
        origin = getattr(loaded, "__file__", None) or ""
    else:
        # Without importing it (and its package's imports): the file the import system would
        # pick. Its path finder tries extension suffixes before `.py` in each directory.
        parts = module.split(".")[1:]
        directory = _PACKAGE_DIR.joinpath(*parts[:-1])
        origin = ""
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            candidate = directory / (parts[-1] + suffix)
            if candidate.is_file():
                origin = str(candidate)
                break
    return origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def compiled_modules() -> list[str]:
    """The modules of `COMPILED` that run as C extensions in this process."""
    return [m for m in COMPILED if _is_extension(m)]


@functools.cache  # an install does not change under a running process
def build() -> str:
    """The build running: `compiled` when every module of `COMPILED` is a C extension, `pure`
    when none is, `mixed (n of m compiled)` otherwise (a broken install: `make clean`)."""
    n = len(compiled_modules())
    if n == len(COMPILED):
        return "compiled"
    if n == 0:
        return "pure"
    return f"mixed ({n} of {len(COMPILED)} compiled)"
