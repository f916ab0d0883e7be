"""The workers of hitd: claim due jobs in batches, run them on a Dispatcher, record outcomes.

    store ──claim(batch)──> held, pending ──> drainers on a Dispatcher(workers) ──> outcome
      ^                      │ renew every lease_s/3                                 │
      └──────────── finish(batch) <──────────────────────────────────────────────────┘

Claimed jobs wait in `pending`, a deque, and run on drainers: Dispatcher jobs that each run
pending jobs one after another until none is left. A drainer that takes a job while more
wait starts one more drainer (at most one on its way, at most `workers` in all), so jobs
that suspend spread over the workers, and jobs that do not run back to back on one. A
Dispatcher job per hitd job cost a handle, a worker-loop turn and a coroutine each: with
drainers a burst of jobs costs a couple of Dispatcher jobs.

Three tasks, all owned by the runner and ended by `stop()`:

- the claimer takes up to `claim_batch` due jobs in one `claim()` when there is room (at
  most `workers + queue_size` jobs claimed and not yet run). It wakes on `committed()` (the
  HTTP side calls it after a commit) and when jobs end and free room, and then claims only
  if the store holds queued jobs; every `poll_s` (and on `notify()`) it claims regardless,
  for expired leases and other processes' jobs. A job whose outcome waits for its commit
  takes no room, so the next claim rides in the same transaction as that finish;
- the finisher records outcomes with one `finish()` per batch: while one commit is in the disk
  the next outcomes pile up, so the batch grows with the load;
- the renewer extends the leases of every held job every `lease_s / 3`.

A held job leaves `held` only once its outcome is committed, so its lease is renewed until
then and a crash at any point leaves it to run again (at least once).

Start: a worker is named host:pid:random. Jobs still `running` under a worker of this host
whose process is gone (the server crashed and was restarted) have their leases expired at
once (`recover()`), so they run again now instead of `lease_s` later. Elsewhere the lease
decides.

Graceful stop: claim nothing more, release (`release()`) claimed jobs that have not started,
let running jobs finish within `grace_s`, cancel and release those still running after it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from types import TracebackType
from typing import Any

from .._errors import SpecError
from ..dispatcher import Dispatcher, Job
from .apart import apart
from .errors import UnknownTask
from .lifecycle import RetryPolicy
from .metrics import HistogramSnapshot, RunTimeHistogram
from .store.base import JobRecord, NewJob, Outcome, Store
from .tasks import Registry, TaskDef, current_worker

__all__ = ["Runner", "RunnerStatistics"]

log = logging.getLogger("hitpool.hitd.runner")

DEFAULT_RETRY = RetryPolicy(base=1.0, cap=300.0)


@dataclass(frozen=True, slots=True)
class RunnerStatistics:
    """A snapshot of the workers, for /metrics and /stats. Counts are since start."""

    workers: int
    busy: int  # workers running a job now
    held: int  # jobs claimed whose outcome is not committed yet
    claimed: int  # claims (attempts started or waiting for a worker)
    completed: int  # attempts that succeeded
    failed: int  # attempts that failed: retried + dead + permanent
    retried: int  # failures queued again after a backoff
    dead: int  # failures on the last attempt
    permanent: int  # failures no retry can fix (unknown task, bad arguments)
    released: int  # jobs given back on graceful stop
    run_time: HistogramSnapshot


def default_worker_name() -> str:
    """host:pid:random — unique per process run, so a restarted server never mistakes old
    leases for its own; host and pid let it see that the old process is gone."""
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"


def is_gone(worker: str, host: str) -> bool:
    """True when `worker` names a process on this host that no longer exists.

    Only local processes can be judged (a pid means nothing on another machine), and a
    reused pid reads as alive: then the lease simply runs out, as for any other worker."""
    w_host, _, rest = worker.partition(":")
    pid = rest.partition(":")[0]
    if w_host != host or not pid.isdigit() or int(pid) <= 0:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it exists, as another user's process
        return False
    return False


class Runner:
    """Runs the jobs of a store. ``async with Runner(store, registry, workers=8):``."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        *,
        workers: int = 8,
        queue_size: int | None = None,
        lease_s: float = 30.0,
        worker_name: str | None = None,
        poll_s: float = 1.0,
        grace_s: float = 10.0,
        claim_batch: int = 512,
        retry: RetryPolicy = DEFAULT_RETRY,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        recover: bool = True,
        args_checked: bool = False,
    ) -> None:
        """`args_checked`: every job enqueued into `store` while this runner is attached had
        its arguments checked with `registry.check` first (hitd's HTTP intake does), so the
        jobs the store hands straight from such an enqueue skip the second check. Jobs
        claimed from the table are always checked: they may come from another process, a
        retry, or a registry that has changed since."""
        if workers < 1:
            raise SpecError("workers", "must be at least 1")
        for name, value in (("lease_s", lease_s), ("poll_s", poll_s)):
            if not value > 0:
                raise SpecError(name, f"must be a positive number of seconds, got {value!r}")
        if not grace_s >= 0:
            raise SpecError("grace_s", f"must be zero or more seconds, got {grace_s!r}")
        self._store = store
        self._registry = registry
        self._workers = workers
        # Claimed jobs waiting for a worker (the prefetch). Deeper means bigger claim batches
        # and fewer transactions: measured with 16 workers on SQLite, a prefetch of 64 ran
        # 12.6k jobs/s, 1024 ran 21.5k jobs/s. Not the HTTP 429 limit: that one counts jobs
        # waiting in the store.
        self._queue_size = max(8 * workers, 512) if queue_size is None else max(1, queue_size)
        self._capacity = workers + self._queue_size
        self._claim_batch = max(1, claim_batch)
        # Claim when this much room is free (or nothing is held): batches, not a claim per job.
        self._claim_min = max(1, min(self._claim_batch, self._capacity // 2))
        self._lease_s = lease_s
        self.worker_name = worker_name or default_worker_name()
        self._poll_s = poll_s
        self._grace_s = grace_s
        self._retry = retry
        self._clock = clock
        self._rand = rand
        self._recover = recover
        self._args_checked = args_checked

        self._held: set[int] = set()  # ids of the jobs claimed whose outcome is not committed
        # Claimed jobs not yet run to an outcome: what takes room. A job whose outcome waits
        # for its finish() commit no longer takes room, so the next claim can share that
        # commit (the writer merges them) instead of waiting for it.
        self._active = 0
        self._outcomes: list[Outcome] = []
        # Claimed jobs not started: (id, record or job as submitted, attempt, args checked).
        self._pending: collections.deque[tuple[int, JobRecord | NewJob, int, bool]] = (
            collections.deque()
        )
        self._drainers = 0  # drainers dispatched and not ended
        self._starting = 0  # of those, dispatched and not started yet (at most one)
        # Worker IDs 1..N, popped from the end: each Dispatcher worker takes one at its first
        # job and keeps it (see `_drain`).
        self._slots = list(range(workers, 0, -1))
        self._pool: Dispatcher | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()  # claimer: new jobs, room, or stop
        self._flush = asyncio.Event()  # finisher: outcomes to record, or stop
        self._idle = asyncio.Event()
        self._polled = True  # the first claim looks for expired leases and waiting jobs
        self._next_poll = 0.0  # loop time of the next poll (set at start)
        self._not_due = 0  # queued jobs the last claim left because they were not due
        self._stopping = False
        self._draining = False
        self._finisher_done = False

        self._claimed = 0
        self._completed = 0
        self._failed = 0
        self._retried = 0
        self._dead = 0
        self._permanent = 0
        self._released = 0
        self._hist = RunTimeHistogram()

    # -- public ----------------------------------------------------------------------------

    async def __aenter__(self) -> Runner:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the workers and the claim, finish and renew loops on the running loop."""
        if self._pool is not None:
            return
        if self._recover:
            await self.recover()
        # At most `workers` drainers exist, queued or running (see `_add_drainer`).
        self._pool = Dispatcher(workers=self._workers, queue_size=self._workers)
        # The workers' tasks copy this context: start them with no worker ID set, so that
        # each takes its own at its first job even when the runner is started from a job.
        ctx = contextvars.copy_context()
        ctx.run(current_worker.set, 0)
        ctx.run(self._pool.start)
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="hitd-task")
        self._store.set_handoff(self)
        loop = asyncio.get_running_loop()
        self._next_poll = loop.time() + self._poll_s
        self._tasks = [
            loop.create_task(self._claimer(), name="hitd-claimer"),
            loop.create_task(self._finisher(), name="hitd-finisher"),
            loop.create_task(self._renewer(), name="hitd-renewer"),
        ]

    async def recover(self) -> int:
        """Expire the leases of workers on this host whose process is gone (a crash before a
        restart), so their jobs run again now rather than when the leases run out."""
        host = socket.gethostname()
        n = 0
        for worker, held in (await self._store.holders()).items():
            if worker != self.worker_name and is_gone(worker, host):
                n += await self._store.expire(worker)
                log.warning("worker %s is gone: its %d running jobs run again now", worker, held)
        return n

    # -- the handoff: fresh jobs straight from enqueue (stores with supports_handoff) ------

    @property
    def worker(self) -> str:
        return self.worker_name

    @property
    def lease_s(self) -> float:
        return self._lease_s

    def room(self) -> int:
        """Jobs the runner can take now. Read on the store's writer thread, unlocked: it may
        be stale by one claim: `pending` is a deque, not bounded by it."""
        return 0 if self._draining else max(0, self._capacity - self._active)

    def deliver(self, ids: Sequence[int], jobs: Sequence[NewJob]) -> None:
        """Jobs the store claimed for this runner while committing their enqueue."""
        self._held.update(ids)
        self._claimed += len(ids)
        pool = self._pool
        if self._draining or pool is None:
            return  # stopping: stop() releases what is held (recover() after a crash)
        self._active += len(ids)
        # Attempt 1: claimed in its enqueue.
        self._pending.extend(zip(ids, jobs, repeat(1), repeat(self._args_checked)))
        if not self._starting and self._drainers < self._workers:
            self._add_drainer()

    def notify(self) -> None:
        """Look for due jobs and expired leases now instead of at the next poll. Never waits."""
        self._polled = True
        self._idle.clear()
        self._wake.set()

    def committed(self) -> None:
        """Jobs were committed (the intake's hook): claim now if the store holds queued ones.
        Those handed off in their own enqueue are already here."""
        self._idle.clear()
        self._wake.set()

    async def until_idle(self) -> None:
        """Wait until a claim found no due job and every held job's outcome is committed.

        For tests and one-shot runs: enqueue, `notify()`, `await until_idle()`."""
        await self._idle.wait()

    def statistics(self) -> RunnerStatistics:
        return RunnerStatistics(
            workers=self._workers,
            # The pool's running jobs: a job is busy from the call of `_run` to its end.
            busy=0 if self._pool is None else self._pool.statistics().busy,
            held=len(self._held),
            claimed=self._claimed,
            completed=self._completed,
            failed=self._failed,
            retried=self._retried,
            dead=self._dead,
            permanent=self._permanent,
            released=self._released,
            run_time=self._hist.snapshot(),
        )

    async def renew_leases(self) -> None:
        """Extend the lease of every held job (the renewer calls this every lease_s / 3)."""
        if self._held:
            await self._store.renew(
                list(self._held), self.worker_name, self._clock(), self._lease_s
            )

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful stop: claim no more, let running jobs finish within `grace_s`, release the
        rest back to the queue (their attempt not counted). Returns when all is recorded."""
        if self._pool is None or self._stopping:
            return
        grace = self._grace_s if grace_s is None else grace_s
        claimer, finisher, renewer = self._tasks
        self._store.set_handoff(None)
        self._stopping = True
        self._draining = True  # from now on jobs that did not start are released, not run
        self._wake.set()
        await claimer
        pool = self._pool
        try:
            async with asyncio.timeout(grace):
                await pool.stop()
        except TimeoutError:
            # pool.stop() was cancelled by the timeout: it cancelled the running jobs and waited
            # for them. Calling it again is a no-op that makes that explicit.
            await pool.stop(cancel=True)
        self._finisher_done = True
        self._flush.set()
        await finisher
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        # Whatever is still held has no committed outcome: started-and-cancelled, never
        # started, or its finish() failed. Give it back so a restart runs it at once.
        rest = list(self._held)
        if rest:
            try:
                await self._store.release(rest, self.worker_name)
                self._released += len(rest)
            except Exception:
                log.exception(
                    "could not release %d jobs; they run again when leases expire", len(rest)
                )
            self._held.clear()
        self._pending.clear()  # never started: released above with the rest of `held`
        if self._executor is not None:
            # A thread cannot be interrupted: an overdue sync task is left to end on its own.
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._idle.set()

    # -- the claimer -----------------------------------------------------------------------

    async def _pause(self) -> None:
        # The poll keeps its own schedule: a timer re-armed at every wake never fired while
        # commits woke the claimer more often than poll_s, and a dead worker's expired leases
        # then waited as long as the traffic lasted.
        loop = asyncio.get_running_loop()
        timer = loop.call_at(self._next_poll, self._poll, loop)
        try:
            await self._wake.wait()
        finally:
            timer.cancel()

    def _poll(self, loop: asyncio.AbstractEventLoop) -> None:
        self._polled = True
        self._next_poll = loop.time() + self._poll_s
        self._wake.set()

    async def _claimer(self) -> None:
        while not self._stopping:
            self._wake.clear()
            room = self._capacity - self._active
            # Woken by a commit or by room freed, claim only when the store holds queued jobs
            # beyond those the last claim left as not due yet (`_not_due`): fresh jobs are
            # mostly handed off in their enqueue, and a claim that finds nothing is still a
            # transaction (five round trips on PostgreSQL). Without that baseline one delayed
            # job in the queue made every commit claim in vain. The poll claims regardless:
            # jobs that became due, expired leases, other processes' jobs.
            queued = self._store.queued_estimate()
            if queued < self._not_due:
                self._not_due = queued  # some were claimed or cancelled meanwhile
            if (
                room > 0
                and (not self._active or room >= self._claim_min)
                and (self._polled or queued > self._not_due)
            ):
                self._polled = False
                want = min(room, self._claim_batch)
                try:
                    recs = await self._store.claim(
                        self.worker_name, want, self._clock(), self._lease_s
                    )
                except Exception:  # a failing store must not silently stop the workers
                    log.exception("claim failed; trying again in %gs", self._poll_s)
                    await self._pause()
                    continue
                held = self._held
                self._active += len(recs)
                pending = self._pending
                for rec in recs:
                    held.add(rec.id)
                    pending.append((rec.id, rec, rec.attempts, False))
                if recs and not self._starting and self._drainers < self._workers:
                    self._add_drainer()
                self._claimed += len(recs)
                if len(recs) == want:
                    self._not_due = 0
                    continue  # there may be more due right now
                # All that was due is taken: the rest of what was queued is not due yet
                # (what was queued during the claim counts above this).
                self._not_due = max(0, queued - len(recs))
                if not held and not self._wake.is_set():
                    # Nothing due, nothing running, and no notify() arrived during the claim
                    # (its jobs may have committed after the claim looked).
                    self._idle.set()
            elif not self._held and not self._wake.is_set() and not self._polled:
                self._idle.set()  # nothing queued, nothing held
            if self._stopping:
                break
            await self._pause()

    # -- running one job -------------------------------------------------------------------

    def _add_drainer(self) -> None:
        # Called only when none is on its way (`_starting`) and fewer than `workers` exist,
        # like the Dispatcher's chain wake: one drainer at a time, more only as they start.
        assert self._pool is not None
        self._drainers += 1
        self._starting += 1
        # (annotated: mypy cannot infer T=None through `Awaitable[T] | T`)
        handle: Job[None] = self._pool.dispatch_nowait(self._drain)
        del handle

    async def _drain(self) -> None:
        # One flat loop (no helper per job): this path runs a million times a minute, and
        # every extra frame and await shows in the profile.
        self._starting -= 1
        pending = self._pending
        try:
            while pending and not self._draining:  # stopping: stop() releases the rest
                id, job, attempts, checked = pending.popleft()
                if pending and not self._starting and self._drainers < self._workers:
                    self._add_drainer()  # in case this job suspends: the next one need not wait
                if not current_worker.get():
                    # The Dispatcher worker's first drainer: its task keeps the ID for its
                    # life, as the seed's workers did, instead of a set and a reset per job.
                    current_worker.set(self._slots.pop())
                t0 = time.perf_counter()
                outcome: Outcome | None = None
                td: TaskDef | None = None
                scope: asyncio.Timeout | None = None
                try:
                    td = self._registry.get(job.task)
                    if not checked:
                        args = td.bind(job.args, self._registry)
                    elif td.check is None:
                        args = job.args  # checked at submit: `fn(**args)` copies it anyway
                    else:
                        # The signature was checked at submit; what the task's own check
                        # returns (it may normalize) is not kept there, so it runs again.
                        args = td.check(self._registry, dict(job.args))
                    if td.timeout is None:
                        if td.is_async:
                            result = await td.fn(**args)
                        else:
                            result = await self._in_thread(td, args)
                    else:
                        async with asyncio.timeout(td.timeout) as scope:
                            if td.is_async:
                                result = await td.fn(**args)
                            else:
                                result = await self._in_thread(td, args)
                    self._completed += 1
                    outcome = Outcome(id, self.worker_name, True, result)  # positional: cheaper
                except (UnknownTask, SpecError) as e:
                    # Unknown task, bad arguments (ours or the task's own check): no retry
                    # can help.
                    outcome = self._failure(id, job, attempts, _describe(e), permanent=True)
                except TimeoutError as e:
                    if td is not None and scope is not None and scope.expired():
                        msg = f"timed out after {td.timeout:g}s"
                    else:
                        msg = _describe(e)
                    outcome = self._failure(id, job, attempts, msg, permanent=False)
                except Exception as e:
                    outcome = self._failure(id, job, attempts, _describe(e), permanent=False)
                finally:
                    # On cancellation (hard stop) no outcome is recorded: the job stays held
                    # and stop() releases it.
                    self._hist.observe(time.perf_counter() - t0)
                    self._active -= 1
                    if outcome is not None:
                        if not self._outcomes:  # the finisher waits for an empty list to fill
                            self._flush.set()
                        self._outcomes.append(outcome)
                    if self._capacity - self._active == self._claim_min:
                        # Room just reached what is worth a claim. Above it the claimer has
                        # already looked and found nothing queued (a commit or notify() wakes
                        # it when that changes): waking it per job was a task step for nothing.
                        self._wake.set()
        finally:
            self._drainers -= 1

    async def _in_thread(self, td: TaskDef, args: dict[str, Any]) -> Any:
        # Plain functions run on a thread, with the context (current_worker) copied.
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(ctx.run, td.fn, **args))

    def _failure(
        self, id: int, job: JobRecord | NewJob, attempts: int, error: str, permanent: bool
    ) -> Outcome:
        self._failed += 1
        retry_at = None
        if permanent:
            self._permanent += 1
        else:
            retry_at = self._retry.retry_at(attempts, job.max_attempts, self._clock(), self._rand())
            if retry_at is None:
                self._dead += 1
            else:
                self._retried += 1
        level = logging.INFO if retry_at is not None else logging.WARNING
        if log.isEnabledFor(level):
            log.log(
                level,
                "job %d (%s) attempt %d/%d failed: %s%s",
                id,
                job.task,
                attempts,
                job.max_attempts,
                error,
                "" if retry_at is None else f"; retry in {retry_at - self._clock():.3g}s",
            )
        return Outcome(
            id, self.worker_name, ok=False, error=error, retry_at=retry_at, permanent=permanent
        )

    # -- the finisher and the renewer --------------------------------------------------------

    async def _finisher(self) -> None:
        while True:
            if not self._outcomes:
                if self._finisher_done:
                    return
                self._flush.clear()
                await self._flush.wait()
                continue
            batch, self._outcomes = self._outcomes, []
            try:
                await self._store.finish(batch, self._clock())
            except Exception as e:
                log.exception("could not record %d outcomes", len(batch))
                # One outcome the store cannot take must not hold back every later one
                # (they all join the batch being retried): record the batch in halves.
                left = await apart(batch, e, self._record, self._record_alone)
                if left:
                    # Not recorded (the store is failing): the jobs stay held (their leases
                    # renewed) and are tried again after a pause. On stop they are released
                    # and run again; if the process dies they run again when their leases
                    # expire (at least once).
                    if self._finisher_done:
                        return
                    self._outcomes[:0] = left
                    kept = {o.id for o in left}
                    batch = [o for o in batch if o.id not in kept]
                    await asyncio.sleep(self._poll_s)
            held = self._held
            for o in batch:
                held.discard(o.id)
            if not held:
                self._wake.set()  # the claimer decides whether the runner is idle

    async def _record(self, outcomes: Sequence[Outcome]) -> None:
        await self._store.finish(outcomes, self._clock())

    async def _record_alone(self, o: Outcome, err: Exception) -> bool:
        """An outcome the store refused alone: tried once more as it is (a hiccup of the store
        must not turn a success into a failure), then recorded as a failed attempt saying
        why. False if the store took neither."""
        try:
            await self._record([o])
            return True
        except Exception as e:
            err = e
        why = f"the {'result' if o.ok else 'error'} could not be stored: {_describe(err)}"
        try:
            await self._record([Outcome(o.id, o.worker, False, error=why, permanent=True)])
        except Exception:
            return False
        log.warning("job %d: %s", o.id, why)
        return True

    async def _renewer(self) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            try:
                await self.renew_leases()
            except Exception:
                log.exception("lease renewal failed")


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
