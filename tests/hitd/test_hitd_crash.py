"""hitd as a real process, killed with SIGKILL: a 202 is a promise that survives the crash.

This module is also the task module the spawned servers load (`--tasks test_hitd_crash`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hitd import _store_fixtures as _pg
from hitd._helpers import wait_for
from hitpool.hitd.tasks import task

pytestmark = pytest.mark.slow

pg_url = _pg.pg_url  # the session fixture, registered in this module


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_args(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, ...]]:
    """hitd's default store (sqlite:///./hitd.db in the test's directory), or a fresh
    PostgreSQL schema: every store that hands jobs to its runner in the enqueue."""
    if request.param == "sqlite":
        yield ()
        return
    async with _pg.fresh_schema(request.getfixturevalue("pg_url")) as url:
        yield ("--store", url)


JSON = {"Content-Type": "application/json"}


@task(name="test_crash_block")
async def block_first_time(marker: str) -> str:
    """First attempt: leave a marker and hang (the test kills the server). Later: finish."""
    path = Path(marker)
    if path.exists():
        return "second attempt"
    path.write_text("started")
    await asyncio.sleep(3600)
    return "unreachable"


async def test_every_202_survives_kill_9_mid_burst(hitd_process, connect, store_args) -> None:
    # Short leases: what the killed server held runs again soon after the restart.
    args = ("--workers", "8", "--lease", "1", "--log-level", "warning", *store_args)
    first = hitd_process(*args)
    assert "[durable]" in first.output
    accepted: list[int] = []
    refused: list[int] = []
    enough = asyncio.Event()
    # 5 ms per job on 8 workers: the burst outruns the workers, so jobs are still waiting
    # (and some running) when the server is killed.
    body = json.dumps({"task": "hello", "args": {"name": "burst", "delay": 0.005}})

    async def sender() -> None:
        c = await connect(first.port)
        raw = c.encode("POST", "/jobs", body, JSON) * 20
        try:
            while True:
                await c.send(raw)
                for r in await c.replies(20):
                    if r.status != 202:
                        refused.append(r.status)
                        enough.set()
                        return
                    accepted.append(r.json()["id"])
                if len(accepted) >= 400:
                    enough.set()
        except (ConnectionError, OSError, TimeoutError):
            return  # the server died under us: what was answered 202 is what counts

    senders = [asyncio.create_task(sender()) for _ in range(4)]
    await enough.wait()
    first.kill9()  # mid-burst: the senders are still sending
    await asyncio.gather(*senders)
    assert refused == []
    assert len(accepted) >= 400
    assert len(set(accepted)) == len(accepted)

    second = hitd_process(*args)
    c = await connect(second.port)

    async def drained() -> bool:
        jobs = (await c.request("GET", "/stats")).json()["jobs"]
        return bool(jobs["queued"] == 0 and jobs["running"] == 0)

    await wait_for(drained, what="every job to finish after the restart")
    statuses: set[str] = set()
    for start in range(0, len(accepted), 50):  # pipelined, within max_pipeline (64)
        batch = accepted[start : start + 50]
        await c.send(b"".join(c.encode("GET", f"/jobs/{i}") for i in batch))
        statuses.update(r.json()["status"] for r in await c.replies(len(batch), timeout=15.0))
    assert statuses == {"succeeded"}, statuses
    # And the restart did pick up work the first process left unfinished.
    assert (await c.request("GET", "/stats")).json()["completed"] > 0


async def test_a_job_whose_worker_was_killed_runs_again(hitd_process, connect, tmp_path) -> None:
    args = ("--workers", "2", "--lease", "1", "--tasks", "test_hitd_crash")
    marker = tmp_path / "started.marker"
    first = hitd_process(*args)
    c = await connect(first.port)
    job = {"task": "test_crash_block", "args": {"marker": str(marker)}}
    r = await c.request("POST", "/jobs", job, JSON)
    assert r.status == 202
    job_id = r.json()["id"]

    async def started() -> bool:
        return marker.exists()

    await wait_for(started, what="the job to start")
    first.kill9()

    second = hitd_process(*args)
    c2 = await connect(second.port)

    async def finished() -> dict[str, Any] | None:
        rec: dict[str, Any] = (await c2.request("GET", f"/jobs/{job_id}")).json()
        return rec if rec["status"] == "succeeded" else None

    rec = await wait_for(finished, what="the job to run again after its lease expired")
    assert rec["attempts"] == 2
    assert rec["result"] == "second attempt"


@task(name="test_crash_hang")
async def hang(marker: str) -> None:
    """Leave a marker and hang: the job a crash interrupts, on every attempt."""
    Path(marker).write_text("started")
    await asyncio.sleep(3600)


async def test_a_crash_uses_the_attempt_of_the_running_job_only(
    hitd_process, connect, tmp_path, store_args
) -> None:
    # Finding 2: the attempt was counted when a job was claimed into the runner's prefetch,
    # so a crash made every waiting job `dead` on max_attempts 1 without it ever starting.
    args = ("--workers", "1", "--lease", "1", "--tasks", "test_hitd_crash", *store_args)
    marker = tmp_path / "hang.marker"
    first = hitd_process(*args)
    c = await connect(first.port)
    hang = {"task": "test_crash_hang", "args": {"marker": str(marker)}, "max_attempts": 1}
    r = await c.request("POST", "/jobs", hang, JSON)
    hung = r.json()["id"]

    async def started() -> bool:
        return marker.exists()

    await wait_for(started, what="the hanging job to start")
    batch = [{"task": "hello", "args": {"name": str(i)}, "max_attempts": 1} for i in range(20)]
    r = await c.request("POST", "/jobs", json.dumps(batch), JSON)
    waiting = r.json()["ids"]
    first.kill9()

    second = hitd_process(*args)
    c2 = await connect(second.port)

    async def drained() -> bool:
        jobs = (await c2.request("GET", "/stats")).json()["jobs"]
        return bool(jobs["queued"] == 0 and jobs["running"] == 0)

    await wait_for(drained, what="every job to finish after the restart")
    rec = (await c2.request("GET", f"/jobs/{hung}")).json()
    assert (rec["status"], rec["attempts"]) == ("dead", 1)
    for id in waiting:
        rec = (await c2.request("GET", f"/jobs/{id}")).json()
        assert (rec["status"], rec["attempts"]) == ("succeeded", 1), rec
