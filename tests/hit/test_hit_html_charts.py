"""The report's chart columns and downsampling are pure: tables of numbers in, numbers out."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter

from hitpool.hit import charts, html, saved
from hitpool.hit.client import ERROR_KINDS
from hitpool.hit.stats import Histogram, Second, highest_of, index_of
from hitpool.hit.summary import Summary


def test_lttb_keeps_the_ends_the_peaks_and_n_points() -> None:
    xs = list(range(1000))
    ys: list[float | None] = [1.0] * 1000
    ys[437] = 50.0  # one spike
    ys[800] = -20.0  # one dip
    keep = charts.lttb(xs, ys, 100)
    assert len(keep) == 100 and keep == sorted(keep)
    assert keep[0] == 0 and keep[-1] == 999
    assert 437 in keep and 800 in keep


def test_lttb_small_inputs_and_gaps() -> None:
    assert charts.lttb([0, 1, 2], [1.0, 2.0, 3.0], 10) == [0, 1, 2]
    assert charts.lttb([0, 1, 2, 3], [1.0, None, 3.0, None], 10) == [0, 2]  # None: no point
    assert charts.lttb(list(range(9)), [float(i) for i in range(9)], 2) == [0, 8]
    ys: list[float | None] = [None] * 10 + [float(i % 7) for i in range(500)]
    keep = charts.lttb(list(range(510)), ys, 50)
    assert len(keep) == 50 and min(keep) == 10


def _timeline_summary(seconds: int, per_second: int = 20) -> Summary:
    """Rows built directly (a Timeline's tick scans every slot: slow for an hour of rows)."""
    h = Histogram()
    rows = []
    for s in range(seconds):
        slots: Counter[int] = Counter()
        for k in range(per_second):
            # a slow spike at second 1234, else 1-2 ms
            v = 500_000 if s == 1234 and k == 0 else 1000 + 50 * k + s % 97
            h.record(v)
            slots[index_of(v)] += 1
        # in flight at the end of second s: s % 5 (so s % 5 more started than ended)
        sent = per_second + s % 5 - ((s - 1) % 5 if s else 0)
        rows.append(Second(s, per_second, 0, tuple(sorted(slots.items())), sent, s % 5))
    n = seconds * per_second
    return Summary(
        url="http://127.0.0.1:1/",
        method="GET",
        requests=n,
        successes=n,
        errors=0,
        errors_by_kind=dict.fromkeys(ERROR_KINDS, 0),
        status_codes={200: n},
        bytes=n,
        duration_s=float(seconds),
        target_rps=None,
        late=0,
        concurrency=8,
        processes=1,
        interrupted=False,
        histogram=h,
        timeline=tuple(rows),
    )


def test_timeline_columns_per_second() -> None:
    s = _timeline_summary(3, per_second=100)
    cols = charts.timeline_columns(s.timeline)
    assert cols["t"] == [1, 2, 3]
    assert cols["completed"] == [100, 100, 100] and cols["sent"] == [100, 101, 101]
    assert cols["in_flight"] == [0, 1, 2] and cols["errors"] == [0, 0, 0]
    for t, row in enumerate(s.timeline):
        assert cols["p50"][t] == row.percentile(50) / 1000  # ms
        assert cols["p99"][t] == row.percentile(99) / 1000
        assert cols["p50"][t] <= cols["p90"][t] <= cols["p99"][t] <= cols["max"][t]


def test_an_hour_long_run_is_downsampled_and_keeps_its_spike() -> None:
    s = _timeline_summary(3600)
    page = html.render(saved.from_summary(s, command=["hit", "-z", "1h", "http://x/"]))
    data = json.loads(
        re.search(r'<script id="hit-data" type="application/json">(.*?)</script>', page).group(1)
    )
    by_id = {c["id"]: c for c in data["charts"]}
    lat = by_id["latency"]
    assert len(lat["xs"]) <= 4 * charts.MAX_POINTS  # four series, each its own LTTB points
    assert 1235 in lat["xs"]  # the spike's second (its end) is drawn
    peak = lat["xs"].index(1235)
    # the max of that second, in ms, to the HDR slot
    assert by_id["latency"]["series"][3]["values"][peak] == highest_of(index_of(500_000)) / 1000
    assert len(by_id["rates"]["xs"]) <= 3 * charts.MAX_POINTS
    assert len(page.encode()) < 300_000  # a 1-hour run stays a small file


def test_spectrum_runs_from_p0_to_one_value_left() -> None:
    h = Histogram()
    for v in range(1, 1001):
        h.record(v)
    pts = charts.spectrum_points(h)
    assert pts[0] == (1.0, 0.001)  # p0: the minimum, 1 µs
    assert pts[-1][0] <= 1000 and pts[-1][1] <= 1.0  # up to 1 / count, never past the max
    xs = [x for x, _ in pts]
    assert xs == sorted(xs) and [v for _, v in pts] == sorted(v for _, v in pts)
    assert charts.spectrum_points(Histogram()) == []


def test_histogram_bins_count_every_response() -> None:
    h = Histogram()
    for v in (10, 100, 1000, 10_000, 100_000):
        h.record(v, 7)
    c = charts.histogram_chart("h", h, bins=20)
    assert sum(c["series"][0]["values"]) == 35 and len(c["xs"]) == 20
    assert c["xs"] == sorted(c["xs"]) and c["xs"][0] >= 0.01 and c["xs"][-1] <= 100.0
    single = Histogram()
    single.record(42, 3)
    assert charts.histogram_chart("h", single)["series"][0]["values"] == [3]


def test_the_page_cannot_be_broken_out_of() -> None:
    s = _timeline_summary(2)
    evil = "</script><script>alert(1)</script><img src=x>"
    run = saved.SavedRun(
        summary=s,
        result={**s.to_wire(), "steps": {evil: {"requests": 1, "latency_s": {"p50": 0.001}}}},
        command=("hit", evil),
        version="0",
    )
    page = html.render(run)
    assert evil not in page
    assert page.count("</script>") == 3  # the data block, uPlot, the page script, nothing else


def test_every_compare_cell_is_keyed_as_in_the_compare_json() -> None:
    import html as _html

    from hitpool.hit.compare import compare_json

    from .test_hit_saved import _latencies, _summary

    runs = [
        saved.from_summary(_summary(_latencies(s, 2, 40), errors=s), command=["hit", str(s)])
        for s in (1, 2, 3)
    ]
    runs = [dataclasses.replace(r, name=f"r{k}") for k, r in enumerate(runs)]
    doc = compare_json(runs)
    page = html.render_compare(runs)
    cells = re.findall(r'data-key="(ratios|runs)\.(\d+)\.([^"]+)" data-value="([^"]*)"', page)
    assert {k for kind, k, _, _ in cells if kind == "ratios"} == {"0", "1"}  # runs 2 and 3
    for kind, k, key, value in cells:
        got = json.loads(_html.unescape(value))
        if kind == "ratios":
            assert doc["ratios"][int(k)][key] == got, (k, key)
        elif "." not in key:
            assert doc["runs"][int(k)][key] == got, (k, key)
