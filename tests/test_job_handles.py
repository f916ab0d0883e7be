"""What a finished job's handle keeps: its outcome, never its arguments.

A pool that keeps handles (a map's window, a caller's list of jobs) must not keep every job's
arguments alive with them, whatever the outcome, on either dispatcher.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest

from hitpool import Dispatcher, ThreadDispatcher, ThreadJob
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


async def test_the_inlined_dispatch_path_puts_a_job_as_put_does() -> None:
    """`dispatch` puts a ready job inline when there is room (once per job); the job and the
    wake-up it gives must be `_put`'s, so that the two copies cannot drift."""
    async with Dispatcher(workers=1, queue_size=4) as pool:
        await asyncio.sleep(0)  # the worker has parked
        assert len(pool._idle) == 1
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
