"""The report is pure: a Summary in, text / JSON / CSV / verdicts out."""

from __future__ import annotations

import json

import pytest

from hitpool._errors import SpecError
from hitpool.hit.client import ERROR_KINDS
from hitpool.hit.report import fmt_s, json_text, parse_assert, text, timeline_text
from hitpool.hit.stats import Histogram, Timeline
from hitpool.hit.summary import Summary


def _summary(**over: object) -> Summary:
    h = Histogram()
    for us in [100] * 90 + [1000] * 9 + [250_000]:
        h.record(us)
    tl = Timeline()
    tl.tick(0, h, 100, 3)
    kinds = dict.fromkeys(ERROR_KINDS, 0)
    kinds.update(timeout=2, status=1)
    base: dict[str, object] = {
        "url": "http://x/",
        "method": "GET",
        "requests": 103,
        "successes": 100,
        "errors": 3,
        "errors_by_kind": kinds,
        "status_codes": {200: 100, 500: 1},
        "bytes": 4242,
        "duration_s": 2.0,
        "target_rps": 50.0,
        "late": 4,
        "concurrency": 5,
        "processes": 1,
        "interrupted": False,
        "histogram": h,
        "timeline": tuple(tl.rows),
    }
    base.update(over)
    return Summary(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("expr", "passed", "shown"),
    [
        ("p99<250ms", True, "p99 = 1.00ms"),
        ("p999<250ms", False, "p999 = 250.00ms"),
        ("max<=250.2ms", True, "max = 250.00ms"),
        ("mean>1ms", True, None),
        ("errors<1%", False, "errors = 2.913%"),
        ("errors<3%", True, None),
        ("errors==3", True, "errors = 3"),
        ("late<5", True, None),
        ("successes>=100", True, None),
        ("rps>50", True, "rps = 51.5"),
        ("rps>1000", False, None),
        ("duration<1s", False, "duration = 2.000s"),
        ("requests!=103", False, None),
    ],
)
def test_asserts(expr: str, passed: bool, shown: str | None) -> None:
    ok, actual = parse_assert(expr).check(_summary())
    assert ok is passed
    if shown is not None:
        assert actual == shown


@pytest.mark.parametrize("expr", ["p99", "p99<", "speed<1", "p99<fast", "errors<x%", "rps>1%"])
def test_bad_asserts(expr: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_assert(expr)
    assert e.value.field == "assert" and "p99<250ms" in e.value.message


def test_text_has_the_books_block_and_more() -> None:
    out = text(_summary())
    for needle in (
        "Success:  97.09%",
        "RPS:      51.5",
        "Requests: 103",
        "Errors:   3",
        "Bytes:    4242",
        "Duration: 2.000s",
        "Fastest:  100µs",
        "Slowest:  250.00ms",
        "99%   1.00ms",
        "[500] 1 responses",
        "timeout         2",
        "Rate: target 50/s, achieved 51.5/s, 4 late",
        "Histogram:",
    ):
        assert needle in out, needle
    assert "interrupted" in text(_summary(interrupted=True))
    assert "Rate:" not in text(_summary(target_rps=None))


def test_empty_summary_renders() -> None:
    out = text(_summary(requests=0, successes=0, errors=0, histogram=Histogram(), timeline=()))
    assert "Success:  0.00%" in out and "Histogram:" not in out


def test_json_text_is_the_schema() -> None:
    doc = json.loads(json_text(_summary()))
    assert doc["status_codes"] == {"200": 100, "500": 1}
    assert doc["latency_s"]["p50"] == 0.0001 and doc["latency_s"]["max"] == 0.25
    assert list(doc) == [
        "schema", "url", "method", "requests", "successes", "errors", "rps", "duration_s",
        "bytes", "latency_s", "status_codes", "errors_by_kind", "target_rps", "late",
        "concurrency", "processes", "interrupted", "dropped", "scenarios", "steps",
    ]  # fmt: skip


def test_timeline_files() -> None:
    csv_text = timeline_text(_summary(), "t.csv")
    assert csv_text.splitlines()[0] == "second,requests,errors,p50_s,p99_s"
    assert csv_text.splitlines()[1] == "0,100,3,0.0001,0.001"
    doc = json.loads(timeline_text(_summary(), "t.json"))
    assert doc["timeline"][0]["requests"] == 100 and doc["summary"]["requests"] == 103


def test_fmt_s() -> None:
    assert [fmt_s(x) for x in (87e-6, 1.2345e-3, 2.5)] == ["87µs", "1.23ms", "2.500s"]


def test_wire_form_merges_exactly() -> None:
    a, b = _summary(), _summary(late=1, target_rps=25.0)
    merged = Summary.merge([a.to_wire(), b.to_wire()], processes=2)
    assert merged.requests == 206 and merged.late == 5 and merged.target_rps == 75.0
    assert merged.status_codes == {200: 200, 500: 2}
    assert merged.errors_by_kind["timeout"] == 4
    assert merged.histogram.total == 200 and merged.histogram.max == 250_000
    assert [(r.second, r.requests) for r in merged.timeline] == [(0, 200)]
