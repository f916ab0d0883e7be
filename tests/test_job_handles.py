"""What a finished job's handle keeps: its outcome, never its arguments.

A pool that keeps handles (a map's window, a caller's list of jobs) must not keep every job's
arguments alive with them, whatever the outcome, on either dispatcher.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import weakref
from pathlib import Path
from typing import Any

import pytest

from _waiting import finishes
from hitpool import Dispatcher, ThreadDispatcher, ThreadJob, dispatcher
from hitpool._core import _EMPTY, SUCCEEDED, BaseJob, Core


class Arg:
    """An argument a weakref can watch."""


def fails(arg: Arg, *, kw: Arg) -> None:
    del arg, kw  # the traceback keeps this frame; it must not be what keeps them
    raise ValueError("boom")


def succeeds(arg: Arg, *, kw: Arg) -> int:
    return 1


async def succeeds_async(arg: Arg, *, kw: Arg) -> int:
    await asyncio.sleep(0)
    return 1


async def fails_async(arg: Arg, *, kw: Arg) -> None:
    del arg, kw
    await asyncio.sleep(0)
    raise ValueError("boom")


@pytest.mark.parametrize("fn", [succeeds, fails, succeeds_async, fails_async])
async def test_a_finished_job_drops_its_args_and_kwargs(fn: Any) -> None:
    arg, kw = Arg(), Arg()
    refs = weakref.ref(arg), weakref.ref(kw)
    async with Dispatcher(workers=2, queue_size=4) as pool:
        job = await pool.dispatch(fn, arg, kw=kw)
        del arg, kw
        try:
            await job
        except ValueError:
            pass
    gc.collect()
    assert job.done()
    assert [r() for r in refs] == [None, None]


@pytest.mark.parametrize("fn", [succeeds, fails])
def test_a_finished_thread_job_drops_its_args_and_kwargs(fn: Any) -> None:
    arg, kw = Arg(), Arg()
    refs = weakref.ref(arg), weakref.ref(kw)
    with ThreadDispatcher(workers=2, queue_size=4) as pool:
        job = pool.dispatch(fn, arg, kw=kw)
        del arg, kw
        job.wait(5)
    gc.collect()
    assert job.done()
    assert [r() for r in refs] == [None, None]


def _state(job: BaseJob[Any]) -> dict[str, Any]:
    """A job's slots, without the ones that differ between any two jobs."""
    state = {}
    for name in BaseJob.__slots__:
        if name in ("id", "_wid", "_pool", "_latch"):
            continue
        state[name] = getattr(job, name, "<unset>")
    return state


async def test_the_inlined_success_path_settles_a_job_as_core_settle_does() -> None:
    """The worker settles a success inline (once per job); the result must be the one the
    general `_settle` gives, field by field, so that the two copies cannot drift."""
    async with Dispatcher(workers=1, queue_size=4) as pool:
        inline = await pool.dispatch(succeeds, Arg(), kw=Arg())
        assert await inline == 1
        general = await pool.dispatch(succeeds, Arg(), kw=Arg())
        # Settle it through Core._settle before a worker takes it, as a twin of `inline`.
        pool._ready.remove(general)
        pool._settle(general, SUCCEEDED, 1, None)
        inline._retrieved = general._retrieved = True
        assert _state(inline) == _state(general)
        assert inline.kwargs is _EMPTY and inline.args == ()


@pytest.mark.parametrize("nowait", [False, True])
async def test_the_inlined_dispatch_path_puts_a_job_as_put_does(nowait: bool) -> None:
    """`dispatch_nowait` (and `dispatch`, which copies it) put a ready job inline when there
    is room (once per job); the job and the wake-up it gives must be `_put`'s, so that the
    copies cannot drift."""
    async with Dispatcher(workers=1, queue_size=4) as pool:
        await asyncio.sleep(0)  # the worker has parked
        assert len(pool._idle) == 1
        if nowait:
            inline = pool.dispatch_nowait(succeeds, 1, kw=2)
        else:
            inline = await pool.dispatch(succeeds, 1, kw=2)
        woke_inline = (pool._idle.on_its_way, len(pool._idle))
        await pool.join()
        await asyncio.sleep(0)
        assert len(pool._idle) == 1
        general = pool._put(succeeds, (1,), {"kw": 2}, None)
        woke_general = (pool._idle.on_its_way, len(pool._idle))
        await pool.join()
    assert woke_inline == woke_general == (1, 0)
    assert general.id == inline.id + 1
    assert _state(inline) == _state(general)


def _fast_path(name: str) -> str:
    """The source of a Dispatcher method's first `if` (its hot path), as an AST dump. Read
    from the source file: in the compiled build the method has no source to inspect."""
    tree = ast.parse(Path(dispatcher.__file__).with_name("dispatcher.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Dispatcher")
    func = next(
        n
        for n in cls.body
        if isinstance(n, ast.AsyncFunctionDef | ast.FunctionDef) and n.name == name
    )
    first_if = next(node for node in func.body if isinstance(node, ast.If))
    return ast.dump(first_if)


def test_dispatch_copies_dispatch_nowaits_hot_path_statement_for_statement() -> None:
    """One rule: `dispatch` is `dispatch_nowait` plus parking, with its hot path copied
    (a call would cost every awaited dispatch); the copy must stay the same code."""
    assert _fast_path("dispatch") == _fast_path("dispatch_nowait")


async def test_a_worker_cancelled_on_its_way_hands_its_wake_up_on() -> None:
    """The workers park with `ParkingLot.park` inlined: a worker woken for a job and
    cancelled before it resumed passes the wake-up to the next idle worker."""
    async with Dispatcher(workers=2, queue_size=4) as pool:
        await asyncio.sleep(0)  # both workers have parked
        assert len(pool._idle) == 2
        job = pool.dispatch_nowait(succeeds, Arg(), kw=Arg())
        assert pool._idle.on_its_way == 1 and len(pool._idle) == 1
        pool._tasks[0].cancel()  # the worker woken for the job, before it resumed
        assert await finishes(job) == (True, 1), "the wake-up was lost with the worker"
        assert 0 not in pool._tasks and pool._idle.on_its_way == 0
        assert job.worker_id == 1


def test_the_thread_success_path_settles_a_job_as_core_settle_does() -> None:
    with ThreadDispatcher(workers=1, queue_size=4) as pool:
        inline = pool.dispatch(succeeds, Arg(), kw=Arg())
        assert inline.result(5) == 1
        with pool._mutex:
            general: ThreadJob[int] = ThreadJob(pool, -1, succeeds, (Arg(),), {}, pool._latch)
            pool._latch.count += 1
            Core._settle(pool, general, SUCCEEDED, 1, None)
        general._retrieved = True
        assert _state(inline) == _state(general)


async def test_an_await_that_gives_up_leaves_no_callback_on_the_job() -> None:
    """A job awaited under a timeout again and again (a poll) must not keep one callback
    per await that gave up until it finishes."""
    async with Dispatcher(workers=1, queue_size=4) as pool:
        release = asyncio.Event()
        job = await pool.dispatch(release.wait)
        for _ in range(5):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0):
                    await job
        assert not job._callbacks
        waiting = asyncio.ensure_future(_await(job))
        await asyncio.sleep(0)
        assert job._callbacks is not None and len(job._callbacks) == 1  # the live await
        release.set()
        assert await waiting is True


async def _await(job: Any) -> Any:
    return await job


def test_a_result_that_times_out_leaves_no_event_on_the_thread_job() -> None:
    import threading

    release = threading.Event()
    with ThreadDispatcher(workers=1, queue_size=4) as pool:
        job = pool.dispatch(release.wait)
        for _ in range(5):
            assert not job.wait(0)
            with pytest.raises(TimeoutError):
                job.result(0)
        assert not job._callbacks
        release.set()
        assert job.result(5) is True
