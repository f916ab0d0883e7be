"""hitd as a real process and SIGTERM: stop taking jobs (503), let the running job finish,
release the rest, exit 0; a restart runs what was released.

This module is also the task module of the spawned server (`--tasks test_hitd_server`).
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from pathlib import Path

import pytest

from hitd._helpers import wait_for
from hitpool.hitd.server import Hitd, ServerConfig
from hitpool.hitd.tasks import task

pytestmark = pytest.mark.slow

JSON = {"Content-Type": "application/json"}


@task(name="test_server_hold")
async def hold(started: str, release: str) -> str:
    """Leave a marker, then run until the test creates the `release` file."""
    Path(started).write_text("started")
    while not Path(release).exists():
        await asyncio.sleep(0.01)
    return "finished"


def rows(db: Path) -> dict[int, tuple[str, int]]:
    with sqlite3.connect(db) as conn:
        return {
            i: (status, attempts)
            for i, status, attempts in conn.execute("SELECT id, status, attempts FROM jobs")
        }


async def test_sigterm_drains_and_a_restart_runs_the_rest(hitd_process, connect, tmp_path) -> None:
    args = ("--workers", "1", "--grace", "10", "--tasks", "test_hitd_server")
    started, release = tmp_path / "started", tmp_path / "release"
    server = hitd_process(*args)
    c = await connect(server.port)
    hold_job = {
        "task": "test_server_hold",
        "args": {"started": str(started), "release": str(release)},
    }
    held_id = (await c.request("POST", "/jobs", hold_job, JSON)).json()["id"]
    # One worker: these wait behind the running job.
    waiting = (await c.request("POST", "/jobs", [{"task": "hello"}] * 3, JSON)).json()["ids"]

    async def running() -> bool:
        return started.exists()

    await wait_for(running, what="the first job to start")
    server.proc.send_signal(15)  # SIGTERM

    async def draining() -> bool:
        return (await c.request("GET", "/healthz")).status == 503

    await wait_for(draining, what="the server to drain")
    r = await c.request("POST", "/jobs", {"task": "hello"}, JSON)
    assert (r.status, r.headers["retry-after"]) == (503, "1")
    assert server.proc.poll() is None  # still running: the held job has not finished
    release.write_text("go")
    assert server.proc.wait(15) == 0
    assert "draining" in server.output

    db = tmp_path / "hitd.db"
    state = rows(db)
    assert state[held_id] == ("succeeded", 1)  # finished within the grace period
    for i in waiting:
        assert state[i] == ("queued", 0)  # released: not run, attempt not counted

    again = hitd_process(*args)
    c2 = await connect(again.port)

    async def all_done() -> bool:
        jobs = (await c2.request("GET", "/stats")).json()["jobs"]
        return bool(jobs["succeeded"] == 4)

    await wait_for(all_done, what="the released jobs to run after the restart")
    assert again.term() == 0
    assert {rows(db)[i] for i in waiting} == {("succeeded", 1)}


async def test_memory_store_startup_line_says_not_durable(hitd_process) -> None:
    server = hitd_process("--store", "memory://", "--workers", "3", "--queue-size", "50")
    line = next(x for x in server.output.splitlines() if x.startswith("hitd listening"))
    assert f"http://127.0.0.1:{server.port}" in line
    assert "memory://" in line
    assert "NOT durable" in line
    assert "3 workers" in line
    assert "queue-size 50" in line
    assert server.term() == 0


async def test_a_second_sigterm_exits_at_once(hitd_process, connect, tmp_path) -> None:
    started, release = tmp_path / "started", tmp_path / "never"
    server = hitd_process("--grace", "60", "--tasks", "test_hitd_server")
    c = await connect(server.port)
    job = {"task": "test_server_hold", "args": {"started": str(started), "release": str(release)}}
    assert (await c.request("POST", "/jobs", job, JSON)).status == 202

    async def running() -> bool:
        return started.exists()

    await wait_for(running, what="the job to start")
    server.proc.send_signal(15)

    async def draining() -> bool:
        return (await c.request("GET", "/healthz")).status == 503

    await wait_for(draining, what="the server to drain")
    server.proc.send_signal(15)
    assert server.proc.wait(5) == 1
    assert "second signal" in server.output


async def test_a_start_that_cannot_listen_leaves_nothing_running(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        hitd = Hitd(ServerConfig(port=port, store=f"sqlite:///{tmp_path}/a.db", workers=2))
        before = set(asyncio.all_tasks())
        with pytest.raises(OSError):
            await hitd.start()
    # The intake's flushers and the runner's loops were started before the bind failed.
    left = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert [t.get_name() for t in left] == []
