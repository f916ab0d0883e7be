"""The bookkeeping the asyncio `Dispatcher` and the threaded `ThreadDispatcher` share.

Only the waiting differs between the two (futures on a loop against locks on threads), so
everything else lives here: the job handle and its states, the pool's lifecycle, the
counters, the countdown latches behind `join()`, validation and the statistics snapshot.
Nothing here blocks or awaits.

A job moves through these states, and only forwards:

    queued ──> running ──> succeeded | failed | cancelled
      └──────────────────────────────────────> cancelled

A pool moves through these, set only by `Core._set_state`:

    new ──> running ──> draining ──> closed
     └─────────────────────────────────^

- new: made, not started; a dispatch raises RuntimeError (start it first).
- running: takes jobs.
- draining: `stop()` was called, or `fail_fast` saw a failure: takes no jobs (a dispatch
  raises `DispatcherClosed`); workers finish what is queued (nothing, after a cancel) and exit.
- closed: every worker has exited; `stop()` returns.

The invariant checked by the tests at every step:
``dispatched == completed + failed + cancelled + queued + running``.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Generic, Literal, NoReturn, TypeVar

from mypy_extensions import mypyc_attr

from ._errors import DispatcherClosed, JobCancelled, SpecError

__all__ = ["DispatcherStatistics", "JobStatus"]

log = logging.getLogger("hitpool")

T = TypeVar("T")

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
QUEUED: Final = "queued"
RUNNING: Final = "running"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"
_FINISHED: Final = frozenset((SUCCEEDED, FAILED, CANCELLED))


class PoolState(enum.Enum):
    """A dispatcher's lifecycle (see the module docstring for the transitions)."""

    NEW = "new"
    RUNNING = "running"
    DRAINING = "draining"
    CLOSED = "closed"


_NEXT_STATES: Final = {
    PoolState.NEW: frozenset((PoolState.RUNNING, PoolState.CLOSED)),
    PoolState.RUNNING: frozenset((PoolState.DRAINING,)),
    PoolState.DRAINING: frozenset((PoolState.CLOSED,)),
    PoolState.CLOSED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class DispatcherStatistics:
    """A snapshot of a dispatcher; it does not change when the dispatcher does."""

    workers: int
    busy: int
    idle: int
    queued: int
    dispatched: int
    completed: int
    failed: int
    cancelled: int
    queue_size: int
    closed: bool

    @property
    def running(self) -> int:
        return self.busy


def check_size(name: str, value: object) -> int:
    """Validate a worker count or queue size: a whole number of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(name, f"must be a whole number of at least 1, got {value!r}")
    return value


def check_delay(delay: object) -> float:
    """Validate a job's delay: a finite number of seconds, at least 0."""
    if (
        isinstance(delay, bool)
        or not isinstance(delay, int | float)
        or not math.isfinite(delay)
        or delay < 0
    ):
        raise SpecError("delay", f"must be a finite number of seconds >= 0, got {delay!r}")
    return float(delay)


class CountdownLatch:
    """The unfinished jobs dispatched between two `join()` calls: a count that only goes
    down once the latch is closed, and opens its waiters when it reaches zero. A join waits
    for the latches open when it was called, not for jobs dispatched after it.

    Latches are only made by `join()`, so a pool nobody joins counts every job in one.
    ``waiter`` is what joins wait on (a `ParkingLot`, or a list of thread events), made only
    when one waits.
    """

    __slots__ = ("count", "waiter")

    def __init__(self) -> None:
        self.count = 0
        self.waiter: Any = None


@mypyc_attr(allow_interpreted_subclasses=True)  # failed_class() subclasses at run time
class BaseJob(Generic[T]):
    """A dispatched call: its function, its state, and its outcome once it has one."""

    __slots__ = (
        "_callbacks",
        "_exc",
        "_latch",
        "_pool",
        "_result",
        "_retrieved",
        "_timer",
        "_wid",
        "args",
        "fn",
        "id",
        "kwargs",
        "status",
    )
    # Set later than __init__: _wid by the worker, _timer for a delayed job, the rest
    # when the job settles.
    _wid: int
    _timer: Any
    _result: Any
    _exc: BaseException | None
    _retrieved: bool

    def __init__(
        self,
        pool: Core,
        id: int,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        latch: CountdownLatch,
    ) -> None:
        # Only what is read before the job settles is set here (a job is made per
        # dispatch); _result, _exc and _retrieved are set by Core._record_outcome.
        self._pool = pool
        self.id = id
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self._latch = latch
        self.status: JobStatus = QUEUED
        self._callbacks: list[Callable[[Any], object]] | None = None

    @property
    def worker_id(self) -> int | None:
        """The ID (0 .. workers-1) of the worker that ran the job; None until one does."""
        try:
            return self._wid
        except AttributeError:  # set by the worker that takes the job, not at dispatch
            return None

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        return f"<{type(self).__name__} {self.id} {name} {self.status}>"

    def done(self) -> bool:
        return self.status in _FINISHED

    def cancelled(self) -> bool:
        return self.status == CANCELLED

    def cancel(self) -> bool:
        """Cancel the job; True when it will not complete normally."""
        return self._pool._cancel_job(self)

    def exception(self) -> BaseException | None:
        """The job's exception (None when it succeeded); only for a finished job."""
        if self.status not in _FINISHED:
            raise RuntimeError(f"{self!r} has not finished")
        self._retrieved = True
        if self.status == CANCELLED:
            return JobCancelled(self)
        return self._exc

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        """Call ``fn(job)`` once the job finishes, whatever the outcome (at once if it has)."""
        if self.status in _FINISHED:
            self._pool._call_callback(fn, self)
        elif self._callbacks is None:
            self._callbacks = [fn]
        else:
            self._callbacks.append(fn)

    def _remove_callback(self, fn: Callable[[Any], object]) -> None:
        """Forget a done callback of a waiter that gave up (a no-op once the job settled)."""
        callbacks = self._callbacks
        if callbacks is not None:
            try:
                callbacks.remove(fn)
            except ValueError:
                pass

    def _outcome(self) -> T:
        self._retrieved = True
        if self.status == SUCCEEDED:
            return self._result  # type: ignore[no-any-return]
        if self.status == CANCELLED:
            raise JobCancelled(self)
        assert self._exc is not None
        raise self._exc


@mypyc_attr(native_class=False)  # mixed in at run time: compiled classes cannot be
class _UnretrievedFailure:
    """Mixed into a failed job's class so that only failed jobs pay for a finalizer."""

    __slots__ = ()

    # Untyped: in the compiled build a typed __del__ of a non-native class is not called.
    def __del__(self):  # type: ignore[no-untyped-def]
        job: Any = self
        if not job._retrieved and job._exc is not None:
            log.error("hitpool: exception of %r was never retrieved", job, exc_info=job._exc)


_failed_classes: dict[type, type] = {}


def failed_class(cls: type) -> type:
    """The subclass of a job class that logs an unretrieved exception when collected."""
    sub = _failed_classes.get(cls)
    if sub is None:
        sub = type(cls.__name__, (cls, _UnretrievedFailure), {"__slots__": ()})
        sub.__module__ = cls.__module__
        sub.__qualname__ = cls.__qualname__
        _failed_classes[cls] = sub
    return sub


@mypyc_attr(allow_interpreted_subclasses=True)  # so that the public dispatchers can
class Core:
    """The counters and rules both dispatchers follow; subclasses add the waiting."""

    _kind: ClassVar[str]  # the twin's name and how to start it, for _refuse
    _start_hint: ClassVar[str]

    def __init__(
        self,
        workers: object,
        queue_size: object,
        on_error: Callable[[Any, BaseException], object] | None,
        fail_fast: bool,
    ) -> None:
        self._workers = check_size("workers", workers)
        self._queue_size = check_size("queue_size", queue_size)
        self._on_error = on_error
        self._fail_fast = fail_fast
        self._next_id = 0  # also the number of jobs dispatched
        self._failed = 0
        self._cancelled = 0
        self._state = PoolState.NEW
        # Cache `_state is PoolState.RUNNING` for the hot paths; written only by _set_state.
        # `_room_limit` is queue_size while running and 0 otherwise, so that one comparison
        # says "running, and the ready queue has room".
        self._accepting = False
        self._room_limit = 0
        self._latch = CountdownLatch()  # the latch new jobs count in
        self._open_latches: list[CountdownLatch] = []  # older latches some join waits on
        self._first_failure: BaseException | None = None

    # -- accounting -------------------------------------------------------------------

    @property
    def workers(self) -> int:
        return self._workers

    @property
    def queue_size(self) -> int:
        return self._queue_size

    @property
    def closed(self) -> bool:
        return self._state is PoolState.DRAINING or self._state is PoolState.CLOSED

    def _set_state(self, state: PoolState) -> None:
        """The one place the lifecycle moves; the twins add what the move wakes."""
        assert state in _NEXT_STATES[self._state], f"{self._state} -> {state}"
        self._state = state
        self._accepting = state is PoolState.RUNNING
        self._room_limit = self._queue_size if self._accepting else 0

    def _refuse(self) -> NoReturn:
        """Raise the error for a dispatch the current state does not take."""
        if self._state is PoolState.NEW:
            raise RuntimeError(f"start the {self._kind} first: {self._start_hint}")
        raise DispatcherClosed("the dispatcher is stopped")

    def _refuse_start(self) -> None:
        """Raise when start() cannot start: the pool was stopped (a running one is a no-op)."""
        if self._state is PoolState.DRAINING or self._state is PoolState.CLOSED:
            raise DispatcherClosed("this dispatcher was stopped; make a new one")

    def statistics(self) -> DispatcherStatistics:
        # queued and busy are counted when asked, not kept per job: the hot path of a
        # dispatcher does no bookkeeping a snapshot can derive.
        busy = self._busy_now()
        queued = self._queued_now()
        return DispatcherStatistics(
            workers=self._workers,
            busy=busy,
            idle=max(0, self._workers - busy),
            queued=queued,
            dispatched=self._next_id,
            # Every job is queued, running or settled, so successes need no counter of
            # their own (the tests check it against the jobs' own statuses).
            completed=self._next_id - busy - queued - self._failed - self._cancelled,
            failed=self._failed,
            cancelled=self._cancelled,
            queue_size=self._queue_size,
            closed=self.closed,
        )

    def _settle(
        self, job: BaseJob[Any], status: str, result: Any, exc: BaseException | None
    ) -> None:
        """Record a job's outcome: counters, on_error, fail-fast, latch, callbacks.

        The caller has taken the job out of the ready queue, the delayed set or its
        worker's slot. `ThreadDispatcher` overrides this to run the user's code (on_error,
        callbacks) only once its lock is released, from the same steps.
        """
        if self._record_outcome(job, status, result, exc):
            self._tell_on_error(job)
        if status == FAILED:
            self._check_fail_fast(job)
        self._leave_latch(job)
        if job._callbacks is not None:
            self._notify(job)

    def _record_outcome(
        self, job: BaseJob[Any], status: str, result: Any, exc: BaseException | None
    ) -> bool:
        """Set the job's outcome and count it; True when on_error is still to be told.

        Runs no user code, so a dispatcher may call it while it holds a lock.
        """
        job.status = status  # type: ignore[assignment]
        if status == SUCCEEDED:
            job._result = result
        elif status == FAILED:
            self._failed += 1
            job._exc = exc
            if self._on_error is not None:
                job._retrieved = True
                return True
            job._retrieved = False
            job.__class__ = failed_class(type(job))
        else:
            self._cancelled += 1
        return False

    def _tell_on_error(self, job: BaseJob[Any]) -> None:
        """Tell on_error about a failed job; whatever it raises is logged, not propagated.

        Even a BaseException: raised out of a settle it would skip the latch (join()
        would hang) and end the worker, on a thread or in a task.
        """
        assert self._on_error is not None
        try:
            self._on_error(job, job._exc)  # type: ignore[arg-type]
        except BaseException:
            log.exception("hitpool: on_error callback failed for %r", job)

    def _check_fail_fast(self, job: BaseJob[Any]) -> None:
        if self._fail_fast and self._first_failure is None:
            job._retrieved = True
            self._first_failure = job._exc
            self._on_fail_fast()

    def _leave_latch(self, job: BaseJob[Any]) -> None:
        """Count a settled job out of its latch, waking the joins waiting on it."""
        job.args = ()  # drop references the finished job no longer needs
        job.kwargs = _EMPTY
        latch = job._latch
        latch.count -= 1
        if latch.count == 0 and latch.waiter is not None:
            self._wake_latch(latch)

    def _notify(self, job: BaseJob[Any]) -> None:
        """Run a settled job's done callbacks (those who wait on it wait through one)."""
        callbacks = job._callbacks
        if callbacks is not None:
            job._callbacks = None
            for cb in callbacks:
                self._call_callback(cb, job)

    def _call_callback(self, fn: Callable[[Any], object], job: BaseJob[Any]) -> None:
        try:
            fn(job)
        except BaseException:  # even SystemExit: see _tell_on_error
            log.exception("hitpool: done callback %r failed for %r", fn, job)

    def _join_latches(self) -> list[CountdownLatch]:
        """Close the current latch and start a new one; return the latches a join made now
        must wait for (every one still counting)."""
        current = self._latch
        if current.count:
            self._latch = CountdownLatch()
            self._open_latches.append(current)
        self._open_latches = [latch for latch in self._open_latches if latch.count]
        return list(self._open_latches)

    # -- what each twin does its own way ----------------------------------------------

    def _queued_now(self) -> int:
        raise NotImplementedError

    def _busy_now(self) -> int:
        raise NotImplementedError

    def _cancel_job(self, job: BaseJob[Any]) -> bool:
        raise NotImplementedError

    def _wake_latch(self, latch: CountdownLatch) -> None:
        raise NotImplementedError

    def _on_fail_fast(self) -> None:
        raise NotImplementedError


_EMPTY: dict[str, Any] = {}  # shared, never written: kwargs of a finished job
