"""The job lifecycle: pure rules, no clock, no I/O. Times and random draws come in as arguments.

    enqueue ──> queued ──claim──> running ──ok──────────────> succeeded
                  │ ^                │ │ └─error, attempts left──> queued (run_at = now + backoff)
           cancel │ │ release /      │ └──error, attempts used──> dead
                  v │ lease expired  └────permanent error────────> failed
              cancelled  (attempt not counted on release; counted when the lease expired,
                          and when a stop's grace period ended with the job still running)

`queued` holds every job that has not started: shown as `scheduled` while it is not due
(`store.base.shown_status`), and cancellable until it starts.

- `attempts` counts claims: it is incremented when a worker takes the job (a runner claims
  only into free workers, so a claimed job starts at once), and a job whose worker died
  mid-run shows attempts == 2 on its second run. `release` gives the attempt back to a job
  claimed that never started (graceful shutdown); a job cancelled at the end of the grace
  period has used its attempt, and runs again only while attempts are left.
- The runner decides how an attempt ends (`outcome_status`) and the store writes that
  status, fenced by the run number (`runs`, which only claims move: an admin retry resets
  `attempts`, a release gives one back): rules in one place, not in each backend's SQL.
- A failure is retried while `attempts < max_attempts`; the retry waits an exponential backoff
  with jitter. When the attempts are used up the job is `dead`. A permanent failure (bad
  arguments, unknown task) is `failed` at once, without using up the attempts.
- A running job whose lease ran out (its worker died or hung) is claimed again; if it has used
  all its attempts it becomes `dead` instead, so a job that kills its worker cannot loop forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .store.base import JobStatus, OutcomeStatus

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    "queued": frozenset({"running", "cancelled"}),
    # running -> running: the lease expired and another worker claimed the job.
    # running -> queued: a retry after backoff, or a release on graceful shutdown.
    "running": frozenset({"running", "queued", "succeeded", "failed", "dead"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "dead": frozenset(),
    "cancelled": frozenset(),
}


def can_transition(old: JobStatus, new: JobStatus) -> bool:
    """True when a job may go from `old` to `new`."""
    return new in TRANSITIONS[old]


def is_final(status: JobStatus) -> bool:
    """A finished job never changes again."""
    return not TRANSITIONS[status]


def exhausted(attempts: int, max_attempts: int) -> bool:
    """The job has used every attempt it was given."""
    return attempts >= max_attempts


def final_failure(attempts: int, max_attempts: int) -> Literal["dead", "failed"]:
    """Status of a failure that is not retried: dead when the attempts are used up, else failed
    (a permanent error cut the attempts short)."""
    return "dead" if exhausted(attempts, max_attempts) else "failed"


def lease_expired(lease_until: float | None, now: float) -> bool:
    """A running job's lease has run out at `now` (its worker is presumed dead)."""
    return lease_until is not None and lease_until <= now


def backoff(attempt: int, base: float, cap: float, rand: float) -> float:
    """Delay before retry number `attempt` (1 = the first retry), in seconds.

    Exponential, capped, with "equal jitter": half the step is fixed and half random. Unlike
    full jitter (0..step) a retry never comes back at once, and jobs that failed together
    (a downstream outage) still spread out instead of retrying in lockstep.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    if not 0.0 <= rand < 1.0:
        raise ValueError("rand must be in [0, 1)")
    # min() before the power would overflow: 2**1100 is fine for ints but not for floats.
    step = cap if attempt > 64 else min(cap, base * 2.0 ** (attempt - 1))
    return step / 2.0 + step / 2.0 * rand


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How failures are retried: backoff(base, cap) seconds, up to the job's max_attempts."""

    base: float = 1.0
    cap: float = 300.0

    def retry_at(self, attempts: int, max_attempts: int, now: float, rand: float) -> float | None:
        """When a job that failed on attempt `attempts` runs again, or None if it does not."""
        if exhausted(attempts, max_attempts):
            return None
        return now + backoff(attempts, self.base, self.cap, rand)


def outcome_status(
    ok: bool, retry_at: float | None, attempts: int, max_attempts: int, permanent: bool = False
) -> OutcomeStatus:
    """The status a job takes when its attempt number `attempts` ends: the one place this is
    decided. The runner puts it in the `Outcome`; stores only write it."""
    if ok:
        return "succeeded"
    if permanent:
        return "failed"
    # A retry asked for on the last attempt is refused: attempts never pass max_attempts.
    if retry_at is not None and not exhausted(attempts, max_attempts):
        return "queued"
    return final_failure(attempts, max_attempts)
