"""Running a Spec: `run` on its own loop, `run_async` on the running one (in this process,
or in child processes: `processes`), or the book's `send_n` async iterator of per-request
results.

The clock starts once every lane is connected (connect time is not latency unless a lane
has to reconnect mid-run). Under --rps the schedule is open: request i is due at
``t0 + i / rps`` over all processes (process k of P sends i = k, k+P, ...), and its
latency runs from that due time, so a stalled server shows up as latency instead of as
fewer samples (coordinated omission corrected, as wrk2 does).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

import uvloop

from .._errors import SpecError
from .client import Result
from .driver import drive
from .engine import Engine
from .processes import run_processes
from .progress import Tick, progress_of
from .spec import Spec
from .summary import Progress, Summary

__all__ = ["run", "run_async", "send_n"]


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

    ``progress`` is called once a second with the last second's numbers (all processes'
    together under -p).

    ``isolate=True`` runs the load test in child processes even when ``spec.processes``
    is 1, so this loop only waits on pipes: for a caller whose loop has other work (hitd's
    ``hit`` task). The summary is the same; a child that dies raises WorkerLost.
    """
    on_tick = _progress_from_ticks(progress) if progress is not None else None
    if isolate or (spec.processes > 1 and spec.lanes > 1):
        return await run_processes(spec, stop=stop, timeline=timeline, on_tick=on_tick)
    return await _drive_here(spec, stop=stop, timeline=timeline, on_tick=on_tick)


def _progress_from_ticks(progress: Callable[[Progress], None]) -> Callable[[Tick], None]:
    return lambda tick: progress(progress_of(tick))


async def _start_now() -> int:
    return time.perf_counter_ns()


async def _drive_here(
    spec: Spec,
    *,
    stop: asyncio.Event | None,
    timeline: bool,
    on_tick: Callable[[Tick], None] | None,
    sink: Callable[[Result], None] | None = None,
    on_engine: Callable[[Engine], None] | None = None,
) -> Summary:
    """The whole spec in this process, starting at once (no other process to wait for)."""
    return await drive(
        spec,
        lanes=spec.lanes,
        requests=spec.requests,
        rate=spec.rps,
        offset=0.0,
        go=_start_now,
        stop=stop,
        timeline=timeline,
        on_tick=on_tick,
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
    if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
        raise SpecError("buffer", f"must be a positive integer, got {buffer!r}")
    # Resume below half the buffer, and at the latest when it is empty (buffer 1 never
    # resumed: half of it is 0).
    low = max(1, buffer // 2)
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
            spec, stop=None, timeline=False, on_tick=None, sink=sink, on_engine=engines.append
        )
    )
    task.add_done_callback(lambda _: wake.set())
    try:
        while True:
            while buf:
                result = buf.popleft()
                if len(buf) < low and engines and engines[0].paused:
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
