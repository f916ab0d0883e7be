"""hitpool: a bounded worker-pool dispatcher for asyncio and threads, `hit` and `hitd`."""

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
from .schedule import OpenSchedule
from .threads import ThreadDispatcher, ThreadJob

__version__ = "0.1.0"

__all__ = [
    "Dispatcher",
    "DispatcherStatistics",
    "Job",
    "JobStatus",
    "OpenSchedule",
    "ThreadDispatcher",
    "ThreadJob",
    "pipeline",
    "DispatcherClosed",
    "HitpoolError",
    "JobCancelled",
    "QueueFull",
    "SpecError",
    "StoreError",
    "StoreUnavailable",
    "TaskError",
    "UnknownTask",
    "__version__",
]
