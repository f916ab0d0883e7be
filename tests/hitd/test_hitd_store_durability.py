"""Durability: a job whose enqueue() returned survives kill -9 of the process, mid-burst.

A real subprocess enqueues batches into a real SQLite file forever and prints the ids of
each batch as soon as enqueue() returns; the test kills it with SIGKILL while it is still
enqueuing, reopens the file and finds every printed job.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hitd import _store_fixtures as _pg
from hitpool.hitd.store import Outcome, Store
from hitpool.hitd.store.base import JobQuery
from hitpool.hitd.store.sqlite import SQLiteStore

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from hitpool.hitd.store import NewJob
    from hitpool.hitd.store.sqlite import SQLiteStore

    async def main(path):
        store = SQLiteStore(path)
        await store.open()
        batch = 0
        while True:  # until killed
            jobs = [NewJob("hello", {"batch": batch, "i": i}, 0.0) for i in range(50)]
            # Two concurrent callers, so merged commits are exercised too.
            a, b = await asyncio.gather(
                store.enqueue(jobs[:25], 0.0), store.enqueue(jobs[25:], 0.0)
            )
            ids = [id for id, _ in a + b]
            sys.stdout.write(f"{batch} " + ",".join(map(str, ids)) + "\\n")
            sys.stdout.flush()
            batch += 1

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.slow
async def test_enqueued_jobs_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    promised: dict[int, tuple[int, int]] = {}
    try:
        assert proc.stdout is not None
        for _ in range(40):  # 40 batches confirmed, then kill while it keeps enqueuing
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "child exited"
            batch_s, ids_s = line.split()
            for i, id in enumerate(map(int, ids_s.split(","))):
                promised[id] = (int(batch_s), i)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL  # it was killed, it did not finish

    store = SQLiteStore(path)
    await store.open()
    try:
        assert len(promised) == 40 * 50
        for id, (batch, i) in promised.items():
            rec = await store.get(id)
            assert rec is not None, f"job {id} was promised and is lost"
            assert (rec.status, rec.args) == ("queued", {"batch": batch, "i": i})
        counts = await store.counts()
        assert counts["queued"] >= len(promised)  # possibly more: committed, not yet printed
    finally:
        await store.close()


async def test_a_database_from_before_runs_is_migrated_with_its_fences(tmp_path: Path) -> None:
    # A file written by an older hitd has no `runs` column; its running job was claimed
    # with attempts as the fence, so its worker's outcome must still land after the upgrade.
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as c:
        c.execute(
            "CREATE TABLE jobs (id INTEGER PRIMARY KEY, task TEXT NOT NULL, args TEXT NOT NULL, "
            "status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER "
            "NOT NULL, result TEXT, error TEXT, created_at REAL NOT NULL, started_at REAL, "
            "finished_at REAL, run_at REAL NOT NULL, key TEXT, lease_until REAL, worker TEXT)"
        )
        c.execute(
            "INSERT INTO jobs VALUES (1, 'hello', '{}', 'running', 2, 3, NULL, NULL, 1.0, 2.0, "
            "NULL, 1.0, NULL, 99.0, 'w')"
        )
    store = SQLiteStore(path)
    await store.open()
    try:
        rec = await store.get(1)
        assert rec is not None and (rec.attempts, rec.runs) == (2, 2)
        await store.finish([Outcome(1, "w", 2, "succeeded", result=7)], 3.0)
        rec = await store.get(1)
        assert rec is not None and (rec.status, rec.result) == ("succeeded", 7)
    finally:
        await store.close()


pg_url = _pg.pg_url  # the session fixture, registered in this module


@pytest.mark.postgres
async def test_a_postgresql_table_from_before_runs_is_migrated_with_its_fences(
    pg_url: str,
) -> None:
    import asyncpg

    async with _pg.fresh_schema(pg_url) as url:
        schema = url.rsplit("schema=", 1)[1]
        c = await asyncpg.connect(pg_url)
        try:
            await c.execute(f'CREATE SCHEMA "{schema}"')
            await c.execute(
                f'CREATE TABLE "{schema}".hitd_jobs (id BIGSERIAL PRIMARY KEY, task TEXT NOT '
                "NULL, args TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL "
                "DEFAULT 0, max_attempts INTEGER NOT NULL, result TEXT, error TEXT, created_at "
                "DOUBLE PRECISION NOT NULL, started_at DOUBLE PRECISION, finished_at DOUBLE "
                "PRECISION, run_at DOUBLE PRECISION NOT NULL, key TEXT, lease_until DOUBLE "
                "PRECISION, worker TEXT)"
            )
            await c.execute(
                f'INSERT INTO "{schema}".hitd_jobs (task, args, status, attempts, max_attempts, '
                "created_at, started_at, run_at, lease_until, worker) "
                "VALUES ('hello', '{}', 'running', 2, 3, 1, 2, 1, 99, 'w')"
            )
        finally:
            await c.close()
        store = Store.from_url(url)
        await store.open()
        try:
            [rec] = (await store.list_jobs(JobQuery())).jobs
            assert (rec.attempts, rec.runs) == (2, 2)
            await store.finish([Outcome(rec.id, "w", 2, "succeeded", result=7)], 3.0)
            done = await store.get(rec.id)
            assert done is not None and (done.status, done.result) == ("succeeded", 7)
        finally:
            await store.close()
