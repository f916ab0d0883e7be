"""scripts/check_compiled.py: the checks `make lint` runs on the modules mypyc compiles."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_compiled.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_compiled", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _load()


def _findings(tmp_path: Path, source: str) -> list[str]:
    path = tmp_path / "mod.py"
    path.write_text(textwrap.dedent(source))
    return [line.split(": ", 1)[1] for line in check.findings(path)]


@pytest.mark.parametrize(
    "body",
    [
        "try:\n    await f()\nexcept Exception:\n    await g()\n    raise\n",
        "try:\n    pass\nexcept BaseException as e:\n    if e:\n        await g()\n",
        "try:\n    pass\nexcept Exception:\n    async with lock:\n        pass\n",
        "try:\n    pass\nexcept Exception:\n    async for x in it:\n        pass\n",
        "try:\n    pass\nexcept* ValueError:\n    await g()\n",
    ],
)
def test_an_await_inside_an_except_block_is_found(tmp_path: Path, body: str) -> None:
    source = "async def h():\n" + textwrap.indent(body, "    ")
    found = _findings(tmp_path, source)
    assert len(found) == 1
    assert "inside an except block" in found[0] and "await after the except" in found[0]


def test_an_await_after_the_except_or_in_a_nested_function_is_fine(tmp_path: Path) -> None:
    source = """
    async def h():
        failure = None
        try:
            await f()
        except Exception as e:
            failure = e

            async def later():
                await g()

            callback = lambda: g()
        finally:
            await close()
        if failure is not None:
            await g()
            raise failure
    """
    assert _findings(tmp_path, source) == []


def test_a_nested_except_is_one_finding_with_its_line(tmp_path: Path) -> None:
    source = """
    async def h():
        try:
            pass
        except Exception:
            try:
                pass
            except Exception:
                await g()
    """
    assert _findings(tmp_path, source) == [
        "await inside an except block (line 8) in a compiled module: "
        "catch into a variable, await after the except"
    ]
    assert next(check.findings(tmp_path / "mod.py")).startswith(f"{tmp_path}/mod.py:9: ")


def test_an_attribute_that_becomes_a_c_keyword_is_found(tmp_path: Path) -> None:
    source = """
    class Store:
        def __init__(self):
            self._thread = None
            self.thread = None
            self._real = 1.0
    """
    found = _findings(tmp_path, source)
    assert [f.split(" becomes")[0] for f in found] == ["self._thread", "self._real"]


def test_the_script_checks_every_compiled_module_and_exits_1_on_a_finding(
    tmp_path: Path,
) -> None:
    names = [p.relative_to(SCRIPT.parents[1] / "src") for p in check.compiled_files()]
    assert Path("hitpool/dispatcher.py") in names and Path("hitpool/_core.py") in names
    assert all(p.is_file() for p in check.compiled_files())
    bad = tmp_path / "bad.py"
    bad.write_text(
        "async def h():\n    try:\n        pass\n    except Exception:\n        await g()"
    )
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(bad)], capture_output=True, text=True, check=False
    )
    assert (run.returncode, run.stdout.count("\n")) == (1, 1)
    assert run.stdout.startswith(f"{bad}:5: await inside an except block")


def test_a_name_the_try_assigns_read_in_its_finally_is_found(tmp_path: Path) -> None:
    source = """
    async def h():
        outcome = None
        try:
            outcome = await f()
        except Exception as e:
            log(e)
        finally:
            if outcome is not None:
                record(outcome)
    """
    expected = (
        "outcome is read in a finally block and assigned in its try (line 4) in a compiled "
        "module: the compiled build trusts its narrowed type; read it after the try"
    )
    assert _findings(tmp_path, source) == [expected, expected]  # both reads


def test_a_finally_reading_what_the_try_does_not_assign_is_fine(tmp_path: Path) -> None:
    source = """
    def h(self, fut, jobs):
        timer = start()
        try:
            result = run()
        finally:
            timer.cancel()
            for job in jobs:
                job.cancel()
            self.count -= 1
        return result
    """
    assert _findings(tmp_path, source) == []


def test_a_listed_module_without_a_source_file_is_named(tmp_path: Path) -> None:
    gone = tmp_path / "moved.py"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(gone)], capture_output=True, text=True, check=False
    )
    assert (run.returncode, run.stdout) == (
        1,
        f"{gone}: listed in COMPILED (src/hitpool/_build.py) but missing\n",
    )
