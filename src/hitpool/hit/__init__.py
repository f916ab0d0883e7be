"""hit: an HTTP/1.1 load generator with exact counts and honest latency.

    from hitpool.hit import Spec, run
    summary = run(Spec("http://127.0.0.1:8080/", requests=1000, concurrency=50))
    print(summary.to_json())     # the stable --json schema (docs/hit.md)

`run` blocks on its own uvloop loop; inside a running loop use ``await run_async(spec)``.
`send_n(spec)` yields each request's `Result` as it ends (the book's API).
"""

from typing import TYPE_CHECKING, Any

from ._errors import CannotStart, FileLimit, HitError, UsageError, WorkerLost
from .client import ERROR_KINDS, Result
from .run import run, run_async, send_n
from .spec import Spec
from .summary import Progress, Summary

if TYPE_CHECKING:
    from . import feeder
    from .pool import RequestFailed
    from .script import scenario
    from .session import ExpectationFailed, Response, Session

# What a -f script uses, imported when first asked for: a single-URL run never needs it.
_SCRIPTING = {
    "feeder": (".feeder", None),
    "RequestFailed": (".pool", "RequestFailed"),
    "scenario": (".script", "scenario"),
    "ExpectationFailed": (".session", "ExpectationFailed"),
    "Response": (".session", "Response"),
    "Session": (".session", "Session"),
}


def __getattr__(name: str) -> Any:
    found = _SCRIPTING.get(name)
    if found is None:
        raise AttributeError(f"module 'hitpool.hit' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(found[0], __name__)
    value = module if found[1] is None else getattr(module, found[1])
    globals()[name] = value
    return value


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
