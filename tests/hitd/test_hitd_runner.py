"""The runner: claims, runs, retries with backoff, dead letters, timeouts, crash recovery, stop.

Time is a fake clock the test moves; the runner is told to look again with `notify()` and
the test waits with `until_idle()` (a claim found nothing due and every outcome is committed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from hitpool import SpecError
from hitpool.hitd import StoreError
from hitpool.hitd.lifecycle import RetryPolicy, backoff
from hitpool.hitd.runner import Runner, is_gone
from hitpool.hitd.store import JobRecord, NewJob, Outcome, Store
from hitpool.hitd.store.memory import MemoryStore
from hitpool.hitd.store.sqlite import SQLiteStore
from hitpool.hitd.tasks import Registry, current_worker

T0 = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    s = MemoryStore()
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_runner(store: Store, reg: Registry, clock: Clock, **kw: Any) -> Runner:
    kw.setdefault("workers", 2)
    return Runner(store, reg, clock=clock, rand=lambda: 0.5, **kw)


async def enqueue(store: Store, task: str, n: int = 1, **kw: Any) -> list[int]:
    jobs = [NewJob(task, kw.pop("args", {}), kw.get("run_at", T0), kw.get("max_attempts", 3))]
    out = await store.enqueue(jobs * n, T0)
    return [id for id, _ in out]


async def rec(store: Store, id: int) -> JobRecord:
    r = await store.get(id)
    assert r is not None
    return r


async def settle(runner: Runner) -> None:
    runner.notify()
    await runner.until_idle()


async def test_runs_the_hello_task_and_logs_the_worker(
    store: Store, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "hitpool.hitd.tasks")
    [id] = await enqueue(store, "hello", args={"name": "Ada", "delay": "0s"})
    async with make_runner(store, Registry(include_global=False), clock, workers=1) as runner:
        await settle(runner)
        r = await rec(store, id)
        assert (r.status, r.result, r.attempts, r.finished_at) == (
            "succeeded",
            "Hello, Ada!",
            1,
            T0,
        )
        assert r.worker == runner.worker_name
        assert "worker1: Hello, Ada!" in caplog.messages
        s = runner.statistics()
        assert (s.claimed, s.completed, s.failed, s.held, s.busy) == (1, 1, 0, 0, 0)
        assert s.run_time.count == 1


async def test_failures_retry_with_backoff_then_succeed(store: Store, clock: Clock) -> None:
    reg = Registry(include_global=False)
    calls: list[int] = []

    @reg.task
    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError(f"try {len(calls)}")
        return "ok"

    [id] = await enqueue(store, "flaky")
    policy = RetryPolicy(base=2.0, cap=100.0)
    async with make_runner(store, reg, clock, retry=policy) as runner:
        await settle(runner)
        r = await rec(store, id)
        first_delay = backoff(1, 2.0, 100.0, 0.5)  # 1.5 s: half fixed, half jitter
        assert (r.status, r.attempts, r.error) == ("queued", 1, "ConnectionError: try 1")
        assert r.run_at == T0 + first_delay

        clock.now = r.run_at - 0.001  # not due yet
        await settle(runner)
        assert (await rec(store, id)).attempts == 1

        clock.now = r.run_at
        await settle(runner)
        r = await rec(store, id)
        assert (r.status, r.attempts, r.error) == ("queued", 2, "ConnectionError: try 2")
        assert r.run_at == clock.now + backoff(2, 2.0, 100.0, 0.5)  # 3 s: doubled

        clock.now = r.run_at
        await settle(runner)
        r = await rec(store, id)
        assert (r.status, r.attempts, r.result, r.error) == ("succeeded", 3, "ok", None)
        s = runner.statistics()
        assert (s.completed, s.failed, s.retried, s.dead) == (1, 2, 2, 0)


async def test_dead_after_max_attempts(store: Store, clock: Clock) -> None:
    reg = Registry(include_global=False)

    @reg.task
    def always_fails() -> None:
        raise RuntimeError("nope")

    [id] = await enqueue(store, "always_fails", max_attempts=2)
    async with make_runner(store, reg, clock) as runner:
        await settle(runner)
        clock.now = (await rec(store, id)).run_at
        await settle(runner)
        r = await rec(store, id)
        assert (r.status, r.attempts, r.error) == ("dead", 2, "RuntimeError: nope")
        s = runner.statistics()
        assert (s.failed, s.retried, s.dead) == (2, 1, 1)


async def test_unknown_task_and_bad_arguments_fail_without_retry(
    store: Store, clock: Clock
) -> None:
    reg = Registry(include_global=False)

    @reg.task
    async def typed(n: int) -> int:
        return n

    [unknown] = await enqueue(store, "no_such_task")
    [bad] = await enqueue(store, "typed", args={"n": "seven"})
    [good] = await enqueue(store, "typed", args={"n": 7})
    async with make_runner(store, reg, clock) as runner:
        await settle(runner)
        u, b, g = await rec(store, unknown), await rec(store, bad), await rec(store, good)
        assert (u.status, u.attempts) == ("failed", 1)
        assert u.error is not None and "no_such_task" in u.error
        assert b.status == "failed" and b.error is not None and "args.n" in b.error
        assert (g.status, g.result) == ("succeeded", 7)
        assert runner.statistics().permanent == 2


async def test_per_task_timeout(store: Store, clock: Clock) -> None:
    reg = Registry(include_global=False)
    release = threading.Event()

    @reg.task(timeout=0.05)
    async def stuck() -> None:
        await asyncio.Event().wait()

    @reg.task(timeout=0.05)
    def stuck_thread() -> None:
        release.wait(5)

    a = await enqueue(store, "stuck", max_attempts=1)
    b = await enqueue(store, "stuck_thread", max_attempts=1)
    try:
        async with make_runner(store, reg, clock) as runner:
            await settle(runner)
            for id in (*a, *b):
                r = await rec(store, id)
                assert (r.status, r.error) == ("dead", "timed out after 0.05s")
    finally:
        release.set()  # the thread cannot be killed; let it end


async def test_plain_functions_run_on_threads_with_their_worker_id(
    store: Store, clock: Clock
) -> None:
    reg = Registry(include_global=False)

    @reg.task
    def where() -> list[Any]:
        return [threading.current_thread() is threading.main_thread(), current_worker.get()]

    [id] = await enqueue(store, "where")
    async with make_runner(store, reg, clock, workers=1) as runner:
        await settle(runner)
        assert (await rec(store, id)).result == [False, 1]


async def test_each_worker_keeps_an_id_of_its_own(store: Store, clock: Clock) -> None:
    reg = Registry(include_global=False)
    together = asyncio.Barrier(2)

    @reg.task
    async def pair() -> int:
        await together.wait()  # both jobs run at once: on two workers
        return current_worker.get()

    @reg.task
    async def who() -> int:
        return current_worker.get()

    outer = current_worker.set(7)  # a runner started from inside a job: its workers' own IDs
    try:
        paired = await enqueue(store, "pair", n=2)
        later = await enqueue(store, "who", n=6)
        async with make_runner(store, reg, clock, workers=2) as runner:
            await settle(runner)
            assert sorted([(await rec(store, id)).result for id in paired]) == [1, 2]
            assert {(await rec(store, id)).result for id in later} <= {1, 2}
        assert current_worker.get() == 7
    finally:
        current_worker.reset(outer)


async def test_room_freed_by_ending_jobs_wakes_the_claimer(store: Store, clock: Clock) -> None:
    reg = Registry(include_global=False)
    gate, all_done = asyncio.Event(), asyncio.Event()
    done: list[int] = []

    @reg.task
    async def block() -> None:
        await gate.wait()

    @reg.task
    async def count(i: int) -> None:
        done.append(i)
        if len(done) == 11:
            all_done.set()

    [blocker] = await enqueue(store, "block")
    for i in range(11):
        await enqueue(store, "count", args={"i": i})
    # Two workers, a poll that never comes, and a job that holds a worker throughout (so the
    # runner is never empty): after the first claim, every claim is one that jobs ending woke.
    async with make_runner(store, reg, clock, workers=2, poll_s=3600) as runner:
        runner.notify()
        await all_done.wait()
        assert sorted(done) == list(range(11))
        assert (await rec(store, blocker)).status == "running"
        gate.set()
        await runner.until_idle()
        assert runner.statistics().completed == 12


async def test_a_crashed_workers_job_runs_again_after_its_lease(store: Store, clock: Clock) -> None:
    [id] = await enqueue(store, "hello", args={"name": "again"})
    # A worker claims the job and dies: nothing renews or finishes it.
    [taken] = await store.claim("crashed-worker", 1, T0, 30)
    assert taken.attempts == 1
    async with make_runner(store, Registry(include_global=False), clock, lease_s=30) as runner:
        await settle(runner)
        assert (await rec(store, id)).status == "running"  # the lease still holds
        clock.now = T0 + 30
        await settle(runner)
        r = await rec(store, id)
        assert (r.status, r.attempts, r.worker) == ("succeeded", 2, runner.worker_name)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def test_a_restart_runs_the_jobs_of_its_dead_predecessor_at_once(
    store: Store, clock: Clock
) -> None:
    host = socket.gethostname()
    [mine] = await enqueue(store, "hello", args={"name": "dead"})
    [other] = await enqueue(store, "hello", args={"name": "alive"})
    # The previous server on this host crashed holding `mine`; a live process holds `other`.
    await store.claim(f"{host}:{dead_pid()}:0badc0de", 1, T0, 30)
    await store.claim(f"{host}:{os.getpid()}:5ca1ab1e", 1, T0, 30)
    async with make_runner(store, Registry(include_global=False), clock) as runner:
        await settle(runner)  # the clock has not moved: no lease ran out
        a, b = await rec(store, mine), await rec(store, other)
        assert (a.status, a.attempts, a.worker) == ("succeeded", 2, runner.worker_name)
        assert (b.status, b.attempts) == ("running", 1)


@pytest.mark.parametrize(
    ("worker", "gone"),
    [
        ("elsewhere:1:x", False),  # another host: its pids mean nothing here
        ("HOST:notapid:x", False),
        ("HOST:0:x", False),
        ("HOST:PID:x", False),  # ourselves
        ("HOST:DEAD:x", True),
    ],
)
def test_is_gone(worker: str, gone: bool) -> None:
    host = socket.gethostname()
    name = worker.replace("HOST", host).replace("DEAD", str(dead_pid()))
    assert is_gone(name.replace("PID", str(os.getpid())), host) is gone


async def test_leases_of_running_jobs_are_renewed(store: Store, clock: Clock) -> None:
    reg = Registry(include_global=False)
    started, gate = asyncio.Event(), asyncio.Event()

    @reg.task
    async def slow() -> None:
        started.set()
        await gate.wait()

    [id] = await enqueue(store, "slow")
    async with make_runner(store, reg, clock, lease_s=30) as runner:
        runner.notify()
        await started.wait()
        assert (await rec(store, id)).lease_until == T0 + 30
        clock.now = T0 + 25
        await runner.renew_leases()
        assert (await rec(store, id)).lease_until == T0 + 55
        assert await store.claim("other", 1, T0 + 40, 30) == []  # still ours
        assert runner.statistics().busy == 1
        gate.set()
        await runner.until_idle()
        assert (await rec(store, id)).status == "succeeded"


async def test_graceful_stop_finishes_running_jobs_and_releases_the_rest(
    store: Store, clock: Clock
) -> None:
    reg = Registry(include_global=False)
    started, gate = asyncio.Event(), asyncio.Event()

    @reg.task
    async def slow() -> str:
        started.set()
        await gate.wait()
        return "done"

    ids = await enqueue(store, "slow", n=4)
    runner = make_runner(store, reg, clock, workers=1, grace_s=5)
    await runner.start()
    runner.notify()
    await started.wait()
    # One worker: one job claimed and running, three queued, never claimed ahead of it.
    counts = await store.counts()
    assert (counts["running"], counts["queued"]) == (1, 3)
    before = [await rec(store, i) for i in ids]
    assert [(r.status, r.attempts) for r in before] == [("running", 1)] + [("queued", 0)] * 3
    assert before[0].started_at is not None
    assert all(r.started_at is None for r in before[1:])
    stopping = asyncio.create_task(runner.stop())
    await asyncio.sleep(0)  # let stop() begin: it must wait for the running job
    assert not stopping.done()
    gate.set()
    await stopping
    recs = [await rec(store, i) for i in ids]
    assert [(r.status, r.attempts) for r in recs] == [("succeeded", 1)] + [("queued", 0)] * 3
    assert all(r.worker is None and r.lease_until is None for r in recs[1:])
    assert runner.statistics().claimed == 1


async def test_a_job_cancelled_at_the_end_of_the_grace_period_has_used_its_attempt(
    store: Store, clock: Clock
) -> None:
    # Oban's rule: a job that always outlives the grace period is bounded by max_attempts,
    # where giving the attempt back let it run again after every restart, forever.
    reg = Registry(include_global=False)
    started = asyncio.Event()

    @reg.task
    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    [id] = await enqueue(store, "forever", max_attempts=2)
    for attempt in (1, 2):
        started.clear()
        runner = make_runner(store, reg, clock, workers=1)
        await runner.start()
        runner.notify()
        await started.wait()
        await runner.stop(grace_s=0.01)
        r = await rec(store, id)
        assert r.attempts == attempt and r.lease_until is None
        assert r.error is not None and "grace period" in r.error
        assert runner.statistics().interrupted == 1 and runner.statistics().released == 0
        assert r.status == ("queued" if attempt == 1 else "dead")


async def test_many_jobs_through_sqlite(tmp_path: Path, clock: Clock) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    try:
        n = 2000
        out = await store.enqueue([NewJob("hello", {"name": f"n{i}"}, T0) for i in range(n)], T0)
        async with make_runner(
            store, Registry(include_global=False), clock, workers=16, claim_batch=128
        ) as runner:
            await settle(runner)
            counts = await store.counts()
            assert counts["succeeded"] == n and counts["queued"] == counts["running"] == 0
            assert runner.statistics().completed == n
            last = await rec(store, out[-1][0])
            assert last.result == f"Hello, n{n - 1}!"
    finally:
        await store.close()


class FlakyStore(MemoryStore):
    """A memory store whose claim and finish fail the first time each: a database hiccup."""

    def __init__(self) -> None:
        super().__init__()
        self.claim_failures = 1
        self.finish_failures = 1

    async def claim(self, worker: str, limit: int, now: float, lease_s: float) -> list[JobRecord]:
        if self.claim_failures:
            self.claim_failures -= 1
            raise StoreError("database is locked")
        return await super().claim(worker, limit, now, lease_s)

    async def finish(self, outcomes: Sequence[Outcome], now: float) -> None:
        if self.finish_failures:
            self.finish_failures -= 1
            raise StoreError("disk I/O error")
        await super().finish(outcomes, now)


async def test_store_errors_are_retried_not_fatal(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore()
    [id] = await enqueue(store, "hello", args={"name": "again"})
    # poll_s is the pause before trying the store again: a timer, not a test sleep.
    async with make_runner(store, Registry(include_global=False), clock, poll_s=0.01) as runner:
        await settle(runner)
        r = await rec(store, id)
        assert (r.status, r.attempts, r.result) == ("succeeded", 1, "Hello, again!")
        assert runner.statistics().completed == 1
    assert (store.claim_failures, store.finish_failures) == (0, 0)
    assert any("claim failed" in m for m in caplog.messages)
    assert any("could not record 1 outcomes" in m for m in caplog.messages)


class RefusingStore(MemoryStore):
    """A memory store whose finish() refuses any batch holding the success of one job: an
    outcome the store can never take (a text it cannot encode, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse: int | None = None

    async def finish(self, outcomes: Sequence[Outcome], now: float) -> None:
        if any(o.id == self.refuse and o.status == "succeeded" for o in outcomes):
            raise StoreError("invalid byte sequence")
        await super().finish(outcomes, now)


async def test_an_outcome_the_store_refuses_holds_back_no_other(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = RefusingStore()
    ids = await enqueue(store, "hello", n=9, args={"name": "x"})
    store.refuse = ids[4]
    async with make_runner(store, Registry(include_global=False), clock, workers=4) as runner:
        await settle(runner)
        # Later jobs are recorded although they shared batches with the refused outcome.
        [later] = await enqueue(store, "hello", args={"name": "later"})
        await settle(runner)
    recs = [await rec(store, id) for id in [*ids, later]]
    assert [r.status for r in recs] == ["succeeded"] * 4 + ["failed"] + ["succeeded"] * 5
    bad = recs[4]
    assert bad.error == "the result could not be stored: StoreError: invalid byte sequence"
    assert f"job {ids[4]}: the result could not be stored" in caplog.text


async def test_an_expired_lease_is_claimed_while_commits_keep_waking_the_claimer(
    store: Store, clock: Clock
) -> None:
    # The poll keeps its own schedule. Re-armed at every wake, its timer never fired while
    # commits came faster than poll_s, and a dead worker's job waited for the traffic to end.
    reg = Registry(include_global=False)
    ran = asyncio.Event()

    @reg.task
    async def orphan() -> str:
        ran.set()
        return "ran"

    [id] = await enqueue(store, "orphan")
    # Claimed by another process's worker, which then dies: its lease ends at T0 + 10.
    assert [r.id for r in await store.claim("elsewhere:1:dead", 1, T0, 10.0)] == [id]
    poll_s = 0.05
    loop = asyncio.get_running_loop()
    async with make_runner(store, reg, clock, poll_s=poll_s, recover=False) as runner:
        await runner.until_idle()  # the first claim ran: the lease was not over yet
        clock.now = T0 + 60  # now it is
        # Steady intake, a commit every poll_s / 10 for up to 20 poll periods: the sleep
        # paces the simulated traffic; what must fire is the runner's own poll timer.
        deadline = loop.time() + 20 * poll_s
        while not ran.is_set() and loop.time() < deadline:
            runner.committed()
            await asyncio.sleep(poll_s / 10)
    assert ran.is_set()
    r = await rec(store, id)
    assert (r.status, r.attempts, r.worker) == ("succeeded", 2, runner.worker_name)


class ClaimCountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.claims = 0

    async def claim(self, worker: str, limit: int, now: float, lease_s: float) -> list[JobRecord]:
        self.claims += 1
        return await super().claim(worker, limit, now, lease_s)


async def test_jobs_not_due_yet_do_not_make_every_commit_claim(clock: Clock) -> None:
    store = ClaimCountingStore()
    await enqueue(store, "hello", n=3, args={"name": "later"}, run_at=T0 + 3600)
    async with make_runner(store, Registry(include_global=False), clock, poll_s=60) as runner:
        await runner.until_idle()  # the first claim: nothing due
        claims = store.claims
        for _ in range(10):  # commits whose jobs were all handed off: nothing new is queued
            runner.committed()
            await asyncio.sleep(0)  # a loop turn for the claimer, not a wait for time
        assert store.claims == claims
        # A due job queued (not handed off): the next commit claims it.
        [id] = await enqueue(store, "hello", args={"name": "now"})
        runner.committed()
        await runner.until_idle()
        assert store.claims == claims + 1
        assert (await rec(store, id)).status == "succeeded"


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"workers": 0}, "workers"),
        ({"lease_s": 0}, "lease_s"),
        ({"poll_s": -1}, "poll_s"),
        ({"grace_s": -0.5}, "grace_s"),
    ],
)
def test_bad_settings_name_the_field(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as e:
        Runner(MemoryStore(), Registry(include_global=False), **kw)
    assert e.value.field == field


async def test_jobs_handed_off_while_stopping_are_released_unstarted(
    store: Store, clock: Clock
) -> None:
    # A handoff committed just as stop() began (the store's commit was already under way):
    # the jobs never start, so they go back with their attempt unused.
    runner = make_runner(store, Registry(include_global=False), clock, poll_s=3600)
    await runner.start()
    await runner.until_idle()
    [id] = await enqueue(store, "hello")
    [rec_] = await store.claim(runner.worker_name, 1, T0, 30)  # as the handoff's commit does
    stopping = asyncio.create_task(runner.stop())
    await asyncio.sleep(0)  # stop() has begun
    runner.deliver([id], [NewJob("hello", {}, T0)])
    await stopping
    r = await rec(store, id)
    assert (rec_.attempts, r.status, r.attempts, r.worker) == (1, "queued", 0, None)
    assert runner.statistics().released == 1


async def test_fresh_jobs_are_handed_to_the_runner_in_their_enqueue(
    tmp_path: Path, clock: Clock
) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    try:
        async with make_runner(store, Registry(include_global=False), clock, workers=4) as runner:
            await runner.until_idle()  # its first claim, at start, found nothing
            out = await store.enqueue(
                [NewJob("hello", {"name": str(i)}, T0) for i in range(20)], T0
            )
            # Claimed by the enqueue's own commit, as many as there are free workers: held
            # before any claim ran. The rest waits in the store, `queued`.
            assert runner.statistics().held == 4 and runner.statistics().claimed == 4
            assert (await store.counts())["queued"] == 16
            await settle(runner)
            for id, _ in out:
                r = await rec(store, id)
                assert (r.status, r.attempts, r.worker) == ("succeeded", 1, runner.worker_name)
        # Stopped: detached from the store, new jobs wait for the next server.
        [(id, _)] = await store.enqueue([NewJob("hello", {}, T0)], T0)
        assert (await rec(store, id)).status == "queued"
    finally:
        await store.close()


async def test_handed_off_jobs_that_wait_run_on_every_worker_at_once(
    tmp_path: Path, clock: Clock
) -> None:
    reg = Registry(include_global=False)
    together = asyncio.Barrier(4)

    @reg.task
    async def meet() -> int:
        await together.wait()  # only returns once four jobs run at once
        return current_worker.get()

    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    try:
        async with make_runner(store, reg, clock, workers=4) as runner:
            out = await store.enqueue([NewJob("meet", {}, T0) for _ in range(8)], T0)
            await settle(runner)
            results = [(await rec(store, id)).result for id, _ in out]
            assert sorted(results[:4]) == [1, 2, 3, 4] and set(results[4:]) <= {1, 2, 3, 4}
            assert runner.statistics().completed == 8
    finally:
        await store.close()


async def test_args_checked_skips_the_signature_check_of_handed_off_jobs_only(
    tmp_path: Path, clock: Clock
) -> None:
    reg = Registry(include_global=False)

    @reg.task
    async def typed(n: int) -> object:
        return n

    @reg.task
    async def shout(word: str) -> str:
        return word

    def upper(_: Registry, args: dict[str, Any]) -> dict[str, Any]:
        return {"word": args["word"].upper()}

    reg.add(dataclasses.replace(reg.get("shout"), check=upper))  # a check that normalizes
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    try:
        # Queued before the runner starts: claimed from the table, so checked.
        [claimed] = await enqueue(store, "typed", args={"n": "seven"})
        async with make_runner(store, reg, clock, args_checked=True) as runner:
            await settle(runner)
            r = await rec(store, claimed)
            assert (r.status, r.attempts) == ("failed", 1)
            assert r.error is not None and "args.n" in r.error
            # Handed off from its enqueue: the runner trusts the submit-time check it was
            # promised (this job broke that promise, so it runs with what it was given)...
            [(fresh, _)] = await store.enqueue([NewJob("typed", {"n": "eight"}, T0)], T0)
            # ...but the task's own check still runs, and its normalized arguments are used.
            [(loud, _)] = await store.enqueue([NewJob("shout", {"word": "hi"}, T0)], T0)
            await settle(runner)
            assert runner.statistics().claimed == 3
            assert (await rec(store, fresh)).result == "eight"
            assert (await rec(store, loud)).result == "HI"
    finally:
        await store.close()


class CountingStore(MemoryStore):
    """A memory store that counts claims and can be told when one happens."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0
        self.claimed = asyncio.Event()
        self.took: list[tuple[int, int]] = []  # (limit, jobs returned) per claim

    async def claim(self, worker: str, limit: int, now: float, lease_s: float) -> list[JobRecord]:
        self.claims += 1
        self.claimed.set()
        got = await super().claim(worker, limit, now, lease_s)
        self.took.append((limit, len(got)))
        return got


async def test_a_claim_asks_only_for_free_workers_and_refills_them_in_one_batch(
    clock: Clock,
) -> None:
    store = CountingStore()
    await store.open()
    reg = Registry(include_global=False)
    gate, four = asyncio.Event(), asyncio.Event()
    started: list[int] = []

    @reg.task
    async def block(i: int) -> None:
        started.append(i)
        if len(started) == 4:
            four.set()
        await gate.wait()

    for i in range(12):
        await enqueue(store, "block", args={"i": i})
    async with make_runner(store, reg, clock, workers=4, poll_s=3600) as runner:
        runner.notify()
        await four.wait()
        assert store.took == [(4, 4)]  # four free workers: four jobs, not a prefetch
        assert (await store.counts())["queued"] == 8
        # The four end together: one claim refills all four, not four claims of one.
        gate.set()
        await runner.until_idle()
        assert store.took == [(4, 4)] * 3  # and no claim for nothing: none is queued
    await store.close()


async def test_a_commit_claims_only_when_jobs_are_queued(clock: Clock) -> None:
    store = CountingStore()
    await store.open()
    # poll_s is long: every claim below is one a commit or notify() caused.
    async with make_runner(store, Registry(include_global=False), clock, poll_s=3600) as runner:
        await runner.until_idle()  # the first look, at start
        first = store.claims
        runner.committed()  # nothing queued: jobs handed off in their enqueue need no claim
        await runner.until_idle()
        assert store.claims == first
        [id] = await enqueue(store, "hello", args={"name": "q"})
        store.claimed.clear()
        runner.committed()  # a queued job: claimed at once
        await store.claimed.wait()
        await runner.until_idle()
        assert (await rec(store, id)).status == "succeeded"
        n = store.claims
        runner.notify()  # notify() looks regardless (expired leases, other processes' jobs)
        store.claimed.clear()
        await store.claimed.wait()
        assert store.claims == n + 1
    await store.close()


class RidingStore(CountingStore):
    """A store whose finish carries the next claim (as PostgreSQL's does in one statement):
    `rode` records (limit, jobs returned) per finish that claimed."""

    claims_with_finish = True

    def __init__(self) -> None:
        super().__init__()
        self.rode: list[tuple[int, int]] = []
        self.plain_finishes = 0

    async def finish(self, outcomes: Sequence[Outcome], now: float) -> None:
        self.plain_finishes += 1
        await super().finish(outcomes, now)

    async def finish_and_claim(
        self, outcomes: Sequence[Outcome], now: float, worker: str, limit: int, lease_s: float
    ) -> list[JobRecord]:
        await MemoryStore.finish(self, outcomes, now)
        got = await MemoryStore.claim(self, worker, limit, now, lease_s)
        self.rode.append((limit, len(got)))
        return got


async def test_the_claim_rides_the_finish_of_the_jobs_that_freed_the_workers(
    clock: Clock,
) -> None:
    store = RidingStore()
    await store.open()
    reg = Registry(include_global=False)
    gate, four = asyncio.Event(), asyncio.Event()
    started: list[int] = []
    running = peak = 0

    @reg.task
    async def block(i: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        started.append(i)
        if len(started) == 4:
            four.set()
        await gate.wait()
        running -= 1

    for i in range(12):
        await enqueue(store, "block", args={"i": i})
    async with make_runner(store, reg, clock, workers=4, poll_s=3600) as runner:
        runner.notify()
        await four.wait()
        assert store.took == [(4, 4)]  # the first look is the claimer's
        gate.set()
        await runner.until_idle()
        # Each group of four that ended claimed the next four in its own finish; the last
        # finish, with nothing queued, claimed nothing; the claimer claimed no more.
        assert store.rode == [(4, 4), (4, 4)]
        assert store.took == [(4, 4)]
        assert store.plain_finishes == 1
        assert peak == 4 and sorted(started) == list(range(12))
        assert (await store.counts())["succeeded"] == 12
    await store.close()


class FailingRideStore(RidingStore):
    """Its first finish that carries a claim fails (a store hiccup); the rest work."""

    failed = False

    async def finish_and_claim(
        self, outcomes: Sequence[Outcome], now: float, worker: str, limit: int, lease_s: float
    ) -> list[JobRecord]:
        if not self.failed:
            self.failed = True
            raise StoreError("PostgreSQL: a hiccup")
        return await super().finish_and_claim(outcomes, now, worker, limit, lease_s)


async def test_workers_freed_by_a_failed_finish_and_claim_are_claimed_for_at_once(
    clock: Clock,
) -> None:
    store = FailingRideStore()
    await store.open()
    reg = Registry(include_global=False)
    gate = asyncio.Event()
    done: list[int] = []
    four = asyncio.Event()

    @reg.task
    async def step(i: int) -> None:
        if i < 2:
            await gate.wait()  # two workers stay busy throughout
        done.append(i)
        if len(done) == 4:
            four.set()

    for i in range(6):
        await enqueue(store, "step", args={"i": i})
    # poll_s is long: the jobs after the failure can only come from a claim it woke.
    async with make_runner(store, reg, clock, workers=4, poll_s=3600) as runner:
        runner.notify()
        await four.wait()  # 2 and 3 ended, their finish failed, 4 and 5 ran meanwhile
        assert store.failed and sorted(done) == [2, 3, 4, 5]
        gate.set()
        await runner.until_idle()
        assert (await store.counts())["succeeded"] == 6
    await store.close()


class ClaimSignalStore(MemoryStore):
    """Sets `claimed` after every claim returns: a test waits for a claim, not for time."""

    def __init__(self) -> None:
        super().__init__()
        self.claimed = asyncio.Event()

    async def claim(self, worker: str, limit: int, now: float, lease_s: float) -> list[JobRecord]:
        try:
            return await super().claim(worker, limit, now, lease_s)
        finally:
            self.claimed.set()


async def test_a_clock_step_past_the_lease_does_not_run_a_held_job_twice(clock: Clock) -> None:
    # The wall clock jumps past the lease while a job runs (NTP, a resumed VM): the runner's
    # next poll must not claim its own running job as expired: that started it a second
    # time, or, on its last attempt as here, made it `dead` while it ran and lost its result.
    store = ClaimSignalStore()
    reg = Registry(include_global=False)
    starts = 0
    entered, go = asyncio.Event(), asyncio.Event()

    @reg.task
    async def slow() -> str:
        nonlocal starts
        starts += 1
        entered.set()
        await go.wait()
        return "done"

    [id] = await enqueue(store, "slow", max_attempts=1)
    async with make_runner(store, reg, clock, workers=2, lease_s=10, poll_s=60) as runner:
        runner.notify()
        await entered.wait()
        clock.now = T0 + 60
        store.claimed.clear()
        runner.notify()
        await store.claimed.wait()
        for _ in range(5):  # loop turns for a claimed job to reach a worker
            await asyncio.sleep(0)
        assert starts == 1
        go.set()
        await settle(runner)
    r = await rec(store, id)
    assert (r.status, r.result, r.attempts) == ("succeeded", "done", 1)


class FinishSignalStore(ClaimSignalStore):
    """Also sets `finished` after every finish returns."""

    def __init__(self) -> None:
        super().__init__()
        self.finished = asyncio.Event()

    async def finish(self, outcomes: Sequence[Outcome], now: float) -> None:
        try:
            await super().finish(outcomes, now)
        finally:
            self.finished.set()


async def test_a_stale_runs_outcome_does_not_drop_the_newer_run_from_held(clock: Clock) -> None:
    # A job's lease expired while it ran here (another worker's claim made it dead); an
    # operator retried it and this runner claimed it again while the first run went on.
    # The first run's outcome is refused by the fence, and must not take the second run
    # off the held jobs: their leases would no longer be renewed, and the job would run a
    # third time elsewhere while the second still runs.
    store = FinishSignalStore()
    reg = Registry(include_global=False)
    gates = [asyncio.Event(), asyncio.Event()]
    starts: list[int] = []

    @reg.task
    async def slow() -> int:
        n = len(starts)
        starts.append(n)
        await gates[n].wait()
        return n

    [id] = await enqueue(store, "slow", max_attempts=1)
    async with make_runner(store, reg, clock, workers=2, lease_s=10, poll_s=60) as runner:
        runner.notify()
        await store.claimed.wait()
        while not starts:
            await asyncio.sleep(0)  # loop turns for the claimed job to reach a worker
        clock.now = T0 + 60
        assert await store.claim("elsewhere", 1, clock.now, 10) == []  # dead: lease expired
        assert await store.retry(id, clock.now) == "retried"
        store.claimed.clear()
        runner.notify()
        await store.claimed.wait()
        while len(starts) < 2:
            await asyncio.sleep(0)
        store.finished.clear()
        gates[0].set()  # the first run ends: its outcome is fenced off
        await store.finished.wait()
        assert runner.statistics().held == 1
        r = await rec(store, id)
        assert (r.status, r.result) == ("running", None)
        gates[1].set()
        await settle(runner)
    r = await rec(store, id)
    assert (r.status, r.result, r.attempts) == ("succeeded", 1, 1)
