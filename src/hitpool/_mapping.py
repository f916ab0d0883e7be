"""`Dispatcher.map`'s machinery: one call's window of jobs in flight, yielded in input order
or as they complete. Kept apart from the pool itself, which it uses only through `dispatch`
and its jobs' outcomes."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
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
        if not self.ordered:
            self.done.append(job)
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

    def _ready(self) -> bool:
        """A result can be yielded now: the head's (in order) or any finished one's."""
        if self.ordered:
            return bool(self.in_flight) and self.in_flight[0].done()
        return bool(self.done)

    async def run(self) -> AsyncIterator[Any]:
        # Invariants: a finished result is yielded before another item is pulled, and an
        # async source is pulled in a task of its own while the jobs run, so no result
        # waits for the window to fill: a throttled source delays no result, and a source
        # that waits for the consumer (a crawler's frontier) is not deadlocked.
        pool = self.pool
        loop = pool._require_loop()
        ait: AsyncIterator[Any] | None = None
        sync_it: Iterator[Any] | None = None
        if isinstance(self.iterable, AsyncIterable):
            ait = aiter(self.iterable)
        else:
            sync_it = iter(self.iterable)
        exhausted = False
        in_flight = self.in_flight
        pull: asyncio.Task[Any] | None = None
        try:
            while True:
                while self._ready():
                    job = in_flight.popleft() if self.ordered else self.done.popleft()
                    if not self.ordered:
                        in_flight.remove(job)
                    yield job._outcome()
                if sync_it is not None:
                    while not exhausted and len(in_flight) < self.window:
                        try:
                            item = next(sync_it)
                        except StopIteration:
                            exhausted = True
                            break
                        await self._dispatch(item)
                elif pull is None and not exhausted and len(in_flight) < self.window:
                    assert ait is not None
                    pull = loop.create_task(_next(ait))
                if self._ready():
                    continue
                if not in_flight and pull is None:
                    return  # exhausted, all yielded
                self.wake = loop.create_future()
                if pull is None:
                    await self.wake  # a job finishing is all that can happen
                    continue
                await asyncio.wait((self.wake, pull), return_when=asyncio.FIRST_COMPLETED)
                if pull.done():
                    done, pull = pull, None
                    try:
                        item = done.result()
                    except StopAsyncIteration:
                        exhausted = True
                    else:
                        await self._dispatch(item)
        finally:
            for job in in_flight:
                job.cancel()
            if pull is not None:
                pull.cancel()
                await asyncio.wait([pull])  # the source must not be running when it closes
            if ait is not None and hasattr(ait, "aclose"):
                await ait.aclose()

    async def _dispatch(self, item: Any) -> None:
        job = await self.pool.dispatch(self.fn, item)
        self.in_flight.append(job)
        job.add_done_callback(self._on_done)


async def _next(ait: AsyncIterator[Any]) -> Any:
    return await anext(ait)
