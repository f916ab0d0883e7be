"""A run in child processes (``-p``, or ``run_async(isolate=True)``), merged exactly.

Each child is started with the "spawn" context (no fork of a process with a running loop)
and runs `drive` on its own uvloop loop over its share of the lanes and requests. Under
--rps process k of P sends requests k, k+P, ... of the one global schedule. A pipe carries
the protocol: the child sends ("ready" | "cannot_start"), the parent answers ("go", t0)
with one CLOCK_MONOTONIC start for all, the child sends ("progress", counts) and finally
("done", wire summary); ("stop", None) ends it early. The parent waits on the pipes and on
the processes' sentinels with its loop, never a thread, and reaps every child it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import multiprocessing.connection
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from multiprocessing.process import BaseProcess
from typing import Any

import uvloop

from .._errors import HitpoolError
from .client import CannotStart
from .driver import drive
from .spec import Spec
from .summary import Progress, Summary

__all__ = ["WorkerLost", "run_processes"]


def _shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` integers that differ by at most one."""
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


class WorkerLost(HitpoolError):
    """A worker process (-p, or any with ``isolate``) exited without sending its results;
    the message names it, its pid and why (its exit status or the signal that killed it)."""


# How long the children of a run get to exit on their own before they are killed. A run
# that ended has their results: they are only closing connections and the interpreter.
_EXIT_GRACE_S = 5.0
# A cancelled run (a hard stop, a timeout) wants nothing more from them: a child still
# connecting (up to spec.timeout) or stuck must not hold its caller up for long.
_CANCEL_GRACE_S = 0.5


async def _recv(conn: multiprocessing.connection.Connection, proc: BaseProcess, name: str) -> Any:
    """Wait on the loop for a message from a child process (WorkerLost when it is gone)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    fd = conn.fileno()

    def ready() -> None:
        loop.remove_reader(fd)
        if not fut.done():
            try:
                fut.set_result(conn.recv())
            except (EOFError, OSError) as exc:
                fut.set_exception(exc)

    loop.add_reader(fd, ready)
    try:
        return await fut
    except (EOFError, OSError):
        # Its end of the pipe closed, so it is exiting: its exit code says why.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await _exited([proc])
        raise WorkerLost(
            f"{name} (pid {proc.pid}) exited without its results: {_why(proc)}"
        ) from None
    finally:
        loop.remove_reader(fd)


def _why(proc: BaseProcess) -> str:
    code = proc.exitcode
    if code is None:
        return "it closed its pipe but is still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


async def _exited(procs: Sequence[BaseProcess]) -> None:
    """Wait until the processes have exited, and collect their exit codes. On the loop and
    with no thread (a process's sentinel fd becomes readable when it exits): an executor
    thread could be queued behind the caller's own blocking work, as hitd's plain tasks are."""
    loop = asyncio.get_running_loop()
    by_fd = {proc.sentinel: proc for proc in procs if proc.exitcode is None}
    left = set(by_fd)
    if not left:
        return
    done: asyncio.Future[None] = loop.create_future()

    def gone(fd: int) -> None:
        loop.remove_reader(fd)
        # The sentinel closes a moment before the process can be waited for: join() waits
        # out that moment (exitcode alone would still say None).
        by_fd[fd].join(0.1)
        left.discard(fd)
        if not left and not done.done():
            done.set_result(None)

    for fd in list(left):
        loop.add_reader(fd, gone, fd)
    try:
        await done
    finally:
        for fd in left:
            loop.remove_reader(fd)
        done.cancel()


async def _reap(procs: Sequence[BaseProcess], grace: float) -> None:
    """Give the processes ``grace`` seconds to exit, kill the others, collect every status."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace):
            await _exited(procs)
    for proc in procs:
        if proc.exitcode is None:
            proc.kill()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):  # SIGKILL cannot be caught: this waits on the kernel
            await _exited(procs)


async def run_processes(
    spec: Spec,
    *,
    stop: asyncio.Event | None,
    timeline: bool,
    progress: Callable[[Progress], None] | None,
) -> Summary:
    p = min(spec.processes, spec.lanes)
    lanes = _shares(spec.concurrency if spec.requests is None else spec.lanes, p)
    requests = _shares(spec.requests, p) if spec.requests is not None else [None] * p
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with a running loop
    pipes = [ctx.Pipe() for _ in range(p)]
    procs = [
        ctx.Process(
            target=_child,
            args=(spec, lanes[k], requests[k], k, p, pipes[k][1], timeline, progress is not None),
            name=f"hit-{k + 1}",
            daemon=True,
        )
        for k in range(p)
    ]
    names = [f"hit worker process {k + 1} of {p}" for k in range(p)]
    parents = [a for a, _ in pipes]
    loop = asyncio.get_running_loop()
    started: list[BaseProcess] = []
    # Everything waiting on a pipe. gather() does not cancel the others when one fails, and
    # none may outlive this call (its reader would watch a closed fd): cancelled on the way out.
    waiting: list[asyncio.Future[Any]] = []

    def watch(aw: Awaitable[Any]) -> asyncio.Future[Any]:
        fut = asyncio.ensure_future(aw)
        waiting.append(fut)
        return fut

    grace = _EXIT_GRACE_S
    try:
        for proc in procs:
            proc.start()
            started.append(proc)
        for _, child_end in pipes:
            child_end.close()
        readies = await asyncio.gather(
            *(watch(_recv(parents[k], procs[k], names[k])) for k in range(p))
        )
        failed = [msg for kind, msg in readies if kind != "ready"]
        if failed:
            raise CannotStart(failed[0])
        base = time.perf_counter_ns() + 1_000_000  # CLOCK_MONOTONIC: shared by processes
        for c in parents:
            c.send(("go", base))
        done: list[Any] = [None] * p
        counts: list[tuple[int, int]] = [(0, 0)] * p

        async def collect(k: int) -> None:
            while True:
                kind, msg = await _recv(parents[k], procs[k], names[k])
                if kind == "done":
                    done[k] = msg
                    return
                counts[k] = msg  # ("progress", (requests, errors))
                if progress is not None and k == 0:
                    elapsed = (time.perf_counter_ns() - base) / 1e9
                    req = sum(r for r, _ in counts)
                    progress(Progress(elapsed, req, sum(e for _, e in counts), req / elapsed, None))

        collecting = asyncio.gather(*(watch(collect(k)) for k in range(p)))
        if stop is not None:
            stopping = watch(stop.wait())
            await asyncio.wait({collecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                for c in parents:
                    with contextlib.suppress(OSError):
                        c.send(("stop", None))
        await collecting
        return Summary.merge(done, processes=p, target_rps=spec.rps)
    except asyncio.CancelledError:
        grace = _CANCEL_GRACE_S
        raise
    finally:
        for w in waiting:
            w.cancel()
        for c in parents:
            with contextlib.suppress(OSError):
                c.send(("stop", None))
        try:
            await _reap(started, grace)
        finally:
            for child in started:
                if child.exitcode is None:
                    child.kill()  # cancelled again while reaping: kill, wait no more
                else:
                    child.close()
            for c in parents:
                loop.remove_reader(c.fileno())
            for a, b in pipes:
                a.close()
                b.close()


def _child(
    spec: Spec,
    lanes: int,
    requests: int | None,
    k: int,
    p: int,
    conn: multiprocessing.connection.Connection,
    timeline: bool,
    progress: bool,
) -> None:
    """A worker process: connect, report ready, wait for go, run, send the wire summary."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    gc.freeze()  # as the CLI does: the cyclic GC need not re-scan the imported modules
    try:
        uvloop.run(_child_async(spec, lanes, requests, k, p, conn, timeline, progress))
    except (BrokenPipeError, ConnectionResetError, EOFError):
        # The parent closed its end (it was cancelled or is gone) before this child could
        # report: there is nobody to tell, so end quietly rather than print a traceback.
        pass
    finally:
        conn.close()


async def _child_async(
    spec: Spec,
    lanes: int,
    requests: int | None,
    k: int,
    p: int,
    conn: multiprocessing.connection.Connection,
    timeline: bool,
    progress: bool,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_message() -> None:
        try:
            kind, msg = conn.recv()
        except (EOFError, OSError):
            kind, msg = "stop", None
        if kind == "go":
            started.set_result(msg)
        else:
            loop.remove_reader(conn.fileno())
            stop.set()
            if not started.done():
                started.cancel()

    started: asyncio.Future[int] = loop.create_future()
    loop.add_reader(conn.fileno(), on_message)

    async def go() -> int:
        conn.send(("ready", None))
        return await started

    rate = spec.rps / p if spec.rps is not None else None
    offset = k / spec.rps if spec.rps is not None else 0.0
    try:
        summary = await drive(
            spec,
            lanes=lanes,
            requests=requests,
            rate=rate,
            offset=offset,
            go=go,
            stop=stop,
            timeline=timeline,
            progress=(lambda pr: conn.send(("progress", (pr.requests, pr.errors))))
            if progress
            else None,
        )
    except CannotStart as exc:
        conn.send(("cannot_start", str(exc)))
        return
    except asyncio.CancelledError:
        return
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(conn.fileno())
    wire = summary.to_wire()
    wire["target_rps"] = rate
    conn.send(("done", wire))
