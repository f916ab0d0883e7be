"""The open model's rules under --rps (docs/hit.md): at -z nothing more is sent and what
was still due is `dropped`; -t counts from the due time, so a request whose latency from
its due time passes -t is a timeout; ``requests == successes + errors`` stays exact."""

from __future__ import annotations

from hitpool.hit import Spec, run_async
from hitpool.hit.engine import Engine
from hitpool.hit.report import text
from hitpool.hit.summary import Summary

from .servers import Server
from .test_hit_pacing import MS, FakeClock, FakeConn, _busy_lane


def _engine(clock: FakeClock, *, rate: float, lanes: int, timeout: float = 30.0,
            requests: int | None = None, duration: float | None = None) -> Engine:  # fmt: skip
    spec = Spec(
        "http://127.0.0.1:9/",
        requests=requests,
        duration=duration,
        concurrency=lanes,
        rps=rate,
        timeout=timeout,
    )
    e = Engine(spec, lanes=lanes, requests=requests, rate=rate, clock=clock)
    e.conn_class = FakeConn
    e.idle = [e.new_conn() for _ in range(lanes)]
    FakeConn.log = []
    return e


async def test_at_the_deadline_what_is_still_due_is_dropped() -> None:
    clock = FakeClock()
    e = _engine(clock, rate=100.0, lanes=1, duration=1.0)  # 100 requests due before 1 s
    e.begin(0, 1.0)
    assert FakeConn.log == [(0, 0)]  # the one lane is busy from then on
    clock.now = 1000 * MS
    e._deadline_passed()  # what the deadline timer does
    assert e.dropped == 99 and not e.done.done()  # request 0 is still in flight
    clock.now = 1010 * MS
    _busy_lane(e).finish(200, True)
    assert e.done.done() and len(FakeConn.log) == 1  # nothing more was sent
    assert e.tally.finished == e.tally.successes == 1 and e.dropped == 99


async def test_a_response_later_than_t_after_its_due_time_is_a_timeout() -> None:
    clock = FakeClock()
    e = _engine(clock, rate=1000.0, lanes=1, timeout=0.5, requests=200)  # due every 1 ms
    e.begin(0, None)
    clock.now = 600 * MS
    _busy_lane(e).finish(200, True)  # complete, but 600 ms after its due time
    assert e.tally.errors["timeout"] >= 1 and e.histogram().total == 0
    # requests 1..99 were due at 1..99 ms: already more than 500 ms past due, each is a
    # timeout at once without being sent; request 100 (due 100 ms) has exactly 500 ms left
    assert e.tally.errors["timeout"] == 100
    assert FakeConn.log[-1] == (100 * MS, 600 * MS) and len(FakeConn.log) == 2
    assert e.tally.finished == 100 and e.issued == 101
    e.stop()
    assert e.tally.finished == e.tally.successes + e.tally.errors_total


async def test_the_sweep_counts_t_from_the_due_time() -> None:
    clock = FakeClock()
    e = _engine(clock, rate=10.0, lanes=1, timeout=0.5, requests=2)  # due at 0 and 100 ms
    e.begin(0, None)
    clock.now = 400 * MS
    _busy_lane(e).finish(200, True)  # request 1 leaves 300 ms late: 200 ms of -t left
    lane = _busy_lane(e)
    e.live.add(lane)
    clock.now = 550 * MS  # 150 ms after it was sent, 450 ms after it was due
    e._sweep()
    assert lane.busy
    clock.now = 601 * MS  # 501 ms after its due time
    e._sweep()
    assert not lane.busy and e.tally.errors["timeout"] == 1 and e.done.done()


async def test_a_slow_server_cannot_stretch_an_open_run(server: Server) -> None:
    # 100 rps over one connection to a 50 ms server: 20 rps get through. Before, the run
    # sent all 100 requests one by one (5 s) and reported latencies far past -t as successes.
    spec = Spec(server.url("/slow/50"), concurrency=1, rps=100, duration=1.0, timeout=0.3)
    s = await run_async(spec)
    assert s.requests == s.successes + s.errors
    assert s.dropped > 0 and s.requests + s.dropped == 100
    assert s.errors_by_kind["timeout"] > 0
    assert s.histogram.total == s.successes and s.latency_s()["max"] <= 0.3
    # -z plus at most -t, plus the sweep's period and slack for a busy machine (it was 5 s)
    assert s.duration_s < 2.5
    assert s.to_json()["dropped"] == s.dropped
    assert f"{s.dropped} dropped" in text(s)
    merged = Summary.merge([s.to_wire(), s.to_wire()], processes=2)
    assert merged.dropped == 2 * s.dropped
