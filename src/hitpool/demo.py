"""`make demo`: a million jobs through hitd on its default durable store, none lost.

    1. start `hitd` (a real process) in a temporary directory: the default store,
       sqlite:///./hitd.db (WAL, synchronous=FULL), no-op jobs (`hello`, delay 0, no logging)
    2. send the jobs with `hit`: POST /jobs, 100 jobs per request (a JSON array)
    3. wait until hitd has run every accepted job
    4. print accepted (jobs answered 202), processed (jobs that succeeded), lost (accepted but
       not processed: must be 0) and the wall time; stop hitd with SIGTERM (exit 0)

hitd gets core 0 and hit core 1 when the machine has two or more.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from .hit import Spec, run

BATCH = 100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def _pin(pid: int, cores: set[int]) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        try:
            os.sched_setaffinity(pid, cores)
        except OSError:
            pass


def _start_hitd(workdir: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    with open(workdir / "hitd.log", "wb") as log:  # the child keeps its own descriptor
        proc = _spawn(workdir, port, workers, log)
    _pin(proc.pid, {0})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = (workdir / "hitd.log").read_text(errors="replace")
        if "hitd listening on" in text:
            print("  " + text.strip().splitlines()[-1])
            return proc
        if proc.poll() is not None:
            raise SystemExit(f"demo: hitd exited {proc.returncode}:\n{text}")
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise SystemExit("demo: hitd did not start within 30 s")


def _spawn(workdir: Path, port: int, workers: int, log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hitpool.hitd",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--queue-size",
            "2000000",
            "--log-level",
            "warning",
        ],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def demo(jobs: int, concurrency: int, workers: int) -> int:
    requests = max(1, jobs // BATCH)
    jobs = requests * BATCH
    body = json.dumps([{"task": "hello", "args": {"name": "demo"}}] * BATCH).encode()
    with tempfile.TemporaryDirectory(prefix="hitd-demo-") as tmp:
        workdir = Path(tmp)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        print(f"demo: {jobs:,} jobs as {requests:,} POST /jobs of {BATCH} to hitd in {workdir}")
        t0 = time.perf_counter()
        proc = _start_hitd(workdir, port, workers)
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        try:
            _pin(0, {1})
            spec = Spec(
                f"{base}/jobs",
                requests=requests,
                concurrency=concurrency,
                method="POST",
                body=body,
                content_type="application/json",
            )
            t_send = time.perf_counter()
            summary = run(spec)
            send_s = time.perf_counter() - t_send
            accepted_requests = summary.status_codes.get(202, 0)
            accepted = accepted_requests * BATCH
            others = {k: v for k, v in summary.status_codes.items() if k != 202}
            print(
                f"  sent in {send_s:.1f} s: {accepted:,} jobs accepted "
                f"({accepted / send_s:,.0f} jobs/s, p99 {summary.latency_s()['p99'] * 1e3:.1f} ms)"
                + (f"; other answers {others}" if others else "")
                + (f"; errors {summary.errors_by_kind}" if summary.errors else "")
            )
            # Wait for the workers: what is queued or running is still to be processed.
            last = 0.0
            while True:
                stats = _get(f"{base}/stats")
                counts = stats["jobs"]
                if counts["queued"] == 0 and counts["running"] == 0:
                    break
                if proc.poll() is not None:
                    raise SystemExit(f"demo: hitd died with {proc.returncode}")
                now = time.perf_counter()
                if now - last >= 5:
                    print(
                        f"  processing: {counts['succeeded']:,} done, {counts['queued']:,} queued"
                    )
                    last = now
                time.sleep(0.5)
            wall = time.perf_counter() - t0
            server_accepted = stats["accepted"]
        finally:
            if affinity is not None:
                _pin(0, affinity)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
        # Count from the database file itself, after the server is gone.
        with sqlite3.connect(workdir / "hitd.db") as db:
            rows = dict(db.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
        processed = rows.get("succeeded", 0)
        lost = accepted - processed
    print(f"accepted:  {accepted:,}")
    print(f"processed: {processed:,}")
    print(f"lost:      {lost:,}")
    print(f"wall time: {wall:.1f} s ({processed / wall * 60:,.0f} jobs/minute end to end)")
    ok = lost == 0 and server_accepted == accepted and code == 0
    if not ok:
        print(
            f"demo: FAILED (server counted {server_accepted:,} accepted, hitd exit {code}, "
            f"rows {rows})",
            file=sys.stderr,
        )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hitpool.demo", description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1_000_000, help="jobs to send (default 1000000)")
    p.add_argument("-c", type=int, default=64, dest="concurrency", help="connections (64)")
    # 256, not 64: hitd claims only into free workers, so one commit (one fsync) carries at
    # most `workers` no-op jobs from claim to outcome; async workers cost little each.
    p.add_argument("--workers", type=int, default=256, help="hitd workers (256)")
    args = p.parse_args(argv)
    if args.jobs < 1 or args.concurrency < 1 or args.workers < 1:
        p.error("--jobs, -c and --workers must be positive")
    return demo(args.jobs, args.concurrency, args.workers)


if __name__ == "__main__":
    raise SystemExit(main())
