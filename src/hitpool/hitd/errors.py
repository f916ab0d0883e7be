"""hitd's errors, under the library's `HitpoolError`:

* HitpoolError (hitpool._errors)
  * StoreError          the job store failed
    * StoreUnavailable  the store cannot be reached or opened
  * TaskError           a task definition or lookup went wrong
    * UnknownTask       no task is registered under that name (keeps .task)

Bad input to hitd (a flag, a job's field) raises the library's `SpecError`, which names the
field and the fix; the HTTP API answers it with a 4xx naming the field.
"""

from __future__ import annotations

from .._errors import HitpoolError

__all__ = ["StoreError", "StoreUnavailable", "TaskError", "UnknownTask"]


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
