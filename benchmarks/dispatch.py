"""Dispatcher and ThreadDispatcher against their anchors, side by side in one run.

    .venv/bin/python benchmarks/dispatch.py [--runs 5] [--jobs 100000] [--cpu 1]

Every variant runs the same jobs in the same process, interleaved run by run, so a noisy
machine slows them alike; the table gives the median jobs/s of the runs and the ratio to
the anchor of its row group (the bare asyncio.Queue pool, ThreadPoolExecutor).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import queue
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import uvloop

from hitpool import Dispatcher, ThreadDispatcher

# CPU seconds of this process, not wall seconds: the asyncio variants are one thread, and
# the machine is shared, so time spent waiting for the core is not charged to a variant.
# The thread variants are timed on the wall clock (their cost includes waiting for the GIL).
CLOCK = time.process_time

try:
    import aiometer
except ImportError:  # the bench extra is not installed: that row is left out
    aiometer = None


async def noop() -> None:
    pass


async def sleep0() -> None:
    await asyncio.sleep(0)


# -- asyncio variants: each runs n calls of fn on w workers and returns the seconds ---------


async def bare_queue(fn: Callable[[], Awaitable[None]], n: int, w: int, size: int) -> float:
    q: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue(size)

    async def worker() -> None:
        while True:
            f = await q.get()
            try:
                await f()
            finally:
                q.task_done()

    tasks = [asyncio.create_task(worker()) for _ in range(w)]
    t = CLOCK()
    for _ in range(n):
        await q.put(fn)
    await q.join()
    dt = CLOCK() - t
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return dt


async def taskgroup_semaphore(
    fn: Callable[[], Awaitable[None]], n: int, w: int, size: int
) -> float:
    sem = asyncio.Semaphore(w)

    async def run() -> None:
        try:
            await fn()
        finally:
            sem.release()

    t = CLOCK()
    async with asyncio.TaskGroup() as tg:
        for _ in range(n):
            await sem.acquire()
            tg.create_task(run())
    return CLOCK() - t


async def aiometer_run(fn: Callable[[], Awaitable[None]], n: int, w: int, size: int) -> float:
    t = CLOCK()
    await aiometer.run_all([fn] * n, max_at_once=w)
    return CLOCK() - t


async def dispatcher(fn: Callable[[], Awaitable[None]], n: int, w: int, size: int) -> float:
    async with Dispatcher(workers=w, queue_size=size) as pool:
        t = CLOCK()
        for _ in range(n):
            await pool.dispatch(fn)
        await pool.join()
        return CLOCK() - t


# -- thread variants -----------------------------------------------------------------------


def sync_noop() -> None:
    pass


def thread_pool_executor(n: int, w: int, size: int) -> float:
    with ThreadPoolExecutor(w) as ex:
        t = time.perf_counter()
        futures = [ex.submit(sync_noop) for _ in range(n)]
        for f in futures:
            f.result()
        return time.perf_counter() - t


def bare_threads(n: int, w: int, size: int) -> float:
    q: queue.Queue[Callable[[], None] | None] = queue.Queue(size)

    def worker() -> None:
        while True:
            f = q.get()
            if f is None:
                q.task_done()
                return
            f()
            q.task_done()

    threads = [threading.Thread(target=worker) for _ in range(w)]
    for th in threads:
        th.start()
    t = time.perf_counter()
    for _ in range(n):
        q.put(sync_noop)
    q.join()
    dt = time.perf_counter() - t
    for _ in threads:
        q.put(None)
    for th in threads:
        th.join()
    return dt


def thread_dispatcher(n: int, w: int, size: int) -> float:
    with ThreadDispatcher(workers=w, queue_size=size) as pool:
        t = time.perf_counter()
        for _ in range(n):
            pool.dispatch(sync_noop)
        pool.join()
        return time.perf_counter() - t


def median_rate(samples: list[float], n: int) -> float:
    return n / statistics.median(samples)


def row(loop: str, job: str, workers: int, name: str, rate: float, anchor: float) -> None:
    print(f"| {loop} | {job} | {workers} | {name} | {rate:,.0f} | {rate / anchor:.2f} |")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=5, help="runs per variant (the median is shown)")
    ap.add_argument("--jobs", type=int, default=100_000, help="jobs per asyncio run")
    ap.add_argument("--thread-jobs", type=int, default=50_000, help="jobs per thread run")
    ap.add_argument("--queue-size", type=int, default=64)
    ap.add_argument("--cpu", type=int, default=None, help="pin to this core (taskset-like)")
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    n, size = args.jobs, args.queue_size

    async_variants: list[tuple[str, Any]] = [
        ("asyncio.Queue + N tasks (anchor)", bare_queue),
        ("TaskGroup + Semaphore", taskgroup_semaphore),
    ]
    if aiometer is not None:
        async_variants.append(("aiometer.run_all", aiometer_run))
    async_variants.append(("hitpool.Dispatcher", dispatcher))

    print(
        f"# dispatch benchmark: python {sys.version.split()[0]}, uvloop {uvloop.__version__}, "
        f"{n} jobs/run, queue_size {size}, median of {args.runs} runs, cpu={args.cpu}; "
        "asyncio rows per CPU-second, thread rows per wall second"
    )
    print()
    print("| loop | job | workers | implementation | jobs/s | x anchor |")
    print("|---|---|---|---|---:|---:|")
    for loop_name, runner in (("uvloop", uvloop.run), ("asyncio", asyncio.run)):
        for job in (noop, sleep0):
            for w in (8, 64):
                samples: dict[str, list[float]] = {name: [] for name, _ in async_variants}
                for _ in range(args.runs):
                    for name, variant in async_variants:
                        gc.collect()
                        samples[name].append(runner(variant(job, n, w, size)))
                anchor = median_rate(samples[async_variants[0][0]], n)
                for name, _ in async_variants:
                    row(loop_name, job.__name__, w, name, median_rate(samples[name], n), anchor)
                sys.stdout.flush()

    thread_variants: list[tuple[str, Callable[[int, int, int], float]]] = [
        ("ThreadPoolExecutor (anchor)", thread_pool_executor),
        ("threads + queue.Queue", bare_threads),
        ("hitpool.ThreadDispatcher", thread_dispatcher),
    ]
    tn = args.thread_jobs
    for w in (8, 64):
        tsamples: dict[str, list[float]] = {name: [] for name, _ in thread_variants}
        for _ in range(args.runs):
            for name, tvariant in thread_variants:
                gc.collect()
                tsamples[name].append(tvariant(tn, w, size))
        anchor = median_rate(tsamples[thread_variants[0][0]], tn)
        for name, _ in thread_variants:
            row("threads", "noop", w, name, median_rate(tsamples[name], tn), anchor)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
