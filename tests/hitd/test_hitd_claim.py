"""Claims into free workers only: a job is `running`, has `started_at` and has used an
attempt only once a worker runs it; every job not started is `queued` in the store, where
`DELETE` cancels it and `--queue-size` counts it (issue 10, findings 2 and 3).

In-process servers on port 0; this module is also their task module (its `@task`s are
global).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hitpool.hitd.tasks import task

JSON = {"Content-Type": "application/json"}

# One gate per test, opened by the test: the jobs block on it while the test looks.
GATES: dict[str, asyncio.Event] = {}
STARTED: dict[str, asyncio.Event] = {}


@task(name="test_claim_block")
async def block(gate: str) -> str:
    STARTED.setdefault(gate, asyncio.Event()).set()
    await GATES[gate].wait()
    return gate


async def test_queue_size_bounds_jobs_not_started_and_they_are_honestly_queued(
    start_hitd: Any, connect: Any
) -> None:
    gate = "bound"
    GATES[gate], STARTED[gate] = asyncio.Event(), asyncio.Event()
    hitd = await start_hitd(workers=1, queue_size=50)
    c = await connect(hitd.port)
    body = {"task": "test_claim_block", "args": {"gate": gate}}
    first = (await c.request("POST", "/jobs", body, JSON)).json()["id"]
    await STARTED[gate].wait()
    accepted: list[int] = []
    statuses: list[int] = []
    for _ in range(60):
        r = await c.request("POST", "/jobs", body, JSON)
        statuses.append(r.status)
        if r.status == 202:
            accepted.append(r.json()["id"])
    # The 429 comes at the queue size: 50 waiting jobs (the running one is not waiting).
    assert statuses == [202] * 50 + [429] * 10
    stats = (await c.request("GET", "/stats")).json()
    assert (stats["jobs"]["running"], stats["jobs"]["queued"]) == (1, 50)
    running = (await c.request("GET", f"/jobs/{first}")).json()
    assert running["status"] == "running" and running["started_at"] is not None
    assert running["attempts"] == 1
    waiting = (await c.request("GET", f"/jobs/{accepted[0]}")).json()
    assert (waiting["status"], waiting["started_at"], waiting["attempts"]) == ("queued", None, 0)
    # A job that has not started can be cancelled, and it no longer counts as waiting.
    r = await c.request("DELETE", f"/jobs/{accepted[-1]}")
    assert (r.status, r.json()["status"]) == (200, "cancelled")
    assert (await c.request("POST", "/jobs", body, JSON)).status == 202
    GATES[gate].set()
    await hitd.stop()


async def test_a_burst_into_one_worker_leaves_the_rest_queued_for_anyone(
    start_hitd: Any, connect: Any
) -> None:
    # One request of 20 jobs, one free worker: the enqueue hands over one job, not 20.
    gate = "burst"
    GATES[gate], STARTED[gate] = asyncio.Event(), asyncio.Event()
    hitd = await start_hitd(workers=1)
    c = await connect(hitd.port)
    batch = [{"task": "test_claim_block", "args": {"gate": gate}}] * 20
    r = await c.request("POST", "/jobs", json.dumps(batch), JSON)
    assert r.status == 202
    await STARTED[gate].wait()
    counts = (await c.request("GET", "/stats")).json()["jobs"]
    assert (counts["running"], counts["queued"]) == (1, 19)
    assert hitd.runner.statistics().held == 1
    GATES[gate].set()
    await hitd.stop()


@task(name="test_claim_fail")
async def fail() -> None:
    raise RuntimeError("downstream is down")


async def test_a_job_not_due_is_scheduled_with_its_run_at_and_can_be_cancelled(
    start_hitd: Any, connect: Any
) -> None:
    hitd = await start_hitd(workers=1)
    c = await connect(hitd.port)
    delayed = (await c.request("POST", "/jobs", {"task": "hello", "delay": "60s"}, JSON)).json()
    rec = (await c.request("GET", f"/jobs/{delayed['id']}")).json()
    assert (rec["status"], rec["started_at"]) == ("scheduled", None)
    assert rec["run_at"] > rec["created_at"]  # ISO-8601 UTC strings sort as times
    # Waiting out a retry's backoff is scheduled too.
    r = await c.request("POST", "/jobs", {"task": "test_claim_fail", "max_attempts": 3}, JSON)
    await hitd.runner.until_idle()
    rec = (await c.request("GET", f"/jobs/{r.json()['id']}")).json()
    assert (rec["status"], rec["attempts"]) == ("scheduled", 1)
    assert rec["error"] == "RuntimeError: downstream is down" and rec["run_at"] is not None
    # Neither has started: both can be cancelled.
    for id in (delayed["id"], r.json()["id"]):
        r2 = await c.request("DELETE", f"/jobs/{id}")
        assert (r2.status, r2.json()["status"], r2.json()["run_at"]) == (200, "cancelled", None)
    await hitd.stop()
