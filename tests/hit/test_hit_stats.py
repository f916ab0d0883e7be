"""The histogram against the hdrhistogram package, bucket edges, merging, the timeline."""

from __future__ import annotations

import json
import random
import sys

import pytest
from hdrh.histogram import HdrHistogram

from hitpool._errors import SpecError
from hitpool.hit.stats import (
    COUNTS_LEN,
    HIGHEST_TRACKABLE,
    Histogram,
    Timeline,
    highest_of,
    index_of,
    lowest_of,
    merge_all,
)

PS = [0.0, 1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 99.99, 100.0]


def _reference(values: list[int]) -> HdrHistogram:
    ref = HdrHistogram(1, 3_600_000_000, 3)
    for v in values:
        ref.record_value(v)
    return ref


@pytest.mark.parametrize(
    "values",
    [
        [random.Random(1).randint(1, 5000) for _ in range(5000)],
        [int(random.Random(2).lognormvariate(8, 1.5)) + 1 for _ in range(20000)],
        [int(random.Random(3).expovariate(1 / 200_000)) + 1 for _ in range(10000)],
        [1, 2, 3, 2047, 2048, 2049, 4095, 4096, 10**6, 10**9, 3_600_000_000],
        [7],
    ],
    ids=["uniform", "lognormal", "exponential", "edges", "single"],
)
def test_percentiles_match_hdrhistogram(values: list[int]) -> None:
    h = Histogram()
    for v in values:
        h.record(v)
    ref = _reference(values)
    assert ref.counts_len == COUNTS_LEN
    assert h.percentiles(PS) == [ref.get_value_at_percentile(p) for p in PS]
    for p in PS:
        assert h.percentile(p) == ref.get_value_at_percentile(p)
    assert h.total == len(values) == ref.get_total_count()
    assert h.min == min(values) and h.max == max(values)
    assert h.mean == pytest.approx(sum(values) / len(values))


def test_slot_index_matches_hdrhistogram_everywhere() -> None:
    ref = HdrHistogram(1, 3_600_000_000, 3)
    rng = random.Random(4)
    samples = list(range(5000)) + [rng.randint(1, HIGHEST_TRACKABLE) for _ in range(5000)]
    for v in samples:
        assert index_of(v) == ref._counts_index_for(v), v


@pytest.mark.parametrize(
    ("value", "index", "low", "high"),
    [
        (0, 0, 0, 0),
        (1, 1, 1, 1),
        (2047, 2047, 2047, 2047),
        (2048, 2048, 2048, 2049),  # first slot two wide
        (2049, 2048, 2048, 2049),
        (2050, 2049, 2050, 2051),
        (4095, 3071, 4094, 4095),
        (4096, 3072, 4096, 4099),  # four wide from 4096
        (1_000_000, 9 * 1024 + (1_000_000 >> 9), 999_936, 1_000_447),
        (HIGHEST_TRACKABLE, COUNTS_LEN - 1, HIGHEST_TRACKABLE - (1 << 21) + 1, HIGHEST_TRACKABLE),
    ],
)
def test_bucket_edges(value: int, index: int, low: int, high: int) -> None:
    assert index_of(value) == index
    assert lowest_of(index) == low
    assert highest_of(index) == high
    assert low <= value <= high
    # relative slot width stays under 0.1 % (3 significant digits) above the exact range
    assert (high - low + 1) / max(low, 1) <= 1 / 1024 + 1e-12 or low < 2048


def test_out_of_range_values_clamp_and_keep_exact_extremes() -> None:
    h = Histogram()
    h.record(-5)
    h.record(HIGHEST_TRACKABLE * 10)
    assert h.counts[0] == 1 and h.counts[COUNTS_LEN - 1] == 1
    assert h.max == HIGHEST_TRACKABLE * 10 and h.min == 0


def test_record_with_count_equals_repeated_records() -> None:
    a, b = Histogram(), Histogram()
    a.record(12345, 7)
    a.record(3)
    for _ in range(7):
        b.record(12345)
    b.record(3)
    assert a == b and a.total == 8 and a.sum == 12345 * 7 + 3


def test_merge_is_exact_and_order_free() -> None:
    rng = random.Random(5)
    parts = [[rng.randint(1, 10**7) for _ in range(3000)] for _ in range(3)]
    hs = []
    for part in parts:
        h = Histogram()
        for v in part:
            h.record(v)
        hs.append(h)
    whole = Histogram()
    for v in (v for part in parts for v in part):
        whole.record(v)
    assert merge_all(hs) == whole
    assert merge_all(reversed(hs)) == whole
    ref = _reference([v for p in parts for v in p])
    assert merge_all(hs).percentiles(PS) == [ref.get_value_at_percentile(p) for p in PS]
    empty = Histogram()
    empty.merge(Histogram())
    assert empty.total == 0 and empty.percentile(99) == 0


def test_serialized_form_round_trips_through_json() -> None:
    h = Histogram()
    for v in (1, 1, 500, 70_000, 9_999_999):
        h.record(v)
    data = json.loads(json.dumps(h.to_dict()))
    assert Histogram.from_dict(data) == h
    assert len(data["counts"]) == 8  # four distinct slots, sparse


@pytest.mark.parametrize(
    "data",
    [
        {"format": "other"},
        {"format": "hitpool-hdr/1", "counts": [1]},
        {"format": "hitpool-hdr/1", "counts": [COUNTS_LEN, 1], "total": 1},
        {"format": "hitpool-hdr/1", "counts": [1, 2], "total": 3, "sum": 2, "min": 1, "max": 1},
    ],
)
def test_from_dict_rejects_bad_input(data: dict[str, object]) -> None:
    with pytest.raises(SpecError) as e:
        Histogram.from_dict(data)
    assert e.value.field == "histogram"


def test_memory_is_constant_in_the_number_of_values() -> None:
    small, big = Histogram(), Histogram()
    small.record(100)
    rng = random.Random(6)
    for _ in range(200_000):
        big.record(rng.randint(1, 10**8))
    assert len(small.counts) == len(big.counts) == COUNTS_LEN
    assert sys.getsizeof(big.counts) == sys.getsizeof(small.counts)
    assert sys.getsizeof(big.counts) < 200 * 1024


def test_percentile_rejects_out_of_range() -> None:
    with pytest.raises(SpecError):
        Histogram().percentile(101)


def test_buckets_cover_all_counts() -> None:
    h = Histogram()
    for v in range(100, 1100):
        h.record(v)
    rows = h.buckets(10)
    assert [c for _, _, c in rows] == [100] * 10
    assert rows[0][0] == 100 and rows[-1][1] == 1099


def test_timeline_rows_are_differences_of_snapshots() -> None:
    h = Histogram()
    t = Timeline()
    for v in (100, 200, 300):
        h.record(v)
    t.tick(0, h, requests=4, errors=1)
    t.tick(1, h, requests=4, errors=1)
    for v in [1000] * 99 + [5000]:
        h.record(v)
    t.tick(2, h, requests=104, errors=1)
    r0, r1, r2 = t.rows
    assert (r0.requests, r0.errors, r0.percentile(50)) == (4, 1, 200)
    assert (r1.requests, r1.errors, r1.counts) == (0, 0, ())
    assert (r2.requests, r2.percentile(50), r2.percentile(99), r2.percentile(100)) == (
        100,
        1000,
        1000,
        highest_of(index_of(5000)),
    )


def test_timelines_of_processes_merge_by_second() -> None:
    a, b = Timeline(), Timeline()
    ha, hb = Histogram(), Histogram()
    ha.record(10)
    a.tick(0, ha, 1, 0)
    hb.record(10)
    hb.record(20)
    b.tick(0, hb, 2, 1)
    hb.record(30)
    b.tick(1, hb, 3, 1)
    rows = Timeline.merge_lists([a.to_list(), b.to_list()])
    assert [(r.second, r.requests, r.errors) for r in rows] == [(0, 3, 1), (1, 1, 0)]
    assert rows[0].counts == ((10, 2), (20, 1))
