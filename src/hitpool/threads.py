"""`ThreadDispatcher`: the blocking twin of `Dispatcher`, for plain functions on threads.

The bookkeeping is `Dispatcher`'s (`_core.Core`); only the waiting differs: one lock guards
the counters, idle workers and full-queue callers wait on conditions of that lock, and a
caller of `job.result()` gets an event of its own only when the job has not finished yet.

A worker settles its last job and takes the next one in one hold of the lock, and only an
idle worker is ever woken, so a busy pool does not hand the GIL back and forth per job the
way `ThreadPoolExecutor` does (it wakes a thread and builds a `Future` with its own
`Condition` for every submit).

A running thread cannot be interrupted: ``job.cancel()`` and ``stop(cancel=True)``
cancel queued jobs and wait for running ones.

A job that raises anything, even ``SystemExit`` or ``KeyboardInterrupt``, fails and its
worker goes on, as in `concurrent.futures`: ``job.result()`` re-raises it in the thread that
asks. Ctrl-C is delivered to the main thread, never to a worker, so a ``KeyboardInterrupt``
in a job was raised by the job itself and is its outcome, not a request to stop the pool.

``on_error`` and done callbacks run on the thread that settled the job (a worker, or the
caller of ``cancel()`` or ``stop()``) after it has released the pool's lock, as
`concurrent.futures` runs its callbacks, so they may wait for other jobs, ``join()`` or
``stop()``. ``join()`` returns after ``on_error`` has run for each failed job it waited for;
done callbacks may still be running.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from types import TracebackType
from typing import Any, SupportsFloat, SupportsIndex, TypeVar

from mypy_extensions import mypyc_attr

from ._core import (
    _FINISHED,
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    BaseJob,
    Core,
    CountdownLatch,
    DispatcherStatistics,
    PoolState,
    check_delay,
    check_size,
)
from ._errors import QueueFull

__all__ = ["ThreadDispatcher", "ThreadJob"]

T = TypeVar("T")


@mypyc_attr(allow_interpreted_subclasses=True)  # _core.failed_class() subclasses it
class ThreadJob(BaseJob[T]):
    """A job on a `ThreadDispatcher`: ``job.result(timeout)`` blocks for its outcome."""

    __slots__ = ()

    def result(self, timeout: float | None = None) -> T:
        """The job's return value, or its exception re-raised; TimeoutError after ``timeout``."""
        if self.status not in _FINISHED:
            pool: ThreadDispatcher = self._pool  # type: ignore[assignment]
            with pool._mutex:
                if self.status in _FINISHED:
                    event = None
                else:
                    event = threading.Event()
                    wake = partial(_set_event, event)
                    if self._callbacks is None:
                        self._callbacks = []
                    self._callbacks.append(wake)
            if event is not None and not event.wait(timeout):
                with pool._mutex:  # a job polled with a timeout keeps no event per poll
                    self._remove_callback(wake)
                raise TimeoutError(f"{self!r} did not finish within {timeout} s")
        return self._outcome()

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        pool: ThreadDispatcher = self._pool  # type: ignore[assignment]
        with pool._mutex:  # a worker may be settling the job right now
            if self.status not in _FINISHED:
                super().add_done_callback(fn)
                return
        pool._call_callback(fn, self)  # outside the lock, like the callbacks of a settle

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job has finished; False when ``timeout`` passed first."""
        try:
            self.result(timeout)
        except TimeoutError:
            return self.done()
        except BaseException:
            pass
        return True


@mypyc_attr(allow_interpreted_subclasses=True)  # a public class: users may subclass it
class ThreadDispatcher(Core):
    """A fixed pool of worker threads fed from a bounded queue.

    ``with ThreadDispatcher(workers=8, queue_size=64) as pool`` starts the threads; leaving
    the block joins and stops them (with an exception: cancels the queued jobs first).
    """

    _kind = "ThreadDispatcher"
    _start_hint = "`with ThreadDispatcher(...) as pool`"

    # Typed as what callers may pass: see Dispatcher.__init__.
    def __init__(
        self,
        workers: SupportsIndex = 8,
        queue_size: SupportsIndex = 64,
        *,
        on_error: Callable[[ThreadJob[Any], BaseException], object] | None = None,
        fail_fast: bool = False,
        name: str = "hitpool",
    ) -> None:
        super().__init__(workers, queue_size, on_error, fail_fast)
        self._name = name
        # Re-entrant, so that code run under it (statistics() calls the Core hooks, which
        # a subclass may extend) can still take it through the pool's own methods.
        self._mutex = threading.RLock()
        self._work_cv = threading.Condition(self._mutex)  # idle workers wait here
        # Callers wait for room among the ready jobs on one condition and among the delayed
        # jobs on another: a notify for one lane never lands on a caller of the other.
        self._room_cv = threading.Condition(self._mutex)
        self._delay_room_cv = threading.Condition(self._mutex)
        self._timer_cv = threading.Condition(self._mutex)  # the delay thread waits here
        self._ready: deque[ThreadJob[Any]] = deque()
        self._delayed: set[ThreadJob[Any]] = set()
        self._heap: list[tuple[float, int, ThreadJob[Any]]] = []
        self._seq = itertools.count()
        self._idle = 0
        self._waking = 0  # idle workers notified that have not taken the lock back yet
        self._room_waiting = 0  # callers waiting on _room_cv
        self._delay_room_waiting = 0  # callers waiting on _delay_room_cv
        self._threads: dict[int, threading.Thread] = {}
        self._running: dict[int, ThreadJob[Any] | None] = {}  # worker id -> its job
        self._timer_thread: threading.Thread | None = None
        # Jobs settled under the lock whose on_error or done callbacks have not run yet:
        # whoever settled them takes them in the same hold and runs them once it has let
        # go of the lock (_call_hooks), so cancel() returns after its job's callbacks.
        self._hooks_due: list[ThreadJob[Any]] = []

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<ThreadDispatcher workers={s.workers} busy={s.busy} queued={s.queued}"
            f" dispatched={s.dispatched} closed={s.closed}>"
        )

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> ThreadDispatcher:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.stop(cancel=True)
            return
        try:
            self.join()
        except BaseException:
            self.stop(cancel=True)
            raise
        self.stop()
        if self._fail_fast and self._first_failure is not None:
            raise self._first_failure

    def start(self) -> None:
        """Start the worker threads (``with`` does this)."""
        with self._mutex:
            self._refuse_start()
            if self._state is PoolState.RUNNING:
                return
            self._set_state(PoolState.RUNNING)
            for wid in range(self._workers):
                self._spawn(wid)

    def _spawn(self, wid: int) -> None:
        thread = threading.Thread(
            target=self._work, args=(wid,), name=f"{self._name}-worker-{wid}", daemon=True
        )
        self._threads[wid] = thread
        thread.start()

    def stop(self, cancel: bool = False) -> None:
        """Take no more jobs, then drain them (default) or cancel the queued ones.

        Returns once every worker thread has exited; running jobs always finish.
        """
        with self._mutex:
            if self._state is PoolState.NEW:
                self._set_state(PoolState.CLOSED)
                return
            if self._state is PoolState.RUNNING:
                self._set_state(PoolState.DRAINING)
            if cancel:
                self._cancel_queued()
            threads = list(self._threads.values())
            if self._timer_thread is not None:
                threads.append(self._timer_thread)
            hooks = self._take_hooks()
        self._call_hooks(hooks)  # a cancelled job's callback may be what a running one awaits
        me = threading.current_thread()
        for thread in threads:
            if thread is not me:
                thread.join()
        with self._mutex:
            if self._state is PoolState.DRAINING and not self._threads:
                self._set_state(PoolState.CLOSED)

    def _set_state(self, state: PoolState) -> None:
        """Core._set_state, under the lock, waking whoever the move concerns."""
        super()._set_state(state)
        if state is PoolState.DRAINING:
            # Callers waiting for room raise DispatcherClosed; idle workers and the timer
            # thread exit once nothing is left.
            self._room_cv.notify_all()
            self._delay_room_cv.notify_all()
            self._work_cv.notify_all()
            self._timer_cv.notify_all()

    def _cancel_queued(self) -> None:
        """Cancel the ready and delayed jobs (the pool is draining: stop(cancel=True), or a
        fail_fast failure), and wake the idle workers and the timer thread, which may be
        waiting for a delayed job that is gone now."""
        while self._ready:
            self._settle(self._ready.popleft(), CANCELLED, None, None)
        for job in list(self._delayed):
            self._delayed.discard(job)
            self._settle(job, CANCELLED, None, None)
        self._work_cv.notify_all()
        self._timer_cv.notify_all()

    # -- dispatching --------------------------------------------------------------------

    def dispatch(
        self, fn: Callable[..., T], /, *args: Any, delay: SupportsFloat | None = None, **kwargs: Any
    ) -> ThreadJob[T]:
        """Queue ``fn(*args, **kwargs)``; block while the queue is full. Returns the job."""
        return self._dispatch(fn, args, kwargs, delay, wait=True)

    def dispatch_nowait(
        self, fn: Callable[..., T], /, *args: Any, delay: SupportsFloat | None = None, **kwargs: Any
    ) -> ThreadJob[T]:
        """Queue ``fn(*args, **kwargs)`` or raise `QueueFull` at once."""
        return self._dispatch(fn, args, kwargs, delay, wait=False)

    def _dispatch(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        delay: SupportsFloat | None,
        wait: bool,
    ) -> ThreadJob[T]:
        seconds = None if delay is None else check_delay(delay)
        with self._mutex:
            if not self._accepting:
                self._refuse()
            if self._full(seconds):
                if not wait:
                    what = "delayed jobs are waiting" if seconds else "jobs are queued"
                    raise QueueFull(f"{self._queue_size} {what} (queue_size)")
                if seconds:
                    self._delay_room_waiting += 1
                    try:
                        self._wait_for_room(self._delay_room_cv, seconds)
                    finally:
                        self._delay_room_waiting -= 1
                else:
                    self._room_waiting += 1
                    try:
                        self._wait_for_room(self._room_cv, seconds)
                    finally:
                        self._room_waiting -= 1
            return self._put(fn, args, kwargs, seconds)

    def _wait_for_room(self, cv: threading.Condition, delay: float | None) -> None:
        """Wait, under the lock, until the lane of ``delay`` has room (or the pool stops)."""
        while self._full(delay):
            cv.wait()
            if not self._accepting:
                self._refuse()

    def _full(self, delay: float | None) -> bool:
        if delay:
            return len(self._delayed) >= self._queue_size
        return len(self._ready) >= self._queue_size

    def _put(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        delay: float | None,
    ) -> ThreadJob[Any]:
        job: ThreadJob[Any] = ThreadJob(self, self._next_id, fn, args, kwargs, self._latch)
        self._next_id += 1
        self._latch.count += 1
        if delay:
            self._delayed.add(job)
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), job))
            if len(self._heap) > 2 * len(self._delayed) + 64:
                # Cancelled entries stay in the heap until popped; keep them few.
                self._heap = [e for e in self._heap if e[2] in self._delayed]
                heapq.heapify(self._heap)
            if self._timer_thread is None:
                self._timer_thread = threading.Thread(
                    target=self._timers, name=f"{self._name}-timers", daemon=True
                )
                self._timer_thread.start()
            else:
                self._timer_cv.notify()
        else:
            self._ready.append(job)
            self._wake_worker()
        return job

    def _timers(self) -> None:
        """Move delayed jobs to the ready queue when they are due."""
        with self._mutex:
            while True:
                heap = self._heap
                if not self._accepting and not self._delayed:
                    self._work_cv.notify_all()  # workers parked for delayed jobs may go
                    return
                if not heap:
                    self._timer_cv.wait()
                    continue
                due, _, job = heap[0]
                left = due - time.monotonic()
                if left > 0:
                    self._timer_cv.wait(left)
                    continue
                heapq.heappop(heap)
                if job in self._delayed:
                    self._delayed.discard(job)
                    self._ready.append(job)
                    self._wake_worker()
                    if self._delay_room_waiting:
                        self._delay_room_cv.notify()
                    if not self._accepting and not self._delayed:
                        self._work_cv.notify_all()

    # -- the workers --------------------------------------------------------------------

    def _work(self, wid: int) -> None:
        ready = self._ready
        settle = self._settle
        running = self._running
        me = threading.current_thread()
        with self._mutex:
            running[wid] = None
        job: ThreadJob[Any] | None = None
        status = SUCCEEDED
        result: Any = None
        error: BaseException | None = None
        hooks: list[ThreadJob[Any]] = []
        try:
            while True:
                with self._mutex:
                    if job is not None:
                        running[wid] = None
                        settle(job, status, result, error)
                        job = result = error = None
                    if self._hooks_due:  # this worker's own: see _hooks_due
                        hooks = self._take_hooks()
                    else:
                        while not ready:
                            if wid >= self._workers or (not self._accepting and not self._delayed):
                                self._leave(wid)
                                return
                            self._idle += 1
                            self._work_cv.wait()
                            self._idle -= 1
                            if self._waking:
                                self._waking -= 1
                        if wid >= self._workers:
                            self._work_cv.notify()  # leave the job to a worker that stays
                            self._leave(wid)
                            return
                        job = ready.popleft()
                        if ready:
                            self._wake_worker()  # more work: pass the wake-up on
                        running[wid] = job
                        job.status = RUNNING
                        job._wid = wid
                        if self._room_waiting:
                            self._room_cv.notify()
                if job is None:  # this hold took hooks to run, not a job
                    self._call_hooks(hooks)
                    hooks = []  # keep no finished job alive while waiting for the next
                    continue
                try:
                    result = job.fn(*job.args, **job.kwargs)
                    status = SUCCEEDED
                except BaseException as exc:  # even SystemExit: the job fails, not the worker
                    status = FAILED
                    error = exc
        finally:
            with self._mutex:
                if self._threads.get(wid) is me:  # ended by an error of our own
                    self._leave(wid)
                if not self._accepting:
                    self._work_cv.notify_all()

    def _leave(self, wid: int) -> None:
        """Take an exiting worker out of the books, in the hold in which it decided to go.

        Not later: a resize() back up in between would still see the worker and start
        none in its place.
        """
        del self._threads[wid]
        self._running.pop(wid, None)
        if not self._threads and self._state is PoolState.DRAINING:
            self._set_state(PoolState.CLOSED)  # the last worker is gone

    def _wake_worker(self) -> None:
        """Wake one idle worker, unless one is already on its way.

        Waking a thread per job makes every idle thread fight for the GIL at once; waking
        one at a time, each passing it on when it finds more work, spreads a burst over
        the pool one thread after another (Go's scheduler does the same with its spinning
        Ms), and a pool of quick jobs stays on the threads that are already awake.
        """
        if self._idle and not self._waking:
            self._waking += 1
            self._work_cv.notify()

    # -- Core hooks ---------------------------------------------------------------------

    def _queued_now(self) -> int:
        return len(self._ready) + len(self._delayed)

    def statistics(self) -> DispatcherStatistics:
        with self._mutex:  # one snapshot: no job may settle between its counts
            return super().statistics()

    def _busy_now(self) -> int:
        return sum(job is not None for job in self._running.values())

    def _cancel_job(self, job: BaseJob[Any]) -> bool:
        with self._mutex:
            if job.status != QUEUED:
                return False
            if job in self._delayed:
                self._delayed.discard(job)  # type: ignore[arg-type]
                if not self._accepting and not self._delayed:
                    # A draining stop() parked the workers and the timer thread for this
                    # job; nothing will come due to wake them.
                    self._work_cv.notify_all()
                    self._timer_cv.notify_all()
                if self._delay_room_waiting:
                    self._delay_room_cv.notify()
            else:
                self._ready.remove(job)  # type: ignore[arg-type]
                if self._room_waiting:
                    self._room_cv.notify()
            self._settle(job, CANCELLED, None, None)
            hooks = self._take_hooks()
        self._call_hooks(hooks)
        return True

    def _settle(
        self, job: BaseJob[Any], status: str, result: Any, exc: BaseException | None
    ) -> None:
        """`Core._settle`, called under the lock: on_error and done callbacks are left
        for `_call_hooks`, since one that waits for another job, or calls join() or stop(),
        would otherwise hold the lock every worker needs. A job on_error must hear about
        stays in its latch until it has, so join() returns after it."""
        if status == SUCCEEDED:
            # `_record_outcome` for a success, inlined (the tests pin it to Core._settle):
            # a success is counted by no counter and told to no on_error.
            job.status = SUCCEEDED
            job._result = result
            self._leave_latch(job)
            if job._callbacks is not None:
                self._hooks_due.append(job)  # type: ignore[arg-type]
            return
        report = self._record_outcome(job, status, result, exc)
        if status == FAILED:
            self._check_fail_fast(job)
        if report:
            self._hooks_due.append(job)  # type: ignore[arg-type]
            return
        self._leave_latch(job)
        if job._callbacks is not None:
            self._hooks_due.append(job)  # type: ignore[arg-type]

    def _take_hooks(self) -> list[ThreadJob[Any]]:
        hooks = self._hooks_due
        self._hooks_due = []
        return hooks

    def _call_hooks(self, jobs: list[ThreadJob[Any]]) -> None:
        """Run on_error and the done callbacks of jobs settled under the lock, now released."""
        if self._on_error is not None:
            failed = [job for job in jobs if job.status == FAILED]
            if failed:
                for job in failed:
                    self._tell_on_error(job)
                with self._mutex:
                    for job in failed:
                        self._leave_latch(job)
        for job in jobs:
            # Settled, so nobody adds to _callbacks any more: no lock needed to take them.
            self._notify(job)

    def _wake_latch(self, latch: CountdownLatch) -> None:
        events = latch.waiter
        latch.waiter = None
        for event in events:
            event.set()

    def _on_fail_fast(self) -> None:
        if self._state is PoolState.RUNNING:  # a failure while draining: it drains already
            self._set_state(PoolState.DRAINING)
        self._cancel_queued()

    # -- joining, sizing, map ----------------------------------------------------------

    def join(self, timeout: float | None = None) -> None:
        """Block until every job dispatched so far has finished; the pool stays open."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._mutex:
            events = []
            for latch in self._join_latches():
                if latch.count:
                    event = threading.Event()
                    if latch.waiter is None:
                        latch.waiter = [event]
                    else:
                        latch.waiter.append(event)
                    events.append(event)
        for event in events:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not event.wait(left):
                raise TimeoutError(f"jobs still running after {timeout} s")
        if self._fail_fast and self._first_failure is not None:
            raise self._first_failure

    def resize(self, workers: SupportsIndex) -> None:
        """Change the number of worker threads; extra ones finish their job and exit."""
        workers = check_size("workers", workers)
        with self._mutex:
            old = self._workers
            self._workers = workers
            if not self._accepting:
                return
            for wid in range(old, workers):
                if wid not in self._threads:
                    self._spawn(wid)
            if workers < old:
                self._work_cv.notify_all()

    def map(
        self, fn: Callable[[Any], T], iterable: Iterable[Any], *, ordered: bool = True
    ) -> Iterator[T]:
        """Run ``fn(item)`` for each item, pulling the iterable lazily; yield the results.

        In input order when ``ordered``, else as they complete; at most
        ``workers + queue_size`` in flight; closing the generator cancels the queued rest.
        """
        window = self._workers + self._queue_size
        in_flight: deque[ThreadJob[T]] = deque()
        done: deque[ThreadJob[T]] = deque()
        arrived = threading.Condition(threading.Lock())

        def on_done(job: ThreadJob[T]) -> None:
            with arrived:
                done.append(job)
                arrived.notify()

        it = iter(iterable)
        exhausted = False
        try:
            while True:
                while not exhausted and len(in_flight) < window:
                    try:
                        item = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    job = self.dispatch(fn, item)
                    in_flight.append(job)
                    if not ordered:
                        job.add_done_callback(on_done)
                if not in_flight:
                    return
                if ordered:
                    yield in_flight.popleft().result()
                else:
                    with arrived:
                        while not done:
                            arrived.wait()
                        finished = done.popleft()
                    in_flight.remove(finished)
                    yield finished._outcome()
        finally:
            for job in in_flight:
                job.cancel()


def _set_event(event: threading.Event, job: object) -> None:
    event.set()
