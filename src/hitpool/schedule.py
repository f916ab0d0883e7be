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
from typing import Any

from ._errors import SpecError


@dataclass(frozen=True, slots=True)
class OpenSchedule:
    """Item ``i`` (0-based) is due at ``t0 + i / rate`` seconds."""

    rate: float
    t0: float = 0.0

    # Pickled by its fields (for -p children): compiled, a frozen dataclass cannot be
    # unpickled by setting its attributes.
    def __reduce__(self) -> tuple[Any, ...]:
        return (OpenSchedule, (self.rate, self.t0))

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


@dataclass(frozen=True, slots=True)
class Stage:
    """``seconds`` long, the rate going linearly from ``start`` to ``end`` per second."""

    seconds: float
    start: float
    end: float

    def __reduce__(self) -> tuple[Any, ...]:  # see OpenSchedule.__reduce__
        return (Stage, (self.seconds, self.start, self.end))

    def __post_init__(self) -> None:
        if not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise SpecError("stages", f"a stage lasts a positive time, got {self.seconds!r}")
        for r in (self.start, self.end):
            if not (r >= 0 and math.isfinite(r)):
                raise SpecError("stages", f"a stage's rate is 0 or more per second, got {r!r}")

    @property
    def items(self) -> float:
        """The integral of the rate over the stage: how many items it holds."""
        return (self.start + self.end) / 2 * self.seconds


@dataclass(frozen=True, slots=True)
class StagedSchedule:
    """An open schedule whose rate is piecewise linear (k6's ramping arrival rate).

    With ``N(t)`` the integral of the rate from 0, item ``i`` is due at the ``t`` where
    ``N(t) = i`` (item 0 at the first instant the rate is above 0); after the last stage
    nothing more is due. Within a stage of rate ``a + k·u`` (``u`` the time into it),
    ``N = N0 + a·u + k·u²/2``, solved for ``u`` in the form that stays exact when
    ``k`` is 0 or tiny: ``u = 2x / (a + sqrt(a² + 2k·x))`` with ``x = i - N0``.
    """

    stages: tuple[Stage, ...]
    t0: float = 0.0

    def __reduce__(self) -> tuple[Any, ...]:  # see OpenSchedule.__reduce__
        return (StagedSchedule, (self.stages, self.t0))

    def __post_init__(self) -> None:
        if not self.stages:
            raise SpecError("stages", "give at least one stage, e.g. --stage 30s:100")

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    @property
    def total(self) -> int:
        """How many items the whole schedule holds."""
        return self.due_by(self.t0 + self.seconds - 1e-9)

    @property
    def mean_rate(self) -> float:
        return sum(s.items for s in self.stages) / self.seconds

    def due(self, i: int) -> float:
        """The time item ``i`` is due (``inf`` past the last stage)."""
        done = 0.0  # items before the current stage
        t = self.t0
        for s in self.stages:
            x = i - done
            if x < s.items or (x == 0 and s.items > 0):
                k = (s.end - s.start) / s.seconds
                a = s.start
                root = math.sqrt(max(0.0, a * a + 2 * k * x))
                u = 2 * x / (a + root) if a + root > 0 else 0.0
                return t + min(u, s.seconds)
            done += s.items
            t += s.seconds
        return math.inf

    def due_by(self, now: float) -> int:
        """How many items are due at ``now``: items ``0 .. due_by(now) - 1``, the items
        whose ``due`` is at most ``now`` (so the two never disagree on a boundary)."""
        if now < self.t0:
            return 0
        n = 0.0
        t = self.t0
        for s in self.stages:
            if now < t + s.seconds:
                u = now - t
                n += s.start * u + (s.end - s.start) / s.seconds * u * u / 2
                break
            n += s.items
            t += s.seconds
        count = max(0, math.floor(n) + 1)  # the estimate; rounding moves it by one at most
        while count > 0 and self.due(count - 1) > now:
            count -= 1
        while self.due(count) <= now:
            count += 1
        return count


def scaled(stages: tuple[Stage, ...], share: float) -> tuple[Stage, ...]:
    """The stages at ``share`` of their rates: one process's part of a --stage shape when
    the processes split the rate in proportion to their connections."""
    return tuple(Stage(st.seconds, st.start * share, st.end * share) for st in stages)
