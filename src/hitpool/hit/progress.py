"""What a run reports while it runs: one `Tick` per second from each process, and the
`Progress` the live line shows, built from the ticks of every process for the same second.

The rate and the percentiles are those of the last second, not of the run so far: a
running average keeps showing hundreds of requests a second through a complete stall.
Under ``-p`` the parent shows second s once every process still running has sent its tick
for s, so the line never mixes this second's numbers of one process with the last
second's of another. Pure: no clock, no loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .stats import Second, Timeline
from .summary import Progress

__all__ = ["Tick", "TickMerger", "merge_ticks", "progress_of"]


@dataclass(frozen=True, slots=True)
class Tick:
    """One second of one process's run."""

    second: int  # 0-based, since the clock started
    elapsed_s: float
    requests: int  # requests that ended so far (successes + errors)
    errors: int
    in_flight: int
    rate: float  # requests that ended in this second, per second
    row: Second  # this second's completions and their latencies

    def to_wire(self) -> dict[str, Any]:
        r = self.row
        return {
            "second": self.second,
            "elapsed_s": self.elapsed_s,
            "requests": self.requests,
            "errors": self.errors,
            "in_flight": self.in_flight,
            "rate": self.rate,
            "row": {
                "second": r.second,
                "requests": r.requests,
                "errors": r.errors,
                "counts": [x for pair in r.counts for x in pair],
                "sent": r.sent,
                "in_flight": r.in_flight,
            },
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Tick:
        [row] = Timeline.merge_lists([[d["row"]]])
        return cls(
            d["second"], d["elapsed_s"], d["requests"], d["errors"], d["in_flight"], d["rate"], row
        )


def merge_ticks(ticks: Sequence[Tick]) -> Tick:
    """The ticks of several processes for one second, added (exact for counts)."""
    rows = Timeline.merge_lists([[t.to_wire()["row"]] for t in ticks])  # slot by slot
    row = rows[0] if rows else Second(ticks[0].second, 0, 0, ())
    return Tick(
        second=ticks[0].second,
        elapsed_s=max(t.elapsed_s for t in ticks),
        requests=sum(t.requests for t in ticks),
        errors=sum(t.errors for t in ticks),
        in_flight=sum(t.in_flight for t in ticks),
        rate=sum(t.rate for t in ticks),
        row=row,
    )


def progress_of(tick: Tick) -> Progress:
    """The progress line's numbers: p50/p99 of the last second (None when nothing ended)."""
    row = tick.row
    p50 = row.percentile(50) / 1e6 if row.counts else None
    p99 = row.percentile(99) / 1e6 if row.counts else None
    return Progress(tick.elapsed_s, tick.requests, tick.errors, tick.rate, p99, p50, tick.in_flight)


class TickMerger:
    """Collects the ticks of ``processes`` processes and releases each second whole: once
    every process still running has sent it. A process that ended sends no more ticks,
    and a second it never reached is complete without it."""

    __slots__ = ("_last", "_pending", "_running")

    def __init__(self, processes: int) -> None:
        self._running = set(range(processes))
        self._pending: dict[int, dict[int, Tick]] = {}
        self._last = -1  # the last second released

    def add(self, k: int, tick: Tick) -> list[Tick]:
        """Process ``k``'s tick; the seconds that are now complete, merged, in order."""
        if tick.second > self._last:
            self._pending.setdefault(tick.second, {})[k] = tick
        return self._release()

    def ended(self, k: int) -> list[Tick]:
        """Process ``k`` sent its result; the seconds that waited only for it."""
        self._running.discard(k)
        return self._release()

    def _release(self) -> list[Tick]:
        out: list[Tick] = []
        for second in sorted(self._pending):
            got = self._pending[second]
            if not self._running <= set(got):
                break
            del self._pending[second]
            self._last = second
            out.append(merge_ticks(list(got.values())))
        return out
