"""hitd says which build runs (pure or compiled): on its startup line and in /stats; and a
hard stop of the runner behaves the same in both builds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import hitpool
from hitpool._build import build


def test_the_startup_line_names_the_build(hitd_process: Any) -> None:
    server = hitd_process("--store", "memory://")
    line = next(x for x in server.output.splitlines() if x.startswith("hitd listening"))
    assert line.endswith(f", {build()} build)")
    assert server.term() == 0


async def test_stats_names_the_build(start_hitd: Any, connect: Any) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    stats = (await c.request("GET", "/stats")).json()
    assert stats["build"] == build()


# Runner.stop(grace_s=0) while a job runs: the grace timeout cancels the pool's stop(), whose
# cancellation path then awaits and re-raises, inside a coroutine another one awaits. Compiled
# with an await inside that `except`, this crashed the interpreter (hence a child process);
# with the job's outcome read in a `finally`, the cancelled job raised TypeError there instead
# of recording its interrupted attempt ("exception ... was never retrieved" on stderr).
HARD_STOP = """
import asyncio, gc, logging, sys
from hitpool.hitd.runner import Runner
from hitpool.hitd.store.base import NewJob
from hitpool.hitd.store.memory import MemoryStore
from hitpool.hitd.tasks import Registry

logging.getLogger("hitpool.hitd.runner").setLevel(logging.ERROR)  # "attempt 1/3 interrupted"

async def main():
    for _ in range(10):
        store, reg = MemoryStore(), Registry(include_global=False)
        started = asyncio.Event()

        @reg.task
        async def forever() -> None:
            started.set()
            await asyncio.sleep(3600)

        await store.open()
        [(id, _)] = await store.enqueue([NewJob("forever", {}, 0.0, max_attempts=3)], 0.0)
        async with Runner(store, reg, workers=1) as runner:
            runner.notify()
            await started.wait()
            await runner.stop(grace_s=0)
        rec = await store.get(id)
        # Interrupted: the attempt is used, and the job is queued again for the next two.
        assert rec is not None and (rec.status, rec.attempts) == ("queued", 1), rec
        await store.close()
        gc.collect()  # an unretrieved job exception is logged by a finalizer
    print("ok")

asyncio.run(main())
"""


def test_a_hard_stop_records_the_running_job_without_a_crash_or_an_error() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(hitpool.__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-c", HARD_STOP], env=env, capture_output=True, text=True, timeout=30
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "ok\n", "")
