"""`Dispatcher`: a bounded worker pool for asyncio.

The seed's dispatcher (marcio.io) hands each waiting job to a goroutine of its own, so its
"bounded" queue bounds nothing; here a full queue makes `dispatch` wait and
`dispatch_nowait` raise, and nothing is spawned per job. Its workers register when idle;
here an idle worker parks on a future and the dispatcher wakes one when a job arrives.
go-dispatcher lets one panicking job kill the process; here a job's exception stays on
the job. Its delayed dispatch sleeps inside the one dispatch loop; here a delayed job
waits on a loop timer, holding no worker and no place in the ready queue.

Memory is bounded whatever the caller does: at most ``queue_size`` ready jobs, at most
``queue_size`` delayed jobs, and ``workers`` running ones.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Generator, Iterable
from functools import partial
from types import CoroutineType, TracebackType
from typing import Any, TypeVar, overload

from ._core import (
    _EMPTY,
    _FINISHED,
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Barrier,
    BaseJob,
    Core,
    check_size,
)
from ._errors import DispatcherClosed, QueueFull, SpecError
from ._mapping import Mapper

__all__ = ["Dispatcher", "Job"]

T = TypeVar("T")
R = TypeVar("R")


class Job(BaseJob[T]):
    """A job on a `Dispatcher`: ``await job`` gives its result or raises its exception."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, T]:
        if self.status not in _FINISHED:
            pool: Dispatcher = self._pool  # type: ignore[assignment]
            fut = pool._require_loop().create_future()
            self.add_done_callback(partial(_wake_future, fut))
            try:
                yield from fut.__await__()
            finally:
                if not fut.done():  # our awaiter was cancelled; the job goes on
                    fut.cancel()
        return self._outcome()


class Dispatcher(Core):
    """A fixed pool of worker tasks fed from a bounded queue.

    ``async with Dispatcher(workers=8, queue_size=64) as pool`` starts the workers;
    leaving the block waits for every job (``join``) and stops them. Leaving it with an
    exception cancels what is queued and running.

    ``on_error(job, exc)`` is called for each failed job (the exception then counts as
    retrieved); ``fail_fast=True`` cancels everything at the first failure and re-raises
    it from ``join()`` and from the block.
    """

    def __init__(
        self,
        workers: int = 8,
        queue_size: int = 64,
        *,
        on_error: Callable[[Job[Any], BaseException], object] | None = None,
        fail_fast: bool = False,
    ) -> None:
        super().__init__(workers, queue_size, on_error, fail_fast)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: deque[Job[Any]] = deque()
        self._delayed: set[Job[Any]] = set()
        self._parked: deque[asyncio.Future[None]] = deque()  # idle workers
        # Workers woken for ready jobs that have not resumed yet. A put wakes a worker only
        # when none is on its way, and a worker that takes a job wakes the next one if jobs
        # remain (a chain). Waking one per put woke 16 workers for a burst of 16 jobs that
        # the first worker then ran alone when they finished without suspending; the other
        # 15 each paid a future, a task step and a park for nothing.
        self._waking = 0
        self._room: deque[asyncio.Future[None]] = deque()  # dispatchers waiting for room
        self._delay_room: deque[asyncio.Future[None]] = deque()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._running: list[Job[Any] | None] = []  # by worker id: its job, or None
        self._cancelling: set[Job[Any]] = set()  # running jobs whose cancel was asked
        self._stopping = False
        self._shut = True  # closed, or not started: dispatch takes its slow path to say which

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
        try:
            await self.join()
        except BaseException:
            await self.stop(cancel=True)
            raise
        await self.stop()
        if self._fail_fast and self._first_failure is not None:
            raise self._first_failure

    def start(self) -> None:
        """Start the workers on the running loop (``async with`` does this)."""
        if self._closed:  # first: a stopped pool still has its loop
            raise DispatcherClosed("this dispatcher was stopped; make a new one")
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._shut = False
        for wid in range(self._workers):
            self._spawn(wid)

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("start the Dispatcher first: `async with Dispatcher(...) as pool`")
        return self._loop

    def _spawn(self, wid: int) -> None:
        assert self._loop is not None
        self._tasks[wid] = self._loop.create_task(self._work(wid), name=f"hitpool-worker-{wid}")

    async def stop(self, cancel: bool = False) -> None:
        """Take no more jobs, then drain them (default) or cancel queued and running ones.

        Returns once every worker has exited. Must not be awaited from inside a job.
        """
        self._closed = self._shut = True
        self._stopping = True
        _wake_all(self._room)
        _wake_all(self._delay_room)
        if cancel:
            self._cancel_all()
        _wake_all(self._parked)
        tasks = list(self._tasks.values())
        if not tasks:
            return
        try:
            await asyncio.wait(tasks)
        except BaseException:
            # Cancelled while draining: do not leave the workers behind.
            self._cancel_all()
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks)
            raise

    def _cancel_all(self) -> None:
        while self._ready:
            self._settle(self._ready.popleft(), CANCELLED, None, None)
        for job in list(self._delayed):
            self._cancel_job(job)
        for wid, running in enumerate(self._running):
            if running is not None and running not in self._cancelling:
                self._cancelling.add(running)
                self._tasks[wid].cancel()

    # -- dispatching --------------------------------------------------------------------

    async def dispatch(
        self,
        fn: Callable[..., Awaitable[T] | T],
        /,
        *args: Any,
        delay: float | None = None,
        **kwargs: Any,
    ) -> Job[T]:
        """Queue ``fn(*args, **kwargs)``; wait while the queue is full. Returns the job."""
        if delay is not None:
            delay = _check_delay(delay) or None  # a delay of 0 is a ready job
        if delay is None:
            if len(self._ready) >= self._queue_size or self._room or self._shut:
                await self._wait_for_room(self._room, self._ready_full)
            # The hot path, inlined: make the job, queue it, wake an idle worker.
            job: Job[T] = Job(self, self._next_id, fn, args, kwargs, self._barrier)
            self._next_id += 1
            self._barrier.count += 1
            self._ready.append(job)
            if self._parked and not self._waking:
                self._wake_worker()
            return job
        if len(self._delayed) >= self._queue_size or self._delay_room or self._shut:
            await self._wait_for_room(self._delay_room, self._delayed_full)
        return self._put(fn, args, kwargs, delay)

    def dispatch_nowait(
        self,
        fn: Callable[..., Awaitable[T] | T],
        /,
        *args: Any,
        delay: float | None = None,
        **kwargs: Any,
    ) -> Job[T]:
        """Queue ``fn(*args, **kwargs)`` or raise `QueueFull` at once."""
        if delay is None and not self._shut:
            # The hot path, inlined as in `dispatch`: a ready job on an open pool.
            if len(self._ready) >= self._queue_size or self._room:
                raise QueueFull(f"{self._queue_size} jobs are queued (queue_size)")
            job: Job[T] = Job(self, self._next_id, fn, args, kwargs, self._barrier)
            self._next_id += 1
            self._barrier.count += 1
            self._ready.append(job)
            if self._parked and not self._waking:
                self._wake_worker()
            return job
        if self._shut:
            self._check_open()
        if delay is not None:
            delay = _check_delay(delay) or None  # a delay of 0 is a ready job
        if delay is None:
            if len(self._ready) >= self._queue_size or self._room:
                raise QueueFull(f"{self._queue_size} jobs are queued (queue_size)")
        else:
            if len(self._delayed) >= self._queue_size or self._delay_room:
                raise QueueFull(f"{self._queue_size} delayed jobs are waiting (queue_size)")
        return self._put(fn, args, kwargs, delay)

    def _ready_full(self) -> bool:
        return len(self._ready) >= self._queue_size

    def _delayed_full(self) -> bool:
        return len(self._delayed) >= self._queue_size

    async def _wait_for_room(
        self, waiters: deque[asyncio.Future[None]], full: Callable[[], bool]
    ) -> None:
        loop = self._require_loop()
        first = False  # a woken waiter that lost its room goes back to the front
        while True:
            if self._shut:
                self._check_open()
            if not full() and (first or not waiters):
                if waiters and not full():
                    _wake_one(waiters)  # room for more than us: pass it on
                return
            fut: asyncio.Future[None] = loop.create_future()
            if first:
                waiters.appendleft(fut)
            else:
                waiters.append(fut)
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    _wake_one(waiters)  # we were handed room we will not use
                else:
                    try:
                        waiters.remove(fut)
                    except ValueError:
                        pass
                raise
            first = True

    def _check_open(self) -> None:
        if self._closed:
            raise DispatcherClosed("the dispatcher is stopped")
        self._require_loop()

    def _put(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        delay: float | None,
    ) -> Job[Any]:
        job: Job[Any] = Job(self, self._next_id, fn, args, kwargs, self._barrier)
        self._next_id += 1
        self._barrier.count += 1
        if delay is None or delay == 0:
            self._ready.append(job)
            if self._parked and not self._waking:
                self._wake_worker()
        else:
            self._delayed.add(job)
            job._timer = self._loop.call_later(delay, self._release, job)  # type: ignore[union-attr]
        return job

    def _wake_worker(self) -> None:
        """Wake one parked worker for the ready jobs (see `_waking`)."""
        if _wake_one(self._parked):
            self._waking += 1

    def _release(self, job: Job[Any]) -> None:
        """A delayed job is due: it joins the back of the ready queue."""
        self._delayed.discard(job)
        self._ready.append(job)
        if self._parked and not self._waking:
            self._wake_worker()
        if self._delay_room:
            _wake_one(self._delay_room)

    # -- the workers --------------------------------------------------------------------

    async def _work(self, wid: int) -> None:
        loop = self._loop
        assert loop is not None
        task = asyncio.current_task()
        assert task is not None
        ready = self._ready
        running = self._running
        if len(running) <= wid:
            running.extend([None] * (wid + 1 - len(running)))
        settle = self._settle
        try:
            while True:
                if not ready:
                    if wid >= self._workers or (self._stopping and not self._delayed):
                        return
                    fut = loop.create_future()
                    self._parked.append(fut)
                    try:
                        await fut
                    finally:
                        if self._waking:  # resumed: no longer on its way
                            self._waking -= 1
                        if not fut.done():
                            fut.cancel()
                            try:
                                self._parked.remove(fut)
                            except ValueError:
                                pass
                    continue
                if wid >= self._workers:
                    # Resized down: leave the job to a worker that stays, and go.
                    if self._parked:
                        self._wake_worker()
                    return
                job = ready.popleft()
                if ready and self._parked and not self._waking:
                    self._wake_worker()  # the chain: more jobs wait
                if self._room:
                    _wake_one(self._room)
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
                    running[wid] = None
                    if self._cancelling:
                        self._forget_cancel(job, task)
                    # Core._settle for a success, inlined: this runs once per job.
                    job.status = SUCCEEDED
                    job._result = result
                    job.args = ()
                    job.kwargs = _EMPTY
                    barrier = job._barrier
                    barrier.count -= 1
                    if barrier.count == 0 and barrier.waiter is not None:
                        self._wake_barrier(barrier)
                    if job._callbacks is not None:
                        self._notify(job)
        finally:
            running[wid] = None
            if self._tasks.get(wid) is task:
                del self._tasks[wid]
            if self._stopping and self._parked and not ready:
                _wake_all(self._parked)

    def _forget_cancel(self, job: Job[Any], task: asyncio.Task[None]) -> None:
        """The job ended on its own after its cancel was asked (it swallowed it)."""
        if job in self._cancelling:
            self._cancelling.discard(job)
            task.uncancel()

    # -- Core hooks ---------------------------------------------------------------------

    def _queued_now(self) -> int:
        return len(self._ready) + len(self._delayed)

    def _busy_now(self) -> int:
        return sum(job is not None for job in self._running)

    def _cancel_job(self, job: BaseJob[Any]) -> bool:
        assert isinstance(job, Job)
        if job.status == QUEUED:
            if job in self._delayed:
                job._timer.cancel()
                self._delayed.discard(job)
                if self._delay_room:
                    _wake_one(self._delay_room)
            else:
                self._ready.remove(job)
                if self._room:
                    _wake_one(self._room)
            if self._stopping and not self._ready and not self._delayed and self._parked:
                # Draining, and that was the last job: parked workers wait for nothing now.
                _wake_all(self._parked)
            self._settle(job, CANCELLED, None, None)
            return True
        if job.status == RUNNING:
            if job not in self._cancelling:
                self._cancelling.add(job)
                self._tasks[job._wid].cancel()
            return True
        return False

    def _wake_barrier(self, barrier: Barrier) -> None:
        waiters = barrier.waiter
        barrier.waiter = None
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _on_fail_fast(self) -> None:
        self._closed = self._shut = True
        _wake_all(self._room)
        _wake_all(self._delay_room)
        self._cancel_all()

    # -- barriers, sizing, map ----------------------------------------------------------

    async def join(self) -> None:
        """Wait until every job dispatched so far has finished; the pool stays open."""
        loop = self._require_loop()
        for barrier in self._join_barriers():
            if barrier.count:
                fut = loop.create_future()
                if barrier.waiter is None:
                    barrier.waiter = [fut]
                else:
                    barrier.waiter.append(fut)
                await fut
        if self._fail_fast and self._first_failure is not None:
            raise self._first_failure

    def resize(self, workers: int) -> None:
        """Change the number of workers. Extra workers finish their current job and exit."""
        workers = check_size("workers", workers)
        old = self._workers
        self._workers = workers
        if self._loop is None or self._closed:
            return
        for wid in range(old, workers):
            if wid not in self._tasks:
                self._spawn(wid)
        if workers < old:
            _wake_all(self._parked)  # parked workers above the new size exit
        elif self._ready:
            for _ in range(min(len(self._ready), len(self._parked))):
                _wake_one(self._parked)

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


def _check_delay(delay: object) -> float:
    if (
        isinstance(delay, bool)
        or not isinstance(delay, int | float)
        or not math.isfinite(delay)
        or delay < 0
    ):
        raise SpecError("delay", f"must be a finite number of seconds >= 0, got {delay!r}")
    return float(delay)


def _wake_future(fut: asyncio.Future[None], job: object) -> None:
    if not fut.done():
        fut.set_result(None)


def _wake_one(waiters: deque[asyncio.Future[None]]) -> bool:
    while waiters:
        fut = waiters.popleft()
        if not fut.done():
            fut.set_result(None)
            return True
    return False


def _wake_all(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        fut = waiters.popleft()
        if not fut.done():
            fut.set_result(None)
