"""The workers of hitd: claim due jobs into free workers, run them, record outcomes.

    store ──claim(free workers)──> Dispatcher(workers) ──> outcome ──finish(batch)──> store
      ^        │ held: renewed every lease_s / 3                                       │
      └────────┴────────────── a job ending frees its worker: claim again ─────────────┘

Invariant: jobs claimed and not yet run to an outcome (`_active`) never outnumber the
workers. A claim asks for at most the free workers (Oban's `demand = limit - running`,
River's "never fetch more jobs than free worker slots"), and so does the handoff of fresh
jobs from an enqueue (`room()`). So a claimed job starts at once, which is why the store
may mark it `running`, set `started_at` and count its attempt when it is claimed, and
every job not started yet stays `queued` in the store, where any process can claim it,
`DELETE` can cancel it and the queue-size bound counts it. Each claimed job is one job on
the runner's `Dispatcher`, which has exactly `workers` workers.

Three tasks, all owned by the runner and ended by `stop()`:

- the claimer claims up to the free workers (at most `claim_batch`) in one `claim()`. It
  wakes when a job ends or a commit (`committed()`, the HTTP side's hook) adds jobs, and
  claims only if the store holds queued jobs beyond those the last claim left as not due;
  every `poll_s` (and on `notify()`) it claims regardless, for expired leases and for
  other processes' jobs. A job whose outcome waits for its commit frees its worker, so the
  next claim rides in the same transaction as that finish, and while one claim is under
  way the workers freed meanwhile wait for the next: claims grow with the load;
- the finisher records outcomes with one `finish()` per batch: while one commit is in the disk
  the next outcomes pile up, so the batch grows with the load;
- the renewer extends the leases of every held job every `lease_s / 3`.

A held job leaves `held` only once its outcome is committed, so its lease is renewed until
then and a crash at any point leaves it to run again (at least once).

Start: a worker is named host:pid:random. Jobs still `running` under a worker of this host
whose process is gone (the server crashed and was restarted) have their leases expired at
once (`recover()`), so they run again now instead of `lease_s` later. Elsewhere the lease
decides.

Graceful stop: claim nothing more and start nothing more; release (`release()`, the
attempt not counted) the jobs claimed that had not started; let running jobs finish within
`grace_s`; a job still running after it is cancelled and has used its attempt: it is
queued again if attempts are left, else dead (Oban's rule: a job that always outlives the
grace period is bounded by `max_attempts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import functools
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from types import TracebackType
from typing import Any

from .._errors import SpecError
from ..dispatcher import Dispatcher, Job
from .errors import UnknownTask
from .halves import retry_in_halves
from .lifecycle import RetryPolicy, outcome_status
from .metrics import HistogramSnapshot, RunTimeHistogram
from .store.base import JobRecord, NewJob, Outcome, Store
from .tasks import Registry, TaskDef, current_worker

__all__ = ["Runner", "RunnerState", "RunnerStatistics"]

log = logging.getLogger("hitpool.hitd.runner")

DEFAULT_RETRY = RetryPolicy(base=1.0, cap=300.0)

# A claimed job on its way to a worker: id, the job (a record, or as submitted when handed
# off from its enqueue), its attempt, its run (the claim's fence, `Outcome.run`), and
# whether its arguments were checked at submit.
Claimed = tuple[int, "JobRecord | NewJob", int, int, bool]


@dataclass(frozen=True, slots=True)
class RunnerStatistics:
    """A snapshot of the workers, for /metrics and /stats. Counts are since start."""

    workers: int
    busy: int  # workers running a job now
    held: int  # jobs claimed whose outcome is not committed yet
    claimed: int  # jobs claimed (each starts on a free worker at once)
    completed: int  # attempts that succeeded
    failed: int  # attempts that failed: retried + dead + permanent
    retried: int  # failures queued again after a backoff
    dead: int  # failures on the last attempt
    permanent: int  # failures no retry can fix (unknown task, bad arguments)
    released: int  # jobs given back unstarted on graceful stop (attempt not used)
    interrupted: int  # jobs cancelled at the end of the stop's grace period (attempt used)
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


class RunnerState(enum.Enum):
    """The runner's lifecycle, one state (`Runner.state`), in this order only."""

    NEW = "new"  # not started
    RUNNING = "running"  # claims and runs jobs
    DRAINING = "draining"  # stop() under way: claims and starts nothing; running jobs end
    CLOSING = "closing"  # the workers are stopped: last outcomes recorded, the rest released
    STOPPED = "stopped"


class Runner:
    """Runs the jobs of a store. ``async with Runner(store, registry, workers=8):``."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        *,
        workers: int = 8,
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
        self._claim_batch = max(1, claim_batch)
        self._lease_s = lease_s
        self.worker_name = worker_name or default_worker_name()
        self._poll_s = poll_s
        self._grace_s = grace_s
        self._retry = retry
        self._clock = clock
        self._rand = rand
        self._recover = recover
        self._args_checked = args_checked

        self._state = RunnerState.NEW
        # `state is RUNNING`, read once per job; written only by `_set_state`.
        self._open = False
        # The jobs claimed whose outcome is not committed: id -> the run (`Outcome.run`)
        # held. An outcome takes its job off only for that run: a late outcome of an earlier
        # run of the same job (fenced off by the store) leaves the newer run held, renewed.
        self._held: dict[int, int] = {}
        # Of those, the ids not started yet (claimed, on their way to a worker): what stop()
        # releases with their attempt given back.
        self._waiting: set[int] = set()
        # Invariant: 0 <= _active <= workers. Jobs claimed and not yet run to an outcome. A
        # job whose outcome waits for its finish() commit no longer counts, so the next
        # claim can share that commit instead of waiting for it.
        self._active = 0
        self._outcomes: list[Outcome] = []
        # Worker IDs 1..N, popped from the end: each Dispatcher worker takes one at its first
        # job and keeps it (see `_run`).
        self._slots = list(range(workers, 0, -1))
        self._pool: Dispatcher | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()  # claimer: new jobs, free workers, or stop
        self._flush = asyncio.Event()  # finisher: outcomes to record, or stop
        self._idle = asyncio.Event()
        self._stopped = asyncio.Event()
        self._polled = True  # the first claim looks for expired leases and waiting jobs
        self._next_poll = 0.0  # loop time of the next poll (set at start)
        self._not_due = 0  # queued jobs the last claim left because they were not due

        self._claimed = 0
        self._completed = 0
        self._failed = 0
        self._retried = 0
        self._dead = 0
        self._permanent = 0
        self._released = 0
        self._interrupted = 0
        self._hist = RunTimeHistogram()

    def _set_state(self, state: RunnerState) -> None:
        self._state = state
        self._open = state is RunnerState.RUNNING

    @property
    def state(self) -> RunnerState:
        return self._state

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
        if self._state is not RunnerState.NEW:
            return
        if self._recover:
            await self.recover()
        # One Dispatcher job per claimed job: at most `workers` exist (the invariant on
        # `_active`), so its queue never fills.
        self._pool = Dispatcher(workers=self._workers, queue_size=self._workers)
        # The workers' tasks copy this context: start them with no worker ID set, so that
        # each takes its own at its first job even when the runner is started from a job.
        ctx = contextvars.copy_context()
        ctx.run(current_worker.set, 0)
        ctx.run(self._pool.start)
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="hitd-task")
        self._set_state(RunnerState.RUNNING)
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
        """Free workers: how many jobs the runner can start now. Read on the store's writer
        thread, unlocked: it may be stale by a job or a claim, and the store subtracts what
        it handed off and has not delivered yet."""
        return max(0, self._workers - self._active) if self._open else 0

    def deliver(self, ids: Sequence[int], jobs: Sequence[NewJob]) -> None:
        """Jobs the store claimed for this runner while committing their enqueue."""
        self._held.update(zip(ids, repeat(1)))
        self._claimed += len(ids)
        if not self._open:
            # Committed while stop() began: never started, so stop() releases them with
            # their attempt given back (recover() does it after a crash).
            self._waiting.update(ids)
            return
        self._active += len(ids)
        # Attempt 1, run 1: claimed in its enqueue.
        self._start_jobs(zip(ids, jobs, repeat(1), repeat(1), repeat(self._args_checked)))

    def notify(self) -> None:
        """Look for due jobs and expired leases now instead of at the next poll. Never waits."""
        self._polled = True
        self._idle.clear()
        self._wake.set()

    def committed(self) -> None:
        """Jobs were committed (the intake's hook): claim now if the store holds queued ones
        and a worker is free. Those handed off in their own enqueue are already here."""
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
            interrupted=self._interrupted,
            run_time=self._hist.snapshot(),
        )

    async def renew_leases(self) -> None:
        """Extend the lease of every held job (the renewer calls this every lease_s / 3)."""
        if self._held:
            await self._store.renew(
                list(self._held), self.worker_name, self._clock(), self._lease_s
            )

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful stop: claim and start no more, let running jobs finish within `grace_s`,
        release the jobs that had not started. Returns when all is recorded."""
        if self._state is RunnerState.NEW:
            return
        if self._state is not RunnerState.RUNNING:
            await self._stopped.wait()
            return
        assert self._pool is not None
        grace = self._grace_s if grace_s is None else grace_s
        claimer, finisher, renewer = self._tasks
        self._store.set_handoff(None)
        self._set_state(RunnerState.DRAINING)  # jobs that did not start are released, not run
        self._wake.set()
        await claimer
        pool = self._pool
        timed_out = False
        try:
            async with asyncio.timeout(grace):
                await pool.stop()
        except TimeoutError:
            timed_out = True  # awaited after the except: see scripts/check_compiled.py
        if timed_out:
            # pool.stop() was cancelled by the timeout: it cancelled the running jobs (each
            # leaves an interrupted outcome) and waited for them. Calling it again is a
            # no-op that makes that explicit.
            await pool.stop(cancel=True)
        self._set_state(RunnerState.CLOSING)
        self._flush.set()
        await finisher
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        # Held jobs that never started go back with their attempt given back, so a restart
        # runs them at once. Those that started have their outcome recorded, unless the
        # store refused it: they run again when their leases expire (at least once).
        unstarted = [id for id in self._held if id in self._waiting]
        if unstarted:
            try:
                await self._store.release(unstarted, self.worker_name)
                self._released += len(unstarted)
            except Exception:
                log.exception(
                    "could not release %d jobs; they run again when leases expire",
                    len(unstarted),
                )
        self._held.clear()
        self._waiting.clear()
        if self._executor is not None:
            # A thread cannot be interrupted: an overdue sync task is left to end on its own.
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._set_state(RunnerState.STOPPED)
        self._idle.set()
        self._stopped.set()

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
        while self._open:
            self._wake.clear()
            free = self._workers - self._active
            # Woken by a commit or a job's end, claim only when the store holds queued jobs
            # beyond those the last claim left as not due yet (`_not_due`): fresh jobs are
            # mostly handed off in their enqueue, and a claim that finds nothing is still a
            # transaction. The poll claims regardless: jobs that became due, expired
            # leases, other processes' jobs.
            queued = self._store.queued_estimate()
            if queued < self._not_due:
                self._not_due = queued  # some were claimed or cancelled meanwhile
            if free > 0 and (self._polled or queued > self._not_due):
                self._polled = False
                want = min(free, self._claim_batch)
                # The workers asked for are taken while the claim is under way, so that a
                # handoff committed meanwhile (`room()`) cannot give them away too.
                self._active += want
                try:
                    recs = await self._store.claim(
                        self.worker_name, want, self._clock(), self._lease_s
                    )
                except Exception:  # a failing store must not silently stop the workers
                    self._active -= want
                    log.exception("claim failed; trying again in %gs", self._poll_s)
                    recs = None  # paused after the except: see scripts/check_compiled.py
                if recs is None:
                    await self._pause()
                    continue
                self._active -= want - len(recs)
                self._held.update((rec.id, rec.runs) for rec in recs)
                self._claimed += len(recs)
                self._start_jobs((r.id, r, r.attempts, r.runs, False) for r in recs)
                if len(recs) == want:
                    self._not_due = 0
                    continue  # there may be more due right now
                # All that was due is taken: the rest of what was queued is not due yet
                # (what was queued during the claim counts above this).
                self._not_due = max(0, queued - len(recs))
                if not self._held and not self._wake.is_set():
                    # Nothing due, nothing running, and no notify() arrived during the claim
                    # (its jobs may have committed after the claim looked).
                    self._idle.set()
            elif not self._held and not self._wake.is_set() and not self._polled:
                self._idle.set()  # nothing queued, nothing held
            if not self._open:
                break
            await self._pause()

    # -- running one job -------------------------------------------------------------------

    def _start_jobs(self, jobs: Iterable[Claimed]) -> None:
        # Each claimed job (already counted in `_active`) is one Dispatcher job; a free
        # worker takes it on this loop turn.
        pool = self._pool
        assert pool is not None
        waiting = self._waiting
        run = self._run
        for id, job, attempts, fence, checked in jobs:
            waiting.add(id)
            # (annotated: mypy cannot infer T=None through `Awaitable[T] | T`)
            handle: Job[None] = pool.dispatch_nowait(run, id, job, attempts, fence, checked)
            del handle

    async def _run(
        self, id: int, job: JobRecord | NewJob, attempts: int, run: int, checked: bool
    ) -> None:
        # One flat function (no helper per job): this path runs a million times a minute.
        if not self._open:  # stopping: never started; stop() releases it (attempt not used)
            self._active -= 1
            return
        self._waiting.discard(id)
        if not current_worker.get():
            # The Dispatcher worker's first job: its task keeps the ID for its life, as the
            # seed's workers did, instead of a set and a reset per job.
            current_worker.set(self._slots.pop())
        t0 = time.perf_counter()
        td: TaskDef | None = None
        scope: asyncio.Timeout | None = None
        try:
            td = self._registry.get(job.task)
            if not checked:
                args = td.bind(job.args, self._registry)
            elif td.check is None:
                args = job.args  # checked at submit: `fn(**args)` copies it anyway
            else:
                # The signature was checked at submit; what the task's own check returns
                # (it may normalize) is not kept there, so it runs again.
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
            outcome = Outcome(id, self.worker_name, run, "succeeded", result)
        except (UnknownTask, SpecError) as e:
            # Unknown task, bad arguments (ours or the task's own check): no retry can help.
            outcome = self._failure(id, job, attempts, run, _describe(e), permanent=True)
        except TimeoutError as e:
            if td is not None and scope is not None and scope.expired():
                msg = f"timed out after {td.timeout:g}s"
            else:
                msg = _describe(e)
            outcome = self._failure(id, job, attempts, run, msg, permanent=False)
        except asyncio.CancelledError:
            # The grace period of a stop ended (or a hard stop): the attempt is used.
            self._record_outcome(self._interrupt(id, job, attempts, run))
            raise
        except Exception as e:
            outcome = self._failure(id, job, attempts, run, _describe(e), permanent=False)
        finally:
            self._hist.observe(time.perf_counter() - t0)
            self._active -= 1
        # Recorded after the try, not in its finally (the compiled build trusts `outcome`'s
        # narrowed type there: see scripts/check_compiled.py); a cancellation records its own.
        # `_record_outcome`, inlined: this runs once per job.
        if not self._outcomes:  # the finisher waits for an empty list to fill
            self._flush.set()
        self._outcomes.append(outcome)
        if self._store.claims_with_finish:
            pass  # the finish of this outcome claims for the worker it frees
        elif self._open and (self._polled or self._store.queued_estimate() > self._not_due):
            # A worker is free and jobs wait in the store. Not otherwise: the claimer has
            # looked and found nothing queued (a commit or notify() wakes it when that
            # changes), and a wake per job would be a task step for nothing.
            self._wake.set()

    def _record_outcome(self, outcome: Outcome) -> None:
        """The tail of `_run` for an outcome recorded on its way out (a cancellation)."""
        if not self._outcomes:
            self._flush.set()
        self._outcomes.append(outcome)
        if self._store.claims_with_finish:
            pass  # the finish of this outcome claims for the worker it frees
        elif self._open and (self._polled or self._store.queued_estimate() > self._not_due):
            self._wake.set()

    async def _in_thread(self, td: TaskDef, args: dict[str, Any]) -> Any:
        # Plain functions run on a thread, with the context (current_worker) copied.
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(ctx.run, td.fn, **args))

    def _interrupt(self, id: int, job: JobRecord | NewJob, attempts: int, run: int) -> Outcome:
        self._interrupted += 1
        why = f"interrupted: still running when the stop's grace period ({self._grace_s:g}s) ended"
        now = self._clock()
        # Queued again at once while attempts are left; dead on the last one.
        status = outcome_status(False, now, attempts, job.max_attempts)
        log.warning("job %d (%s) attempt %d/%d %s", id, job.task, attempts, job.max_attempts, why)
        return Outcome(id, self.worker_name, run, status, error=why, run_at=now)

    def _failure(
        self,
        id: int,
        job: JobRecord | NewJob,
        attempts: int,
        run: int,
        error: str,
        permanent: bool,
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
        status = outcome_status(False, retry_at, attempts, job.max_attempts, permanent)
        return Outcome(id, self.worker_name, run, status, error=error, run_at=retry_at)

    # -- the finisher and the renewer --------------------------------------------------------

    async def _finisher(self) -> None:
        while True:
            if not self._outcomes:
                if self._state is RunnerState.CLOSING:
                    return
                self._flush.clear()
                await self._flush.wait()
                continue
            batch, self._outcomes = self._outcomes, []
            want = self._ride_want()
            refused: Exception | None = None
            try:
                if want:
                    await self._finish_and_claim(batch, want)
                else:
                    await self._store.finish(batch, self._clock())
            except Exception as e:
                log.exception("could not record %d outcomes", len(batch))
                refused = e  # awaited after the except: see scripts/check_compiled.py
            if refused is not None:
                # One outcome the store cannot take must not hold back every later one
                # (they all join the batch being retried): record the batch in halves.
                left = await retry_in_halves(batch, refused, self._record, self._record_alone)
                if left:
                    # Not recorded (the store is failing): the jobs stay held (their leases
                    # renewed) and are tried again after a pause. After a stop or a crash
                    # they run again when their leases expire (at least once).
                    if self._state is RunnerState.CLOSING:
                        return
                    self._outcomes[:0] = left
                    kept = {o.id for o in left}
                    batch = [o for o in batch if o.id not in kept]
                    await asyncio.sleep(self._poll_s)
            held = self._held
            for o in batch:
                if held.get(o.id) == o.run:
                    del held[o.id]
            if not held:
                self._wake.set()  # the claimer decides whether the runner is idle

    def _ride_want(self) -> int:
        """How many jobs the next finish claims (stores with `claims_with_finish`): the
        free workers, when the store holds queued jobs beyond those the last claim left as
        not due. 0: a plain finish (the claimer claims for polls and commits)."""
        if not (self._open and self._store.claims_with_finish):
            return 0
        free = self._workers - self._active
        if free <= 0 or self._store.queued_estimate() <= self._not_due:
            return 0
        return min(free, self._claim_batch)

    async def _finish_and_claim(self, batch: list[Outcome], want: int) -> None:
        # The workers asked for are taken while the statement is under way, as the
        # claimer's are, so that a handoff committed meanwhile cannot give them away too.
        queued = self._store.queued_estimate()
        self._active += want
        try:
            recs = await self._store.finish_and_claim(
                batch, self._clock(), self.worker_name, want, self._lease_s
            )
        except BaseException:
            self._active -= want
            self._wake.set()  # the freed workers are the claimer's again (it retries at poll)
            raise
        self._active -= want - len(recs)
        self._held.update((rec.id, rec.runs) for rec in recs)
        self._claimed += len(recs)
        self._start_jobs((r.id, r, r.attempts, r.runs, False) for r in recs)
        if len(recs) == want:
            self._not_due = 0
            if self._active < self._workers:
                # More workers are free than one claim takes (`claim_batch`), and more jobs
                # may be due. Not otherwise: the claimer would take the workers the jobs just
                # started free as they end, ahead of the finish that is to claim for them.
                self._wake.set()
        else:
            self._not_due = max(0, queued - len(recs))

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
        what = "result" if o.status == "succeeded" else "error"
        why = f"the {what} could not be stored: {_describe(err)}"
        try:
            await self._record([Outcome(o.id, o.worker, o.run, "failed", error=why)])
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
