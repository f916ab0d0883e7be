"""hitpool: a bounded worker-pool dispatcher for asyncio and threads.

    async with hitpool.Dispatcher(workers=8, queue_size=64) as pool:
        job = await pool.dispatch(fetch, url)      # waits while the queue is full
        print(await job)

Two programs live in the same distribution and build on this library, never the other
way round: `hitpool.hit`, the load generator (it shares the pacing, `OpenSchedule`, and
the error base), and `hitpool.hitd`, the durable job server (its runner runs jobs on a
`Dispatcher`). ``import hitpool`` loads neither (docs/design.md draws the layers).

``hitpool.task`` is an alias of `hitpool.hitd.task`, the decorator that registers a hitd
task; it is imported on first use, so a program that never touches it never loads hitd.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import pipeline
from ._core import DispatcherStatistics, JobStatus
from ._errors import DispatcherClosed, HitpoolError, JobCancelled, QueueFull, SpecError
from .dispatcher import Dispatcher, Job
from .schedule import OpenSchedule
from .threads import ThreadDispatcher, ThreadJob

if TYPE_CHECKING:
    from .hitd.tasks import task as task  # the lazy alias below, for type checkers

__version__ = "0.1.0"

__all__ = [
    "Dispatcher",
    "DispatcherClosed",
    "DispatcherStatistics",
    "HitpoolError",
    "Job",
    "JobCancelled",
    "JobStatus",
    "OpenSchedule",
    "QueueFull",
    "SpecError",
    "ThreadDispatcher",
    "ThreadJob",
    "__version__",
    "pipeline",
]


def __getattr__(name: str) -> Any:
    if name == "task":  # the alias, imported when first asked for (see the docstring)
        from .hitd.tasks import task

        return task
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
