"""A dispatcher's lifecycle is one state, set in one place, and each state says what a call
does: new -> running -> draining -> closed (and new -> closed)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from hitpool import Dispatcher, DispatcherClosed, ThreadDispatcher
from hitpool._core import PoolState


def _noop() -> None:
    pass


async def test_each_state_of_a_dispatcher_answers_a_dispatch_its_own_way() -> None:
    pool = Dispatcher(workers=1, queue_size=2)
    assert pool._state is PoolState.NEW and not pool.closed
    with pytest.raises(RuntimeError, match="start the Dispatcher first"):
        pool.dispatch_nowait(_noop)
    with pytest.raises(RuntimeError, match="start the Dispatcher first"):
        await pool.dispatch(_noop)
    pool.start()
    assert pool._state is PoolState.RUNNING and not pool.closed
    pool.start()  # a running pool: nothing to do
    release = asyncio.Event()
    running = await pool.dispatch(release.wait)
    stopping = asyncio.ensure_future(pool.stop())
    await asyncio.sleep(0)
    assert pool._state is PoolState.DRAINING and pool.closed
    with pytest.raises(DispatcherClosed):
        pool.dispatch_nowait(_noop)
    with pytest.raises(DispatcherClosed):
        await pool.dispatch(_noop)
    with pytest.raises(DispatcherClosed):
        pool.start()
    release.set()
    await stopping
    assert running.status == "succeeded"
    assert pool._state is PoolState.CLOSED and pool.closed
    with pytest.raises(DispatcherClosed):
        pool.dispatch_nowait(_noop)


async def test_a_dispatcher_stopped_before_it_started_is_closed() -> None:
    pool = Dispatcher(workers=1)
    await pool.stop()
    assert pool._state is PoolState.CLOSED and pool.statistics().closed
    with pytest.raises(DispatcherClosed):
        pool.start()


async def test_a_caller_waiting_for_room_hears_the_dispatcher_stop() -> None:
    pool = Dispatcher(workers=1, queue_size=1)
    pool.start()
    release = asyncio.Event()
    await pool.dispatch(release.wait)  # running
    await asyncio.sleep(0)
    await pool.dispatch(release.wait)  # queued: the queue is full
    waiting = asyncio.ensure_future(pool.dispatch(_noop))
    await asyncio.sleep(0)
    assert not waiting.done()
    stopping = asyncio.ensure_future(pool.stop(cancel=True))
    with pytest.raises(DispatcherClosed):
        await waiting
    await stopping
    assert pool._state is PoolState.CLOSED


async def test_fail_fast_drains_the_dispatcher() -> None:
    def boom() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError):
        async with Dispatcher(workers=1, fail_fast=True) as pool:
            await pool.dispatch(boom)
            await pool.join()
    assert pool._state is PoolState.CLOSED


def test_each_state_of_a_thread_dispatcher_answers_a_dispatch_its_own_way() -> None:
    pool = ThreadDispatcher(workers=1, queue_size=2)
    assert pool._state is PoolState.NEW
    with pytest.raises(RuntimeError, match="start the ThreadDispatcher first"):
        pool.dispatch(_noop)
    pool.start()
    assert pool._state is PoolState.RUNNING
    seen: list[object] = []

    def during_the_drain() -> None:
        # Moving to draining notifies the workers' condition: wait on it for stop().
        with pool._mutex:
            while pool._state is PoolState.RUNNING:
                pool._work_cv.wait(5)
            seen.append(pool._state)
            seen.append(pool.closed)
            for call in (lambda: pool.dispatch(_noop), pool.start):
                try:
                    call()
                except DispatcherClosed:
                    seen.append("refused")

    running = pool.dispatch(during_the_drain)
    pool.stop()
    assert seen == [PoolState.DRAINING, True, "refused", "refused"]
    assert running.status == "succeeded"
    assert pool._state is PoolState.CLOSED
    stopped_early = ThreadDispatcher(workers=1)
    stopped_early.stop()
    assert stopped_early._state is PoolState.CLOSED


async def test_a_fail_fast_failure_while_draining_cancels_the_rest() -> None:
    release = asyncio.Event()

    async def fails_later() -> None:
        await release.wait()
        raise ValueError("boom")

    pool = Dispatcher(workers=1, queue_size=4, fail_fast=True)
    pool.start()
    failing = await pool.dispatch(fails_later)
    queued = await pool.dispatch(_noop)
    await asyncio.sleep(0)
    stopping = asyncio.ensure_future(pool.stop())  # drain
    await asyncio.sleep(0)
    assert pool._state is PoolState.DRAINING
    release.set()
    await stopping
    assert (failing.status, queued.status) == ("failed", "cancelled")
    assert pool._state is PoolState.CLOSED


def test_a_fail_fast_failure_while_a_thread_pool_drains_cancels_the_rest() -> None:
    pool = ThreadDispatcher(workers=1, queue_size=4, fail_fast=True)
    pool.start()

    def fails_once_draining() -> None:
        with pool._mutex:
            while pool._state is PoolState.RUNNING:
                pool._work_cv.wait(5)
        raise ValueError("boom")

    failing = pool.dispatch(fails_once_draining)
    queued = pool.dispatch(_noop)
    pool.stop()
    assert (failing.status, queued.status) == ("failed", "cancelled")
    assert pool._state is PoolState.CLOSED


def test_a_fail_fast_failure_while_a_thread_pool_drains_frees_the_timer_thread() -> None:
    """The failure cancels a delayed job the timer thread is waiting an hour for: stop()
    returns at once, not when the job would have come due."""
    pool = ThreadDispatcher(workers=1, queue_size=4, fail_fast=True)
    pool.start()
    gate = threading.Event()

    def fails() -> None:
        gate.wait(5)
        raise ValueError("boom")

    failing = pool.dispatch(fails)
    delayed = pool.dispatch(_noop, delay=3600)
    stopping = threading.Thread(target=pool.stop, daemon=True)
    stopping.start()
    # Fail only once the drain has begun and the timer thread waits again for the delayed
    # job (a thread in a Condition's _waiters holding none of its lock is inside wait()).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with pool._mutex:
            timer_waits = len(pool._timer_cv._waiters)  # type: ignore[attr-defined]
            if pool._state is PoolState.DRAINING and timer_waits == 1:
                break
        time.sleep(0.001)
    gate.set()
    stopping.join(5)
    assert not stopping.is_alive(), "stop() waits for the timer of a cancelled delayed job"
    assert (failing.status, delayed.status) == ("failed", "cancelled")
    assert pool._state is PoolState.CLOSED


def test_a_thread_pool_stopped_from_its_own_job_closes_when_its_last_worker_leaves() -> None:
    pool = ThreadDispatcher(workers=1)
    pool.start()
    (worker,) = pool._threads.values()
    job = pool.dispatch(pool.stop)  # stop() inside a job: it cannot wait for its own thread
    worker.join(5)
    assert job.status == "succeeded"
    assert pool._state is PoolState.CLOSED
