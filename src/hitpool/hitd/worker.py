"""`hitd worker`: a process of workers only, on a store shared with the intakes.

    startup:  store.open -> Runner.start -> "hitd worker running ..."
    SIGTERM:  runner.stop(grace): claim no more, jobs not started are released, running jobs
              get `grace` s, those still running after it have used their attempt
              -> store.close -> exit 0

No HTTP listener: jobs come from the store, which the intakes (`hitd --workers 0`, or full
servers) fill. Only a store several processes share makes sense here: PostgreSQL. Several
worker processes (and full servers) on one database share the queue: each claims only into
its free workers (`FOR UPDATE SKIP LOCKED`), and a NOTIFY per committed batch wakes the
idle ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .._errors import SpecError
from .runner import Runner
from .server import serve_until_signalled
from .store.base import Store
from .tasks import HitLimits, Registry

__all__ = ["WorkerConfig", "WorkerProcess", "check_shared", "run_worker"]

log = logging.getLogger("hitpool.hitd.worker")


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    store: str
    workers: int = 16
    tasks: tuple[str, ...] = ()
    allow_targets: tuple[str, ...] = ()
    grace_s: float = 30.0
    lease_s: float = 30.0
    log_level: str = "info"
    hit_limits: HitLimits = field(default_factory=HitLimits)


def check_shared(url: str, why: str) -> None:
    """SpecError naming `store` unless `url` is a store several processes can share."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return  # Store.from_url names what is wrong with it
    if scheme not in ("postgresql", "postgres"):
        raise SpecError(
            "store",
            f"{why} needs a store the intakes and workers share: "
            f"--store postgresql://user@host:port/db (got {url!r}; a SQLite file or "
            "memory:// belongs to one process)",
        )


class WorkerProcess:
    """Workers only: `await start()`, then `await stop()` (what SIGTERM does)."""

    def __init__(
        self,
        config: WorkerConfig,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if store is None:
            check_shared(config.store, "hitd worker")
            store = Store.from_url(config.store)
        self.config = config
        self.store = store
        self.registry = Registry(allowed_targets=config.allow_targets, hit_limits=config.hit_limits)
        self.runner = Runner(
            self.store,
            self.registry,
            workers=config.workers,
            lease_s=config.lease_s,
            grace_s=config.grace_s,
            clock=clock,
        )

    async def start(self) -> None:
        await self.store.open()
        try:
            await self.runner.start()
        except BaseException:
            await self.store.close()
            raise

    async def stop(self) -> None:
        await self.runner.stop(grace_s=self.config.grace_s)
        await self.store.close()

    def draining_line(self) -> str:
        return f"running jobs get {self.config.grace_s:g} s"

    def stopped_line(self) -> str:
        return f"{self.runner.statistics().completed} jobs completed this run"

    def startup_line(self) -> str:
        c = self.config
        return f"hitd worker running {c.workers} workers on store {c.store}"


def run_worker(config: WorkerConfig) -> int:
    """Run workers until SIGTERM/SIGINT; the exit code (0 after a clean drain)."""
    import uvloop

    return int(
        uvloop.run(
            serve_until_signalled("hitd worker", config.tasks, lambda: WorkerProcess(config))
        )
    )
