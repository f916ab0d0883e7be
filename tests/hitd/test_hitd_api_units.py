"""The pure and near-pure pieces behind the API: validation tables, group commit, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from hitpool._errors import SpecError
from hitpool.durations import parse_seconds
from hitpool.hitd.app import parse_job, parse_jobs, parse_work
from hitpool.hitd.errors import StoreError
from hitpool.hitd.intake import Intake
from hitpool.hitd.metrics import HttpCounters, RunTimeHistogram, WorkerNumbers, render
from hitpool.hitd.store.base import NewJob
from hitpool.hitd.store.memory import MemoryStore


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (2.5, 2.5),
        ("2.5", 2.5),
        ("5s", 5.0),
        ("250ms", 0.25),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("100us", 1e-4),
    ],
)
def test_parse_delay_accepts(value, seconds) -> None:
    assert parse_seconds(value, "delay") == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [
        *("", "soon", "5 s", "5x", "-1", -1, True, None, [1], "1e400"),
        pytest.param(10**400, id="400-digit-int"),  # float() raises OverflowError
        pytest.param(-(10**400), id="-400-digit-int"),
    ],
)
def test_parse_delay_refuses_naming_the_field(value) -> None:
    with pytest.raises(SpecError) as e:
        parse_seconds(value, "[3].delay")
    assert e.value.field == "[3].delay"


def test_parse_job_sets_due_time_and_defaults() -> None:
    job = parse_job({"task": "t", "delay": "2s"}, now=100.0)
    assert job == NewJob("t", {}, 102.0, 3, None)
    job = parse_job({"task": "t", "args": {"a": 1}, "max_attempts": 5, "key": "k"}, now=1.0)
    assert job == NewJob("t", {"a": 1}, None, 5, "k")  # no delay: due when committed
    assert parse_job({"task": "t", "delay": 0}, now=1.0).run_at is None
    assert parse_job({"task": "t"}, 0.0, key="hdr").key == "hdr"
    assert parse_job({"task": "t", "key": "body"}, 0.0, key="hdr").key == "body"


def test_parse_jobs_object_or_array() -> None:
    assert parse_jobs(b'{"task": "a"}', 0.0) == ([NewJob("a", {})], False)
    assert parse_jobs(b' [{"task": "a"}]', 0.0) == ([NewJob("a", {})], True)
    assert parse_jobs(b'\xef\xbb\xbf{"task": "a"}', 0.0)[0][0].task == "a"  # a BOM is ignored


def test_parse_jobs_names_the_item() -> None:
    with pytest.raises(SpecError) as e:
        parse_jobs(b'[{"task": "a"}, {"task": 7}]', 0.0)
    assert e.value.field == "[1].task"
    with pytest.raises(SpecError) as e:
        parse_jobs(b"\xff", 0.0)
    assert e.value.field == "body"


@pytest.mark.parametrize("key", ["a\x00b", "\x00", "\ud800", "x\udfff", "\udc80\ud800"])
def test_a_key_no_store_can_keep_is_refused_naming_the_field(key: str) -> None:
    """NUL (PostgreSQL's text refuses it) or a lone surrogate (JSON "\\ud800"; UTF-8 cannot
    encode it): stored, it would fail the group commit of every job committed with it."""
    with pytest.raises(SpecError) as e:
        parse_job({"task": "t", "key": key}, 0.0)
    assert e.value.field == "key"
    with pytest.raises(SpecError) as e:
        parse_job({"task": "t", "key": key}, 0.0, "[4].")
    assert e.value.field == "[4].key"
    with pytest.raises(SpecError) as e:
        parse_jobs(b'{"task": "t"}', 0.0, header_key=key)
    assert e.value.field == "Idempotency-Key"


def test_keys_in_any_script_are_kept() -> None:
    for key in ("order-7", "заказ-7", "注文7", "\U0001f600"):
        assert parse_job({"task": "t", "key": key}, 0.0).key == key
        assert parse_jobs(b'{"task": "t"}', 0.0, header_key=key)[0][0].key == key
    [job], _ = parse_jobs(b'{"task": "t", "key": "\\ud83d\\ude00"}', 0.0)  # a JSON pair
    assert job.key == "\U0001f600"


def test_deep_json_is_refused_naming_the_field() -> None:
    """The C scanner recurses per level and raises RecursionError: a 400, not a 500, naming
    where the nesting begins (read from the text without recursion)."""
    for body, field in ((b"[" * 100_000, "[0][0][0]"), (b'{"a":' * 100_000, "a.a")):
        with pytest.raises(SpecError) as e:
            parse_jobs(body, 0.0)
        assert e.value.field == field
        with pytest.raises(SpecError) as e:
            parse_work(body, "application/json", "")
        assert e.value.field == field


def test_parse_work_form_json_and_query() -> None:
    assert parse_work(b"name=a&delay=2s", "application/x-www-form-urlencoded", "") == ("a", 2.0)
    assert parse_work(b'{"name": "b", "delay": 1}', "application/json", "") == ("b", 1.0)
    assert parse_work(b"", "", "name=c") == ("c", 0.0)
    assert parse_work(b"name=body", "", "name=query") == ("body", 0.0)  # body wins, as in Go
    with pytest.raises(SpecError) as e:
        parse_work(b"name=%20", "", "")
    assert e.value.field == "name"


class CountingStore(MemoryStore):
    """The memory store, counting enqueue() calls; optionally failing them."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.fail = fail

    async def enqueue(self, jobs: Sequence[NewJob], now: float) -> list[tuple[int, bool]]:
        self.calls.append(len(jobs))
        if self.fail:
            raise StoreError("disk on fire")
        return await super().enqueue(jobs, now)


async def test_what_arrives_in_one_loop_turn_is_one_commit() -> None:
    store = CountingStore()
    await store.open()
    commits = 0

    def on_commit() -> None:
        nonlocal commits
        commits += 1

    async with Intake(store, clock=lambda: 5.0, on_commit=on_commit) as intake:
        futs = [
            intake.submit([NewJob("t", {}, 5.0)] * n)  # same loop turn
            for n in (1, 3, 2)
        ]
        assert intake.in_flight == 6
        answers = await asyncio.gather(*futs)
    assert store.calls == [6]
    assert commits == 1
    assert answers == [[(1, True)], [(2, True), (3, True), (4, True)], [(5, True), (6, True)]]
    assert intake.statistics().committed == 6
    assert intake.in_flight == 0


async def test_a_failed_commit_resolves_the_waiter_with_the_stores_error() -> None:
    """The intake speaks ids or an exception; the 503 is the app's (test_hitd_api.py)."""
    store = CountingStore(fail=True)
    await store.open()
    async with Intake(store) as intake:
        fut = intake.submit([NewJob("t", {}, 0.0)])
        with pytest.raises(StoreError, match="disk on fire"):
            await fut
    assert intake.statistics().failures == 1


class PickyStore(CountingStore):
    """Refuses any batch holding a job of task "poison", as a store refuses a text it cannot
    encode; takes the others."""

    async def enqueue(self, jobs: Sequence[NewJob], now: float) -> list[tuple[int, bool]]:
        if any(j.task == "poison" for j in jobs):
            self.calls.append(len(jobs))
            raise StoreError("invalid byte sequence")
        return await super().enqueue(jobs, now)


@pytest.mark.parametrize("bad", [0, 3, 4])
async def test_one_request_the_store_refuses_fails_only_itself(bad: int) -> None:
    store = PickyStore()
    await store.open()
    tasks = ["a", "b", "c", "d"]
    tasks.insert(bad, "poison")
    async with Intake(store) as intake:
        # One loop turn: one batch of five requests, one of them refused.
        futs = [intake.submit([NewJob(task, {}, 0.0)] * 2) for task in tasks]
        answers = await asyncio.gather(*futs, return_exceptions=True)
    assert [isinstance(a, StoreError) for a in answers] == [i == bad for i in range(5)]
    assert "invalid byte sequence" in str(answers[bad])
    assert store.calls[0] == 10  # the batch first, whole
    assert (await store.counts())["queued"] == 8
    assert intake.statistics().committed == 8


async def test_a_failing_store_is_not_asked_again_per_request() -> None:
    store = CountingStore(fail=True)
    await store.open()
    async with Intake(store) as intake:
        futs = [intake.submit([NewJob("t", {}, 0.0)]) for _ in range(16)]
        answers = await asyncio.gather(*futs, return_exceptions=True)
    assert all(isinstance(a, StoreError) for a in answers)
    # The batch, then first halves down to one request and its sibling: both failed with
    # nothing committed, so the rest is answered without a try.
    assert store.calls == [16, 8, 4, 2, 1, 1]


async def test_close_commits_what_was_submitted() -> None:
    store = CountingStore()
    await store.open()
    intake = Intake(store)
    intake.start()
    fut = intake.submit([NewJob("t", {}, 0.0)])
    await intake.close()
    assert fut.done() and fut.result() == [(1, True)]
    assert await store.counts() == {**dict.fromkeys(await store.counts(), 0), "queued": 1}


def test_histogram_buckets_are_le() -> None:
    h = RunTimeHistogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 2.0):
        h.observe(v)
    snap = h.snapshot()
    assert snap.counts == (2, 2, 1)
    assert snap.count == 5
    assert snap.total == pytest.approx(3.65)


def test_render_prometheus_text() -> None:
    h = RunTimeHistogram((0.1, 1.0))
    h.observe(0.05)
    h.observe(3.0)
    counters = HttpCounters(accepted=7, deduplicated=1)
    counters.reject(429)
    counters.reject(429)
    counters.reject(400)
    text = render(counters, WorkerNumbers(4, 1, 9, 2, 6, 1, h.snapshot()), draining=False)
    lines = text.splitlines()
    for line in (
        "# TYPE hitd_jobs_accepted_total counter",
        "hitd_jobs_accepted_total 7",
        'hitd_requests_rejected_total{code="400"} 1',
        'hitd_requests_rejected_total{code="429"} 2',
        "hitd_jobs_completed_total 6",
        "hitd_jobs_failed_total 1",
        "hitd_queue_depth 9",
        "hitd_intake_in_flight 2",
        "hitd_workers 4",
        "hitd_workers_busy 1",
        "hitd_draining 0",
        "# TYPE hitd_job_run_seconds histogram",
        'hitd_job_run_seconds_bucket{le="0.1"} 1',
        'hitd_job_run_seconds_bucket{le="1"} 1',
        'hitd_job_run_seconds_bucket{le="+Inf"} 2',
        "hitd_job_run_seconds_sum 3.05",
        "hitd_job_run_seconds_count 2",
    ):
        assert line in lines, line
    assert text.endswith("\n")


async def test_the_app_answers_503_when_the_intake_could_not_commit(connect) -> None:
    """The intake resolves a waiter with the store's exception; the app owns the 503 (its
    field, its Retry-After, its count of refused requests)."""
    from hitpool.hitd.server import Hitd, ServerConfig

    hitd = Hitd(ServerConfig(port=0, store="memory://", workers=1), store=CountingStore(True))
    await hitd.start()
    try:
        c = await connect(hitd.port)
        r = await c.request(
            "POST", "/jobs", {"task": "hello"}, {"Content-Type": "application/json"}
        )
        assert (r.status, r.json()["field"], r.headers["retry-after"]) == (503, "store", "1")
        assert r.json()["message"] == "the job store failed: disk on fire"
        stats = (await c.request("GET", "/stats")).json()
        assert stats["rejected"] == {"503": 1}
    finally:
        await hitd.stop()
