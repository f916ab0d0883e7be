"""The hitd HTTP API, in-process on a real socket with a real SQLite file: every endpoint and
every error code."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Any

import pytest

from hitpool.hitd.tasks import task

JSON = {"Content-Type": "application/json"}

# Events a test task waits on: the test decides when the job may finish.
_events: dict[str, asyncio.Event] = {}


@task(name="test_api_gate")
async def gate(name: str) -> str:
    _events[f"{name}:started"].set()
    await _events[f"{name}:release"].wait()
    return f"released {name}"


async def test_post_work_form_is_the_seed_collector(start_hitd, connect, caplog) -> None:
    caplog.set_level(logging.INFO, logger="hitpool.hitd.tasks")
    hitd = await start_hitd()
    c = await connect(hitd.port)
    r = await c.request(
        "POST",
        "/work",
        "name=Ann&delay=10ms",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status == 201
    body = r.json()
    assert body == {"id": body["id"], "name": "Ann", "delay": 0.01}
    assert r.headers["location"] == f"/jobs/{body['id']}"
    await hitd.runner.until_idle()
    job = (await c.request("GET", r.headers["location"])).json()
    assert job["task"] == "hello"
    assert job["status"] == "succeeded"
    assert job["result"] == "Hello, Ann!"
    assert any(m.startswith("worker") and m.endswith(": Hello, Ann!") for m in caplog.messages), (
        caplog.messages
    )


async def test_post_work_json_and_query_and_errors(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    r = await c.request("POST", "/work", {"name": "Bob", "delay": "20ms"}, JSON)
    assert (r.status, r.json()["delay"]) == (201, 0.02)
    assert (await c.request("POST", "/work?name=Q&delay=0", b"")).status == 201
    r = await c.request("POST", "/work", "delay=1s")
    assert (r.status, r.json()["field"]) == (400, "name")
    assert r.json()["message"] == "You must specify a name."
    r = await c.request("POST", "/work", "name=x&delay=soon")
    assert (r.status, r.json()["field"]) == (400, "delay")
    r = await c.request("POST", "/work", "name=x&delay=11s")
    assert (r.status, r.json()["field"]) == (400, "delay")
    r = await c.request("POST", "/work", b"{not json", JSON)
    assert (r.status, r.json()["field"]) == (400, "body")


async def test_post_one_job_is_202_after_commit_and_runs(start_hitd, connect, tmp_path) -> None:
    hitd = await start_hitd(store=f"sqlite:///{tmp_path}/one.db")
    c = await connect(hitd.port)
    r = await c.request("POST", "/jobs", {"task": "hello", "args": {"name": "A"}}, JSON)
    assert r.status == 202
    job_id = r.json()["id"]
    assert r.json() == {"id": job_id}
    assert r.headers["location"] == f"/jobs/{job_id}"
    # The 202 is a promise: the row is already in the file, seen by another connection.
    with sqlite3.connect(tmp_path / "one.db") as db:
        (n,) = db.execute("SELECT count(*) FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert n == 1
    await hitd.runner.until_idle()
    job = (await c.request("GET", f"/jobs/{job_id}")).json()
    assert set(job) == {
        "id",
        "task",
        "args",
        "status",
        "attempts",
        "result",
        "error",
        "created_at",
        "run_at",
        "started_at",
        "finished_at",
    }
    assert (job["status"], job["attempts"], job["result"]) == ("succeeded", 1, "Hello, A!")
    assert job["finished_at"] >= job["started_at"] >= job["created_at"]


async def test_post_an_array_of_jobs(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    r = await c.request("POST", "/jobs", [{"task": "hello"}] * 5, JSON)
    assert r.status == 202
    ids = r.json()["ids"]
    assert len(ids) == 5 == len(set(ids))
    assert r.headers["location"] == f"/jobs/{ids[0]}"
    r = await c.request("POST", "/jobs", [{"task": "hello"}] * 1001, JSON)
    assert (r.status, r.json()["field"]) == (400, "body")
    r = await c.request("POST", "/jobs", [], JSON)
    assert (r.status, r.json()["field"]) == (400, "body")
    r = await c.request("POST", "/jobs", [{"task": "hello"}, {"task": "hello", "x": 1}], JSON)
    assert (r.status, r.json()["field"]) == (400, "[1].x")
    await hitd.runner.until_idle()
    assert (await hitd.store.counts())["succeeded"] == 5


@pytest.mark.parametrize(
    ("job", "field"),
    [
        ({"args": {}}, "task"),
        ({"task": ""}, "task"),
        ({"task": "hello", "args": [1]}, "args"),
        ({"task": "hello", "args": {"name": 5}}, "args.name"),
        ({"task": "hello", "args": {"nope": 5}}, "args.nope"),
        ({"task": "hello", "delay": "later"}, "delay"),
        ({"task": "hello", "delay": -1}, "delay"),
        ({"task": "hello", "max_attempts": 0}, "max_attempts"),
        ({"task": "hello", "max_attempts": True}, "max_attempts"),
        ({"task": "hello", "key": ""}, "key"),
        # A key no store can keep (PostgreSQL refuses NUL in text, UTF-8 a lone surrogate)
        # would fail the group commit of every client's jobs with it.
        ({"task": "hello", "key": "a\u0000b"}, "key"),
        ({"task": "hello", "key": "\ud800"}, "key"),
        ([{"task": "hello"}, {"task": "hello", "key": "a\udfffb"}], "[1].key"),
        ({"task": "hello", "colour": "red"}, "colour"),
        ("just a string", "body"),
    ],
)
async def test_bad_fields_are_400_naming_the_field(start_hitd, connect, job: Any, field) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    r = await c.request("POST", "/jobs", job, JSON)
    assert r.status == 400
    assert r.json()["field"] == field
    assert r.json()["error"] == "bad_request"
    assert r.json()["message"]


BIG = "1" + "0" * 400  # a JSON integer Python parses, and float() cannot convert


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/jobs", '{"task":"hello","delay":' + BIG + "}", "delay"),
        ("/jobs", '{"task":"hello","args":{"name":"x","delay":' + BIG + "}}", "args.delay"),
        ("/work", '{"name":"x","delay":' + BIG + "}", "delay"),
        # RecursionError in the JSON scanner: the field where the nesting begins.
        ("/jobs", "[" * 100_000, "[0][0][0]"),
        ("/work", '{"a":' * 50_000, "a.a"),
    ],
    ids=["delay", "args.delay", "work.delay", "deep-json", "work.deep-json"],
)
async def test_bad_numbers_and_deep_json_are_a_400_naming_the_field(
    start_hitd, connect, path: str, body: str, field: str
) -> None:
    """Not a 500: float() of a huge int raises OverflowError, a deep document RecursionError."""
    hitd = await start_hitd()
    c = await connect(hitd.port)
    r = await c.request("POST", path, body, JSON)
    assert (r.status, r.json()["field"]) == (400, field), r.body[:200]


async def test_malformed_json_is_400_and_unknown_task_is_422(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    r = await c.request("POST", "/jobs", b'{"task": "hello",', JSON)
    assert (r.status, r.json()["field"]) == (400, "body")
    assert "malformed JSON" in r.json()["message"]
    r = await c.request("POST", "/jobs", {"task": "no_such_task"}, JSON)
    assert (r.status, r.json()["field"], r.json()["error"]) == (
        422,
        "task",
        "unprocessable_entity",
    )
    assert "no_such_task" in r.json()["message"]


async def test_hit_task_targets_only_allowed_hosts(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    args = {"url": "http://example.com/", "requests": 1}
    r = await c.request("POST", "/jobs", {"task": "hit", "args": args}, JSON)
    assert (r.status, r.json()["field"]) == (400, "args.url")


async def test_same_key_while_active_returns_the_same_id(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    job = {"task": "hello", "delay": "1h", "key": "order-7"}
    first = await c.request("POST", "/jobs", job, JSON)
    again = await c.request("POST", "/jobs", job, JSON)
    assert first.status == again.status == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    hdr = {**JSON, "Idempotency-Key": "order-8"}
    a = await c.request("POST", "/jobs", {"task": "hello", "delay": "1h"}, hdr)
    b = await c.request("POST", "/jobs", {"task": "hello", "delay": "1h"}, hdr)
    assert a.json()["id"] == b.json()["id"] != first.json()["id"]
    # Once the job is finished (here: cancelled) the key is free again.
    assert (await c.request("DELETE", f"/jobs/{first.json()['id']}")).status == 200
    third = await c.request("POST", "/jobs", job, JSON)
    assert third.json()["id"] != first.json()["id"]
    r = await c.request("POST", "/jobs", [{"task": "hello"}], hdr)
    assert (r.status, r.json()["field"]) == (400, "Idempotency-Key")


async def test_delete_cancels_a_queued_job_only(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    job_id = (await c.request("POST", "/jobs", {"task": "hello", "delay": "1h"}, JSON)).json()["id"]
    r = await c.request("DELETE", f"/jobs/{job_id}")
    assert (r.status, r.json()["status"]) == (200, "cancelled")
    assert r.json()["finished_at"] is not None
    r = await c.request("DELETE", f"/jobs/{job_id}")
    assert (r.status, r.json()["field"]) == (409, "status")
    assert (await c.request("GET", f"/jobs/{job_id}")).json()["status"] == "cancelled"
    r = await c.request("DELETE", "/jobs/999999")
    assert (r.status, r.json()["field"]) == (404, "id")


async def test_not_found(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    for path, field in (("/jobs/424242", "id"), ("/jobs/abc", "id"), ("/nowhere", "path")):
        r = await c.request("GET", path)
        assert (r.status, r.json()["field"], r.json()["error"]) == (404, field, "not_found")


async def test_wrong_method_is_405_with_allow(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    for method, path, allow in (
        ("PUT", "/jobs", "GET, HEAD, POST"),  # GET /jobs lists jobs (hitd/admin.py)
        ("PUT", "/jobs/1", "GET, HEAD, DELETE"),
        ("GET", "/work", "POST"),
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/metrics", "GET, HEAD"),
        ("POST", "/stats", "GET, HEAD"),
    ):
        r = await c.request(method, path)
        assert r.status == 405, (method, path)
        assert r.headers["allow"] == allow
        assert r.json()["field"] == "method"


async def _head(c: Any, path: str) -> tuple[int, dict[str, str]]:
    """HEAD `path` on client `c`: the status and headers (the reply parser would wait for
    the body Content-Length announces)."""
    await c.send(c.encode("HEAD", path))
    raw = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 5.0)
    status_line, *lines = raw.decode("latin-1").split("\r\n")
    fields = (line.partition(": ") for line in lines if line)
    return int(status_line.split()[1]), {name.lower(): value for name, _, value in fields}


async def test_head_is_routed_like_get_and_answered_without_a_body(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    r = await c.request("POST", "/jobs", {"task": "hello", "delay": "1h"}, JSON)
    job = f"/jobs/{r.json()['id']}"
    for path in ("/healthz", job, "/jobs", "/metrics", "/stats"):
        status, headers = await _head(c, path)
        get = await c.request("GET", path)  # parses: no body came after the HEAD answer
        assert (status, get.status) == (200, 200), path
        if path in ("/healthz", job, "/jobs"):  # the numbers of the others may change
            assert int(headers["content-length"]) == len(get.body), path
    status, headers = await _head(c, "/work")
    assert (status, headers["allow"]) == (405, "POST")
    assert (await c.request("GET", "/healthz")).json() == {"status": "ok"}


async def test_token_is_required_when_set(start_hitd, connect) -> None:
    hitd = await start_hitd(token="s3cret")
    c = await connect(hitd.port)
    job = {"task": "hello"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        r = await c.request("POST", "/jobs", job, {**JSON, **headers})
        assert (r.status, r.json()["field"]) == (401, "Authorization")
        assert r.headers["www-authenticate"].startswith("Bearer")
    for path in ("/jobs/1", "/metrics", "/stats"):
        assert (await c.request("GET", path)).status == 401
    assert (await c.request("GET", "/healthz")).status == 200  # probes need no token
    auth = {**JSON, "Authorization": "Bearer s3cret"}
    assert (await c.request("POST", "/jobs", job, auth)).status == 202
    stats = await c.request("GET", "/stats", headers=auth)
    assert stats.status == 200
    assert stats.json()["rejected"] == {"401": 3}  # refused job submissions; reads are not


async def test_body_over_the_limit_is_413(start_hitd, connect) -> None:
    hitd = await start_hitd(max_body_bytes=1000)
    c = await connect(hitd.port)
    big = [{"task": "hello", "args": {"name": "x" * 100}}] * 20
    r = await c.request("POST", "/jobs", big, JSON)
    assert (r.status, r.json()["field"]) == (413, "body")


async def test_healthz_metrics_and_stats(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    assert (await c.request("GET", "/healthz")).json() == {"status": "ok"}
    await c.request("POST", "/jobs", [{"task": "hello"}] * 3, JSON)
    await c.request("POST", "/jobs", {"task": "nope"}, JSON)
    await hitd.runner.until_idle()
    r = await c.request("GET", "/metrics")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.body.decode()
    for line in (
        "hitd_jobs_accepted_total 3",
        'hitd_requests_rejected_total{code="422"} 1',
        "hitd_jobs_completed_total 3",
        "hitd_jobs_failed_total 0",
        "hitd_queue_depth 0",
        "hitd_workers_busy 0",
        'hitd_job_run_seconds_bucket{le="+Inf"} 3',
        "hitd_job_run_seconds_count 3",
    ):
        assert line in text.splitlines(), line
    stats = (await c.request("GET", "/stats")).json()
    assert stats["accepted"] == 3
    assert stats["completed"] == 3
    assert stats["rejected"] == {"422": 1}
    assert stats["jobs"]["succeeded"] == 3
    assert stats["workers"] == {"size": 2, "busy": 0}
    assert stats["draining"] is False


async def test_full_queue_answers_429_and_memory_stays_bounded(start_hitd, connect) -> None:
    import tracemalloc

    hitd = await start_hitd(queue_size=10)
    c = await connect(hitd.port)
    delayed = {"task": "hello", "delay": "1h"}  # queued, never claimed during the test
    raw = c.encode("POST", "/jobs", delayed, JSON)
    await c.send(raw * 25)  # pipelined: all 25 arrive together
    replies = await c.replies(25)
    codes = [r.status for r in replies]
    assert codes.count(202) == 10
    assert codes.count(429) == 15
    assert all(r.headers["retry-after"] == "1" for r in replies if r.status == 429)
    assert replies[-1].json()["field"] == "queue"
    r = await c.request("POST", "/jobs", [{"task": "hello"}] * 2, JSON)
    assert r.status == 429
    r = await c.request("POST", "/jobs", [{"task": "hello"}] * 11, JSON)
    assert (r.status, r.json()["field"]) == (400, "body")  # larger than the whole queue
    # Overload does not pile up: 3000 more refused requests leave no memory behind.
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(6):
            await c.send(raw * 500)
            assert {r.status for r in await c.replies(500)} == {429}
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 256 * 1024, after - before
    assert hitd.store.queued_estimate() == 10
    assert hitd.intake.in_flight == 0
    assert hitd.app.counters.rejected[429] == 3016


async def test_draining_answers_503_with_retry_after(start_hitd, connect, tmp_path) -> None:
    started = _events["drain:started"] = asyncio.Event()
    release = _events["drain:release"] = asyncio.Event()
    hitd = await start_hitd()
    c = await connect(hitd.port)
    await c.request("POST", "/jobs", {"task": "test_api_gate", "args": {"name": "drain"}}, JSON)
    await started.wait()
    stopping = asyncio.create_task(hitd.stop())
    await asyncio.sleep(0)  # one loop turn: stop() marks the server draining first thing
    assert hitd.app.draining
    r = await c.request("POST", "/jobs", {"task": "hello"}, JSON)
    assert (r.status, r.headers["retry-after"]) == (503, "1")
    r = await c.request("POST", "/work", "name=late")
    assert r.status == 503
    r = await c.request("GET", "/healthz")
    assert (r.status, r.json()) == (503, {"status": "draining"})
    assert (await c.request("GET", "/stats")).json()["draining"] is True  # reads still work
    release.set()
    await stopping
    assert hitd.runner.statistics().completed == 1  # the running job was let finish


async def test_allow_target_lets_the_hit_task_reach_a_listed_host(start_hitd, connect) -> None:
    hitd = await start_hitd(allow_targets=("example.com",))
    c = await connect(hitd.port)
    args = {"url": "http://example.com/", "requests": 1}
    # Delayed an hour and cancelled at once: validation passes, nothing is ever sent.
    r = await c.request("POST", "/jobs", {"task": "hit", "args": args, "delay": "1h"}, JSON)
    assert r.status == 202
    assert (await c.request("DELETE", r.headers["location"])).status == 200


async def test_pipelined_api_requests_are_answered_in_order(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    raw = b"".join(
        [
            c.encode("POST", "/jobs", {"task": "hello", "delay": "1h"}, JSON),
            c.encode("GET", "/healthz"),
            c.encode("POST", "/jobs", {"task": "nope"}, JSON),
            c.encode("POST", "/work", "name=p"),
            c.encode("GET", "/jobs/999"),
            c.encode("POST", "/jobs", [{"task": "hello", "delay": "1h"}] * 2, JSON),
        ]
    )
    await c.send(raw)
    replies = await c.replies(6)
    assert [r.status for r in replies] == [202, 200, 422, 201, 404, 202]
    assert replies[0].json() == {"id": 1}
    assert replies[3].json()["id"] == 2
    assert replies[5].json() == {"ids": [3, 4]}
