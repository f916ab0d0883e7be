"""Durability: a job whose enqueue() returned survives kill -9 of the process, mid-burst.

A real subprocess enqueues batches into a real SQLite file forever and prints the ids of
each batch as soon as enqueue() returns; the test kills it with SIGKILL while it is still
enqueuing, reopens the file and finds every printed job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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
