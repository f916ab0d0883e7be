"""What connections report into: one `Tally` per counted thing (the whole single-URL run,
or one step of a scenario), and `SparseHistogram` for tallies that may be many.

A connection knows its Tally and nothing of the engine that made it: the response
counters, the latency histogram, the error kinds, and the two rules that decide how a
response counts (``ok``, the statuses that are successes, and ``timeout_ns``, past which a
response is a timeout). Invariant: ``finished == successes + sum(errors.values())``.

``credit`` and ``until`` are the closed model's tickets lent to the connections: while
``credit > 0`` and the clock is before ``until``, a connection that got a response takes
the next ticket itself (``credit -= 1``) instead of calling back. Only the engine sets
them (`Engine._set`); it folds what was spent back into its own count of tickets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .stats import (
    COUNTS_LEN,
    FORMAT,
    SUB_BUCKET_BITS,
    SUB_BUCKET_COUNT,
    SUB_BUCKET_HALF_MAGNITUDE,
    Histogram,
    lowest_of,
)

# Every error kind, each a request that got no usable response (client.py documents them).
ERROR_KINDS = (
    "timeout",
    "connect_refused",
    "connect_error",
    "tls",
    "reset",
    "closed",
    "bad_response",
    "status",
    "cancelled",
    "expect",
)


class SparseHistogram:
    """The same slots as `Histogram`, held in a dict: memory grows with the slots used,
    not 184 KiB each, for the up to a thousand step tallies of a scenario run."""

    __slots__ = ("counts", "max", "min", "sum", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.sum = 0
        self.min = 0
        self.max = 0

    def record(self, value: int) -> None:
        if value < SUB_BUCKET_COUNT:
            i = value = value if value > 0 else 0
        else:  # index_of, inlined: once per scenario iteration
            b = value.bit_length() - SUB_BUCKET_BITS
            i = (b << SUB_BUCKET_HALF_MAGNITUDE) + (value >> b)
            if i >= COUNTS_LEN:
                i = COUNTS_LEN - 1
        counts = self.counts
        counts[i] = counts.get(i, 0) + 1
        if self.total == 0 or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.total += 1
        self.sum += value

    def dense(self) -> Histogram:
        """The equivalent `Histogram` (for percentiles; build it, read it, drop it)."""
        h = Histogram()
        for i, c in self.counts.items():
            h.counts[i] = c
        h.total, h.sum, h.min, h.max = self.total, self.sum, self.min, self.max
        return h

    def to_dict(self) -> dict[str, Any]:
        """`Histogram.to_dict`'s wire form, so `Histogram.from_dict` reads it."""
        flat: list[int] = []
        for i in sorted(self.counts):
            flat += (i, self.counts[i])
        return {
            "format": FORMAT,
            "total": self.total,
            "sum": self.sum,
            "min": self.min,
            "max": self.max,
            "counts": flat,
        }

    def merge_dict(self, data: dict[str, Any]) -> None:
        """Add another histogram's wire form (exact)."""
        flat = data["counts"]
        if not data["total"]:
            return
        for k in range(0, len(flat), 2):
            i, c = flat[k], flat[k + 1]
            self.counts[i] = self.counts.get(i, 0) + c
        if self.total == 0:
            self.min, self.max = data["min"], data["max"]
        else:
            self.min = min(self.min, data["min"])
            self.max = max(self.max, data["max"])
        self.total += data["total"]
        self.sum += data["sum"]

    def lowest_values(self) -> list[tuple[int, int]]:
        """``(lowest value of the slot, count)`` in slot order (for tests and tables)."""
        return [(lowest_of(i), self.counts[i]) for i in sorted(self.counts)]


def _add_histogram(h: Histogram | SparseHistogram, o: Histogram | SparseHistogram) -> None:
    """``o``'s counts into ``h``, slot by slot (exact), whichever form either has."""
    if o.total == 0:
        return
    counts = o.counts.items() if isinstance(o, SparseHistogram) else enumerate(o.counts)
    if isinstance(h, SparseHistogram):
        for i, c in counts:
            if c:
                h.counts[i] = h.counts.get(i, 0) + c
    else:
        for i, c in counts:
            if c:
                h.counts[i] += c
    if h.total == 0:
        h.min, h.max = o.min, o.max
    else:
        h.min, h.max = min(h.min, o.min), max(h.max, o.max)
    h.total += o.total
    h.sum += o.sum


class Tally:
    """The counters of one counted thing; see the module docstring."""

    __slots__ = (
        "bytes",
        "codes",
        "credit",
        "errors",
        "finished",
        "hist",
        "ok",
        "sink",
        "successes",
        "timeout_ns",
        "until",
    )

    def __init__(
        self,
        ok: list[bool],
        timeout_ns: int,
        *,
        sparse: bool = False,
        sink: Callable[[int, int, int, str | None], None] | None = None,
    ) -> None:
        self.ok = ok  # ok[status] for status 0..999: a success
        self.timeout_ns = timeout_ns
        # latencies in µs; the single-URL hot path writes the dense one's slots in place
        self.hist: Histogram | SparseHistogram = SparseHistogram() if sparse else Histogram()
        self.codes = [0] * 1000  # codes[status]: responses with that status
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.finished = 0
        self.successes = 0
        self.bytes = 0
        self.credit = 0
        self.until = 0
        # sink(status, latency_ns, rx, error kind or None), for send_n's Results
        self.sink = sink

    def response(self, status: int, latency_ns: int, rx: int) -> bool:
        """A complete response; True when it counts as a success."""
        self.finished += 1
        self.bytes += rx
        if latency_ns > self.timeout_ns:
            # the response came, but past -t after the start (the due time under --rps):
            # a timeout, as if the sweep had seen it first
            self.errors["timeout"] += 1
            if self.sink is not None:
                self.sink(0, latency_ns, rx, "timeout")
            return False
        h = self.hist
        if type(h) is SparseHistogram:  # a step's: SparseHistogram.record, inlined
            v = latency_ns // 1000
            if v < SUB_BUCKET_COUNT:
                i = v = v if v > 0 else 0
            else:
                b = v.bit_length() - SUB_BUCKET_BITS
                i = (b << SUB_BUCKET_HALF_MAGNITUDE) + (v >> b)
                if i >= COUNTS_LEN:
                    i = COUNTS_LEN - 1
            counts = h.counts
            counts[i] = counts.get(i, 0) + 1
            if v > h.max:
                h.max = v
            if v < h.min or not h.total:
                h.min = v
            h.total += 1
            h.sum += v
        else:
            h.record(latency_ns // 1000)
        self.codes[status] += 1
        ok = self.ok[status]
        if ok:
            self.successes += 1
        else:
            self.errors["status"] += 1
        if self.sink is not None:
            self.sink(status, latency_ns, rx, None if ok else "status")
        return ok

    def error(self, kind: str, latency_ns: int, rx: int) -> None:
        """A request that got no usable response."""
        self.finished += 1
        self.bytes += rx
        self.errors[kind] += 1
        if self.sink is not None:
            self.sink(0, latency_ns, rx, kind)

    @property
    def errors_total(self) -> int:
        return sum(self.errors.values())

    def status_codes(self) -> dict[int, int]:
        return {s: c for s, c in enumerate(self.codes) if c}

    def add(self, other: Tally) -> None:
        """Add ``other``'s counts into this tally (exact; the histograms slot by slot)."""
        self.finished += other.finished
        self.successes += other.successes
        self.bytes += other.bytes
        for k, v in other.errors.items():
            self.errors[k] += v
        for i, c in enumerate(other.codes):
            if c:
                self.codes[i] += c
        _add_histogram(self.hist, other.hist)

    def histogram(self) -> Histogram:
        """The latency histogram as a dense `Histogram`."""
        h = self.hist
        return h.dense() if isinstance(h, SparseHistogram) else h
