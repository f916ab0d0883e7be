"""One process's share of a run: an `Engine` from connecting its lanes to its `Summary`.

Both a run in this process and each worker process of a multi-process run go through
`drive`. The clock starts at the time ``go`` gives, asked once every lane is connected:
connect time is not latency, and several processes can start together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .client import Result
from .engine import Engine
from .progress import Tick
from .spec import Spec
from .stats import Timeline
from .summary import Summary

__all__ = ["drive"]


def _summary(engine: Engine, spec: Spec, *, end: int, timeline: Timeline | None) -> Summary:
    errors = sum(engine.errors.values())
    return Summary(
        url=spec.target.shown,  # the password, if the URL holds one, is not reported
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
        dropped=engine.dropped,
        concurrency=engine.lanes,
        processes=1,
        interrupted=engine.stopped,
        histogram=engine.histogram(),
        timeline=tuple(timeline.rows) if timeline is not None else (),
    )


async def drive(
    spec: Spec,
    *,
    lanes: int,
    requests: int | None,
    rate: float | None,
    offset: float,
    go: Callable[[], Awaitable[int]],
    stop: asyncio.Event | None,
    part: tuple[int, int] = (0, 1),
    timeline: bool,
    on_tick: Callable[[Tick], None] | None,
    sink: Callable[[Result], None] | None = None,
    on_engine: Callable[[Engine], None] | None = None,
) -> Summary:
    """Connect, wait for ``go`` to give the start time, run to the end or to ``stop``.
    ``on_tick`` gets a `Tick` at the end of every whole second."""
    if spec.script is not None or spec.targets:  # hit -f / --targets: iterations
        from .scenario_run import drive_scenarios

        return await drive_scenarios(
            spec, lanes=lanes, requests=requests, rate=rate, offset=offset, go=go, stop=stop,
            part=part, timeline=timeline, on_tick=on_tick,
        )  # fmt: skip
    engine = Engine(spec, lanes=lanes, requests=requests, rate=rate, offset=offset, sink=sink)
    if on_engine is not None:
        on_engine(engine)
    loop = asyncio.get_running_loop()
    stopper: asyncio.Task[None] | None = None
    ticker: asyncio.TimerHandle | None = None
    # One snapshot of the histogram a second feeds both the -o timeline and the ticks;
    # without -o the rows are dropped once their tick is out.
    tl = Timeline() if timeline or on_tick is not None else None
    try:
        if stop is None:
            await engine.open_lanes()
        elif not await _open_unless_stopped(engine, stop):
            # Ctrl-C while the lanes connect (a host that does not answer can take -t):
            # nothing was sent, and the run ends at once as interrupted.
            engine.base = engine.last = engine.clock()
            engine.stop()
            return _summary(engine, spec, end=engine.base, timeline=tl if timeline else None)
        base = await go()
        if stop is not None and stop.is_set():  # stopped while waiting for the other processes
            engine.base = engine.last = base
            engine.stop()
            return _summary(engine, spec, end=base, timeline=tl if timeline else None)
        engine.begin(base, spec.duration)
        if stop is not None:
            stopper = loop.create_task(_stop_when(stop, engine))

        prev = base

        def tick(second: int) -> None:
            nonlocal ticker, prev
            assert tl is not None
            now = engine.clock()
            errors = sum(engine.errors.values())
            row = tl.tick(second, engine.hist, engine.finished, errors, engine.issued)
            if not timeline:
                tl.rows.clear()
            # The next tick is armed before the callback runs: a callback that raises must
            # not end the ticks (the -o timeline would lose every second after it).
            due = base + (second + 2) * 1_000_000_000
            ticker = loop.call_later(max(0, due - engine.clock()) / 1e9, tick, second + 1)
            rate = row.requests * 1e9 / max(1, now - prev)
            prev = now
            if on_tick is not None:
                on_tick(
                    Tick(
                        second=second,
                        elapsed_s=(now - base) / 1e9,
                        requests=engine.finished,
                        errors=errors,
                        in_flight=engine.issued - engine.finished,
                        rate=rate,
                        row=row,
                    )
                )

        if tl is not None:
            ticker = loop.call_later(max(0, base + 1_000_000_000 - engine.clock()) / 1e9, tick, 0)
        await asyncio.shield(engine.done)  # a cancelled run must not cancel the future
        end = engine.last if not engine.stopped else engine.clock()
        if timeline:
            assert tl is not None
            # the last, partial second
            last = max(0, (end - base - 1) // 1_000_000_000)
            if not tl.rows or tl.rows[-1].second < last:
                tl.tick(
                    int(last),
                    engine.hist,
                    engine.finished,
                    sum(engine.errors.values()),
                    engine.issued,
                )
        return _summary(engine, spec, end=end, timeline=tl if timeline else None)
    finally:
        if ticker is not None:
            ticker.cancel()
        if stopper is not None:
            stopper.cancel()
        engine.stop()  # no-op when it already finished
        await engine.wait_closed()


async def _open_unless_stopped(engine: Engine, stop: asyncio.Event) -> bool:
    """Connect the lanes; False (the connects cancelled) if ``stop`` is set first."""
    opening = asyncio.ensure_future(engine.open_lanes())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((opening, stopping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not opening.done():
            opening.cancel()
            await asyncio.wait((opening,))
    if opening.cancelled():
        return False
    opening.result()  # CannotStart when no lane connected
    return True


async def _stop_when(stop: asyncio.Event, engine: Engine) -> None:
    await stop.wait()
    engine.stop()
