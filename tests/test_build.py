"""Which build runs (pure or compiled by mypyc), and what the compiled build must keep doing
as the pure one does: our errors for bad input, no crash and no stale exception around
coroutines that catch and then await."""

from __future__ import annotations

import asyncio
import importlib.machinery
import importlib.util
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import hitpool
from hitpool import Dispatcher, SpecError, ThreadDispatcher
from hitpool._build import COMPILED, build, compiled_modules
from hitpool.schedule import OpenSchedule, Stage, StagedSchedule

EXTENSIONS = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def test_the_build_is_the_one_make_asked_for() -> None:
    # `make unit-pure` / `make unit-compiled` say which build their venv must hold: a compile
    # that fell back to the pure source, or a source tree on PYTHONPATH shadowing the
    # installed build, would otherwise pass the compiled leg by running the pure one.
    expected = os.environ.get("HITPOOL_EXPECT_BUILD")
    assert build() == (expected or build())
    assert build() in ("pure", "compiled")


def test_the_build_reports_the_modules_actually_loaded() -> None:
    for name in COMPILED:
        module = importlib.import_module(name)
        loaded_from = module.__file__ or ""
        assert loaded_from.endswith(EXTENSIONS) == (name in compiled_modules()), name
    assert build() == ("compiled" if compiled_modules() else "pure")


def test_every_compiled_module_is_one_of_ours_listed_once() -> None:
    assert len(set(COMPILED)) == len(COMPILED)
    for name in COMPILED:
        assert name.startswith("hitpool.")
        assert importlib.util.find_spec(name) is not None, name


# --- our errors, not TypeError: the compiled build checks annotations at run time ---------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"workers": 2.5}, "workers"),
        ({"workers": "8"}, "workers"),
        ({"workers": True}, "workers"),
        ({"queue_size": None}, "queue_size"),
        ({"queue_size": 1.0}, "queue_size"),
    ],
)
@pytest.mark.parametrize("cls", [Dispatcher, ThreadDispatcher])
def test_constructors_refuse_wrong_types_with_spec_error(
    cls: type, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(SpecError) as e:
        cls(**kwargs)
    assert e.value.field == field


@pytest.mark.parametrize("bad", ["1s", True, [1]])
async def test_dispatch_refuses_a_delay_of_the_wrong_type_with_spec_error(bad: object) -> None:
    async with Dispatcher(workers=1, queue_size=1) as pool:
        with pytest.raises(SpecError) as e:
            await pool.dispatch(asyncio.sleep, 0, delay=bad)  # type: ignore[arg-type]
        assert e.value.field == "delay"
    with ThreadDispatcher(workers=1, queue_size=1) as tpool:
        with pytest.raises(SpecError) as e:
            tpool.dispatch(int, delay=bad)  # type: ignore[arg-type]
        assert e.value.field == "delay"


# --- exceptions in coroutines ----------------------------------------------------------------

# A pool stopped while its job runs, from a timeout, then stopped again with cancel=True; and
# a block left by a cancellation while join() waits. Both pass through the dispatcher's
# cancellation paths, whose compiled form crashed the interpreter when it awaited inside an
# `except` and then re-raised (a segfault cannot be caught: the child's exit code shows it).
CANCELLED_WHILE_STOPPING = """
import asyncio, sys
from hitpool import Dispatcher

async def stopped_by_a_timeout():
    started = asyncio.Event()
    async def job():
        started.set()
        await asyncio.sleep(3600)
    pool = Dispatcher(workers=2)
    pool.start()
    await pool.dispatch(job)
    await started.wait()
    try:
        async with asyncio.timeout(0):
            await pool.stop()
    except TimeoutError:
        pass
    await pool.stop(cancel=True)
    assert sys.exc_info() == (None, None, None), sys.exc_info()

async def block_cancelled_in_join():
    started = asyncio.Event()
    async def job():
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # a job that takes a step to clean up
            raise
    async def user():
        async with Dispatcher(workers=2) as pool:
            await pool.dispatch(job)
    task = asyncio.ensure_future(user())
    await started.wait()
    await asyncio.sleep(0)  # into join()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the block swallowed its cancellation")
    assert sys.exc_info() == (None, None, None), sys.exc_info()

async def main():
    for _ in range(50):
        await stopped_by_a_timeout()
        await block_cancelled_in_join()
    print("ok")

asyncio.run(main())
"""


def test_cancellation_while_stopping_neither_crashes_nor_leaves_an_exception() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(hitpool.__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-c", CANCELLED_WHILE_STOPPING],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (proc.returncode, proc.stdout) == (0, "ok\n"), proc.stderr


async def test_no_stale_exception_after_a_stop_that_caught_one() -> None:
    # A compiled coroutine that caught an exception and then awaited left it in
    # sys.exc_info(), where a caller's bare `raise` found it.
    started = asyncio.Event()

    async def job() -> None:
        started.set()
        await asyncio.sleep(3600)

    pool = Dispatcher(workers=1)
    pool.start()
    await pool.dispatch(job)
    await started.wait()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):
            await pool.stop()
    await pool.stop(cancel=True)
    assert sys.exc_info() == (None, None, None)


def test_the_schedules_survive_a_pickle() -> None:
    # `hit -p` sends its spec, stages included, to each child by pickle; compiled, a frozen
    # dataclass cannot be unpickled by setting its attributes (FrozenInstanceError).
    stages = (Stage(1.0, 0.0, 10.0), Stage(2.0, 10.0, 10.0))
    for value in (OpenSchedule(5.0, 1.5), stages[0], StagedSchedule(stages, 0.5)):
        assert pickle.loads(pickle.dumps(value)) == value
