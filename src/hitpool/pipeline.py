"""The Go book's pipeline stages: produce -> throttle -> dispatch.

The book builds its `hit` on them; our `hit` has an engine of its own and shares only the
pacing rule with them (`OpenSchedule`, docs/design.md "Layers").

Each stage is an async iterator, so they compose as the channels of seed 000 do::

    results = dispatch(throttle(produce(100, make_request), rate=5), concurrency=10, fn=send)
    async with contextlib.aclosing(results):
        async for result in results:
            ...

Closing the last stage (breaking out under ``aclosing``, ``aclose()`` or cancelling the
consumer) closes every stage before it and cancels what is in flight: nothing is left
running. The book's `throttle` uses a ticker, so a slow consumer makes every later item
later still; ours follows an open schedule (`OpenSchedule`): item i is due at
``t0 + i / rate`` whatever happened before, and how late each item left is recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ._errors import SpecError
from .dispatcher import Dispatcher
from .schedule import OpenSchedule

__all__ = ["Lateness", "dispatch", "produce", "throttle"]

T = TypeVar("T")
R = TypeVar("R")


async def produce(n: int | None, factory: Callable[[], T]) -> AsyncIterator[T]:
    """Yield ``factory()`` n times (forever when n is None, until the consumer stops)."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise SpecError("n", f"must be a whole number >= 0 or None, got {n!r}")
    i = 0
    while n is None or i < n:
        yield factory()
        i += 1


@dataclass(slots=True)
class Lateness:
    """How late the items of a throttle left, against their due times (seconds)."""

    items: int = 0
    late: int = 0
    total: float = 0.0
    max: float = 0.0
    tolerance: float = field(default=0.001)

    def record(self, lateness: float) -> None:
        self.items += 1
        if lateness > self.tolerance:
            self.late += 1
        self.total += lateness
        if lateness > self.max:
            self.max = lateness


async def throttle(
    source: AsyncIterable[T],
    rate: float,
    *,
    lateness: Lateness | None = None,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> AsyncIterator[T]:
    """Pass items on at ``rate`` per second on an open schedule from the first item.

    ``lateness`` (if given) records how late each item left; ``clock`` and ``sleep`` are
    the loop's by default and a fake clock's in tests.
    """
    now = clock or asyncio.get_running_loop().time
    schedule: OpenSchedule | None = None
    i = 0
    ait = aiter(source)
    try:
        async for item in ait:
            if schedule is None:
                schedule = OpenSchedule(rate, now())
            wait = schedule.wait(i, now())
            if wait > 0:
                await sleep(wait)
            if lateness is not None:
                lateness.record(schedule.lateness(i, now()))
            i += 1
            yield item
    finally:
        aclose = getattr(ait, "aclose", None)
        if aclose is not None:
            await aclose()


async def dispatch(
    source: AsyncIterable[T],
    concurrency: int,
    fn: Callable[[T], Awaitable[R] | R],
    *,
    ordered: bool = False,
) -> AsyncIterator[R]:
    """Run ``fn(item)`` for each item on ``concurrency`` workers; yield results as they finish.

    Runs on a `Dispatcher` whose queue holds ``concurrency`` items, so at most
    ``2 * concurrency`` items are pulled ahead of the consumer. A failing ``fn`` raises
    from this iterator after cancelling the rest.
    """
    async with Dispatcher(workers=concurrency, queue_size=concurrency) as pool:
        results: AsyncIterator[Any] = pool.map(fn, source, ordered=ordered)
        try:
            async for result in results:
                yield result
        finally:
            await results.aclose()  # type: ignore[attr-defined]
