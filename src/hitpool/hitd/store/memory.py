"""memory:// — the seeds' behaviour: jobs live in this process and die with it.

Same contract as the durable stores (the shared suite runs on it), kept in plain dicts and
heaps: a heap of (run_at, id) for queued jobs and one of (lease_until, id) for running ones.
Heap entries are not removed when a job moves on; a popped entry that no longer matches the
job is skipped (lazy deletion keeps every operation O(log n)).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from typing import Any, ClassVar

from ..lifecycle import exhausted, is_final, outcome_status
from .base import EXPIRED, STATUSES, JobRecord, JobStatus, NewJob, Outcome, Store


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
        )


class MemoryStore(Store):
    """In-process store. Not durable: its help and docs say that jobs die with the process."""

    durable: ClassVar[bool] = False

    def __init__(self, keep_finished: int = 100_000) -> None:
        """`keep_finished`: how many finished jobs stay readable with get(); older ones are
        forgotten so that a long-running server's memory stays bounded (counts() still
        counts them)."""
        self._keep_finished = max(0, keep_finished)
        self._finished: deque[int] = deque()
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
        if is_final(status):
            self._finished.append(job.id)
            while len(self._finished) > self._keep_finished:
                self._jobs.pop(self._finished.popleft(), None)
        if (
            status not in ("queued", "running")
            and job.key is not None
            and self._keys.get(job.key) == job.id
        ):
            del self._keys[job.key]

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
        seen: set[int] = set()
        while self._leases and self._leases[0][0] <= now:
            until, id = heapq.heappop(self._leases)
            job = self._jobs.get(id)
            if job is None or job.status != "running" or job.lease_until != until or id in seen:
                continue  # stale entry (finished, released, renewed since) or a duplicate
            seen.add(id)
            if exhausted(job.attempts, job.max_attempts):
                self._move(job, "dead")
                job.error = f"lease expired on attempt {job.attempts} of {job.max_attempts}"
                job.finished_at = now
                job.lease_until = None
                continue
            expired.append((until, id, job))
        for until, id, _ in expired[limit:]:
            heapq.heappush(self._leases, (until, id))
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
            if job is None:
                continue  # lease lost: a newer attempt owns the job now
            status = outcome_status(o.ok, o.retry_at, job.attempts, job.max_attempts, o.permanent)
            job.result = o.result if o.ok else None
            job.error = o.error
            job.lease_until = None
            if status == "queued":
                assert o.retry_at is not None
                self._move(job, "queued")
                job.run_at = o.retry_at
                job.worker = None
                heapq.heappush(self._due, (job.run_at, job.id))
            else:
                self._move(job, status)
                job.finished_at = now

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
        self._move(job, "cancelled")
        job.finished_at = now
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
