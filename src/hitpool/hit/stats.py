"""Pure latency statistics: an HDR-style log-linear histogram and a per-second timeline.

No clock, socket or disk here: values come in as integers (hit records microseconds),
time comes in as an argument, and everything serializes to plain JSON-able dicts so
worker processes can ship their histograms to a parent that merges them exactly.

The bucket layout is HdrHistogram's with 3 significant digits and a lowest
discernible value of 1 (see ``HdrHistogram/HdrHistogram_py``):

* 2048 sub-buckets (``2 * 10**3`` rounded up to a power of two), half of them reused
  per bucket, so values below 2048 are counted exactly and every larger value falls
  in a slot no wider than 1/1024 of it (relative error < 0.1 %);
* the slot of ``v`` is ``(b << 10) + (v >> b)`` with ``b = max(0, bitlen(v) - 11)``,
  the same index HdrHistogram computes with its masks, so percentiles agree with
  the ``hdrhistogram`` package value for value (tests/hit/test_hit_stats.py).

Memory is constant: a list of ``COUNTS_LEN`` counters (184 KiB of slots, plus the int
objects of counts above 256: under 1 MiB) whatever the number of values; values above
``HIGHEST_TRACKABLE`` land in the top slot (exact ``max`` is kept).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._errors import SpecError

SIGNIFICANT_DIGITS = 3
SUB_BUCKET_COUNT = 2048  # 2 * 10**3 rounded up to a power of two
SUB_BUCKET_HALF_MAGNITUDE = 10  # log2(SUB_BUCKET_COUNT // 2)
SUB_BUCKET_BITS = 11  # log2(SUB_BUCKET_COUNT)
# 22 buckets track up to 2048 << 21 - 1 (≈ 4.3e9: 71 minutes in microseconds), which
# is what HdrHistogram allocates for highest_trackable_value = 3_600_000_000.
BUCKET_COUNT = 22
COUNTS_LEN = (BUCKET_COUNT + 1) << SUB_BUCKET_HALF_MAGNITUDE  # 23552
HIGHEST_TRACKABLE = (SUB_BUCKET_COUNT << (BUCKET_COUNT - 1)) - 1
FORMAT = "hitpool-hdr/1"


def index_of(value: int) -> int:
    """The counts slot that holds ``value`` (clamped to 0 .. COUNTS_LEN - 1)."""
    if value < SUB_BUCKET_COUNT:
        return value if value > 0 else 0
    b = value.bit_length() - SUB_BUCKET_BITS
    i = (b << SUB_BUCKET_HALF_MAGNITUDE) + (value >> b)
    return i if i < COUNTS_LEN else COUNTS_LEN - 1


def lowest_of(index: int) -> int:
    """The smallest value that lands in slot ``index``."""
    b = (index >> SUB_BUCKET_HALF_MAGNITUDE) - 1
    if b < 0:
        return index
    return ((index & (SUB_BUCKET_COUNT // 2 - 1)) + SUB_BUCKET_COUNT // 2) << b


def highest_of(index: int) -> int:
    """The largest value that lands in slot ``index``."""
    b = max(0, (index >> SUB_BUCKET_HALF_MAGNITUDE) - 1)
    return lowest_of(index) + (1 << b) - 1


class Histogram:
    """Counts of integer values in HDR log-linear slots, with exact count, sum, min and max.

    ``record`` is the hot path (a few integer operations, no allocation). ``merge``
    adds another histogram slot by slot, so merging is exact and order-free.
    """

    __slots__ = ("counts", "max", "min", "sum", "total")

    def __init__(self) -> None:
        # A list, not array('q'): ``counts[i] += 1`` on a list is about 100 ns cheaper per
        # call in CPython 3.11, and this is the per-request path.
        self.counts: list[int] = [0] * COUNTS_LEN
        self.total = 0
        self.sum = 0
        self.min = 0
        self.max = 0

    def record(self, value: int, count: int = 1) -> None:
        """Count ``value`` (``count`` times). Negative values count as 0."""
        if value < SUB_BUCKET_COUNT:
            if value < 0:
                value = 0
            self.counts[value] += count
        else:
            b = value.bit_length() - SUB_BUCKET_BITS
            i = (b << SUB_BUCKET_HALF_MAGNITUDE) + (value >> b)
            self.counts[i if i < COUNTS_LEN else COUNTS_LEN - 1] += count
        if self.total == 0:
            self.min = self.max = value
        elif value > self.max:
            self.max = value
        elif value < self.min:
            self.min = value
        self.total += count
        self.sum += value * count

    def merge(self, other: Histogram) -> None:
        """Add every count of ``other`` into this histogram (exact)."""
        if other.total == 0:
            return
        mine = self.counts
        for i, c in enumerate(other.counts):
            if c:
                mine[i] += c
        if self.total == 0:
            self.min, self.max = other.min, other.max
        else:
            self.min = min(self.min, other.min)
            self.max = max(self.max, other.max)
        self.total += other.total
        self.sum += other.sum

    def copy(self) -> Histogram:
        h = Histogram()
        h.counts = self.counts.copy()
        h.total, h.sum, h.min, h.max = self.total, self.sum, self.min, self.max
        return h

    @property
    def mean(self) -> float:
        """The exact mean of the recorded values (0.0 when empty)."""
        return self.sum / self.total if self.total else 0.0

    def percentile(self, p: float) -> int:
        """The value at percentile ``p`` (0..100), HdrHistogram's rule.

        The target rank is ``max(1, round_half_up(p * total / 100))``; the answer is the
        highest value of the slot where the running count reaches it (the lowest for
        p == 0). 0 when empty.
        """
        return self.percentiles([p])[0]

    def percentiles(self, ps: Sequence[float]) -> list[int]:
        """Several percentiles in one pass over the counts."""
        if not ps:
            return []
        for p in ps:
            if not 0.0 <= p <= 100.0:
                raise SpecError("percentile", f"must be within 0..100, got {p!r}")
        if self.total == 0:
            return [0 for _ in ps]
        order = sorted(range(len(ps)), key=lambda k: ps[k])
        out = [0] * len(ps)
        targets = [max(1, int(ps[k] * self.total / 100 + 0.5)) for k in order]
        j = 0
        running = 0
        for i, c in enumerate(self.counts):
            if not c:
                continue
            running += c
            while j < len(order) and running >= targets[j]:
                k = order[j]
                out[k] = highest_of(i) if ps[k] else lowest_of(i)
                j += 1
            if j == len(order):
                break
        return out

    def nonzero(self) -> list[tuple[int, int]]:
        """``(slot, count)`` for every slot that holds something, in slot order."""
        return [(i, c) for i, c in enumerate(self.counts) if c]

    def buckets(self, n: int) -> list[tuple[int, int, int]]:
        """``n`` equal-width ``(low, high, count)`` ranges from min to max, for a text histogram.

        Built from the slots, so a range's count is exact to the slot resolution (0.1 %).
        """
        if self.total == 0 or n < 1:
            return []
        lo, hi = self.min, self.max
        width = max(1, -(-(hi - lo + 1) // n))
        out = [0] * n
        for i, c in self.nonzero():
            v = min(max(lowest_of(i), lo), hi)
            out[min(n - 1, (v - lo) // width)] += c
        return [(lo + k * width, min(hi, lo + (k + 1) * width - 1), out[k]) for k in range(n)]

    def to_dict(self) -> dict[str, Any]:
        """A compact JSON-able form: sparse ``[slot, count, slot, count, ...]`` plus totals."""
        flat: list[int] = []
        for i, c in self.nonzero():
            flat += (i, c)
        return {
            "format": FORMAT,
            "total": self.total,
            "sum": self.sum,
            "min": self.min,
            "max": self.max,
            "counts": flat,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Histogram:
        """The inverse of ``to_dict``; raises SpecError on anything else."""
        if data.get("format") != FORMAT:
            raise SpecError("histogram", f"format must be {FORMAT!r}, got {data.get('format')!r}")
        flat = data.get("counts")
        if not isinstance(flat, list) or len(flat) % 2:
            raise SpecError("histogram", "counts must be a flat list of slot, count pairs")
        h = cls()
        total = 0
        for k in range(0, len(flat), 2):
            i, c = flat[k], flat[k + 1]
            if not (isinstance(i, int) and isinstance(c, int) and 0 <= i < COUNTS_LEN and c > 0):
                raise SpecError("histogram", f"bad slot/count pair {i!r}, {c!r}")
            h.counts[i] += c
            total += c
        if total != data.get("total"):
            raise SpecError("histogram", f"total {data.get('total')!r} != sum of counts {total}")
        h.total = total
        h.sum = int(data["sum"])
        h.min = int(data["min"])
        h.max = int(data["max"])
        return h

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return (
            self.total == other.total
            and self.sum == other.sum
            and self.min == other.min
            and self.max == other.max
            and self.counts == other.counts
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Histogram(total={self.total}, min={self.min}, max={self.max})"


def merge_all(histograms: Iterable[Histogram]) -> Histogram:
    """A new histogram holding the counts of all of ``histograms``."""
    out = Histogram()
    for h in histograms:
        out.merge(h)
    return out


@dataclass(frozen=True, slots=True)
class Second:
    """What happened in one second of a run: completions, errors among them, latencies."""

    second: int  # seconds since the run's start (0-based)
    requests: int
    errors: int
    counts: tuple[tuple[int, int], ...]  # sparse (slot, count) latencies of the successes
    sent: int = 0  # requests started in this second
    in_flight: int = 0  # started and not yet ended at the end of this second

    def percentile(self, p: float) -> int:
        total = sum(c for _, c in self.counts)
        if total == 0:
            return 0
        target = max(1, int(p * total / 100 + 0.5))
        running = 0
        for i, c in self.counts:
            running += c
            if running >= target:
                return highest_of(i) if p else lowest_of(i)
        return 0  # pragma: no cover - running reaches total


class Timeline:
    """Per-second rows built from snapshots of the running totals.

    The run calls ``tick(second, histogram, requests, errors, sent)`` once a second with its
    cumulative numbers; the timeline keeps the difference from the previous tick, so the
    hot path records into one histogram only. Rows of several processes merge by second.
    ``sent`` counts requests started; what was started and has not ended is in flight.
    """

    __slots__ = ("_errors", "_prev", "_requests", "_sent", "rows")

    def __init__(self) -> None:
        self._prev: list[int] = [0] * COUNTS_LEN
        self._requests = 0
        self._errors = 0
        self._sent = 0
        self.rows: list[Second] = []

    def tick(
        self, second: int, histogram: Histogram, requests: int, errors: int, sent: int = 0
    ) -> Second:
        cur = histogram.counts
        prev = self._prev
        delta = tuple((i, c - p) for i, (c, p) in enumerate(zip(cur, prev, strict=True)) if c != p)
        row = Second(
            second,
            requests - self._requests,
            errors - self._errors,
            delta,
            sent - self._sent,
            max(0, sent - requests),
        )
        self._prev = cur.copy()
        self._requests, self._errors, self._sent = requests, errors, sent
        self.rows.append(row)
        return row

    def to_list(self) -> list[dict[str, Any]]:
        return [
            {
                "second": r.second,
                "requests": r.requests,
                "errors": r.errors,
                "counts": [x for pair in r.counts for x in pair],
                "sent": r.sent,
                "in_flight": r.in_flight,
            }
            for r in self.rows
        ]

    @staticmethod
    def merge_lists(lists: Iterable[Sequence[Mapping[str, Any]]]) -> list[Second]:
        """Rows of several processes added second by second (exact)."""
        acc: dict[int, tuple[int, int, dict[int, int], int, int]] = {}
        for rows in lists:
            for r in rows:
                req, err, counts, sent, flying = acc.get(r["second"], (0, 0, {}, 0, 0))
                flat = r["counts"]
                for k in range(0, len(flat), 2):
                    counts[flat[k]] = counts.get(flat[k], 0) + flat[k + 1]
                acc[r["second"]] = (
                    req + r["requests"],
                    err + r["errors"],
                    counts,
                    sent + r.get("sent", 0),
                    flying + r.get("in_flight", 0),
                )
        return [
            Second(s, req, err, tuple(sorted(counts.items())), sent, flying)
            for s, (req, err, counts, sent, flying) in sorted(acc.items())
        ]
