"""`Dispatcher`: a bounded worker pool for asyncio.

The seed's dispatcher (marcio.io) hands each waiting job to a goroutine of its own, so its
"bounded" queue bounds nothing; here a full queue makes `dispatch` wait and
`dispatch_nowait` raise, and nothing is spawned per job. Its workers register when idle;
here an idle worker parks in a `ParkingLot` and the dispatcher wakes one when a job arrives.
Every wait here goes through a lot (`_parking.py`), and the lifecycle is one state
(`_core.PoolState`).
go-dispatcher lets one panicking job kill the process; here a job's exception stays on
the job. Its delayed dispatch sleeps inside the one dispatch loop; here a delayed job
waits on a loop timer, holding no worker and no place in the ready queue.

Memory is bounded whatever the caller does: at most ``queue_size`` delayed jobs, at most
``2 * queue_size`` ready ones (a dispatch finds room only below ``queue_size``, and a delayed
job that comes due joins the ready queue even when it is full: it has waited its turn), and
``workers`` running ones.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Generator, Iterable
from functools import partial
from types import CoroutineType, TracebackType
from typing import Any, SupportsFloat, SupportsIndex, TypeVar, overload

from mypy_extensions import mypyc_attr

from ._core import (
    _EMPTY,
    _FINISHED,
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    BaseJob,
    Core,
    CountdownLatch,
    PoolState,
    check_delay,
    check_size,
)
from ._errors import QueueFull
from ._mapping import Mapper
from ._parking import ParkingLot

__all__ = ["Dispatcher", "Job"]

T = TypeVar("T")
R = TypeVar("R")


@mypyc_attr(allow_interpreted_subclasses=True)  # _core.failed_class() subclasses it
class Job(BaseJob[T]):
    """A job on a `Dispatcher`: ``await job`` gives its result or raises its exception."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, T]:
        if self.status not in _FINISHED:
            pool: Dispatcher = self._pool  # type: ignore[assignment]
            fut = pool._require_loop().create_future()
            wake = partial(_wake_future, fut)
            self.add_done_callback(wake)
            try:
                yield from fut.__await__()
            finally:
                if self.status not in _FINISHED:  # our awaiter was cancelled; the job goes on
                    fut.cancel()
                    # Without its callback: a job awaited under a timeout again and again
                    # keeps none of the awaits that gave up.
                    self._remove_callback(wake)
        return self._outcome()


@mypyc_attr(allow_interpreted_subclasses=True)  # a public class: users may subclass it
class Dispatcher(Core):
    """A fixed pool of worker tasks fed from a bounded queue.

    ``async with Dispatcher(workers=8, queue_size=64) as pool`` starts the workers;
    leaving the block waits for every job (``join``) and stops them. Leaving it with an
    exception cancels what is queued and running.

    ``on_error(job, exc)`` is called for each failed job (the exception then counts as
    retrieved); ``fail_fast=True`` cancels everything at the first failure and re-raises
    it from ``join()`` and from the block.
    """

    _kind = "Dispatcher"
    _start_hint = "`async with Dispatcher(...) as pool`"

    # Sizes and delays are typed as what callers may pass (the compiled build checks the
    # declared types on entry, before our checks could name the field): check_size and
    # check_delay take them to int and float or raise SpecError.
    def __init__(
        self,
        workers: SupportsIndex = 8,
        queue_size: SupportsIndex = 64,
        *,
        on_error: Callable[[Job[Any], BaseException], object] | None = None,
        fail_fast: bool = False,
    ) -> None:
        super().__init__(workers, queue_size, on_error, fail_fast)
        self._loop: asyncio.AbstractEventLoop | None = None  # set by start(), then kept
        # Invariant: a queued job is in exactly one of these. A dispatch puts into either
        # only below queue_size; due delayed jobs may take the ready queue up to twice that.
        self._ready: deque[Job[Any]] = deque()
        self._delayed: set[Job[Any]] = set()
        # Every wait goes through a lot: idle workers (woken as a chain, see ParkingLot),
        # callers waiting for room among the ready jobs, and among the delayed ones.
        self._idle = ParkingLot()
        self._room = ParkingLot()
        self._delay_room = ParkingLot()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._running: list[Job[Any] | None] = []  # by worker id: its job, or None
        self._cancelling: set[Job[Any]] = set()  # running jobs whose cancel was asked

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<Dispatcher workers={s.workers} busy={s.busy} queued={s.queued}"
            f" dispatched={s.dispatched} closed={s.closed}>"
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Dispatcher:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            await self.stop(cancel=True)
            return
        # Caught into a variable, awaited after the except: see scripts/check_compiled.py.
        failure: BaseException | None = None
        try:
            await self.join()
        except BaseException as e:
            failure = e
        if failure is not None:
            await self.stop(cancel=True)
            raise failure
        await self.stop()
        if self._fail_fast and self._first_failure is not None:
            raise self._first_failure

    def start(self) -> None:
        """Start the workers on the running loop (``async with`` does this)."""
        self._refuse_start()
        if self._state is PoolState.RUNNING:
            return
        self._loop = asyncio.get_running_loop()
        self._set_state(PoolState.RUNNING)
        for wid in range(self._workers):
            self._spawn(wid)

    def _set_state(self, state: PoolState) -> None:
        super()._set_state(state)
        if state is PoolState.DRAINING:
            # Callers waiting for room raise DispatcherClosed; idle workers exit once
            # nothing is left to run.
            self._room.wake_all()
            self._delay_room.wake_all()
            self._idle.wake_all()

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._refuse()
        return self._loop

    def _spawn(self, wid: int) -> None:
        assert self._loop is not None
        self._tasks[wid] = self._loop.create_task(self._work(wid), name=f"hitpool-worker-{wid}")

    async def stop(self, cancel: bool = False) -> None:
        """Take no more jobs, then drain them (default) or cancel queued and running ones.

        Returns once every worker has exited. Must not be awaited from inside a job.
        """
        if self._state is PoolState.NEW:
            self._set_state(PoolState.CLOSED)
            return
        if self._state is PoolState.RUNNING:
            self._set_state(PoolState.DRAINING)
        if cancel:
            self._cancel_all()
        self._idle.wake_all()  # a worker parked for a delayed job may have nothing left
        tasks = list(self._tasks.values())
        interrupted: BaseException | None = None
        try:
            if tasks:
                await asyncio.wait(tasks)
        except BaseException as e:
            interrupted = e  # awaited after the except: see scripts/check_compiled.py
        try:
            if interrupted is not None:
                # Cancelled while draining: do not leave the workers behind.
                self._cancel_all()
                for t in tasks:
                    t.cancel()
                await asyncio.wait(tasks)
                raise interrupted
        finally:
            if self._state is PoolState.DRAINING and not self._tasks:
                self._set_state(PoolState.CLOSED)

    def _cancel_all(self) -> None:
        while self._ready:
            self._settle(self._ready.popleft(), CANCELLED, None, None)
        for job in list(self._delayed):
            self._cancel_job(job)
        for wid, running in enumerate(self._running):
            if (
                running is not None
                and running.status == RUNNING
                and running not in self._cancelling
            ):
                self._cancelling.add(running)
                self._tasks[wid].cancel()

    # -- dispatching --------------------------------------------------------------------

    async def dispatch(
        self,
        fn: Callable[..., Awaitable[T] | T],
        /,
        *args: Any,
        delay: SupportsFloat | None = None,
        **kwargs: Any,
    ) -> Job[T]:
        """Queue ``fn(*args, **kwargs)``; wait while the queue is full. Returns the job."""
        # `dispatch_nowait` where it does not raise, then parking where it would: its hot
        # path is copied here statement for statement (the tests compare the two).
        if delay is None and len(self._ready) < self._room_limit and not self._room.waiters:
            job: Job[T] = Job(self, self._next_id, fn, args, kwargs, self._latch)
            self._next_id += 1
            self._latch.count += 1
            self._ready.append(job)
            idle = self._idle
            if idle.waiters and not idle.on_its_way:
                idle.wake_one_on_its_way()
            return job
        if not self._accepting:
            self._refuse()
        lot, full, delay = self._lane(delay)
        if not full() and not lot.waiters:
            return self._put(fn, args, kwargs, delay)
        # Full, or others wait before us: wait our turn. A woken caller takes the room it
        # was woken for even if more wait behind it; one that lost it to a newcomer goes
        # back to the front.
        loop = self._loop
        assert loop is not None
        first = False
        while True:
            await lot.park(loop, first)
            if not self._accepting:
                self._refuse()
            if not full():
                job = self._put(fn, args, kwargs, delay)
                if lot.waiters and not full():
                    lot.wake_one()  # room for more than us: pass it on
                return job
            first = True

    def dispatch_nowait(
        self,
        fn: Callable[..., Awaitable[T] | T],
        /,
        *args: Any,
        delay: SupportsFloat | None = None,
        **kwargs: Any,
    ) -> Job[T]:
        """Queue ``fn(*args, **kwargs)`` or raise `QueueFull` at once.

        The rule of where a job may go now; `dispatch` follows it and parks where this
        raises. The hot path (a ready job, a running pool, room, nobody waiting before
        it) is `_put` inlined, pinned to it by the tests.
        """
        if delay is None and len(self._ready) < self._room_limit and not self._room.waiters:
            job: Job[T] = Job(self, self._next_id, fn, args, kwargs, self._latch)
            self._next_id += 1
            self._latch.count += 1
            self._ready.append(job)
            idle = self._idle
            if idle.waiters and not idle.on_its_way:
                idle.wake_one_on_its_way()
            return job
        if not self._accepting:
            self._refuse()
        lot, full, delay = self._lane(delay)
        if full() or lot.waiters:
            what = "jobs are queued" if delay is None else "delayed jobs are waiting"
            raise QueueFull(f"{self._queue_size} {what} (queue_size)")
        return self._put(fn, args, kwargs, delay)

    def _lane(self, delay: object) -> tuple[ParkingLot, Callable[[], bool], float | None]:
        """Where a job with this ``delay`` goes: the lot of callers waiting for its room, the
        test of that room, and the checked delay (None for a ready job)."""
        if delay is None:
            return self._room, self._ready_full, None
        seconds = check_delay(delay)
        if seconds == 0:  # a delay of 0 is a ready job
            return self._room, self._ready_full, None
        return self._delay_room, self._delayed_full, seconds

    def _ready_full(self) -> bool:
        return len(self._ready) >= self._queue_size

    def _delayed_full(self) -> bool:
        return len(self._delayed) >= self._queue_size

    def _put(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        delay: float | None,
    ) -> Job[Any]:
        """Queue a job the caller has found room for: ready, or on a timer."""
        job: Job[Any] = Job(self, self._next_id, fn, args, kwargs, self._latch)
        self._next_id += 1
        self._latch.count += 1
        if delay is None:
            self._ready.append(job)
            idle = self._idle
            if idle.waiters and not idle.on_its_way:
                idle.wake_one_on_its_way()
        else:
            self._delayed.add(job)
            job._timer = self._require_loop().call_later(delay, self._release, job)
        return job

    def _release(self, job: Job[Any]) -> None:
        """A delayed job is due: it joins the back of the ready queue."""
        self._delayed.discard(job)
        self._ready.append(job)
        self._idle.wake_one_on_its_way()
        self._delay_room.wake_one()

    # -- the workers --------------------------------------------------------------------

    async def _work(self, wid: int) -> None:
        loop = self._loop
        assert loop is not None
        task = asyncio.current_task()
        assert task is not None
        ready = self._ready
        running = self._running
        idle = self._idle
        room = self._room
        cancelling = self._cancelling  # never replaced, only changed
        if len(running) <= wid:
            running.extend([None] * (wid + 1 - len(running)))
        settle = self._settle
        try:
            while True:
                if not ready:
                    running[wid] = None  # its last job, kept until now: see _busy_now
                    if wid >= self._workers or (not self._accepting and not self._delayed):
                        return
                    # idle.park(loop), inlined (a worker parks up to once per job).
                    fut = loop.create_future()
                    idle.waiters.append(fut)
                    try:
                        counted = await fut
                    except BaseException:
                        idle.abandon(fut)
                        raise
                    if counted:
                        idle.on_its_way -= 1
                    continue
                if wid >= self._workers:
                    # Resized down: leave the job to a worker that stays, and go.
                    idle.wake_one_on_its_way()
                    return
                job = ready.popleft()
                if ready and idle.waiters and not idle.on_its_way:
                    idle.wake_one_on_its_way()  # the chain: more jobs wait
                if room.waiters:
                    room.wake_one()
                job.status = RUNNING
                job._wid = wid
                running[wid] = job
                try:
                    result = job.fn(*job.args, **job.kwargs) if job.kwargs else job.fn(*job.args)
                    if type(result) is CoroutineType:
                        result = await result
                    elif hasattr(type(result), "__await__"):
                        # A Future, a Task (asyncio.gather, run_in_executor) or another
                        # awaitable: its value is the job's result, as the signature says.
                        result = await result
                except asyncio.CancelledError:
                    running[wid] = None
                    asked = job in self._cancelling
                    self._cancelling.discard(job)
                    settle(job, CANCELLED, None, None)
                    # Only this job was cancelled (by its handle, or by itself: it awaited
                    # something cancelled): the worker goes on. A cancel of the worker
                    # itself (hard stop, leaving the loop) ends it.
                    if (task.uncancel() if asked else task.cancelling()) == 0:
                        continue
                    raise
                except Exception as exc:
                    running[wid] = None
                    self._forget_cancel(job, task)
                    settle(job, FAILED, None, exc)
                except BaseException as exc:
                    # Not an Exception (a job's own BaseException subclass, SystemExit,
                    # KeyboardInterrupt): the job failed with it all the same, and one job
                    # never takes a worker down with it. The two that mean "stop the
                    # program" go on up once the job is settled.
                    running[wid] = None
                    self._forget_cancel(job, task)
                    settle(job, FAILED, None, exc)
                    if isinstance(exc, KeyboardInterrupt | SystemExit):
                        raise
                else:
                    if cancelling:
                        self._forget_cancel(job, task)
                    # Core._settle for a success, inlined (the only copy; the tests pin it
                    # to Core._settle): no counter, no on_error, no fail-fast.
                    job.status = SUCCEEDED
                    job._result = result
                    job.args = ()
                    job.kwargs = _EMPTY
                    latch = job._latch
                    left = latch.count - 1
                    latch.count = left
                    if not left and latch.waiter is not None:
                        self._wake_latch(latch)
                    if job._callbacks is not None:
                        self._notify(job)
        finally:
            running[wid] = None
            if self._tasks.get(wid) is task:
                del self._tasks[wid]
            if not self._accepting:
                if not ready:
                    idle.wake_all()  # the others re-check whether anything is left to wait for
                if not self._tasks and self._state is PoolState.DRAINING:
                    self._set_state(PoolState.CLOSED)  # the last worker is gone

    def _forget_cancel(self, job: Job[Any], task: asyncio.Task[None]) -> None:
        """The job ended on its own after its cancel was asked (it swallowed it)."""
        if job in self._cancelling:
            self._cancelling.discard(job)
            task.uncancel()

    # -- Core hooks ---------------------------------------------------------------------

    def _queued_now(self) -> int:
        return len(self._ready) + len(self._delayed)

    def _busy_now(self) -> int:
        # A worker's slot keeps the job it last succeeded with until it takes the next one
        # or parks (a success writes nothing to it), so a slot counts only while its job
        # runs.
        return sum(job is not None and job.status == RUNNING for job in self._running)

    def _cancel_job(self, job: BaseJob[Any]) -> bool:
        assert isinstance(job, Job)
        if job.status == QUEUED:
            if job in self._delayed:
                job._timer.cancel()
                self._delayed.discard(job)
                self._delay_room.wake_one()
            else:
                self._ready.remove(job)
                self._room.wake_one()
            if not self._accepting and not self._ready and not self._delayed:
                # Draining, and that was the last job: idle workers wait for nothing now.
                self._idle.wake_all()
            self._settle(job, CANCELLED, None, None)
            return True
        if job.status == RUNNING:
            if job not in self._cancelling:
                self._cancelling.add(job)
                self._tasks[job._wid].cancel()
            return True
        return False

    def _wake_latch(self, latch: CountdownLatch) -> None:
        lot: ParkingLot = latch.waiter
        latch.waiter = None
        lot.wake_all()

    def _on_fail_fast(self) -> None:
        if self._state is PoolState.RUNNING:  # a failure while draining: it drains already
            self._set_state(PoolState.DRAINING)
        self._cancel_all()

    # -- joining, sizing, map -----------------------------------------------------------

    async def join(self) -> None:
        """Wait until every job dispatched so far has finished; the pool stays open."""
        loop = self._require_loop()
        for latch in self._join_latches():
            if latch.count:
                if latch.waiter is None:
                    latch.waiter = ParkingLot()
                await latch.waiter.park(loop)
        if self._fail_fast and self._first_failure is not None:
            raise self._first_failure

    def resize(self, workers: SupportsIndex) -> None:
        """Change the number of workers. Extra workers finish their current job and exit."""
        workers = check_size("workers", workers)
        old = self._workers
        self._workers = workers
        if not self._accepting:
            return
        for wid in range(old, workers):
            if wid not in self._tasks:
                self._spawn(wid)
        if workers < old:
            self._idle.wake_all()  # parked workers above the new size exit
        else:
            for _ in range(min(len(self._ready), len(self._idle))):
                self._idle.wake_one()

    @overload
    def map(
        self,
        fn: Callable[[Any], Awaitable[R]],
        iterable: Iterable[Any] | AsyncIterable[Any],
        *,
        ordered: bool = True,
    ) -> AsyncIterator[R]: ...
    @overload
    def map(
        self,
        fn: Callable[[Any], R],
        iterable: Iterable[Any] | AsyncIterable[Any],
        *,
        ordered: bool = True,
    ) -> AsyncIterator[R]: ...
    def map(
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any] | AsyncIterable[Any],
        *,
        ordered: bool = True,
    ) -> AsyncIterator[Any]:
        """Run ``fn(item)`` for each item, pulling the iterable lazily; yield the results.

        In input order when ``ordered``, else as they complete. At most
        ``workers + queue_size`` items are in flight. A failing job's exception is raised
        from the iterator; leaving the loop early cancels what is still in flight.
        """
        return Mapper(self, fn, iterable, ordered).run()


def _wake_future(fut: asyncio.Future[None], job: object) -> None:
    if not fut.done():
        fut.set_result(None)
