"""memory:// — the seeds' behaviour: jobs live in this process and die with it.

Same contract as the durable stores (the shared suite runs on it), kept in plain dicts and
heaps: a heap of (run_at, id) for queued jobs and one of (lease_until, id) for running ones.
Heap entries are not removed when a job moves on; a popped entry that no longer matches the
job is skipped (lazy deletion keeps every operation O(log n)).

To stay bounded it keeps only the newest `keep_finished` finished jobs readable. Older ones
are forgotten but still counted, tallied per minute of finishing (`_Forgotten`), so that
`purge` uncounts them too once they are older than `before`, as a durable store deletes them.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..lifecycle import exhausted
from ._codec import result_json
from .base import (
    EXPIRED,
    RETRYABLE,
    STATUSES,
    DeleteOutcome,
    JobPage,
    JobQuery,
    JobRecord,
    JobStatus,
    NewJob,
    Outcome,
    RetryOutcome,
    Store,
    page_of,
    pick_retries,
    stored_chars,
)


class _Job:
    """The mutable row behind a JobRecord."""

    __slots__ = (
        "args",
        "attempts",
        "created_at",
        "error",
        "finished_at",
        "id",
        "key",
        "lease_until",
        "max_attempts",
        "result",
        "run_at",
        "runs",
        "started_at",
        "status",
        "task",
        "worker",
    )

    def __init__(self, id: int, job: NewJob, now: float) -> None:
        self.id = id
        self.task = job.task
        self.args = job.args
        self.status: JobStatus = "queued"
        self.attempts = 0
        self.runs = 0  # claims so far: only `_take` moves it (the fence of a finish)
        self.max_attempts = job.max_attempts
        self.result: Any = None
        self.error: str | None = None
        self.created_at = now
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.run_at = now if job.run_at is None else job.run_at
        self.key = job.key
        self.lease_until: float | None = None
        self.worker: str | None = None

    def record(self) -> JobRecord:
        return JobRecord(
            id=self.id,
            task=self.task,
            args=self.args,
            status=self.status,
            attempts=self.attempts,
            max_attempts=self.max_attempts,
            result=self.result,
            error=self.error,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            run_at=self.run_at,
            key=self.key,
            lease_until=self.lease_until,
            worker=self.worker,
            runs=self.runs,
        )


@dataclass(slots=True)
class _Minute:
    """Forgotten jobs that finished within a minute of `start`, by status."""

    start: float
    until: float  # the latest finished_at among them
    counts: dict[str, int] = field(default_factory=dict)


class _Forgotten:
    """The statuses of forgotten finished jobs, per minute of finishing, oldest first: what
    `purge` needs to uncount them, in a few hundred bytes a minute instead of a record per job."""

    WIDTH_S = 60.0
    # Two weeks of minutes. Without purges (no retention) the oldest minutes merge instead
    # of growing without bound; a retention longer than this then uncounts them late.
    MAX_MINUTES = 20_160

    def __init__(self) -> None:
        self._minutes: deque[_Minute] = deque()

    def add(self, status: str, finished_at: float) -> None:
        m = self._minutes[-1] if self._minutes else None
        # A time before the current minute (a clock stepped back) joins it: kept, never lost.
        if m is None or finished_at >= m.start + self.WIDTH_S:
            m = _Minute(finished_at, finished_at)
            self._minutes.append(m)
            if len(self._minutes) > self.MAX_MINUTES:
                oldest = self._minutes.popleft()
                self._merge(oldest, self._minutes[0])
        m.until = max(m.until, finished_at)
        m.counts[status] = m.counts.get(status, 0) + 1

    @staticmethod
    def _merge(old: _Minute, into: _Minute) -> None:
        into.start, into.until = old.start, max(old.until, into.until)
        for status, n in old.counts.items():
            into.counts[status] = into.counts.get(status, 0) + n

    def purge(self, before: float, limit: int) -> dict[str, int]:
        """Take up to `limit` jobs of the minutes that ended before `before`; by status."""
        taken: dict[str, int] = {}
        n = 0
        while self._minutes and n < limit and self._minutes[0].until < before:
            counts = self._minutes[0].counts
            for status in list(counts):
                if n >= limit:
                    break
                k = min(counts[status], limit - n)
                taken[status] = taken.get(status, 0) + k
                n += k
                counts[status] -= k
                if counts[status] == 0:
                    del counts[status]
            if not counts:
                self._minutes.popleft()
        return taken


class MemoryStore(Store):
    """In-process store. Not durable: its help and docs say that jobs die with the process."""

    durable: ClassVar[bool] = False

    def __init__(self, keep_finished: int = 100_000) -> None:
        """`keep_finished`: how many finished jobs stay readable with get(); older ones are
        forgotten so that a long-running server's memory stays bounded (counts() still
        counts them until `purge` would have deleted them)."""
        self._keep_finished = max(0, keep_finished)
        self._finished: deque[int] = deque()  # ids of the finished jobs held, as they finished
        self._forgotten = _Forgotten()
        self._jobs: dict[int, _Job] = {}
        self._next_id = 1
        self._keys: dict[str, int] = {}  # key -> id of the ACTIVE job holding it
        self._due: list[tuple[float, int]] = []  # (run_at, id) of queued jobs, lazily pruned
        self._leases: list[tuple[float, int]] = []  # (lease_until, id) of running jobs, ditto
        self._counts: dict[str, int] = dict.fromkeys(STATUSES, 0)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _move(self, job: _Job, status: JobStatus) -> None:
        self._counts[job.status] -= 1
        self._counts[status] += 1
        job.status = status
        if (
            status not in ("queued", "running")
            and job.key is not None
            and self._keys.get(job.key) == job.id
        ):
            del self._keys[job.key]

    def _end(self, job: _Job, status: JobStatus, now: float | None) -> None:
        """A final move: `job` is finished at `now`; the oldest finished jobs beyond
        `keep_finished` are forgotten."""
        self._move(job, status)
        job.finished_at = now
        self._finished.append(job.id)
        while len(self._finished) > self._keep_finished:
            old = self._jobs.pop(self._finished.popleft())
            if old.finished_at is not None:  # else never purged: counted for good, like a row
                self._forgotten.add(old.status, old.finished_at)

    async def enqueue(self, jobs: Sequence[NewJob], now: float) -> list[tuple[int, bool]]:
        out: list[tuple[int, bool]] = []
        for new in jobs:
            if new.key is not None and (held := self._keys.get(new.key)) is not None:
                out.append((held, False))
                continue
            job = _Job(self._next_id, new, now)
            self._next_id += 1
            self._jobs[job.id] = job
            self._counts["queued"] += 1
            heapq.heappush(self._due, (job.run_at, job.id))
            if new.key is not None:
                self._keys[new.key] = job.id
            out.append((job.id, True))
        return out

    def _take(self, job: _Job, worker: str, now: float, lease_s: float) -> JobRecord:
        self._move(job, "running")
        job.attempts += 1
        job.runs += 1
        job.worker = worker
        job.started_at = now
        job.lease_until = now + lease_s
        heapq.heappush(self._leases, (job.lease_until, job.id))
        return job.record()

    async def claim(self, worker: str, limit: int, now: float, lease_s: float) -> list[JobRecord]:
        out: list[JobRecord] = []
        # Expired leases first: those jobs were due before anything still queued. Every
        # expired job on its last attempt becomes dead now, whatever the limit (as the SQL
        # stores do); the others beyond the limit go back on the heap.
        expired: list[tuple[float, int, _Job]] = []
        mine: list[tuple[float, int]] = []  # the claimer's own: never taken (see Store.claim)
        seen: set[int] = set()
        while self._leases and self._leases[0][0] <= now:
            until, id = heapq.heappop(self._leases)
            job = self._jobs.get(id)
            if job is None or job.status != "running" or job.lease_until != until or id in seen:
                continue  # stale entry (finished, released, renewed since) or a duplicate
            seen.add(id)
            if job.worker == worker:
                mine.append((until, id))
                continue
            if exhausted(job.attempts, job.max_attempts):
                job.error = f"lease expired on attempt {job.attempts} of {job.max_attempts}"
                job.lease_until = None
                self._end(job, "dead", now)
                continue
            expired.append((until, id, job))
        for until, id, _ in expired[limit:]:
            heapq.heappush(self._leases, (until, id))
        for entry in mine:
            heapq.heappush(self._leases, entry)
        for _, _, job in expired[:limit]:
            out.append(self._take(job, worker, now, lease_s))
        while self._due and len(out) < limit and self._due[0][0] <= now:
            run_at, id = heapq.heappop(self._due)
            job = self._jobs.get(id)
            if job is None or job.status != "queued" or job.run_at != run_at:
                continue
            out.append(self._take(job, worker, now, lease_s))
        return out

    def _held(self, id: int, worker: str) -> _Job | None:
        job = self._jobs.get(id)
        if job is None or job.status != "running" or job.worker != worker:
            return None
        return job

    async def renew(self, ids: Sequence[int], worker: str, now: float, lease_s: float) -> None:
        for id in ids:
            if (job := self._held(id, worker)) is not None:
                job.lease_until = now + lease_s
                heapq.heappush(self._leases, (job.lease_until, id))

    async def finish(self, outcomes: Sequence[Outcome], now: float) -> None:
        for o in outcomes:
            job = self._held(o.id, o.worker)
            if job is None or job.runs != o.run:
                continue  # lease lost: a newer run owns the job now
            job.result = o.result if o.status == "succeeded" else None
            job.error = o.error
            job.lease_until = None
            if o.status == "queued":
                assert o.run_at is not None
                self._move(job, "queued")
                job.run_at = o.run_at
                job.worker = None
                heapq.heappush(self._due, (job.run_at, job.id))
            else:
                self._end(job, o.status, now)

    async def release(self, ids: Sequence[int], worker: str) -> None:
        for id in ids:
            if (job := self._held(id, worker)) is None:
                continue
            self._move(job, "queued")
            job.attempts -= 1
            job.worker = None
            job.lease_until = None
            job.started_at = None
            heapq.heappush(self._due, (job.run_at, job.id))

    async def get(self, id: int) -> JobRecord | None:
        job = self._jobs.get(id)
        return None if job is None else job.record()

    async def cancel(self, id: int, now: float | None = None) -> bool:
        job = self._jobs.get(id)
        if job is None or job.status != "queued":
            return False
        self._end(job, "cancelled", now)
        return True

    async def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def queued_estimate(self) -> int:
        return self._counts["queued"]

    async def holders(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for job in self._jobs.values():
            if job.status == "running" and job.worker is not None:
                out[job.worker] = out.get(job.worker, 0) + 1
        return out

    async def expire(self, worker: str) -> int:
        n = 0
        for job in self._jobs.values():
            if job.status == "running" and job.worker == worker:
                job.lease_until = EXPIRED
                heapq.heappush(self._leases, (EXPIRED, job.id))
                n += 1
        return n

    async def purge(self, before: float, limit: int) -> int:
        # Forgotten jobs first: they finished before every job still held.
        n = 0
        for status, k in self._forgotten.purge(before, limit).items():
            self._counts[status] -= k
            n += k
        if n >= limit:
            return n
        # A scan of the finished jobs held (at most keep_finished): this store lives in
        # memory, and a purge runs once a minute. The newest job is kept, as by SQLite.
        newest = self._next_id - 1
        old = [
            id
            for id in self._finished
            if (t := self._jobs[id].finished_at) is not None and t < before and id != newest
        ]
        if not old:
            return n
        gone = set(heapq.nsmallest(limit - n, old))  # lowest ids first, as the SQL stores
        self._finished = deque(id for id in self._finished if id not in gone)
        for id in gone:
            self._counts[self._jobs.pop(id).status] -= 1
        return n + len(gone)

    # -- administration (see Store) -----------------------------------------------------

    async def list_jobs(self, query: JobQuery) -> JobPage:
        matched: list[JobRecord] = []
        scanned, lowest, chars = 0, None, 0
        for id in reversed(self._jobs):  # ids are inserted in increasing order
            if query.before is not None and id >= query.before:
                continue
            if scanned >= query.scan or len(matched) >= query.limit:
                break
            scanned += 1
            lowest = id
            job = self._jobs[id]
            args = result_json(job.args) if query.q else ""
            if query.matches(job.status, job.task, args):
                matched.append(job.record())
                result = None if job.result is None else result_json(job.result)
                chars += stored_chars(args or result_json(job.args), result, job.error)
                if chars >= query.max_chars:
                    break
        return page_of(query, matched, scanned, lowest, chars)

    def _requeue(self, job: _Job, now: float) -> None:
        """A failed or dead job back to queued, due now, with fresh attempts. The caller
        takes it off `_finished`."""
        self._move(job, "queued")
        if job.key is not None:
            self._keys[job.key] = job.id
        job.attempts = 0
        job.result = None
        job.started_at = job.finished_at = None
        job.run_at = now
        heapq.heappush(self._due, (now, job.id))

    async def retry(self, id: int, now: float) -> RetryOutcome:
        job = self._jobs.get(id)
        if job is None:
            return "missing"
        if job.status == "queued":
            if job.run_at > now:
                job.run_at = now
                heapq.heappush(self._due, (now, id))
            return "retried"
        if job.status not in RETRYABLE or (job.key is not None and job.key in self._keys):
            return "refused"
        self._finished.remove(id)
        self._requeue(job, now)
        return "retried"

    async def retry_all(self, status: JobStatus, now: float, limit: int) -> int:
        if status not in RETRYABLE or limit <= 0:
            return 0
        rows = [(j.id, j.key) for j in self._jobs.values() if j.status == status]
        ids = pick_retries(sorted(rows)[:limit], set(self._keys))
        gone = set(ids)  # off `_finished` in one pass, not one deque.remove() per job
        self._finished = deque(id for id in self._finished if id not in gone)
        for id in ids:
            self._requeue(self._jobs[id], now)
        return len(ids)

    async def delete(self, id: int) -> DeleteOutcome:
        job = self._jobs.get(id)
        if job is None:
            return "missing"
        if job.status in ("queued", "running"):
            return "active"
        if id == self._next_id - 1:
            return "newest"
        self._finished.remove(id)
        del self._jobs[id]
        self._counts[job.status] -= 1
        return "deleted"

    async def oldest_due(self, now: float) -> float | None:
        due = self._due
        while due:  # drop stale entries off the top (lazy deletion, as in claim)
            run_at, id = due[0]
            job = self._jobs.get(id)
            if job is not None and job.status == "queued" and job.run_at == run_at:
                return run_at if run_at <= now else None
            heapq.heappop(due)
        return None
