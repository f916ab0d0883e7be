"""hit's errors, one tree under the library's `HitpoolError`.

    HitpoolError                     (hitpool)
    ├── SpecError                    (hitpool) bad input, named by its field (.field)
    │   └── UsageError               a bad command line: .field is the flag, .fix the fix
    └── HitError                     a load test that could not run to its end
        ├── CannotStart              the host does not resolve, or no connection was made
        │   └── FileLimit            -c needs more file descriptors than the process may open
        └── WorkerLost               a worker process (-p, isolate) exited without its result

The CLI maps them to exit codes: UsageError 2 (before the first request), HitError 1.
A request that fails is not an error here: it is counted by kind in the summary.
"""

from __future__ import annotations

from .._errors import HitpoolError, SpecError

__all__ = ["CannotStart", "FileLimit", "HitError", "SpecError", "UsageError", "WorkerLost"]


class UsageError(SpecError):
    """A bad command line: ``field`` is the flag (``-c``, ``URL``), ``fix`` says what to
    write instead, for that flag."""

    def __init__(self, flag: str, message: str, fix: str) -> None:
        super().__init__(flag, message)
        self.fix = fix


class HitError(HitpoolError):
    """A load test that could not run to its end; the message says why."""


class CannotStart(HitError):
    """The run could not start: the host does not resolve or no connection could be made."""


class FileLimit(CannotStart):
    """The connections asked for do not fit under RLIMIT_NOFILE, even raised to its hard
    limit; the message names both numbers and the fix."""


class WorkerLost(HitError):
    """A worker process (-p, or any with ``isolate``) exited without sending its results;
    the message names it, its pid and why (its exit status or the signal that killed it)."""
