"""Group commit of enqueues: what arrives while one commit runs goes in the next, together.

A 202 is a promise, so it is sent only after `store.enqueue()` has committed the job. One
durable (fsynced) commit per job gave 4k jobs/s here; one per batch gives over 200k rows/s.
So requests do not commit: they `submit()` their jobs and get a future; one flusher task
takes everything submitted since its last commit, makes ONE `enqueue()` call, and resolves
every waiting future. At low load a batch is one request (the flusher wakes on the next loop
turn); under load batches grow by themselves while the previous commit is in the disk.

Each request's waiter is resolved with the (id, created) pairs of its jobs, or with the
exception that kept them from being committed (the store's, or `DispatcherClosed` when the
server shut down first); nothing is promised then. The intake speaks jobs and ids only:
what a client is answered (202, 503) is the app's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .._errors import DispatcherClosed
from .errors import StoreError
from .halves import retry_in_halves
from .store.base import NewJob, Store

__all__ = ["Answer", "Ids", "Intake", "IntakeStatistics"]

log = logging.getLogger("hitpool.hitd.intake")

Ids = list[tuple[int, bool]]


class Answer(Protocol):
    """Where a request's outcome goes: an `asyncio.Future[Ids]` is one; the app passes its
    own, cheaper object (no loop handle per request)."""

    def done(self) -> bool: ...
    def set_result(self, ids: Ids, /) -> None: ...
    def set_exception(self, exc: BaseException, /) -> None: ...


# A request waiting for its commit: its answer and how many jobs it gave.
Waiter = tuple[Answer, int]


@dataclass(frozen=True, slots=True)
class IntakeStatistics:
    pending: int  # jobs submitted, not yet in a commit
    committing: int  # jobs in the commit under way
    commits: int  # enqueue() calls made
    committed: int  # jobs committed (created or deduplicated)
    largest_batch: int
    failures: int  # enqueue() calls that raised


class Intake:
    """Collects submitted jobs and commits them in groups. Use as ``async with``."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float] = time.time,
        on_commit: Callable[[], None] | None = None,
        overlap: int = 4,
    ) -> None:
        """`on_commit()` after each commit (wake the workers)."""
        self._store = store
        # Commits in flight at once. With one, the store's writer idles while the loop answers
        # a batch and gathers the next; with two, the next batch is already waiting for the
        # writer when a commit ends (the SQLite store merges what is waiting into one
        # transaction). But with both taken, what arrives meanwhile waits a whole commit more
        # although the writer has not begun the next one; with four, it usually joins the
        # waiting ones in the writer's next transaction. Measured at 50 connections (single
        # POSTs, interleaved runs): 4 or 6 gave 10-14 % more jobs/s than 2; 12 no more; at 200
        # connections no difference. Memory stays bounded: admission counts every job in flight.
        self._overlap = max(1, overlap)
        self._on_commit = on_commit  # e.g. wake the workers: new jobs are due
        self._clock = clock
        self._jobs: list[NewJob] = []
        self._waiters: list[Waiter] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []
        self._committing = 0
        self._commits = 0
        self._committed = 0
        self._largest = 0
        self._failures = 0

    async def __aenter__(self) -> Intake:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._flusher(), name=f"hitd-intake-{i}")
            for i in range(self._overlap)
        ]

    @property
    def in_flight(self) -> int:
        """Jobs accepted for commit but not yet committed (pending + committing)."""
        return len(self._jobs) + self._committing

    def submit(self, jobs: Sequence[NewJob]) -> asyncio.Future[Ids]:
        """Queue `jobs` for the next commit; the future gets their (id, created) pairs once
        committed, or the exception that kept them out.

        Never waits and never raises for load: admission (429) is the caller's decision.
        Raises DispatcherClosed after `close()` began.
        """
        fut: asyncio.Future[Ids] = asyncio.get_running_loop().create_future()
        self.submit_into(jobs, fut)
        return fut

    def submit_into(self, jobs: Sequence[NewJob], answer: Answer) -> None:
        """`submit`, resolving `answer` (any object with a future's three methods)."""
        if self._closed:
            raise DispatcherClosed("the intake is closed")
        self._jobs += jobs
        self._waiters.append((answer, len(jobs)))
        if not self._wake.is_set():
            self._wake.set()

    async def close(self) -> None:
        """Commit and answer everything already submitted, then stop."""
        self._closed = True
        self._wake.set()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await task

    def statistics(self) -> IntakeStatistics:
        return IntakeStatistics(
            pending=len(self._jobs),
            committing=self._committing,
            commits=self._commits,
            committed=self._committed,
            largest_batch=self._largest,
            failures=self._failures,
        )

    async def _flusher(self) -> None:
        while True:
            if not self._jobs:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            jobs, self._jobs = self._jobs, []
            waiters, self._waiters = self._waiters, []
            self._committing += len(jobs)
            try:
                await self._commit(jobs, waiters)
            finally:
                self._committing -= len(jobs)

    async def _commit(self, jobs: list[NewJob], waiters: list[Waiter]) -> None:
        """Commit `jobs` and answer `waiters`: 202s, or 503s if the store failed. A batch the
        store refused is committed again in halves (`retry_in_halves`): one request it cannot take
        (a text it cannot encode, say) must not fail every other client's jobs with it."""
        try:
            exc: Exception | None = None
            try:
                await self._enqueue(jobs, waiters)
            except Exception as e:
                exc = e  # awaited after the except: see scripts/check_compiled.py
            if exc is not None:
                self._failures += 1
                if len(waiters) > 1:
                    log.warning("enqueue of %d jobs failed (%s): committing apart", len(jobs), exc)
                    # Each request with its own jobs, so that any part can be committed alone.
                    parts: list[tuple[Waiter, list[NewJob]]] = []
                    start = 0
                    for w in waiters:
                        parts.append((w, jobs[start : start + w[1]]))
                        start += w[1]
                    left = await retry_in_halves(parts, exc, self._enqueue_parts, self._refuse)
                    self._fail([w for w, _ in left], exc)
                else:
                    await self._refuse((waiters[0], jobs), exc)
        except asyncio.CancelledError:
            # Skips the answered.
            self._fail(waiters, DispatcherClosed("the server is shutting down"))
            raise

    async def _enqueue(self, jobs: list[NewJob], waiters: list[Waiter]) -> None:
        """One enqueue() of `jobs`; each waiter answered from its share of the ids."""
        ids = await self._store.enqueue(jobs, self._clock())
        self._commits += 1
        self._committed += len(jobs)
        if self._on_commit is not None:
            self._on_commit()
        self._largest = max(self._largest, len(jobs))
        start = 0
        for answer, n in waiters:
            part = ids[start : start + n]
            start += n
            if not answer.done():  # else the client went away; the jobs are committed
                answer.set_result(part)

    async def _enqueue_parts(self, parts: Sequence[tuple[Waiter, list[NewJob]]]) -> None:
        try:
            await self._enqueue([j for _, jobs in parts for j in jobs], [w for w, _ in parts])
        except Exception:
            self._failures += 1
            raise

    async def _refuse(self, part: tuple[Waiter, list[NewJob]], exc: Exception) -> bool:
        """A request the store refused alone: its answer gets the store's exception."""
        waiter, jobs = part
        if isinstance(exc, (StoreError, OSError)):
            log.error("enqueue of %d jobs failed: %s", len(jobs), exc)
        else:  # a bug in a store: answer, log, keep serving
            log.exception("enqueue of %d jobs failed", len(jobs), exc_info=exc)
        self._fail([waiter], exc)
        return False  # not taken

    def _fail(self, waiters: list[Waiter], exc: BaseException) -> None:
        for answer, _ in waiters:
            if not answer.done():
                answer.set_exception(exc)
