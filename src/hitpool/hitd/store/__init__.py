"""Job stores: one contract (`base.Store`), backends picked by URL and imported lazily."""

from .base import (
    ACTIVE,
    EXPIRED,
    FINISHED,
    STATUSES,
    JobRecord,
    JobStatus,
    NewJob,
    Outcome,
    Store,
)

__all__ = [
    "ACTIVE",
    "EXPIRED",
    "FINISHED",
    "STATUSES",
    "JobRecord",
    "JobStatus",
    "NewJob",
    "Outcome",
    "Store",
]
