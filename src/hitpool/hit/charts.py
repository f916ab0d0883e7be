"""The numbers behind the HTML report's charts: pure functions from a Summary to columns.

Every chart is a dict the page's script hands to uPlot as is: ``{"id", "title", "x": {...},
"y": {...}, "xs": [...], "series": [{"label", "color", "values"}]}`` with the values aligned
on ``xs`` (None where a series has no point). Nothing here touches a clock, a file or a page.

Long runs are downsampled with LTTB (largest triangle three buckets, Steinarsson 2013), once
per series, and a chart keeps the union of the points each of its series picked: every point
drawn is a real second of the run, and each series keeps its own peaks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .stats import Histogram, Second, highest_of, lowest_of
from .summary import Summary

__all__ = ["MAX_POINTS", "lttb", "run_charts", "spectrum_points", "timeline_columns"]

# Points LTTB keeps per series; a chart of k series draws at most k times as many.
MAX_POINTS = 1000
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
# The percentile spectrum's x is 1 / (1 - p): 1 at p0, 10 at p90, 100 at p99 and so on.
# Ten points a decade, down to 1 / count (beyond it a percentile is the maximum itself).
SPECTRUM_STEPS_PER_DECADE = 10
SPECTRUM_DECADES = 6


def lttb(xs: Sequence[float], ys: Sequence[float | None], n: int) -> list[int]:
    """The indices LTTB keeps to draw ``ys`` over ``xs`` with ``n`` points (all when fewer).

    The first and last points are always kept; each bucket in between keeps the point
    spanning the largest triangle with the point kept before it and the next bucket's mean.
    None values (no data that second) are never picked and never weigh in a mean.
    """
    pts = [i for i, y in enumerate(ys) if y is not None]
    if len(pts) <= n:
        return pts
    if n < 3:  # no bucket between the ends
        return [pts[0], pts[-1]][: max(0, n)]
    out = [pts[0]]
    every = (len(pts) - 2) / (n - 2)
    a = pts[0]
    for b in range(n - 2):
        lo = int(b * every) + 1
        hi = int((b + 1) * every) + 1
        nxt = pts[hi : min(int((b + 2) * every) + 1, len(pts) - 1)] or [pts[-1]]
        avg_x = sum(xs[i] for i in nxt) / len(nxt)
        avg_y = sum(float(ys[i] or 0.0) for i in nxt) / len(nxt)
        ax, ay = xs[a], float(ys[a] or 0.0)
        best, best_area = pts[lo], -1.0
        for i in pts[lo:hi]:
            area = abs((ax - avg_x) * (float(ys[i] or 0.0) - ay) - (ax - xs[i]) * (avg_y - ay))
            if area > best_area:
                best, best_area = i, area
        out.append(best)
        a = best
    out.append(pts[-1])
    return out


def _keep(xs: Sequence[float], columns: Sequence[Sequence[float | None]], n: int) -> list[int]:
    """The union of the points LTTB keeps of each column, in order."""
    if len(xs) <= n:
        return list(range(len(xs)))
    keep: set[int] = set()
    for col in columns:
        keep.update(lttb(xs, col, n))
    return sorted(keep)


def _ms(us: int) -> float:
    return round(us / 1000, 6)


def _second_stats(row: Second) -> tuple[float | None, ...]:
    """p50, p90, p99 and max of one second's complete responses in ms (None if none)."""
    total = sum(c for _, c in row.counts)
    if total == 0:
        return (None, None, None, None)
    targets = [max(1, int(p * total / 100 + 0.5)) for p in (50.0, 90.0, 99.0)]
    out: list[float | None] = []
    running = 0
    for i, c in row.counts:
        running += c
        while len(out) < len(targets) and running >= targets[len(out)]:
            out.append(_ms(highest_of(i)))
    out.append(_ms(highest_of(row.counts[-1][0])))
    return tuple(out)


def timeline_columns(timeline: Sequence[Second]) -> dict[str, list[Any]]:
    """One column per quantity, one entry per second (seconds without a row get zeros)."""
    cols: dict[str, list[Any]] = {
        k: [] for k in ("t", "p50", "p90", "p99", "max", "sent", "completed", "errors", "in_flight")
    }
    for row in timeline:
        p50, p90, p99, top = _second_stats(row)
        cols["t"].append(row.second + 1)  # the row covers (second, second + 1]: its end
        cols["p50"].append(p50)
        cols["p90"].append(p90)
        cols["p99"].append(p99)
        cols["max"].append(top)
        cols["sent"].append(row.sent)
        cols["completed"].append(row.requests)
        cols["errors"].append(row.errors)
        cols["in_flight"].append(row.in_flight)
    return cols


def _series(label: str, values: Sequence[Any], k: int) -> dict[str, Any]:
    return {"label": label, "color": COLORS[k % len(COLORS)], "values": list(values)}


def _time_chart(
    cid: str,
    title: str,
    cols: Mapping[str, list[Any]],
    keys: Sequence[tuple[str, str]],
    y: str,
    unit: str,
) -> dict[str, Any]:
    xs = cols["t"]
    keep = _keep(xs, [cols[k] for k, _ in keys], MAX_POINTS)
    return {
        "id": cid,
        "title": title,
        "x": {"kind": "time", "label": "seconds since start"},
        "y": {"kind": y, "label": unit},
        "xs": [xs[i] for i in keep],
        "series": [
            _series(label, [cols[k][i] for i in keep], n) for n, (k, label) in enumerate(keys)
        ],
    }


def spectrum_points(h: Histogram) -> list[tuple[float, float]]:
    """``(1 / (1 - p), latency ms)`` from p0 up to the point where one value is left."""
    if h.total == 0:
        return []
    steps = SPECTRUM_STEPS_PER_DECADE * SPECTRUM_DECADES
    xs = [10 ** (k / SPECTRUM_STEPS_PER_DECADE) for k in range(steps + 1)]
    xs = [x for x in xs if x <= h.total] or [1.0]
    ps = [min(100.0, 100.0 * (1.0 - 1.0 / x)) for x in xs]
    values = h.percentiles(ps)
    return [(x, _ms(min(v, h.max))) for x, v in zip(xs, values, strict=True)]


def spectrum_chart(cid: str, title: str, runs: Sequence[tuple[str, Histogram]]) -> dict[str, Any]:
    """Latency by percentile for one or several runs, on the same x points."""
    per = [dict(spectrum_points(h)) for _, h in runs]
    xs = sorted({x for pts in per for x in pts})
    return {
        "id": cid,
        "title": title,
        "x": {"kind": "nines", "label": "percentile"},
        "y": {"kind": "log", "label": "ms"},
        "xs": xs,
        "series": [
            _series(name, [pts.get(x) for x in xs], k)
            for k, ((name, _), pts) in enumerate(zip(runs, per, strict=True))
        ],
    }


def histogram_chart(cid: str, h: Histogram, bins: int = 60) -> dict[str, Any]:
    """How many responses took how long: ``bins`` log-spaced ranges from min to max."""
    xs: list[float] = []
    counts: list[int] = []
    if h.total:
        lo, hi = max(1, h.min), max(1, h.max)
        span = math.log(hi / lo) if hi > lo else 0.0
        n = bins if span > 0 else 1
        counts = [0] * n
        for i, c in h.nonzero():
            v = min(max(lowest_of(i), lo), hi)
            k = int(math.log(v / lo) / span * n) if span > 0 else 0
            counts[min(n - 1, k)] += c
        xs = [_ms(round(lo * math.exp(span * (k + 0.5) / n))) for k in range(n)]
    return {
        "id": cid,
        "title": "Latency histogram",
        "x": {"kind": "log", "label": "ms"},
        "y": {"kind": "count", "label": "responses"},
        "bars": True,
        "xs": xs,
        "series": [_series("responses", counts, 0)],
    }


def step_chart(cid: str, name: str, latency_s: Mapping[str, float]) -> dict[str, Any]:
    """One step's latency percentiles (from its ``latency_s``) on the spectrum's axis."""
    at = {"min": 0.0, "p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
    pts = sorted(
        (1.0 / (1.0 - p / 100.0), round(float(latency_s[k]) * 1000, 6))
        for k, p in at.items()
        if k in latency_s
    )
    return {
        "id": cid,
        "title": f"Step {name}: latency by percentile",
        "x": {"kind": "nines", "label": "percentile"},
        "y": {"kind": "log", "label": "ms"},
        "xs": [x for x, _ in pts],
        "series": [_series(name, [v or None for _, v in pts], 0)],
    }


def run_charts(summary: Summary) -> list[dict[str, Any]]:
    """The single-run page's charts, in page order."""
    cols = timeline_columns(summary.timeline)
    return [
        _time_chart(
            "latency",
            "Latency over time (complete responses of each second)",
            cols,
            (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("max", "max")),
            "log",
            "ms",
        ),
        _time_chart(
            "rates",
            "Requests per second",
            cols,
            (("sent", "sent"), ("completed", "completed"), ("errors", "errors")),
            "linear",
            "per second",
        ),
        _time_chart(
            "inflight",
            "In flight (end of each second)",
            cols,
            (("in_flight", "in flight"),),
            "linear",
            "requests",
        ),
        histogram_chart("histogram", summary.histogram),
        spectrum_chart("spectrum", "Latency by percentile", [("latency", summary.histogram)]),
    ]


def compare_charts(runs: Sequence[tuple[str, Summary]]) -> list[dict[str, Any]]:
    """Several runs over each other: p99 and completions per second, and the spectra."""
    per = [(name, timeline_columns(s.timeline)) for name, s in runs]
    charts = []
    for cid, key, title, y in (
        ("cmp-p99", "p99", "p99 over time", "log"),
        ("cmp-rate", "completed", "Completed per second", "linear"),
    ):
        xs = sorted({t for _, c in per for t in c["t"]})
        series = []
        for k, (name, c) in enumerate(per):
            at = dict(zip(c["t"], c[key], strict=True))
            series.append(_series(name, [at.get(x) for x in xs], k))
        keep = _keep(xs, [s["values"] for s in series], MAX_POINTS)
        for s in series:
            s["values"] = [s["values"][i] for i in keep]
        charts.append(
            {
                "id": cid,
                "title": title,
                "x": {"kind": "time", "label": "seconds since start"},
                "y": {"kind": y, "label": "ms" if y == "log" else "per second"},
                "xs": [xs[i] for i in keep],
                "series": series,
            }
        )
    charts.append(
        spectrum_chart("cmp-spectrum", "Latency by percentile", [(n, s.histogram) for n, s in runs])
    )
    return charts
