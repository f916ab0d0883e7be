"""What hitd counts, and the Prometheus text format of it. Pure: no clock, no I/O.

The HTTP side counts what it accepted and refused (`HttpCounters`, mutated only on the event
loop); the worker side's numbers arrive as a plain snapshot (`WorkerNumbers`). `render()`
turns both into the text exposition format 0.0.4 that Prometheus scrapes.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_BUCKETS",
    "HistogramSnapshot",
    "HttpCounters",
    "RunTimeHistogram",
    "WorkerNumbers",
    "render",
]

# Job run times span a no-op (microseconds) to a load test (minutes).
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    buckets: tuple[float, ...]  # upper bounds, ascending, +Inf implied
    counts: tuple[int, ...]  # per bucket (not cumulative), len(buckets) + 1
    total: float  # sum of observed values

    @property
    def count(self) -> int:
        return sum(self.counts)


class RunTimeHistogram:
    """Counts of observed durations per bucket, for a Prometheus histogram."""

    __slots__ = ("_buckets", "_counts", "_sum")

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError("buckets must be ascending and distinct")
        self._buckets = tuple(buckets)
        self._counts = [0] * (len(buckets) + 1)
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to an upper bound belongs to that bucket (le = "<=").
        self._counts[bisect.bisect_left(self._buckets, seconds)] += 1
        self._sum += seconds

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(self._buckets, tuple(self._counts), self._sum)


@dataclass(slots=True)
class HttpCounters:
    """What the HTTP side accepted and refused. Mutated on the event loop only."""

    accepted: int = 0  # jobs committed and answered 202/201 (new jobs)
    deduplicated: int = 0  # jobs answered with the id of an active job with the same key
    rejected: dict[int, int] = field(default_factory=dict)  # job POSTs refused, by status

    def reject(self, status: int, n: int = 1) -> None:
        self.rejected[status] = self.rejected.get(status, 0) + n


@dataclass(frozen=True, slots=True)
class WorkerNumbers:
    """The worker side (and retention's count) at one instant."""

    workers: int
    busy: int
    queued: int  # jobs waiting in the store (the 429 estimate)
    in_flight: int  # jobs received but not yet committed
    completed: int  # attempts that succeeded
    failed: int  # attempts that failed (retried or not)
    run_time: HistogramSnapshot | None
    purged: int = 0  # finished jobs deleted by retention since start


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _metric(lines: list[str], name: str, kind: str, help_: str) -> None:
    lines.append(f"# HELP {name} {help_}")
    lines.append(f"# TYPE {name} {kind}")


def _histogram(lines: list[str], name: str, snap: HistogramSnapshot) -> None:
    cumulative = 0
    for bound, n in zip(snap.buckets, snap.counts, strict=False):
        cumulative += n
        lines.append(f'{name}_bucket{{le="{_fmt(bound)}"}} {cumulative}')
    cumulative += snap.counts[-1]
    lines.append(f'{name}_bucket{{le="+Inf"}} {cumulative}')
    lines.append(f"{name}_sum {_fmt(snap.total)}")
    lines.append(f"{name}_count {cumulative}")


def render(http: HttpCounters, workers: WorkerNumbers, draining: bool) -> str:
    """The Prometheus text exposition (format 0.0.4) of both sides."""
    lines: list[str] = []
    _metric(lines, "hitd_jobs_accepted_total", "counter", "Jobs committed and answered 202/201.")
    lines.append(f"hitd_jobs_accepted_total {http.accepted}")
    _metric(
        lines,
        "hitd_jobs_deduplicated_total",
        "counter",
        "Jobs answered with the id of an active job with the same key.",
    )
    lines.append(f"hitd_jobs_deduplicated_total {http.deduplicated}")
    _metric(
        lines,
        "hitd_requests_rejected_total",
        "counter",
        "Job submissions (POST /jobs, POST /work) refused, by HTTP status.",
    )
    for code in sorted(http.rejected):
        lines.append(f'hitd_requests_rejected_total{{code="{code}"}} {http.rejected[code]}')
    _metric(lines, "hitd_jobs_completed_total", "counter", "Job attempts that succeeded.")
    lines.append(f"hitd_jobs_completed_total {workers.completed}")
    _metric(lines, "hitd_jobs_failed_total", "counter", "Job attempts that failed.")
    lines.append(f"hitd_jobs_failed_total {workers.failed}")
    _metric(
        lines,
        "hitd_jobs_purged_total",
        "counter",
        "Finished jobs deleted because they were older than --retention.",
    )
    lines.append(f"hitd_jobs_purged_total {workers.purged}")
    _metric(lines, "hitd_queue_depth", "gauge", "Jobs waiting: queued in the store.")
    lines.append(f"hitd_queue_depth {workers.queued}")
    _metric(lines, "hitd_intake_in_flight", "gauge", "Jobs received, not yet committed.")
    lines.append(f"hitd_intake_in_flight {workers.in_flight}")
    _metric(lines, "hitd_workers", "gauge", "Worker slots.")
    lines.append(f"hitd_workers {workers.workers}")
    _metric(lines, "hitd_workers_busy", "gauge", "Workers running a job.")
    lines.append(f"hitd_workers_busy {workers.busy}")
    _metric(lines, "hitd_draining", "gauge", "1 while the server drains after SIGTERM.")
    lines.append(f"hitd_draining {int(draining)}")
    if workers.run_time is not None:
        _metric(lines, "hitd_job_run_seconds", "histogram", "Run time of job attempts, in seconds.")
        _histogram(lines, "hitd_job_run_seconds", workers.run_time)
    return "\n".join(lines) + "\n"
