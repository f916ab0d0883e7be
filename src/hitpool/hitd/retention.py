"""Retention: finished jobs older than `--retention` are deleted, a chunk at a time.

    once at start, then every minute:
        before = now - retention
        store.purge(before, 10_000), again and again until a chunk comes back short

A chunk is one short transaction (for SQLite, one turn of its writer thread), so a backlog of
millions, such as the first start with retention on an old database, is deleted between the
other writes instead of holding the write lock for minutes. A purge that fails (the database
is down) is logged and tried again the next minute; it never stops the server.

The loop is a task owned by `Hitd`: started once the server serves, cancelled first thing
when it stops. The clock and the wait between passes are arguments, so tests drive it
without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from .errors import StoreError
from .store.base import Store

__all__ = ["DEFAULT_RETENTION", "DEFAULT_RETENTION_S", "Purger", "describe"]

log = logging.getLogger("hitpool.hitd.retention")

# Go durations have no days: a week is 168h.
DEFAULT_RETENTION = "168h"
DEFAULT_RETENTION_S = 7 * 24 * 3600.0
PURGE_EVERY_S = 60.0
# Deletes per transaction: ~15 ms of SQLite's writer here, short enough that enqueues and
# finishes waiting behind it do not notice; large enough that a purge keeps up with a
# million jobs a minute (100 chunks).
PURGE_CHUNK = 10_000


def describe(retention_s: float) -> str:
    """For the startup line: "168h", "90s", or "off" for 0 (finished jobs kept forever)."""
    if retention_s <= 0:
        return "off"
    if retention_s % 3600 == 0:
        return f"{retention_s / 3600:g}h"
    return f"{retention_s:g}s"


class Purger:
    """Deletes finished jobs older than `retention_s` from `store`; 0 keeps them forever."""

    def __init__(
        self,
        store: Store,
        retention_s: float,
        *,
        clock: Callable[[], float] = time.time,
        every_s: float = PURGE_EVERY_S,
        chunk: int = PURGE_CHUNK,
        wait: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self.retention_s = retention_s
        self._clock = clock
        self._every_s = every_s
        self._chunk = max(1, chunk)
        self._wait = wait
        self._task: asyncio.Task[None] | None = None
        self.purged = 0  # jobs deleted since start, for /stats and /metrics

    @property
    def enabled(self) -> bool:
        return self.retention_s > 0

    async def purge_once(self) -> int:
        """One pass: delete every finished job older than the retention, chunk by chunk.
        Returns how many. Raises what the store raises (the loop logs it)."""
        if not self.enabled:
            return 0
        before = self._clock() - self.retention_s
        total = 0
        while True:
            n = await self._store.purge(before, self._chunk)
            total += n
            self.purged += n
            if n < self._chunk:  # a short chunk: nothing older is left
                return total

    async def _run(self) -> None:
        while True:
            try:
                n = await self.purge_once()
            except StoreError as e:
                log.warning(
                    "purging finished jobs failed, trying again in %gs: %s", self._every_s, e
                )
            except Exception:  # a bug must not end retention for the life of the server
                log.exception("purging finished jobs failed, trying again in %gs", self._every_s)
            else:
                if n:
                    log.info("purged %d jobs finished over %s ago", n, describe(self.retention_s))
            await self._wait(self._every_s)

    def start(self) -> None:
        """Start the loop on the running event loop; a no-op when retention is off."""
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="hitd-purge")

    async def stop(self) -> None:
        """Cancel the loop. A chunk already handed to the store commits or rolls back whole."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
