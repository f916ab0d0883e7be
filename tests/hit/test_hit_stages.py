"""--stage: the pure staged schedule with tables, an engine on a fake clock sending each
second what the stages integrate to, and a real run whose server counts it."""

from __future__ import annotations

import math

import pytest

from hitpool._errors import SpecError
from hitpool.hit import Spec, run_async
from hitpool.hit.cli import main
from hitpool.hit.engine import Engine
from hitpool.hit.spec import parse_stage
from hitpool.schedule import OpenSchedule, Stage, StagedSchedule, scaled

from .servers import Server, serve_in_thread
from .test_hit_pacing import MS, FakeClock, FakeConn

RAMP = StagedSchedule((Stage(10, 0, 100), Stage(10, 100, 100), Stage(10, 100, 0)))


@pytest.mark.parametrize(
    ("i", "due"),
    [
        (0, 0.0),
        (1, math.sqrt(2 / 10)),  # N(t) = 5 t² on the ramp up
        (2, math.sqrt(4 / 10)),
        (125, 5.0),
        (500, 10.0),  # the ramp holds 500 items
        (501, 10.01),  # then 100 per second
        (1500, 20.0),
        (1999, 30 - math.sqrt(1 / 5)),  # the ramp down mirrors the ramp up
        (2000, math.inf),  # the schedule holds 2000 items
    ],
)
def test_due_time_is_the_inverse_of_the_integrated_rate(i: int, due: float) -> None:
    assert RAMP.due(i) == pytest.approx(due, abs=1e-9)


@pytest.mark.parametrize(
    ("now", "count"),
    [(-1.0, 0), (0.0, 1), (5.0, 126), (9.999, 500), (10.0, 501), (20.0, 1501), (30.0, 2000)],
)
def test_due_by_counts_the_items_due(now: float, count: int) -> None:
    assert RAMP.due_by(now) == count
    assert all(RAMP.due(i) <= now for i in range(count)) and RAMP.due(count) > now


def test_a_held_stage_is_the_plain_open_schedule() -> None:
    held = StagedSchedule((Stage(2, 250, 250),))
    flat = OpenSchedule(250)
    assert [held.due(i) for i in range(500)] == pytest.approx([flat.due(i) for i in range(500)])
    assert held.total == 500 and held.mean_rate == 250


def test_a_zero_stage_holds_nothing_and_delays_what_follows() -> None:
    s = StagedSchedule((Stage(5, 0, 0), Stage(1, 10, 10)))
    assert s.due(0) == 5.0 and s.due(9) == pytest.approx(5.9) and s.total == 10
    assert s.due_by(4.99) == 0


def test_processes_share_the_staged_schedule_by_their_share_of_the_rate() -> None:
    # -c 3 -p 2: the processes carry 2/3 and 1/3 of the rate, and of every stage
    parts = [StagedSchedule(scaled(RAMP.stages, share)) for share in (2 / 3, 1 / 3)]
    # ∫ = 1333.3 and 666.7: items 0..1333 and 0..666 (each process's first is due at 0)
    assert [p.total for p in parts] == [1334, 667]
    assert parts[0].due(1) == pytest.approx(RAMP.due(1) * math.sqrt(3 / 2))
    assert StagedSchedule(scaled(RAMP.stages, 1.0)) == RAMP


@pytest.mark.parametrize(
    ("text", "stage"),
    [
        ("30s:0-200", Stage(30, 0, 200)),
        ("2m:200", Stage(120, 200, 200)),
        ("1s:5-0", Stage(1, 5, 0)),
    ],
)
def test_parse_stage(text: str, stage: Stage) -> None:
    assert parse_stage(text) == stage


@pytest.mark.parametrize("text", ["30s", "0s:10", "10s:fast", "10s:-5", "x:10"])
def test_a_bad_stage_names_the_field(text: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_stage(text)
    assert e.value.field == "stages"


def test_the_cli_names_the_flag_for_a_bad_stage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--stage", "10s:fast", "http://127.0.0.1:9/"]) == 2
    err = capsys.readouterr().err
    assert "--stage" in err and "30s:0-200" in err
    assert main(["--stage", "1s:10", "--rps", "5", "http://127.0.0.1:9/"]) == 2
    assert "--stage" in capsys.readouterr().err


async def test_the_engine_sends_each_second_what_the_stages_hold() -> None:
    # a ramp 0 -> 400/s over 2 s, then 400/s for 1 s
    spec = Spec(
        "http://127.0.0.1:9/", concurrency=1000, stages=(Stage(2, 0, 400), Stage(1, 400, 400))
    )
    clock = FakeClock()
    e = Engine(spec, lanes=1000, requests=None, clock=clock)
    e.conn_class = FakeConn
    e.idle = [e.new_conn() for _ in range(1000)]
    FakeConn.log = []
    e.begin(0, spec.duration)
    for ms in range(1, 3001):  # the pacer's wake-ups, one a millisecond
        clock.now = ms * MS
        e.kick()
    per_second = [0, 0, 0]
    for start, _ in FakeConn.log:
        per_second[start // 1000 // MS] += 1
    assert per_second == [100, 300, 400]  # ∫0..1 400t/2 = 100, ∫1..2 = 300, then 400
    assert e.late == 0 and e.rate == pytest.approx(800 / 3)
    e.stop()


async def test_a_staged_run_sends_what_the_stages_hold(server: Server) -> None:
    spec = Spec(
        server.url("/ok"), concurrency=20, stages=(Stage(0.5, 0, 200), Stage(0.5, 200, 200))
    )
    s = await run_async(spec)
    assert s.requests == s.successes == server.seen["/ok"] == 150  # 50 on the ramp, 100 held
    assert s.target_rps == pytest.approx(150)


def test_staged_runs_in_two_processes_keep_the_count() -> None:
    with serve_in_thread() as srv:
        assert main(["--stage", "0.5s:100", "-c", "4", "-p", "2", "--json", srv.url("/ok")]) == 0
        assert srv.seen["/ok"] == 50
