"""Running a Spec: one process (`run_async`), several (`-p`, merged exactly), or as the
book's `send_n` async iterator of per-request results.

The clock starts once every lane is connected (connect time is not latency unless a lane
has to reconnect mid-run). Under --rps the schedule is open: request i is due at
``t0 + i / rps`` over all processes (process k of P sends i = k, k+P, ...), and its
latency runs from that due time, so a stalled server shows up as latency instead of as
fewer samples (coordinated omission corrected, as wrk2 does).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import multiprocessing.connection
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

import uvloop

from .._errors import HitpoolError
from ..stats import Histogram, Second, Timeline
from .client import ERROR_KINDS, CannotStart, Result
from .engine import Engine
from .spec import Spec

__all__ = ["Progress", "Summary", "WorkerLost", "run", "run_async", "send_n"]

PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9))
SCHEMA = "hit/1"


@dataclass(frozen=True, slots=True)
class Progress:
    """What the live progress line shows, once a second."""

    elapsed_s: float
    requests: int
    errors: int
    rps: float
    p99_s: float | None  # None when several processes run (they report counts only)


@dataclass(frozen=True, slots=True)
class Summary:
    """The outcome of a run. Latencies are held in microseconds in ``histogram``."""

    url: str
    method: str
    requests: int  # requests that ended (successes + errors)
    successes: int
    errors: int
    errors_by_kind: dict[str, int]
    status_codes: dict[int, int]
    bytes: int  # response bytes read (status lines, headers, bodies)
    duration_s: float
    target_rps: float | None
    late: int
    concurrency: int
    processes: int
    interrupted: bool
    histogram: Histogram = field(repr=False)
    timeline: tuple[Second, ...] = field(default=(), repr=False)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def latency_s(self) -> dict[str, float]:
        """min, mean, p50, p90, p95, p99, p999, max in seconds (0.0 when nothing completed)."""
        h = self.histogram
        out = {"min": h.min / 1e6, "mean": h.mean / 1e6}
        values = h.percentiles([p for _, p in PERCENTILES])
        for (name, _), v in zip(PERCENTILES, values, strict=True):
            # a slot's upper edge can pass the exact maximum by < 0.1 %: never report that
            out[name] = min(v, h.max) / 1e6
        out["max"] = h.max / 1e6
        return out

    def to_json(self) -> dict[str, Any]:
        """The stable ``--json`` schema (docs/hit.md)."""
        return {
            "schema": SCHEMA,
            "url": self.url,
            "method": self.method,
            "requests": self.requests,
            "successes": self.successes,
            "errors": self.errors,
            "rps": round(self.rps, 3),
            "duration_s": round(self.duration_s, 6),
            "bytes": self.bytes,
            "latency_s": {k: round(v, 6) for k, v in self.latency_s().items()},
            "status_codes": {str(k): v for k, v in sorted(self.status_codes.items())},
            "errors_by_kind": dict(self.errors_by_kind),
            "target_rps": self.target_rps,
            "late": self.late,
            "concurrency": self.concurrency,
            "processes": self.processes,
            "interrupted": self.interrupted,
        }

    def to_wire(self) -> dict[str, Any]:
        """Everything, histogram and timeline included, for merging across processes."""
        d = self.to_json()
        d["duration_s"] = self.duration_s
        d["histogram"] = self.histogram.to_dict()
        d["timeline"] = [
            {
                "second": r.second,
                "requests": r.requests,
                "errors": r.errors,
                "counts": [x for pair in r.counts for x in pair],
            }
            for r in self.timeline
        ]
        return d

    @classmethod
    def merge(cls, parts: list[Mapping[str, Any]], *, processes: int) -> Summary:
        """Add the wire forms of several processes' summaries (exact)."""
        hist = Histogram()
        for p in parts:
            hist.merge(Histogram.from_dict(p["histogram"]))
        codes: dict[int, int] = {}
        kinds = dict.fromkeys(ERROR_KINDS, 0)
        for p in parts:
            for k, v in p["status_codes"].items():
                codes[int(k)] = codes.get(int(k), 0) + v
            for k, v in p["errors_by_kind"].items():
                kinds[k] = kinds.get(k, 0) + v
        first = parts[0]
        rates = [p["target_rps"] for p in parts if p["target_rps"] is not None]
        return cls(
            url=first["url"],
            method=first["method"],
            requests=sum(p["requests"] for p in parts),
            successes=sum(p["successes"] for p in parts),
            errors=sum(p["errors"] for p in parts),
            errors_by_kind=kinds,
            status_codes=codes,
            bytes=sum(p["bytes"] for p in parts),
            duration_s=max(p["duration_s"] for p in parts),
            target_rps=sum(rates) if rates else None,
            late=sum(p["late"] for p in parts),
            concurrency=sum(p["concurrency"] for p in parts),
            processes=processes,
            interrupted=any(p["interrupted"] for p in parts),
            histogram=hist,
            timeline=tuple(Timeline.merge_lists(p["timeline"] for p in parts)),
        )


def _summary(engine: Engine, spec: Spec, *, end: int, timeline: Timeline | None) -> Summary:
    errors = sum(engine.errors.values())
    return Summary(
        url=spec.url,
        method=spec.method,
        requests=engine.finished,
        successes=engine.successes,
        errors=errors,
        errors_by_kind=dict(engine.errors),
        status_codes={s: c for s, c in enumerate(engine.codes) if c},
        bytes=engine.bytes,
        duration_s=max(0, end - engine.base) / 1e9,
        target_rps=engine.rate,
        late=engine.late,
        concurrency=engine.lanes,
        processes=1,
        interrupted=engine.stopped,
        histogram=engine.histogram(),
        timeline=tuple(timeline.rows) if timeline is not None else (),
    )


async def _drive(
    spec: Spec,
    *,
    lanes: int,
    requests: int | None,
    rate: float | None,
    offset: float,
    go: Callable[[], Awaitable[int]],
    stop: asyncio.Event | None,
    timeline: bool,
    progress: Callable[[Progress], None] | None,
    sink: Callable[[Result], None] | None = None,
    on_engine: Callable[[Engine], None] | None = None,
) -> Summary:
    """Connect, wait for ``go`` to give the start time, run to the end or to ``stop``."""
    engine = Engine(spec, lanes=lanes, requests=requests, rate=rate, offset=offset, sink=sink)
    if on_engine is not None:
        on_engine(engine)
    loop = asyncio.get_running_loop()
    stopper: asyncio.Task[None] | None = None
    ticker: asyncio.TimerHandle | None = None
    tl = Timeline() if timeline else None
    try:
        await engine.open_lanes()
        base = await go()
        engine.begin(base, spec.duration)
        if stop is not None:
            stopper = loop.create_task(_stop_when(stop, engine))

        def tick(second: int) -> None:
            nonlocal ticker
            now = engine.clock()
            errors = sum(engine.errors.values())
            if tl is not None:
                tl.tick(second, engine.hist, engine.finished, errors)
            if progress is not None:
                elapsed = (now - base) / 1e9
                progress(
                    Progress(
                        elapsed,
                        engine.finished,
                        errors,
                        engine.finished / elapsed if elapsed > 0 else 0.0,
                        engine.histogram().percentile(99) / 1e6,
                    )
                )
            due = base + (second + 2) * 1_000_000_000
            ticker = loop.call_later(max(0, due - engine.clock()) / 1e9, tick, second + 1)

        if tl is not None or progress is not None:
            ticker = loop.call_later(max(0, base + 1_000_000_000 - engine.clock()) / 1e9, tick, 0)
        await asyncio.shield(engine.done)  # a cancelled run must not cancel the future
        end = engine.last if not engine.stopped else engine.clock()
        if tl is not None:
            # the last, partial second
            last = max(0, (end - base - 1) // 1_000_000_000)
            if not tl.rows or tl.rows[-1].second < last:
                tl.tick(int(last), engine.hist, engine.finished, sum(engine.errors.values()))
        return _summary(engine, spec, end=end, timeline=tl)
    finally:
        if ticker is not None:
            ticker.cancel()
        if stopper is not None:
            stopper.cancel()
        engine.stop()  # no-op when it already finished
        await engine.wait_closed()


async def _stop_when(stop: asyncio.Event, engine: Engine) -> None:
    await stop.wait()
    engine.stop()


async def run_async(
    spec: Spec,
    *,
    stop: asyncio.Event | None = None,
    timeline: bool = False,
    progress: Callable[[Progress], None] | None = None,
    isolate: bool = False,
) -> Summary:
    """Run ``spec`` on the running loop and return its summary.

    Setting ``stop`` ends the run early: nothing more is sent, requests in flight count
    as ``cancelled``, and the partial summary is returned with ``interrupted`` true.
    Cancelling the task closes every connection and re-raises. Raises CannotStart when
    the host does not resolve or no lane connects.

    ``isolate=True`` runs the load test in child processes even when ``spec.processes``
    is 1, so this loop only waits on pipes: for a caller whose loop has other work (hitd's
    ``hit`` task). The summary is the same; a child that dies raises WorkerLost.
    """
    if isolate or (spec.processes > 1 and spec.lanes > 1):
        return await _run_processes(spec, stop=stop, timeline=timeline, progress=progress)

    return await _drive_here(spec, stop=stop, timeline=timeline, progress=progress)


async def _start_now() -> int:
    return time.perf_counter_ns()


async def _drive_here(
    spec: Spec,
    *,
    stop: asyncio.Event | None,
    timeline: bool,
    progress: Callable[[Progress], None] | None,
    sink: Callable[[Result], None] | None = None,
    on_engine: Callable[[Engine], None] | None = None,
) -> Summary:
    """The whole spec in this process, starting at once (no other process to wait for)."""
    return await _drive(
        spec,
        lanes=spec.lanes,
        requests=spec.requests,
        rate=spec.rps,
        offset=0.0,
        go=_start_now,
        stop=stop,
        timeline=timeline,
        progress=progress,
        sink=sink,
        on_engine=on_engine,
    )


def run(spec: Spec, *, timeline: bool = False) -> Summary:
    """Run ``spec`` on a fresh uvloop event loop (in this thread) and return its summary."""
    return uvloop.run(run_async(spec, timeline=timeline))


async def send_n(spec: Spec, *, buffer: int = 1024) -> AsyncIterator[Result]:
    """The book's ``send_n``: yield each request's `Result` as it ends (one process).

    At most ``buffer`` results wait for the consumer; beyond that no new request is sent
    until the loop body catches up. Close the iterator (``contextlib.aclosing``) when you
    leave early, which stops sending and closes the connections.
    """
    buf: deque[Result] = deque()
    wake = asyncio.Event()
    engines: list[Engine] = []

    def sink(result: Result) -> None:
        buf.append(result)
        wake.set()
        if len(buf) >= buffer:
            engines[0].pause()

    task = asyncio.get_running_loop().create_task(
        _drive_here(
            spec, stop=None, timeline=False, progress=None, sink=sink, on_engine=engines.append
        )
    )
    task.add_done_callback(lambda _: wake.set())
    try:
        while True:
            while buf:
                result = buf.popleft()
                if len(buf) < buffer // 2 and engines and engines[0].paused:
                    engines[0].resume()
                yield result
            if task.done():
                task.result()  # raise CannotStart and the like
                return
            wake.clear()
            await wake.wait()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# -- several processes -----------------------------------------------------------------


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


async def _run_processes(
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
        return Summary.merge(done, processes=p)
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
    uvloop.run(_child_async(spec, lanes, requests, k, p, conn, timeline, progress))
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
        summary = await _drive(
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
