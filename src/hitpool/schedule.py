"""Pure pacing: when item i is due on an open schedule.

An open schedule fixes every due time in advance: item i is due at ``t0 + i / rate``
whatever happens to earlier items. A slow consumer makes items leave late; it never
pushes the schedule back (no drift), and how late each item left is what a load
generator reports as the coordinated-omission correction (wrk2's approach).

Nothing here reads a clock: every method takes the time it is asked about, so the
rules are tested with tables of numbers and no event loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._errors import SpecError


@dataclass(frozen=True, slots=True)
class OpenSchedule:
    """Item ``i`` (0-based) is due at ``t0 + i / rate`` seconds."""

    rate: float
    t0: float = 0.0

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise SpecError(
                "rate", f"must be a positive number of items per second, got {self.rate!r}"
            )

    def due(self, i: int) -> float:
        """The time item ``i`` is due."""
        return self.t0 + i / self.rate

    def wait(self, i: int, now: float) -> float:
        """Seconds to wait at ``now`` before item ``i`` may leave (0 when it is due or late)."""
        return max(0.0, self.due(i) - now)

    def lateness(self, i: int, now: float) -> float:
        """How late item ``i`` leaves when it leaves at ``now`` (0 when on time)."""
        return max(0.0, now - self.due(i))

    def due_by(self, now: float) -> int:
        """How many items are due at ``now``: items ``0 .. due_by(now) - 1``."""
        if now < self.t0:
            return 0
        # The small epsilon keeps float rounding (0.1 * 10 = 0.9999...) from
        # holding back an item that is exactly due.
        return math.floor((now - self.t0) * self.rate + 1e-9) + 1
