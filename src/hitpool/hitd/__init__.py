"""hitd: the durable HTTP job server. POST jobs, get a 202 once they are committed; a fixed
pool of workers runs them, at least once, with leases, retries and a graceful drain.

    hitd --workers 16 --store sqlite:///./hitd.db --tasks myapp.jobs

In-process (tests, embedding)::

    from hitpool.hitd import Hitd, ServerConfig
    server = Hitd(ServerConfig(port=0, store="memory://"))
    await server.start(); ...; await server.stop()

The names below are imported lazily: `hitpool.hitd.tasks` (what `@hitpool.task` uses) must
stay light, and importing this package must not pull in the HTTP server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import DEFAULT_STORE, Hitd, ServerConfig, run

__all__ = ["DEFAULT_STORE", "Hitd", "ServerConfig", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
