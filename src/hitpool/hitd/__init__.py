"""hitd: the durable HTTP job server. POST jobs, get a 202 once they are committed; a fixed
pool of workers runs them, at least once, with leases, retries and a graceful drain.

    hitd --workers 16 --store sqlite:///./hitd.db --tasks myapp.jobs

A task module registers its functions with `task` (``hitpool.task`` is the same decorator)::

    from hitpool.hitd import task

    @task(timeout=10)
    async def resize(path: str) -> None: ...

In-process (tests, embedding)::

    from hitpool.hitd import Hitd, ServerConfig
    server = Hitd(ServerConfig(port=0, store="memory://"))
    await server.start(); ...; await server.stop()

`task` and the errors (`hitpool.hitd.errors`) are light and imported at once; the server's
names are imported on first use, so a task module that imports `task` does not load the
HTTP server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import StoreError, StoreUnavailable, TaskError, UnknownTask
from .tasks import task

if TYPE_CHECKING:
    from .server import DEFAULT_STORE, Hitd, ServerConfig, run

_SERVER_NAMES = ("DEFAULT_STORE", "Hitd", "ServerConfig", "run")

__all__ = [
    "DEFAULT_STORE",
    "Hitd",
    "ServerConfig",
    "StoreError",
    "StoreUnavailable",
    "TaskError",
    "UnknownTask",
    "run",
    "task",
]


def __getattr__(name: str) -> Any:
    if name in _SERVER_NAMES:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
