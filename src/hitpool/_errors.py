"""The library's error tree. Every error the library raises on purpose derives from
`HitpoolError`:

* HitpoolError
  * QueueFull          dispatch_nowait() found queue_size jobs queued
  * DispatcherClosed   a dispatch to a draining or closed pool (after stop(), the block,
                       or a fail_fast failure); start() after stop()
  * JobCancelled       await job / job.result() of a cancelled job (keeps .job)
  * SpecError          bad input, named by the flag or field it came from, with the fix
                       (keeps .field); also a ValueError

A job's own exception is never wrapped: ``await job`` re-raises it as it was raised, as
`concurrent.futures.Future.result()` does. A dispatch to a pool that was never started is a
programming error and raises RuntimeError.

The two programs add their own branches under `HitpoolError`, in their own packages:
`hitpool.hitd.errors` (the store's and the tasks' errors) and hit's (`hitpool.hit`). The
library imports neither.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DispatcherClosed", "HitpoolError", "JobCancelled", "QueueFull", "SpecError"]


class HitpoolError(Exception):
    """Base of every error hitpool raises on purpose."""


class QueueFull(HitpoolError):
    """The dispatcher's queue holds `queue_size` jobs; `dispatch_nowait` does not wait."""


class DispatcherClosed(HitpoolError):
    """The dispatcher was stopped (or its block left); it takes no more jobs."""


class JobCancelled(HitpoolError):
    """The job was cancelled before it finished."""

    def __init__(self, job: Any, message: str = "job was cancelled") -> None:
        super().__init__(message)
        self.job = job


class SpecError(HitpoolError, ValueError):
    """Bad input, named by the flag or field it came from, with the fix in the message."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
