"""One end-to-end run of no-op jobs through PostgreSQL, for benchmarks/pg.sh.

    python benchmarks/pg_queues.py hitd|pgqueuer|procrastinate --url URL --jobs N
           --workers K --concurrency C [--hitd-python PY]

`url` is a fresh database (pg.sh makes one per run). The clock starts at the first enqueue
and stops when the last job is done; the line printed is `SYSTEM K JOBS SECONDS JOBS_PER_S`.

- hitd: one intake (`hitd --workers 0`) takes POST /jobs arrays of 1,000 `hello` jobs over
  loopback HTTP; K `hitd worker` processes of C workers run them. Done: /stats counts N
  succeeded. Runs with --hitd-python (the repository's venv).
- pgqueuer: batches of 1,000 `Queries.enqueue`; K processes of `QueueManager.run` with
  C concurrent tasks (dequeued C / 2 at a time). Done: its queue table is empty (a finished
  job is deleted).
- procrastinate: batches of 1,000 `batch_defer_async`; K processes of `run_worker_async`
  with concurrency C. Done: no job left `todo` or `doing`.

pgqueuer and procrastinate run from their own venv (pg.sh makes it under benchmarks/out).
Bounded: each run gives up after --timeout seconds. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

BATCH = 1000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(
    argv: list[str], ready: str, log_path: str, timeout: float = 30
) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while ready not in Path(log_path).read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tail = Path(log_path).read_text(errors="replace")[-2000:]
            raise SystemExit(f"{argv[:4]} did not start: {tail}")
        time.sleep(0.05)
    return proc


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


# -- hitd -------------------------------------------------------------------------------------


def run_hitd(a: argparse.Namespace) -> float:
    port = _free_port()
    out = os.environ.get("PG_BENCH_OUT", "/tmp")
    hitd = [a.hitd_python, "-m", "hitpool.hitd"]
    common = ["--store", a.url, "--log-level", "warning"]
    procs = [
        _spawn(
            [
                *hitd,
                "--workers",
                "0",
                "--port",
                str(port),
                "--queue-size",
                str(a.jobs + BATCH),
                "--retention",
                "0",
                *common,
            ],
            "hitd listening on",
            f"{out}/intake.log",
        )
    ]
    try:
        for i in range(a.workers):
            procs.append(
                _spawn(
                    [*hitd, "worker", "--workers", str(a.concurrency), *common],
                    "hitd worker running",
                    f"{out}/worker-{i}.log",
                )
            )
        body = json.dumps([{"task": "hello", "args": {"name": "x"}}] * BATCH).encode()
        base = f"http://127.0.0.1:{port}"

        def post() -> None:
            req = urllib.request.Request(
                f"{base}/jobs", body, {"Content-Type": "application/json"}, method="POST"
            )
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 202, r.status

        def succeeded() -> int:
            with urllib.request.urlopen(f"{base}/stats", timeout=30) as r:
                return int(json.load(r)["jobs"]["succeeded"])

        t0 = time.perf_counter()
        for _ in range(a.jobs // BATCH):
            post()
        deadline = time.monotonic() + a.timeout
        while succeeded() < a.jobs:
            if time.monotonic() > deadline:
                raise SystemExit(f"hitd: not done in {a.timeout} s")
            time.sleep(0.02)
        return time.perf_counter() - t0
    finally:
        _stop(procs)


# -- pgqueuer ---------------------------------------------------------------------------------


async def _pgqueuer_worker(url: str, concurrency: int) -> None:
    import asyncpg
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(url)
    qm = QueueManager(Queries.from_asyncpg_connection(conn))

    @qm.entrypoint("noop")
    async def noop(job: Any) -> None:
        return None

    print("pgqueuer worker running", flush=True)
    # pgqueuer wants max_concurrent_tasks >= 2 x batch_size.
    await qm.run(batch_size=max(1, concurrency // 2), max_concurrent_tasks=max(2, concurrency))


async def _pgqueuer_enqueue(a: argparse.Namespace) -> float:
    import asyncpg
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(a.url)
    q = Queries.from_asyncpg_connection(conn)
    t0 = time.perf_counter()
    for _ in range(a.jobs // BATCH):
        await q.enqueue(["noop"] * BATCH, [None] * BATCH, [0] * BATCH)
    deadline = time.monotonic() + a.timeout
    while await conn.fetchval("SELECT count(*) FROM pgqueuer"):
        if time.monotonic() > deadline:
            raise SystemExit(f"pgqueuer: not done in {a.timeout} s")
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - t0
    await conn.close()
    return elapsed


async def _pgqueuer_install(url: str) -> None:
    import asyncpg
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(url)
    await Queries.from_asyncpg_connection(conn).install()
    await conn.close()


def run_pgqueuer(a: argparse.Namespace) -> float:
    asyncio.run(_pgqueuer_install(a.url))
    return _run_library(a, "pgqueuer", _pgqueuer_enqueue)


# -- procrastinate ----------------------------------------------------------------------------


def _procrastinate_app(url: str) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="noop")
    async def noop() -> None:
        return None

    return app


async def _procrastinate_worker(url: str, concurrency: int) -> None:
    app = _procrastinate_app(url)
    async with app.open_async():
        print("procrastinate worker running", flush=True)
        await app.run_worker_async(concurrency=concurrency, install_signal_handlers=True)


async def _procrastinate_enqueue(a: argparse.Namespace) -> float:
    app = _procrastinate_app(a.url)
    noop = app.tasks["noop"]
    async with app.open_async():
        t0 = time.perf_counter()
        for _ in range(a.jobs // BATCH):
            await noop.batch_defer_async(*([{}] * BATCH))
        deadline = time.monotonic() + a.timeout
        sql = "SELECT count(*) AS n FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
        while (await app.connector.execute_query_one_async(sql))["n"]:
            if time.monotonic() > deadline:
                raise SystemExit(f"procrastinate: not done in {a.timeout} s")
            await asyncio.sleep(0.02)
        return time.perf_counter() - t0


async def _procrastinate_install(url: str) -> None:
    app = _procrastinate_app(url)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


def run_procrastinate(a: argparse.Namespace) -> float:
    asyncio.run(_procrastinate_install(a.url))
    return _run_library(a, "procrastinate", _procrastinate_enqueue)


def _run_library(a: argparse.Namespace, name: str, enqueue: Any) -> float:
    out = os.environ.get("PG_BENCH_OUT", "/tmp")
    me = [sys.executable, os.path.abspath(__file__)]
    procs = []
    try:
        for i in range(a.workers):
            procs.append(
                _spawn(
                    [*me, f"_{name}-worker", "--url", a.url, "--concurrency", str(a.concurrency)],
                    f"{name} worker running",
                    f"{out}/{name}-{i}.log",
                )
            )
        elapsed: float = asyncio.run(enqueue(a))
        return elapsed
    finally:
        _stop(procs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "system",
        choices=["hitd", "pgqueuer", "procrastinate", "_pgqueuer-worker", "_procrastinate-worker"],
    )
    p.add_argument("--url", required=True)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--concurrency", type=int, default=64, help="jobs at once per process")
    p.add_argument("--hitd-python", default=sys.executable)
    p.add_argument("--timeout", type=float, default=120.0)
    a = p.parse_args()
    if a.system == "_pgqueuer-worker":
        asyncio.run(_pgqueuer_worker(a.url, a.concurrency))
        return
    if a.system == "_procrastinate-worker":
        asyncio.run(_procrastinate_worker(a.url, a.concurrency))
        return
    if a.jobs < BATCH or a.jobs % BATCH:
        raise SystemExit(f"--jobs: a multiple of {BATCH}")
    run = {"hitd": run_hitd, "pgqueuer": run_pgqueuer, "procrastinate": run_procrastinate}
    elapsed = run[a.system](a)
    print(f"{a.system} {a.workers} {a.jobs} {elapsed:.3f} {a.jobs / elapsed:.0f}", flush=True)


if __name__ == "__main__":
    main()
