"""hit: an HTTP/1.1 load generator with exact counts and honest latency.

    from hitpool.hit import Spec, run
    summary = run(Spec("http://127.0.0.1:8080/", requests=1000, concurrency=50))
    print(summary.to_json())     # the stable --json schema (docs/hit.md)

`run` blocks on its own uvloop loop; inside a running loop use ``await run_async(spec)``.
`send_n(spec)` yields each request's `Result` as it ends (the book's API).
"""

from . import feeder
from ._errors import CannotStart, FileLimit, HitError, UsageError, WorkerLost
from .client import ERROR_KINDS, Result
from .pool import RequestFailed
from .run import run, run_async, send_n
from .scenario import scenario
from .session import ExpectationFailed, Response, Session
from .spec import Spec
from .summary import Progress, Summary

__all__ = [
    "ERROR_KINDS",
    "CannotStart",
    "FileLimit",
    "HitError",
    "ExpectationFailed",
    "Progress",
    "RequestFailed",
    "Response",
    "Result",
    "Session",
    "Spec",
    "Summary",
    "UsageError",
    "WorkerLost",
    "feeder",
    "run",
    "run_async",
    "scenario",
    "send_n",
]
