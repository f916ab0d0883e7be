"""produce -> throttle -> dispatch, on a fake clock where timing matters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from _waiting import finishes
from hitpool import OpenSchedule, SpecError
from hitpool.pipeline import Lateness, dispatch, produce, throttle


class FakeClock:
    """Time moves only when a stage sleeps (or a test says so)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(
    ("rate", "i", "now", "wait", "late"),
    [
        (10, 0, 0.0, 0.0, 0.0),
        (10, 1, 0.0, 0.1, 0.0),
        (10, 5, 0.2, 0.3, 0.0),
        (10, 5, 0.75, 0.0, 0.25),
        (0.5, 2, 1.0, 3.0, 0.0),
    ],
)
def test_open_schedule_table(rate: float, i: int, now: float, wait: float, late: float) -> None:
    s = OpenSchedule(rate, 0.0)
    assert s.wait(i, now) == pytest.approx(wait)
    assert s.lateness(i, now) == pytest.approx(late)


def test_due_by_counts_items_due() -> None:
    s = OpenSchedule(10, 5.0)
    assert [s.due_by(t) for t in (4.9, 5.0, 5.05, 5.1, 6.0)] == [0, 1, 1, 2, 11]
    with pytest.raises(SpecError):
        OpenSchedule(0)


async def test_produce_n_and_forever() -> None:
    assert [x async for x in produce(3, lambda: "r")] == ["r", "r", "r"]
    forever = produce(None, object)
    got = [await anext(forever) for _ in range(1000)]
    await forever.aclose()  # type: ignore[attr-defined]
    assert len(got) == 1000
    with pytest.raises(SpecError):
        await anext(produce(-1, object))


async def test_throttle_paces_on_an_open_schedule_without_drift() -> None:
    clock = FakeClock()
    lateness = Lateness()
    out = throttle(produce(5, lambda: 1), 10, lateness=lateness, clock=clock, sleep=clock.sleep)
    times = []
    async for _ in out:
        times.append(round(clock.now - 100.0, 6))
        if len(times) == 2:
            clock.now += 0.25  # a slow consumer: items 2 and 3 are late, 4 is not
    assert times == [0.0, 0.1, 0.35, 0.35, 0.4]
    assert lateness.items == 5
    assert lateness.late == 2
    assert lateness.max == pytest.approx(0.15)


async def test_closing_the_last_stage_closes_every_stage_and_cancels_work() -> None:
    closed: list[str] = []
    started = asyncio.Event()
    before = asyncio.all_tasks() - {asyncio.current_task()}

    async def source() -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append("source")

    async def send(i: int) -> int:
        if i >= 3:
            started.set()
            await asyncio.Event().wait()  # never finishes unless cancelled
        return i

    results = dispatch(throttle(source(), 1e6), 4, send)
    got = []
    async with contextlib.aclosing(results):
        async for r in results:
            got.append(r)
            if len(got) == 3:
                await started.wait()
                break
    assert sorted(got) == [0, 1, 2]
    assert closed == ["source"]
    assert asyncio.all_tasks() - {asyncio.current_task()} == before


async def test_cancelling_the_consumer_stops_the_pipeline() -> None:
    before = asyncio.all_tasks() - {asyncio.current_task()}
    first = asyncio.Event()

    async def send(i: int) -> int:
        first.set()
        await asyncio.Event().wait()
        return i

    async def consume() -> None:
        async with contextlib.aclosing(dispatch(produce(None, int), 3, send)) as results:
            async for _ in results:
                pass

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.all_tasks() - {asyncio.current_task()} == before


async def test_pipeline_counts_every_item() -> None:
    async def send(i: int) -> int:
        await asyncio.sleep(0)
        return i

    n = iter(range(500))
    results = [r async for r in dispatch(produce(500, lambda: next(n)), 7, send)]
    assert sorted(results) == list(range(500))


async def test_pipeline_dispatch_yields_results_while_the_throttle_is_waiting() -> None:
    # produce -> throttle -> dispatch with a slow rate: the first result should not wait
    # for 2 * concurrency items to be throttled out. A fake sleep that blocks until the
    # consumer has its first result shows it (no real time passes).
    first = asyncio.Event()

    async def fake_sleep(s: float) -> None:
        await first.wait()

    async def run() -> int:
        src = throttle(produce(10, lambda: 1), rate=1.0, clock=lambda: 0.0, sleep=fake_sleep)
        results = dispatch(src, concurrency=4, fn=lambda x: x)
        n = 0
        async for _ in results:
            n += 1
            first.set()
        return n

    ok, n = await finishes(run())
    assert ok, "the first result waits until 2 * concurrency items left the throttle"
    assert n == 10
