"""Per-second rates of the last minutes, for the dashboard: a ring of counts. Pure core.

/metrics counts totals since start (jobs accepted, attempts completed and failed). A rate
chart needs what each second added, so `RateRing` is fed the totals about once a second and
keeps the difference, one slot per wall-clock second, for the last `seconds` seconds:

    sample(now, totals)  the count of second int(now) grows by totals - previous totals;
                         seconds skipped since the previous sample count zero
    series(now)          {"t": [second, ...], name: [count, ...], ...}, oldest first

Invariant: the sum of a name's counts in the ring equals its total at the last sample minus
its total at the first sample still covered (older seconds dropped off the ring). A clock
that steps back adds to the current second rather than rewriting the past.

`RateSampler` is the thin shell: a task owned by `Hitd` that samples once a second, just
after each whole second of the clock, so that each second of the ring gets one sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

__all__ = ["RATE_NAMES", "RateRing", "RateSampler"]

RATE_NAMES = ("accepted", "completed", "failed")
RING_SECONDS = 300  # five minutes: 300 slots of three ints
SETTLE_S = 0.01  # the sampler wakes this long after a second begins, never just before it


class RateRing:
    def __init__(self, names: Sequence[str] = RATE_NAMES, seconds: int = RING_SECONDS) -> None:
        if seconds < 1:
            raise ValueError("seconds must be at least 1")
        self.names = tuple(names)
        self._seconds = seconds
        self._slots: deque[tuple[int, list[int]]] = deque(maxlen=seconds)
        self._last: tuple[int, ...] | None = None

    def sample(self, now: float, totals: Sequence[int]) -> None:
        if len(totals) != len(self.names):
            raise ValueError(f"{len(totals)} totals for {len(self.names)} names")
        second = int(now)
        last, self._last = self._last, tuple(totals)
        if last is None:  # the first sample is the baseline: nothing to count yet
            self._slots.append((second, [0] * len(totals)))
            return
        # A total never falls (counters only grow); max() keeps a rate from going negative
        # should one ever be reset.
        delta = [max(0, t - p) for t, p in zip(totals, last, strict=True)]
        top = self._slots[-1][0] if self._slots else second
        if second <= top and self._slots:
            counts = self._slots[-1][1]
            for i, d in enumerate(delta):
                counts[i] += d
            return
        # Seconds with no sample count zero; at most a ring's worth of them is kept.
        for s in range(max(top + 1, second - self._seconds + 1), second):
            self._slots.append((s, [0] * len(totals)))
        self._slots.append((second, delta))

    def series(self, now: float) -> dict[str, list[int]]:
        """The last `seconds` seconds up to int(now), oldest first, missing seconds as 0."""
        end = int(now)
        start = end - self._seconds + 1
        by_second = {s: c for s, c in self._slots if start <= s <= end}
        first = min(by_second, default=end)
        out: dict[str, list[int]] = {"t": list(range(first, end + 1))}
        for i, name in enumerate(self.names):
            out[name] = [by_second[s][i] if s in by_second else 0 for s in out["t"]]
        return out


class RateSampler:
    """Samples `totals()` into `ring` every `every_s` seconds, from `start()` to `stop()`."""

    def __init__(
        self,
        ring: RateRing,
        totals: Callable[[], Sequence[int]],
        *,
        clock: Callable[[], float] = time.time,
        every_s: float = 1.0,
        wait: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.ring = ring
        self._totals = totals
        self._clock = clock
        self._every_s = every_s
        self._wait = wait
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        self.ring.sample(self._clock(), self._totals())

    async def _run(self) -> None:
        while True:
            self.sample()
            # To just past the next whole step, not a fixed step on: every sleep overshoots a
            # little, and fixed steps drift until a second gets no sample (a 0 on the chart,
            # then a double). Aligned, each second gets one sample while the loop keeps up.
            step = self._every_s
            await self._wait(step - self._clock() % step + SETTLE_S)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="hitd-rates")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
