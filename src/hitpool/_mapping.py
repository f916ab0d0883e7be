"""`Dispatcher.map`'s machinery: one call's window of jobs in flight, yielded in input order
or as they complete. Kept apart from the pool itself, which it uses only through `dispatch`
and its jobs' outcomes."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:  # dispatcher.py imports this module
    from .dispatcher import Dispatcher, Job

R = TypeVar("R")


class Mapper(Generic[R]):
    """The state of one `Dispatcher.map` call."""

    def __init__(
        self,
        pool: Dispatcher,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any] | AsyncIterable[Any],
        ordered: bool,
    ) -> None:
        self.pool = pool
        self.fn = fn
        self.iterable = iterable
        self.ordered = ordered
        self.window = pool.workers + pool.queue_size
        self.in_flight: deque[Job[Any]] = deque()
        self.done: deque[Job[Any]] = deque()
        self.wake: asyncio.Future[None] | None = None

    def _on_done(self, job: Job[Any]) -> None:
        self.done.append(job)
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

    async def run(self) -> AsyncIterator[Any]:
        pool = self.pool
        loop = pool._require_loop()
        if isinstance(self.iterable, AsyncIterable):
            ait = aiter(self.iterable)
            sync_it = None
        else:
            ait = None
            sync_it = iter(self.iterable)
        exhausted = False
        in_flight = self.in_flight
        try:
            while True:
                while not exhausted and len(in_flight) < self.window:
                    try:
                        item = next(sync_it) if sync_it is not None else await anext(ait)  # type: ignore[arg-type]
                    except (StopIteration, StopAsyncIteration):
                        exhausted = True
                        break
                    job = await pool.dispatch(self.fn, item)
                    in_flight.append(job)
                    if not self.ordered:
                        job.add_done_callback(self._on_done)
                if not in_flight:
                    return
                if self.ordered:
                    job = in_flight.popleft()
                    yield await job
                else:
                    while not self.done:
                        self.wake = loop.create_future()
                        await self.wake
                    job = self.done.popleft()
                    in_flight.remove(job)
                    yield job._outcome()
        finally:
            for job in in_flight:
                job.cancel()
            if ait is not None and hasattr(ait, "aclose"):
                await ait.aclose()
