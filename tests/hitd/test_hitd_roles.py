"""Intakes and workers as separate processes on one PostgreSQL database (issue 10): real
processes, killed with kill -9. This module is also the task module they load
(`--tasks test_hitd_roles`).

    hitd --workers 0 --store postgresql://...     an intake: HTTP only
    hitd worker --store postgresql://...          workers only: no HTTP listener
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hitd import _store_fixtures as _pg
from hitd._helpers import wait_for
from hitpool.hitd.store import NewJob, Store
from hitpool.hitd.tasks import task

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

pg_url = _pg.pg_url  # the session fixture, registered in this module

JSON = {"Content-Type": "application/json"}
TASKS = ("--tasks", "test_hitd_roles")


@task(name="test_roles_hang_once")
async def hang_once(marker: str) -> str:
    """First attempt: write this process's pid to `marker` and hang (the test kills it).
    Later attempts: finish."""
    path = Path(marker)
    if path.exists():
        return f"ran again in {os.getpid()}"
    path.write_text(str(os.getpid()))
    await asyncio.sleep(3600)
    return "unreachable"


@pytest.fixture
async def url(pg_url: str) -> AsyncIterator[str]:
    async with _pg.fresh_schema(pg_url) as u:
        yield u


class Worker:
    """`python -m hitpool.hitd worker` as a real child process; its output goes to a file."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = dict(os.environ)
        here = str(Path(__file__).parent)
        env["PYTHONPATH"] = os.pathsep.join(
            (here, os.path.dirname(here), env.get("PYTHONPATH", ""))
        )
        self.log_path = cwd / f"worker-{id(self)}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hitpool.hitd", "worker", *args],
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while "hitd worker running" not in self.output:
            if self.proc.poll() is not None:
                raise AssertionError(f"hitd worker exited {self.proc.returncode}: {self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"hitd worker did not start: {self.output}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    procs: list[Worker] = []

    def spawn(*args: str) -> Worker:
        w = Worker(list(args), tmp_path)
        procs.append(w)
        w.wait_ready()
        return w

    yield spawn
    for w in procs:
        w.stop()


async def _finished(c: Any, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Every job of `ids` once all have finished (polled: they run in other processes)."""
    out: dict[int, dict[str, Any]] = {}

    async def all_done() -> bool:
        for start in range(0, len(ids), 50):  # pipelined, within max_pipeline
            batch = [i for i in ids[start : start + 50] if i not in out]
            if not batch:
                continue
            await c.send(b"".join(c.encode("GET", f"/jobs/{i}") for i in batch))
            for i, r in zip(batch, await c.replies(len(batch), timeout=15.0), strict=True):
                rec = r.json()
                if rec["status"] in ("succeeded", "failed", "dead", "cancelled"):
                    out[i] = rec
        return len(out) == len(ids)

    await wait_for(all_done, timeout=20, what="every job to finish")
    return out


async def test_one_intake_two_workers_and_a_worker_killed_mid_job(
    hitd_process: Any, worker: Any, connect: Any, url: str, tmp_path: Path
) -> None:
    intake = hitd_process("--workers", "0", "--store", url, *TASKS)
    assert "intake only" in intake.output
    workers = [worker("--store", url, "--workers", "2", "--lease", "1", *TASKS) for _ in range(2)]
    c = await connect(intake.port)
    marker = tmp_path / "hang.marker"
    job = {"task": "test_roles_hang_once", "args": {"marker": str(marker)}}
    r = await c.request("POST", "/jobs", job, JSON)
    assert r.status == 202, r.body
    hung = r.json()["id"]
    batch = [{"task": "hello", "args": {"name": str(i)}} for i in range(30)]
    ids = (await c.request("POST", "/jobs", json.dumps(batch), JSON)).json()["ids"]

    async def started() -> bool:
        return marker.exists() and marker.read_text() != ""

    await wait_for(started, what="the hanging job to start in a worker")
    pid = int(marker.read_text())
    [victim] = [w for w in workers if w.proc.pid == pid]
    os.kill(pid, signal.SIGKILL)
    victim.proc.wait(5)
    jobs = await _finished(c, [hung, *ids])
    assert jobs[hung]["status"] == "succeeded" and jobs[hung]["attempts"] == 2
    [survivor] = [w for w in workers if w is not victim]
    assert jobs[hung]["result"] == f"ran again in {survivor.proc.pid}"
    assert all(jobs[i]["status"] == "succeeded" for i in ids)
    # The intake ran nothing itself: it has no workers.
    assert (await c.request("GET", "/stats")).json()["workers"]["size"] == 0


async def test_every_202_of_an_intake_killed_mid_burst_runs(
    hitd_process: Any, worker: Any, connect: Any, url: str
) -> None:
    worker("--store", url, "--workers", "4")
    first = hitd_process("--workers", "0", "--store", url, "--log-level", "warning")
    accepted: list[int] = []
    enough = asyncio.Event()
    body = json.dumps({"task": "hello", "args": {"name": "burst"}})

    async def sender() -> None:
        c = await connect(first.port)
        raw = c.encode("POST", "/jobs", body, JSON) * 20
        try:
            while True:
                await c.send(raw)
                for r in await c.replies(20):
                    assert r.status == 202, r.body
                    accepted.append(r.json()["id"])
                if len(accepted) >= 300:
                    enough.set()
        except (ConnectionError, OSError, TimeoutError):
            return  # the intake died under us: what was answered 202 is what counts

    senders = [asyncio.create_task(sender()) for _ in range(3)]
    await enough.wait()
    first.kill9()
    await asyncio.gather(*senders)
    second = hitd_process("--workers", "0", "--store", url)
    c = await connect(second.port)
    jobs = await _finished(c, accepted)
    assert {j["status"] for j in jobs.values()} == {"succeeded"}


async def test_two_full_servers_on_one_database_share_a_burst(
    hitd_process: Any, connect: Any, url: str
) -> None:
    a = hitd_process("--workers", "2", "--store", url)
    b = hitd_process("--workers", "2", "--store", url)
    ca, cb = await connect(a.port), await connect(b.port)
    # 40 jobs of 50 ms, all sent to A: A starts two, the rest wait in the store, where B's
    # free workers take them (A's NOTIFY wakes B). Alone, A would need a second.
    batch = [{"task": "hello", "args": {"name": str(i), "delay": 0.05}} for i in range(40)]
    ids = (await ca.request("POST", "/jobs", json.dumps(batch), JSON)).json()["ids"]
    jobs = await _finished(ca, ids)
    assert {j["status"] for j in jobs.values()} == {"succeeded"}
    done = [(await c.request("GET", "/stats")).json()["completed"] for c in (ca, cb)]
    assert sum(done) == 40
    assert min(done) >= 10, done  # neither idled while the other had a backlog


async def test_a_worker_whose_listen_connection_is_killed_still_finds_the_work(
    worker: Any, url: str, pg_url: str
) -> None:
    # NOTIFY lost: the worker's LISTEN connection is terminated, then jobs are committed
    # by another process (their NOTIFY reaches no one). The poll must find them anyway.
    import asyncpg

    w = worker("--store", url, "--workers", "2", *TASKS)
    channel = "hitd_" + url.rsplit("schema=", 1)[1]
    admin = await asyncpg.connect(pg_url)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN %' AND position($1 in query) > 0",
            channel,
        )
        assert killed == 1
    finally:
        await admin.close()
    store = Store.from_url(url)
    await store.open()
    try:
        out = await store.enqueue(
            [NewJob("hello", {"name": str(i)}) for i in range(20)], time.time()
        )

        async def all_done() -> bool:
            return (await store.counts())["succeeded"] == len(out)

        await wait_for(
            all_done, timeout=15, what="the worker to run the jobs after its LISTEN died"
        )
    finally:
        await store.close()
    assert w.proc.poll() is None, w.output
