"""hitpool: a bounded worker-pool dispatcher for asyncio and threads, with the `hit` load
generator (`hitpool.hit`) and the `hitd` durable job server (`hitpool.hitd`) built on it.

    async with hitpool.Dispatcher(workers=8, queue_size=64) as pool:
        job = await pool.dispatch(fetch, url)      # waits while the queue is full
        print(await job)
"""

from . import pipeline
from ._core import DispatcherStatistics, JobStatus
from ._errors import (
    DispatcherClosed,
    HitpoolError,
    JobCancelled,
    QueueFull,
    SpecError,
    StoreError,
    StoreUnavailable,
    TaskError,
    UnknownTask,
)
from .dispatcher import Dispatcher, Job
from .hitd.tasks import task
from .schedule import OpenSchedule
from .threads import ThreadDispatcher, ThreadJob

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
    "StoreError",
    "StoreUnavailable",
    "TaskError",
    "ThreadDispatcher",
    "ThreadJob",
    "UnknownTask",
    "__version__",
    "pipeline",
    "task",
]
