"""The build: the hot modules (`COMPILED` in src/hitpool/_build.py) compiled to C extensions
by mypyc when a C compiler is there, the pure source otherwise. Metadata is in pyproject.toml.

    HITPOOL_PURE=1   never compile
    HITPOOL_PURE=0   always compile, and fail when it cannot
    (unset)          compile when a C compiler and Python's headers are there, else pure

An editable install (`pip install -e`) is always pure: it would build the extensions in
place, next to the sources, where a `.so` from an older build shadows an edited `.py` (the
import system tries extension modules first). Compiled builds go into a venv, never in place.
"""

from __future__ import annotations

import ast
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
BUILD_LIST = ROOT / "src" / "hitpool" / "_build.py"


def compiled_modules() -> tuple[str, ...]:
    """`COMPILED` from _build.py, read without importing the package (not installed yet)."""
    for node in ast.parse(BUILD_LIST.read_text()).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "COMPILED":
            names = ast.literal_eval(node.value)
            if isinstance(names, tuple) and all(isinstance(n, str) for n in names):
                return names
    raise SystemExit(f"setup.py: no COMPILED tuple of module names in {BUILD_LIST}")


def why_not_compiled() -> str | None:
    """None when this machine can compile; else the reason, to print and to fail on."""
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc!r} is not on PATH)"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "no Python.h (install the python3-dev package)"
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "mypyc is not installed (pip install mypy==2.4.1)"
    return None


def ext_modules() -> list[object]:
    mode = os.environ.get("HITPOOL_PURE", "")
    if mode not in ("", "0", "1"):
        raise SystemExit(f"setup.py: HITPOOL_PURE={mode!r}: use 1 (pure), 0 (compiled) or unset")
    editable = any(cmd in sys.argv for cmd in ("editable_wheel", "develop"))
    if any(cmd in sys.argv for cmd in ("egg_info", "dist_info")) and "bdist_wheel" not in sys.argv:
        return []  # metadata only: the extensions do not change it, and compiling takes minutes
    if mode == "1" or editable:
        print("hitpool: pure build (HITPOOL_PURE=1 or an editable install)", file=sys.stderr)
        return []
    reason = why_not_compiled()
    if reason is not None:
        if mode == "0":
            raise SystemExit(f"setup.py: HITPOOL_PURE=0 asks for the compiled build: {reason}")
        print(f"hitpool: pure build: {reason}", file=sys.stderr)
        return []
    from mypyc.build import mypycify

    paths = []
    for name in compiled_modules():
        path = Path("src", *name.split("."))
        package_init = path / "__init__.py"
        paths.append(str(package_init if package_init.is_file() else path.with_suffix(".py")))
    print(f"hitpool: compiled build of {len(paths)} modules with mypyc", file=sys.stderr)
    # One group (one shared library): calls between compiled modules stay native C calls.
    return list(mypycify(paths, opt_level="3", target_dir=str(Path("build", "mypyc"))))


setup(ext_modules=ext_modules())
