"""The open model on a fake clock: tickets leave at the schedule's due times, late ones
are counted, and latency runs from the due time (coordinated omission corrected)."""

from __future__ import annotations

from typing import Any

from hitpool.hit import Spec
from hitpool.hit.client import LATE_NS, Conn
from hitpool.hit.engine import Engine
from hitpool.hit.stats import lowest_of
from hitpool.schedule import OpenSchedule

MS = 1_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


class FakeConn(Conn):
    """A lane that records what it was asked to send instead of writing to a socket."""

    __slots__ = ()
    log: list[tuple[int, int]] = []
    made: list[FakeConn] = []

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        FakeConn.made.append(self)

    def send(self, start: int, now: int) -> None:
        self.busy = True
        self.start = start
        self.sent = now
        self.rx = 0
        FakeConn.log.append((start, now))


def _engine(rate: float | None, requests: int | None, lanes: int, clock: FakeClock) -> Engine:
    spec = Spec("http://127.0.0.1:9/", requests=requests, concurrency=lanes, rps=rate)
    e = Engine(spec, lanes=lanes, requests=requests, rate=rate, clock=clock)
    e.conn_class = FakeConn
    e.idle = [e.new_conn() for _ in range(lanes)]
    FakeConn.log = []
    return e


async def test_tickets_leave_at_due_times_when_lanes_are_free() -> None:
    clock = FakeClock()
    e = _engine(rate=100.0, requests=5, lanes=5, clock=clock)
    e.begin(0, None)
    schedule = OpenSchedule(100.0)
    assert FakeConn.log == [(0, 0)]  # only request 0 is due at t=0
    for i in range(1, 5):
        clock.now = int(schedule.due(i) * 1e9)
        e.kick()  # what the pacer timer does when it fires
    assert [s for s, _ in FakeConn.log] == [int(schedule.due(i) * 1e9) for i in range(5)]
    assert e.late == 0
    e.stop()


async def test_a_stalled_lane_makes_requests_late_and_latency_counts_from_due() -> None:
    clock = FakeClock()
    e = _engine(rate=1000.0, requests=4, lanes=1, clock=clock)  # due at 0, 1, 2, 3 ms
    e.begin(0, None)
    assert FakeConn.log == [(0, 0)] and e.idle == []  # the only lane is busy
    # the server takes 10 ms to answer request 0: requests 1..3 wait for the lane
    lane = _busy_lane(e)
    clock.now = 10 * MS
    lane.finish(200, True)  # takes request 1 at once, 9 ms late
    assert FakeConn.log[-1] == (1 * MS, 10 * MS)
    clock.now = 11 * MS
    _busy_lane(e).finish(200, True)  # request 2 leaves 9 ms late
    clock.now = 12 * MS
    _busy_lane(e).finish(200, True)  # request 3 leaves 9 ms late
    clock.now = 13 * MS
    _busy_lane(e).finish(200, True)
    assert e.late == 3 and e.issued == e.finished == 4
    # latency from due: 10, 10, 10, 10 ms -- not the 1 ms each of requests 1..3 took
    # after leaving, which is what a closed-loop generator would have reported
    assert e.histogram().total == 4 and e.histogram().min == e.histogram().max == 10_000
    assert e.done.done()


async def test_closed_model_measures_from_the_write() -> None:
    clock = FakeClock()
    e = _engine(rate=None, requests=3, lanes=1, clock=clock)
    e.begin(0, None)
    for t in (2, 5, 9):
        clock.now = t * MS
        _busy_lane(e).finish(200, True)
    # 2, 3, 4 ms: each request starts when the previous one ends
    assert [(lowest_of(i), c) for i, c in e.histogram().nonzero()] == [
        (2000, 1),
        (3000, 1),
        (4000, 1),
    ]
    assert e.late == 0 and e.done.done()


async def test_late_threshold_ignores_timer_granularity() -> None:
    clock = FakeClock()
    e = _engine(rate=10.0, requests=3, lanes=3, clock=clock)
    e.begin(0, None)
    clock.now = 100 * MS + LATE_NS  # the timer fired at the threshold: not late
    e.kick()
    clock.now = 200 * MS + LATE_NS + 1  # one nanosecond past it: late
    e.kick()
    assert len(FakeConn.log) == 3 and e.late == 1
    e.stop()


async def test_processes_interleave_one_global_schedule() -> None:
    # process k of P uses OpenSchedule(R / P, t0 = k / R): together they are OpenSchedule(R)
    rate, procs = 300.0, 3
    merged = sorted(
        OpenSchedule(rate / procs, k / rate).due(j) for k in range(procs) for j in range(10)
    )
    whole = [OpenSchedule(rate).due(i) for i in range(30)]
    assert all(abs(a - b) < 1e-12 for a, b in zip(merged, whole, strict=True))


def _busy_lane(e: Engine) -> FakeConn:
    lanes = [c for c in FakeConn.made if c.home is e and c.busy]
    assert len(lanes) == 1
    return lanes[0]
