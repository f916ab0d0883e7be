"""Retention: the purge loop deletes finished jobs older than `--retention`, in chunks, once
at start and then every minute, and survives a failing store. The clock and the wait between
passes are the test's: nothing sleeps.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hitpool.hitd import StoreError
from hitpool.hitd.retention import Purger, describe
from hitpool.hitd.server import Hitd, ServerConfig
from hitpool.hitd.store import NewJob, Outcome
from hitpool.hitd.store.memory import MemoryStore

T0 = 1_800_000_000.0
HOUR = 3600.0
JSON = {"Content-Type": "application/json"}


class Recording(MemoryStore):
    """A memory store that records its purges and can be told to fail the next ones."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[float, int]] = []
        self.failures: list[BaseException] = []

    async def purge(self, before: float, limit: int) -> int:
        self.calls.append((before, limit))
        if self.failures:
            raise self.failures.pop(0)
        return await super().purge(before, limit)


class Turns:
    """The purger's wait between passes: it reports that a pass ended (and the wait asked
    for), then holds the loop until the test lets it go round again."""

    def __init__(self) -> None:
        self.ended: asyncio.Queue[float] = asyncio.Queue()
        self._go = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        self.ended.put_nowait(seconds)
        await self._go.wait()
        self._go.clear()

    async def next_pass(self) -> float:
        """Let the loop go round once; the wait it asks for after that pass."""
        self._go.set()
        return await self.pass_ended()

    async def pass_ended(self) -> float:
        async with asyncio.timeout(5):
            return await self.ended.get()


async def finished(store: MemoryStore, n: int, at: float) -> list[int]:
    """`n` jobs that succeeded at `at`, then one queued job (the newest, which is kept)."""
    ids = [id for id, _ in await store.enqueue([NewJob("t", {})] * n, at - 1)]
    await store.claim("w", n, at - 1, 30)
    await store.finish([Outcome(i, "w", 1, "succeeded") for i in ids], at)
    await store.enqueue([NewJob("t", {}, run_at=at + 10 * HOUR)], at)
    return ids


@pytest.fixture
async def store() -> AsyncIterator[Recording]:
    s = Recording()
    await s.open()
    yield s
    await s.close()


async def test_the_loop_purges_at_start_then_every_minute(store: Recording) -> None:
    old = await finished(store, 3, T0)
    now = T0 + 10.0
    turns = Turns()
    purger = Purger(store, HOUR, clock=lambda: now, wait=turns.wait)
    purger.start()
    try:
        assert await turns.pass_ended() == 60.0  # the pass at start, then a minute's wait
        assert store.calls == [(T0 + 10 - HOUR, 10_000)] and purger.purged == 0
        now = T0 + HOUR + 1  # an hour later, the jobs are too old
        assert await turns.next_pass() == 60.0
        assert store.calls[-1] == (T0 + 1, 10_000)
        assert purger.purged == 3 and [await store.get(i) for i in old] == [None] * 3
        assert (await store.counts())["succeeded"] == 0
    finally:
        await purger.stop()
    assert purger._task is None
    await purger.stop()  # twice is fine


async def test_a_backlog_is_purged_in_chunks_until_one_comes_back_short(
    store: Recording,
) -> None:
    await finished(store, 5, T0)
    purger = Purger(store, HOUR, clock=lambda: T0 + 2 * HOUR, chunk=2)
    assert await purger.purge_once() == 5
    assert [limit for _, limit in store.calls] == [2, 2, 2]  # 2 + 2 + 1
    store.calls.clear()
    await finished(store, 4, T0 + 1)
    assert await purger.purge_once() == 4
    assert [limit for _, limit in store.calls] == [2, 2, 2]  # 2 + 2 + 0: a full chunk asks again
    assert purger.purged == 9


async def test_a_failing_purge_is_logged_and_tried_again_next_minute(
    store: Recording, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "hitpool.hitd.retention")
    await finished(store, 2, T0)
    store.failures = [StoreError("database is locked"), RuntimeError("a bug")]
    turns = Turns()
    purger = Purger(store, HOUR, clock=lambda: T0 + 2 * HOUR, wait=turns.wait)
    purger.start()
    try:
        await turns.pass_ended()
        assert "purging finished jobs failed, trying again in 60s: database is locked" in (
            caplog.text
        )
        await turns.next_pass()
        assert "a bug" in caplog.text  # logged with its traceback, the loop goes on
        assert purger.purged == 0
        await turns.next_pass()
        assert purger.purged == 2
        assert "purged 2 jobs finished over 1h ago" in caplog.text
    finally:
        await purger.stop()


async def test_retention_0_keeps_finished_jobs_forever(store: Recording) -> None:
    await finished(store, 2, T0)
    purger = Purger(store, 0, clock=lambda: T0 + 1e9)
    purger.start()
    assert purger._task is None and not purger.enabled
    assert await purger.purge_once() == 0 and store.calls == []
    await purger.stop()


def test_describe() -> None:
    assert [describe(s) for s in (0, 7 * 24 * HOUR, HOUR, 90, 0.5)] == [
        "off",
        "168h",
        "1h",
        "90s",
        "0.5s",
    ]


# -- in the server ----------------------------------------------------------------------------


async def test_the_server_purges_old_finished_jobs_and_keeps_recent_ones(
    tmp_path: Path, connect
) -> None:
    offset = 0.0  # the server's clock runs this far ahead of the real one

    def clock() -> float:
        return time.time() + offset

    config = ServerConfig(port=0, store=f"sqlite:///{tmp_path}/r.db", workers=2, retention_s=HOUR)
    hitd = Hitd(config, clock=clock)
    await hitd.start()
    try:
        assert "retention 1h" in hitd.startup_line()
        c = await connect(hitd.port)
        old = (await c.request("POST", "/jobs", [{"task": "hello"}] * 3, JSON)).json()["ids"]
        await hitd.runner.until_idle()
        offset = 2 * HOUR  # two hours later: those three finished over an hour ago
        recent = (await c.request("POST", "/jobs", [{"task": "hello"}] * 2, JSON)).json()["ids"]
        await hitd.runner.until_idle()
        # One pass, as the loop makes every minute. (The loop's own pass at start may have
        # run at any point; either way the count below is the total.)
        await hitd.purger.purge_once()
        assert hitd.purger.purged == 3
        for id in old:
            assert (await c.request("GET", f"/jobs/{id}")).status == 404
        for id in recent:
            r = await c.request("GET", f"/jobs/{id}")
            assert (r.status, r.json()["status"]) == (200, "succeeded")
        stats = (await c.request("GET", "/stats")).json()
        assert stats["purged"] == 3
        assert stats["jobs"]["succeeded"] == 2
        metrics = (await c.request("GET", "/metrics")).body.decode().splitlines()
        assert "hitd_jobs_purged_total 3" in metrics
    finally:
        await hitd.stop()
    assert hitd.purger._task is None  # stop() ended the loop


async def test_the_server_with_retention_0_runs_no_purge_loop(tmp_path: Path) -> None:
    hitd = Hitd(ServerConfig(port=0, store="memory://", retention_s=0))
    await hitd.start()
    try:
        assert hitd.purger._task is None
        assert "retention off" in hitd.startup_line()
        assert json.loads((await hitd.app._stats()).body)["purged"] == 0
    finally:
        await hitd.stop()
