"""A hostile state machine of the asyncio dispatcher: callers parked for room (in both
lanes) cancelled at any moment, the moment they are woken included; jobs that succeed, raise,
raise BaseException or a CancelledError of their own; delayed jobs; resize up and down;
joins; stop and stop(cancel=True) racing the parked callers; with and without fail_fast.

After every step the statistics add up, and once the loop is quiet nothing is stranded: no
worker parked while jobs wait, no caller parked while its lane has room, no wake-up counted
as on its way that nobody is acting on.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hitpool import Dispatcher, DispatcherClosed, Job, ThreadDispatcher, ThreadJob
from hitpool._core import PoolState

QUEUE_SIZE = 2
KINDS = ("ok", "raise", "base", "own-cancel")


class Fatal(BaseException):
    """A job's own BaseException: the job fails with it, the worker goes on."""


async def _work(kind: str, event: asyncio.Event) -> str:
    await event.wait()
    if kind == "raise":
        raise ValueError(kind)
    if kind == "base":
        raise Fatal(kind)
    if kind == "own-cancel":
        raise asyncio.CancelledError  # not a cancel of the worker: only this job ends
    return kind


class HostileMachine(RuleBasedStateMachine):
    fail_fast = False

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.pool = Dispatcher(workers=2, queue_size=QUEUE_SIZE, fail_fast=self.fail_fast)
        self.loop.run_until_complete(self._start())
        self.callers: list[asyncio.Task[Job[Any]]] = []
        self.events: list[asyncio.Event] = []
        self.jobs: list[Job[Any]] = []
        self.side: list[asyncio.Task[Any]] = []  # joins and stops racing the rest
        self.stopping = False

    async def _start(self) -> None:
        self.pool.start()

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self.loop.run_until_complete(asyncio.sleep(0))
        self._collect()

    def _collect(self) -> None:
        for task in self.callers:
            if task.done() and not task.cancelled() and task.exception() is None:
                job = task.result()
                if job not in self.jobs:
                    self.jobs.append(job)

    def quiet(self) -> None:
        self.step(12)

    @rule(
        n=st.integers(1, 4),
        kind=st.sampled_from(KINDS),
        delayed=st.booleans(),
    )
    def dispatch(self, n: int, kind: str, delayed: bool) -> None:
        for _ in range(n):
            event = asyncio.Event()
            self.events.append(event)
            delay = 3600.0 if delayed else None
            self.callers.append(
                self.loop.create_task(self.pool.dispatch(_work, kind, event, delay=delay))
            )
        self.step()

    @rule(data=st.data(), cancel_after=st.integers(0, 3))
    def finish_one_and_cancel_a_caller(self, data: st.DataObject, cancel_after: int) -> None:
        """Let a job end, which wakes a parked caller, and cancel a parked caller after 0..3
        loop steps: before, at or after the moment it resumes."""
        if self.events:
            data.draw(st.sampled_from(self.events)).set()
        self.step(cancel_after)
        pending = [t for t in self.callers if not t.done()]
        if pending:
            data.draw(st.sampled_from(pending)).cancel()
        self.step()

    @rule(data=st.data())
    def cancel_a_job(self, data: st.DataObject) -> None:
        if self.jobs:
            data.draw(st.sampled_from(self.jobs)).cancel()
        self.step()

    @precondition(lambda self: not self.stopping)
    @rule(workers=st.integers(1, 4))
    def resize(self, workers: int) -> None:
        self.pool.resize(workers)
        self.step()

    @rule()
    def join(self) -> None:
        self.side.append(self.loop.create_task(self.pool.join()))
        self.step()

    @precondition(lambda self: not self.stopping)
    @rule(cancel=st.booleans())
    def stop(self, cancel: bool) -> None:
        self.stopping = True
        self.side.append(self.loop.create_task(self.pool.stop(cancel=cancel)))
        self.step()

    @rule()
    def release_everything_now(self) -> None:
        """End every job, and run the delayed jobs' timers now (the clock an hour later)."""
        self.release_everything()
        self.step()

    @invariant()
    def counts_add_up(self) -> None:
        s = self.pool.statistics()
        assert s.dispatched == s.completed + s.failed + s.cancelled + s.queued + s.busy
        assert s.dispatched == len(self.jobs) or any(not t.done() for t in self.callers)
        by_status = {st_: sum(j.status == st_ for j in self.jobs) for st_ in ("queued", "running")}
        assert by_status["running"] == s.busy
        assert len(self.pool._delayed) <= QUEUE_SIZE

    @invariant()
    def nothing_is_stranded(self) -> None:
        self.quiet()
        pool = self.pool
        idle, room, delay_room = pool._idle, pool._room, pool._delay_room
        assert idle.on_its_way == 0, "a wake-up counted as on its way that nobody acts on"
        if pool._ready and pool._tasks:
            assert not idle.waiters, "a worker parked while jobs wait"
        if pool._accepting:
            if room.waiters:
                assert len(pool._ready) >= QUEUE_SIZE, "a caller parked while there is room"
            if delay_room.waiters:
                assert len(pool._delayed) >= QUEUE_SIZE, "a delayed caller parked with room"
        else:
            assert not room.waiters and not delay_room.waiters
        assert len(pool._tasks) <= max(pool.workers, 4)

    def release_everything(self) -> None:
        for event in self.events:
            event.set()
        for job in list(self.pool._delayed):
            job._timer.cancel()
            self.pool._release(job)

    def teardown(self) -> None:
        # A draining stop waits for the delayed jobs too: play the clock until it returns.
        stop = self.loop.create_task(self.pool.stop())
        for _ in range(200):
            if stop.done():
                break
            self.release_everything()
            self.step()
        assert stop.done(), "stop() did not return with every job released"
        stop.result()
        self.quiet()
        pool = self.pool
        assert pool._state is PoolState.CLOSED and not pool._tasks
        for task in self.callers:
            assert task.done()
            if not task.cancelled() and task.exception() is not None:
                assert isinstance(task.exception(), DispatcherClosed)
        self._collect()
        assert all(job.done() for job in self.jobs)
        s = pool.statistics()
        assert s.dispatched == len(self.jobs)
        assert s.dispatched == s.completed + s.failed + s.cancelled
        for task in self.side:
            assert task.done()
            if not task.cancelled():
                task.exception()  # a fail_fast join re-raises the first failure
        for job in self.jobs:
            if job.status == "failed":
                job.exception()  # retrieved: nothing logged when it is collected
        self.loop.close()


class FailFastMachine(HostileMachine):
    fail_fast = True


_settings = settings(
    max_examples=100,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
HostileMachine.TestCase.settings = _settings
FailFastMachine.TestCase.settings = _settings
TestHostileDispatcher = HostileMachine.TestCase
TestHostileFailFastDispatcher = FailFastMachine.TestCase


# -- ThreadDispatcher: the two lanes' waiters, and many threads at once --------------------


def _until(pool: ThreadDispatcher, holds: Callable[[], bool]) -> None:
    """Return once ``holds()`` is true under the pool's lock: a thread under test has
    reached a wait (the lock is free only while it waits). Bounded, not timed."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with pool._mutex:
            if holds():
                return
        time.sleep(0.001)
    raise AssertionError("the thread never reached its wait")


def test_room_in_the_ready_queue_wakes_a_ready_caller_not_a_delayed_one() -> None:
    gate = threading.Event()
    with ThreadDispatcher(workers=1, queue_size=1) as pool:
        pool.dispatch(gate.wait)  # running
        pool.dispatch(_noop)  # the ready queue is full
        pool.dispatch(_noop, delay=3600)  # so are the delayed jobs
        delayed_caller = threading.Thread(target=_refused, args=(pool, 3600))
        delayed_caller.start()  # waits first, for room among the delayed jobs
        _until(pool, lambda: pool._delay_room_waiting + pool._room_waiting == 1)
        got_in = threading.Event()
        ready_caller = threading.Thread(target=lambda: (pool.dispatch(_noop), got_in.set()))
        ready_caller.start()  # then one for room in the ready queue
        _until(pool, lambda: pool._delay_room_waiting + pool._room_waiting == 2)
        gate.set()  # the worker takes the queued job: room for the ready caller only
        assert got_in.wait(5), "the ready queue's room went to the delayed caller"
        ready_caller.join()
        pool.stop(cancel=True)
        delayed_caller.join()


def test_a_delayed_job_coming_due_makes_room_for_a_delayed_caller() -> None:
    gate = threading.Event()
    with ThreadDispatcher(workers=1, queue_size=1) as pool:
        pool.dispatch(gate.wait)  # the only worker is busy: nobody takes ready jobs
        due = pool.dispatch(_noop, delay=0.001)
        got_in = threading.Event()
        caller = threading.Thread(target=lambda: (pool.dispatch(_noop, delay=3600), got_in.set()))
        caller.start()
        # The due job leaves the delayed set for the ready queue, where it waits for the
        # busy worker: its place among the delayed jobs is free now.
        assert got_in.wait(5), "a delayed caller waited for a worker, not for the timer"
        assert due.status == "queued"
        gate.set()
        caller.join()
        pool.stop(cancel=True)


def _refused(pool: ThreadDispatcher, delay: float) -> None:
    with contextlib.suppress(DispatcherClosed):
        pool.dispatch(_noop, delay=delay)


def _noop() -> None:
    pass


@pytest.mark.parametrize("cancel", [False, True])
def test_many_threads_dispatching_while_others_stop(cancel: bool) -> None:
    """Sixteen threads dispatch into both lanes of a small pool while four stop it: each
    dispatch either gets a job or hears DispatcherClosed, every job ends, the counts add up."""
    pool = ThreadDispatcher(workers=3, queue_size=2)
    pool.start()
    start = threading.Barrier(21)
    jobs: list[ThreadJob[Any]] = []
    refused: list[int] = []

    def dispatcher(i: int) -> None:
        start.wait()
        for k in range(40):
            try:
                job = pool.dispatch(_noop, delay=0.001 if (i + k) % 3 == 0 else None)
            except DispatcherClosed:
                refused.append(i)
                return
            jobs.append(job)
            if k == 20 and i == 0:
                stopping.set()

    stopping = threading.Event()

    def stopper() -> None:
        start.wait()
        stopping.wait(5)
        pool.stop(cancel=cancel)

    threads = [threading.Thread(target=dispatcher, args=(i,)) for i in range(16)]
    threads += [threading.Thread(target=stopper) for _ in range(4)]
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "a thread hung"
    pool.stop()
    assert pool._state is PoolState.CLOSED
    assert all(job.done() for job in jobs)
    s = pool.statistics()
    assert s.dispatched == len(jobs) == s.completed + s.failed + s.cancelled
    assert s.queued == s.busy == 0
    assert pool._room_waiting == pool._delay_room_waiting == 0
