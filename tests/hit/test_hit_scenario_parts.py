"""The pure parts of scenarios: the weighted mix, feeders and their partition across
processes, step-name capping and merging, response headers, --assert selectors, and
the open model's arrivals per second under --stage on a fake clock."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from hitpool._errors import SpecError
from hitpool.hit import Spec, feeder
from hitpool.hit.scenario_report import parse_selected
from hitpool.hit.scenario_run import Iterations
from hitpool.hit.scenario_stats import MAX_STEPS, OTHER, Stats, merge_steps
from hitpool.hit.script import Mix, Scenario, scenario
from hitpool.hit.session import Headers
from hitpool.hit.stats import Histogram
from hitpool.hit.summary import Summary
from hitpool.schedule import Stage

from .test_hit_pacing import MS, FakeClock


async def _noop(s: object) -> None:
    return None


def test_the_mix_spreads_weights_smoothly_and_exactly() -> None:
    mix = Mix((Scenario("a", _noop, 3), Scenario("b", _noop, 1)))
    assert [mix.pick(i).name for i in range(8)] == ["a", "a", "b", "a"] * 2
    heavy = Mix((Scenario("x", _noop, 5), Scenario("y", _noop, 2), Scenario("z", _noop, 3)))
    assert Counter(heavy.pick(i).name for i in range(1000)) == {"x": 500, "y": 200, "z": 300}


def test_scenario_rejects_what_cannot_run() -> None:
    with pytest.raises(SpecError, match="async def"):
        scenario(lambda s: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(SpecError, match="weight"):
        scenario(weight=0)


ROWS = [{"n": str(i)} for i in range(10)]


@pytest.mark.parametrize("p", [1, 2, 3])
def test_feeders_partition_rows_across_processes(p: int) -> None:
    seen: list[str] = []
    for k in range(p):
        feeder.set_part(k, p)
        f = feeder.rows(ROWS, mode="queue")
        while True:
            try:
                seen.append(f.next()["n"])
            except feeder.FeederEmpty:
                break
    feeder.set_part(0, 1)
    assert sorted(seen, key=int) == [str(i) for i in range(10)]  # every row once


def test_feeder_modes() -> None:
    feeder.set_part(1, 2)  # rows 1, 3, 5, 7, 9
    try:
        circ = feeder.rows(ROWS)
        assert [circ.next()["n"] for _ in range(7)] == ["1", "3", "5", "7", "9", "1", "3"]
        a = [feeder.rows(ROWS, mode="shuffle", name="s").next()["n"] for _ in range(3)]
        assert len(set(a)) == 1  # the same seeded order every time
        shuffled = feeder.rows(ROWS, mode="shuffle")
        cycle = [shuffled.next()["n"] for _ in range(5)]
        assert sorted(cycle) == ["1", "3", "5", "7", "9"] and shuffled.next()["n"] == cycle[0]
        rnd = feeder.rows(ROWS, mode="random")
        assert {rnd.next()["n"] for _ in range(200)} == {"1", "3", "5", "7", "9"}
    finally:
        feeder.set_part(0, 1)
    feeder.set_part(5, 20)  # fewer rows than processes: every row, except for a queue
    try:
        assert len(feeder.rows(ROWS[:3])) == 3 and len(feeder.rows(ROWS[:3], mode="queue")) == 0
    finally:
        feeder.set_part(0, 1)
    with pytest.raises(SpecError, match="circular"):
        feeder.rows(ROWS, mode="sometimes")


def test_a_csv_feeder_reads_dicts(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_text("user;item\nann;1\n")
    assert feeder.csv(str(path), delimiter=";").next() == {"user": "ann", "item": "1"}
    with pytest.raises(SpecError, match="cannot read"):
        feeder.csv(str(tmp_path / "missing.csv"))


def test_step_names_are_capped_and_fold_into_other() -> None:
    stats = Stats([200 <= s < 300 for s in range(1000)], 10**9)
    for i in range(MAX_STEPS + 50):
        stats.step(f"/u/{i}").response(200, 1000, 10)
    assert len(stats.steps) == MAX_STEPS + 1 and stats.steps[OTHER].finished == 50
    merged = merge_steps([stats.steps_wire(), {"/new": stats.steps_wire()["/u/0"]}])
    assert len(merged) == MAX_STEPS + 1 and merged[OTHER]["requests"] == 51
    assert merged["/u/0"]["requests"] == 1 and merged["/u/0"]["histogram"]["total"] == 1


def test_response_headers_ignore_case_and_join_repeats() -> None:
    h = Headers([(b"Set-Cookie", b"a=1"), (b"set-cookie", b"b=2"), (b"Content-Type", b"x")])
    assert h["SET-COOKIE"] == "a=1, b=2" and h.get("content-type") == "x" and len(h) == 2
    assert list(h) == ["Set-Cookie", "Content-Type"]


def _summary_with_steps() -> Summary:
    stats = Stats([200 <= s < 300 for s in range(1000)], 10**9)
    for lat_ms in (10, 20, 300):
        stats.step("login").response(200, lat_ms * 1_000_000, 10)
    stats.step("login").error("timeout", 0, 0)
    it = stats.scenario("checkout")
    it.started, it.completed = 4, 3
    it.fail("KeyError", lambda: "Traceback ...")
    return Summary(
        "u", "*", 4, 3, 1, {}, {}, 0, 2.0, None, 0, 1, 1, False, Histogram(),
        scenarios=stats.scenarios_wire(), steps=stats.steps_wire(),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "passed", "shown"),
    [
        ("p99{step=login}<200ms", False, "p99{step=login} = 300.0"),
        ("p50{step=login}<25ms", True, "p50{step=login} = 20.0"),
        ("errors{step=login}<=25%", True, "errors{step=login} = 25.000%"),
        ("requests{step=login}==4", True, "requests{step=login} = 4"),
        ("rps{step=login}>1", True, "rps{step=login} = 2"),
        ("errors{scenario=checkout}<1%", False, "errors{scenario=checkout} = 25.000%"),
        ("completed{scenario=checkout}>=3", True, "completed{scenario=checkout} = 3"),
        ("p99{step=nope}<1s", False, "no step named 'nope'"),
    ],
)
def test_assert_selectors(text: str, passed: bool, shown: str) -> None:
    ok, actual = parse_selected(text).check(_summary_with_steps())
    assert ok is passed and shown in actual


@pytest.mark.parametrize(
    "text", ["p99{step=}<1s", "p99{user=x}<1s", "dropped{step=a}<1", "p99{step=a}<fast"]
)
def test_bad_selectors_name_the_fix(text: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_selected(text)
    assert e.value.field == "assert" and "{step=" in e.value.message


async def test_stage_arrivals_per_second_on_a_fake_clock(tmp_path: Path) -> None:
    # iterations per second follow the stages: a ramp 0 -> 200/s over 2 s, then 200/s
    script = tmp_path / "s.py"
    script.write_text("from hitpool.hit import scenario\n@scenario\nasync def a(s): pass\n")
    spec = Spec(
        "http://127.0.0.1:9/", script=str(script), stages=(Stage(2, 0, 200), Stage(1, 200, 200))
    )
    clock = FakeClock()
    it = Iterations(spec, (Scenario("a", _noop, 1),), vus=1, iterations=None, clock=clock)
    it.begin(0, spec.duration)  # starts iteration 0, due at 0
    per_second = []
    for second in range(3):
        before = it.stats.scenarios["a"].started if second else 0
        for ms in range(1, 1001):  # the pacer's wake-ups
            clock.now = (second * 1000 + ms) * MS
            if it.pacer is not None:
                it.pacer.cancel()
            it._pace()
        await asyncio.sleep(0)  # the started iterations run (they do nothing)
        per_second.append(it.stats.scenarios["a"].started - before)
    # ∫ 100 t dt over each second, then 200; an arrival due on a second's boundary counts
    # in the second before it (the wake-up at the boundary starts it)
    assert all(abs(a - b) <= 1 for a, b in zip(per_second, [50, 150, 200], strict=True))
    assert sum(per_second) == 400 and it.stats.scenarios["a"].dropped == 0
    it.stop()
    await it.wait_closed()
    assert it.stats.scenarios["a"].completed == 400


@pytest.mark.parametrize("field", ["script", "targets", "max_inflight", "targets_order"])
def test_json_input_cannot_name_a_script_or_targets(field: str) -> None:
    # hitd's hit task builds its Spec from JSON: a script would run Python from the server's
    # disk, a targets file would read files there
    with pytest.raises(SpecError) as e:
        Spec.from_dict({"url": "http://127.0.0.1:9/", field: "x"})
    assert e.value.field == field and "unknown field" in e.value.message


def test_json_input_takes_stages() -> None:
    spec = Spec.from_dict({"url": "http://127.0.0.1:9/", "stages": ["1s:0-10", "2s:10"]})
    assert spec.stages == (Stage(1, 0, 10), Stage(2, 10, 10)) and spec.duration == 3


def test_head_fields_come_from_the_final_responses_head() -> None:
    from hitpool.hit.response import head_fields

    raw = (
        b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Two:  a:b \r\n\r\nbody\r\n\r\n"
    )
    assert head_fields(raw) == [(b"Content-Type", b"text/plain"), (b"X-Two", b"a:b")]
    assert head_fields(b"HTTP/1.1 204 No\r\nA: 1\r\n\r\n") == [(b"A", b"1")]


def test_the_scripting_names_are_lazy_and_stay_what_they_are() -> None:
    import subprocess
    import sys

    import hitpool.hit
    import hitpool.hit.scenario_run  # imports the script module under its own name

    assert hitpool.hit.scenario is scenario and hitpool.hit.feeder is feeder
    code = (
        "import sys, hitpool.hit.cli; "
        "print(sorted(m for m in ('hitpool.hit.session', 'hitpool.hit.pool', "
        "'hitpool.hit.script', 'hitpool.hit.feeder') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # a single-URL run imports none of them


HEAD = "GET /a HTTP/1.1\r\nHost: h\r\nUser-Agent: hit/0.1\r\nAccept: */*\r\n"


@pytest.mark.parametrize(
    ("run", "session", "extra", "ctype", "body", "want"),
    [
        ((), {"Authorization": "Bearer t"}, None, None, b"", "Authorization: Bearer t\r\n"),
        ((("X-Run", "r"),), {"X-S": "s"}, {"X-E": "e"}, None, b"",
         "X-Run: r\r\nX-S: s\r\nX-E: e\r\n"),
        ((), {"X": "1"}, None, "application/json", b"{}",
         "Content-Type: application/json\r\nX: 1\r\nContent-Length: 2\r\n"),
        # one that replaces another keeps the first one's place, the last value and spelling
        ((("X-Run", "r"),), {"x-run": "s"}, None, None, b"", "x-run: s\r\n"),
        ((), {"user-agent": "me"}, None, None, b"", None),
        ((), {"A": "1", "a": "2"}, None, None, b"", "a: 2\r\n"),
    ],
)  # fmt: skip
def test_request_heads_merge_headers_in_order(
    run: tuple[tuple[str, str], ...],
    session: dict[str, str],
    extra: dict[str, str] | None,
    ctype: str | None,
    body: bytes,
    want: str | None,
) -> None:
    from hitpool.hit.session import _request_bytes
    from hitpool.hit.spec import parse_url

    target = parse_url("http://h/a")
    got = _request_bytes("GET", target, HEAD, run, session, extra, ctype, body)
    if want is None:  # a default replaced in its own place
        assert got == b"GET /a HTTP/1.1\r\nHost: h\r\nuser-agent: me\r\nAccept: */*\r\n\r\n"
    else:
        assert got == (HEAD + want + "\r\n").encode() + body
    with pytest.raises(ValueError, match="line break"):
        _request_bytes("GET", target, HEAD, run, {**session, "X-Bad": "a\r\nb"}, extra, None, b"")


@pytest.mark.parametrize(
    "value",
    [{"user": "u1"}, [1, 2.5, None, True], "é✓", {"n": float("nan")}, {"k": {"deep": [{}]}}, 7],
)
def test_json_bodies_are_json_dumps_bytes(value: object) -> None:
    import json

    from hitpool.hit.session import _encode

    assert _encode(value) == json.dumps(value, separators=(",", ":")).encode()
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        _encode({"s": {1}})


@pytest.mark.parametrize(
    "content",
    [b'{"token": "t"}', b"\xef\xbb\xbf[1]", '{"é": 1}'.encode("utf-16"), b"  3 ", b'"\xc3\xa9"'],
)
def test_response_json_reads_what_json_loads_reads(content: bytes) -> None:
    import json

    from hitpool.hit.session import Response
    from hitpool.hit.tally import Tally

    step = Tally([True] * 1000, 1, sparse=True)
    assert Response(200, b"", content, "x", step, True).json() == json.loads(content)
    for bad in (b"{", b"", b"  ", b"1 2", b'{"a": 1} x', b"\xef\xbb\xbf"):
        with pytest.raises(json.JSONDecodeError) as want:
            json.loads(bad)
        with pytest.raises(json.JSONDecodeError) as got:
            Response(200, b"", bad, "x", step, True).json()
        assert str(got.value) == str(want.value)
