"""hitpool: a bounded worker-pool dispatcher for asyncio and threads, `hit` and `hitd`."""

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

__version__ = "0.1.0"

__all__ = [
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
