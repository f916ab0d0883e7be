"""The error tree. Every error hitpool raises on purpose derives from `HitpoolError`.

    HitpoolError
    ├── QueueFull            dispatch_nowait() found the queue at queue_size
    ├── DispatcherClosed     dispatch after stop() or after leaving the block
    ├── JobCancelled         awaiting / .result() of a job that was cancelled (keeps .job)
    ├── SpecError            bad input for a load test or a job (keeps .field, the flag or field)
    ├── StoreError           the job store failed
    │   └── StoreUnavailable the store cannot be reached or opened
    └── TaskError
        └── UnknownTask      no task registered under that name (keeps .task)

A job's own exception is never wrapped: `await job` re-raises it as it was raised, as
`concurrent.futures.Future.result()` does.
"""

from __future__ import annotations

from typing import Any


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


class StoreError(HitpoolError):
    """The job store failed."""


class StoreUnavailable(StoreError):
    """The job store cannot be reached or opened."""


class TaskError(HitpoolError):
    """A problem with a task definition or lookup."""


class UnknownTask(TaskError):
    """No task is registered under this name."""

    def __init__(self, task: str) -> None:
        super().__init__(f"unknown task {task!r}")
        self.task = task
