"""`ParkingLot`: the one way a `Dispatcher` waits, as trio's ``_core/_parking_lot.py`` is for
trio's synchronisation objects.

A task parks on a loop future of its own, in FIFO order; whoever changes what the parked
tasks wait for wakes one of them, or all. Every wait in the asyncio dispatcher goes through
a lot: idle workers, callers waiting for room in the ready queue, callers waiting for room
among the delayed jobs, and `join()` calls waiting for their jobs.

A lot knows nothing of why its tasks wait: a woken task checks its condition again and parks
again (at the front, when it lost a race it was woken for) if it does not hold.

Invariants:

- every future in ``waiters`` belongs to a task inside `park`, and is pending or cancelled
  (its task was cancelled and has not unwound yet); a wake skips a cancelled one;
- ``on_its_way`` counts the tasks woken by `wake_one_on_its_way` that have not resumed yet:
  a burst of puts wakes one worker, not one per put, and the worker that resumes wakes the
  next while work remains (a chain);
- a wake-up is never lost: a task cancelled after it was woken, before it resumed, hands
  its wake-up to the next parked task.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["ParkingLot"]


class ParkingLot:
    """A FIFO of parked tasks, woken one at a time or all at once."""

    __slots__ = ("on_its_way", "waiters")

    def __init__(self) -> None:
        # A woken future's result says whether its wake-up was counted in on_its_way.
        self.waiters: deque[asyncio.Future[bool]] = deque()
        self.on_its_way = 0

    def __len__(self) -> int:
        return len(self.waiters)

    async def park(self, loop: asyncio.AbstractEventLoop, first: bool = False) -> None:
        """Wait until woken; ``first`` parks at the front (a task woken before that lost
        what it was woken for keeps its turn).

        A caller that parks once per job may inline this body (the dispatcher's workers
        do): a future of its own appended to ``waiters``, `abandon` when the wait ends in
        an exception, ``on_its_way`` counted down when the result says so.
        """
        fut: asyncio.Future[bool] = loop.create_future()
        if first:
            self.waiters.appendleft(fut)
        else:
            self.waiters.append(fut)
        try:
            counted = await fut
        except BaseException:
            self.abandon(fut)
            raise
        if counted:
            self.on_its_way -= 1

    def abandon(self, fut: asyncio.Future[bool]) -> None:
        """The task parked on ``fut`` stops waiting (it was cancelled): take it out of the
        lot, or, when it had been woken already, pass its wake-up on."""
        if fut.done() and not fut.cancelled():
            # Woken, then cancelled before it resumed: pass the wake-up on.
            if fut.result():
                self.on_its_way -= 1
                self.wake_one_on_its_way()
            else:
                self.wake_one()
        else:
            fut.cancel()
            try:
                self.waiters.remove(fut)
            except ValueError:  # a wake already skipped it
                pass

    def wake_one(self) -> bool:
        """Wake the first parked task; False when none is parked."""
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(False)
                return True
        return False

    def wake_one_on_its_way(self) -> None:
        """Wake the first parked task unless a task woken this way has not resumed yet."""
        if self.on_its_way:
            return
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                self.on_its_way += 1
                fut.set_result(True)
                return

    def wake_all(self) -> None:
        """Wake every parked task."""
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(False)
