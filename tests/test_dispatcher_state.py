"""A hypothesis state machine of random dispatch / finish / cancel / join / resize / stop
sequences; after every step the counts add up and the bounds hold."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from _waiting import finishes
from hitpool import Dispatcher, DispatcherClosed, Job, QueueFull, ThreadDispatcher
from hitpool._core import PoolState

QUEUE_SIZE = 4


class DispatcherMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.pool = Dispatcher(workers=2, queue_size=QUEUE_SIZE)
        self.run(self.pool.__aenter__())
        self.jobs: list[tuple[Job[Any], asyncio.Event]] = []
        self.cap = 2  # the most workers that may be busy (resizing down lets jobs finish)
        self.stopped = False
        self.live = 0
        self.peak = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def turn(self) -> None:
        for _ in range(4):
            self.run(asyncio.sleep(0))

    async def work(self, event: asyncio.Event) -> None:
        self.live += 1
        self.peak = max(self.peak, self.live)
        try:
            await event.wait()
        finally:
            self.live -= 1

    @rule(n=st.integers(1, 6))
    def dispatch(self, n: int) -> None:
        for _ in range(n):
            event = asyncio.Event()
            before = self.pool.statistics()
            try:
                job = self.pool.dispatch_nowait(self.work, event)
            except QueueFull:
                assert before.queued >= QUEUE_SIZE
                continue
            except DispatcherClosed:
                assert self.stopped
                continue
            self.jobs.append((job, event))
        self.turn()

    @rule(data=st.data())
    def finish_one(self, data: st.DataObject) -> None:
        if self.jobs:
            _, event = data.draw(st.sampled_from(self.jobs))
            event.set()
        self.turn()

    @rule(data=st.data())
    def cancel_one(self, data: st.DataObject) -> None:
        if self.jobs:
            job, _ = data.draw(st.sampled_from(self.jobs))
            was_done = job.done()
            assert job.cancel() is not was_done
        self.turn()

    @precondition(lambda self: not self.stopped)
    @rule(workers=st.integers(1, 5))
    def resize(self, workers: int) -> None:
        self.pool.resize(workers)
        self.cap = max(self.cap, workers)
        self.turn()

    @rule()
    def join(self) -> None:
        for _, event in self.jobs:
            event.set()
        self.run(self.pool.join())
        assert all(job.done() for job, _ in self.jobs)
        self.cap = self.pool.workers
        self.peak = self.live

    @precondition(lambda self: not self.stopped)
    @rule(cancel=st.booleans())
    def stop(self, cancel: bool) -> None:
        if not cancel:
            for _, event in self.jobs:
                event.set()
        self.run(self.pool.stop(cancel=cancel))
        self.stopped = True
        assert all(job.done() for job, _ in self.jobs)
        assert not self.pool._tasks

    @invariant()
    def counts_add_up(self) -> None:
        s = self.pool.statistics()
        assert s.dispatched == s.completed + s.failed + s.cancelled + s.queued + s.busy
        assert s.dispatched == len(self.jobs)
        assert s.queued <= QUEUE_SIZE
        assert s.busy <= self.cap
        assert self.peak <= self.cap
        assert sum(job.status == "running" for job, _ in self.jobs) == s.busy
        assert sum(job.status == "queued" for job, _ in self.jobs) == s.queued
        assert sum(job.status == "succeeded" for job, _ in self.jobs) == s.completed
        assert sum(job.status == "cancelled" for job, _ in self.jobs) == s.cancelled
        # One state; the hot path's caches of it agree with it.
        pool = self.pool
        assert pool._state is (PoolState.CLOSED if self.stopped else PoolState.RUNNING)
        assert pool._accepting is (pool._state is PoolState.RUNNING)
        assert pool._room_limit == (QUEUE_SIZE if pool._accepting else 0)
        assert s.closed is self.stopped

    def teardown(self) -> None:
        self.run(self.pool.stop(cancel=True))
        assert not self.pool._tasks
        self.loop.close()


DispatcherMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDispatcherMachine = DispatcherMachine.TestCase


# -- the shared settle: user code that raises anything ------------------------------------


class Fatal(BaseException):
    """Not an Exception: what ``except Exception`` around user code lets through."""


def _boom() -> None:
    raise ValueError("boom")


def _raise_fatal(*_: object) -> None:
    raise Fatal("from user code")


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the hitpool log says failed: "on_error" or "done callback"."""
    return [" ".join(r.getMessage().split()[1:3]) for r in caplog.records]


async def test_on_error_or_a_done_callback_raising_a_base_exception_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = Dispatcher(workers=1, queue_size=4, on_error=_raise_fatal)
    caplog.set_level(logging.ERROR, logger="hitpool")
    async with pool:
        try:
            failed = await pool.dispatch(_boom)
            ok = await pool.dispatch(int, "7")
            ok.add_done_callback(_raise_fatal)
            joined, _ = await finishes(pool.join())
            after_ok, after = await finishes(pool.dispatch(int, "8"))
            if after_ok:
                after_ok, value = await finishes(after)
        finally:
            await finishes(pool.stop(cancel=True))
    assert joined, "join() hangs: the raising hook skipped the barrier"
    assert (failed.status, ok.status) == ("failed", "succeeded")
    assert after_ok and value == 8, "the worker died"
    assert sorted(_logged(caplog)) == ["done callback", "on_error callback"]


def test_thread_on_error_or_a_done_callback_raising_a_base_exception_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = threading.Event()
    pool = ThreadDispatcher(workers=1, queue_size=4, on_error=_raise_fatal)
    caplog.set_level(logging.ERROR, logger="hitpool")
    pool.start()
    try:
        pool.dispatch(gate.wait, 5.0)  # holds the one worker until the hooks are in place
        failed = pool.dispatch(_boom)
        ok = pool.dispatch(int, "7")
        ok.add_done_callback(_raise_fatal)
        gate.set()
        try:
            pool.join(timeout=1.0)
            joined = True
        except TimeoutError:
            joined = False
        after = pool.dispatch(int, "8")
        after.wait(1.0)
    finally:
        pool.stop(cancel=True)
    assert joined, "join() hangs: the raising hook skipped the barrier"
    assert (failed.status, ok.status) == ("failed", "succeeded")
    assert after.status == "succeeded", "the worker died"
    assert sorted(_logged(caplog)) == ["done callback", "on_error callback"]


async def test_start_after_stop_says_the_pool_is_closed() -> None:
    pool = Dispatcher(workers=1)
    pool.start()
    await pool.stop()
    with pytest.raises(DispatcherClosed):
        pool.start()  # it returned quietly: the error came only at the next dispatch
    tpool = ThreadDispatcher(workers=1)
    tpool.start()
    tpool.stop()
    with pytest.raises(DispatcherClosed):
        tpool.start()
