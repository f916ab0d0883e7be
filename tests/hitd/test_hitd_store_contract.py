"""The job store contract: one test class, inherited by every backend (saq's pattern).

Each backend's class only provides the `store` fixture; every behaviour is asserted once here.
Time is a plain number passed in, so leases and retries need no sleeping.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from hitd import _store_fixtures
from hitd._helpers import wait_for
from hitpool import SpecError
from hitpool.hitd import StoreError, StoreUnavailable
from hitpool.hitd.store import NewJob, Outcome, Store
from hitpool.hitd.store.memory import MemoryStore
from hitpool.hitd.store.sqlite import SQLiteStore

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a fixed "now"


def job(task: str = "hello", run_at: float = T0, key: str | None = None, **kw: object) -> NewJob:
    return NewJob(task=task, args=dict(kw) or {"name": "x"}, run_at=run_at, key=key)


EMPTY = dict.fromkeys(["queued", "running", "succeeded", "failed", "dead", "cancelled"], 0)


# Outcomes as a runner sends them, for the attempt that ended (1 unless said).
def ok(id: int, worker: str, result: Any = None, attempt: int = 1) -> Outcome:
    return Outcome(id, worker, attempt, "succeeded", result)


def retry(id: int, worker: str, run_at: float, error: str, attempt: int = 1) -> Outcome:
    return Outcome(id, worker, attempt, "queued", error=error, run_at=run_at)


def ended(id: int, worker: str, status: Any, error: str, attempt: int = 1) -> Outcome:
    return Outcome(id, worker, attempt, status, error=error)


class Taker:
    """A Handoff that records what it is given."""

    def __init__(self, room: int, fail: bool = False) -> None:
        self._room, self.fail, self.got = room, fail, list[tuple[int, NewJob]]()
        self.announced = 0  # committed() calls: other processes' jobs announced

    worker = "w"
    lease_s = 9.0

    def room(self) -> int:
        return self._room - len(self.got)  # like a runner: what it was given takes room

    def committed(self) -> None:
        self.announced += 1

    def deliver(self, ids: Sequence[int], jobs: Sequence[NewJob]) -> None:
        if self.fail:
            raise RuntimeError("no")
        self.got.extend(zip(ids, jobs, strict=True))


class StoreContract:
    """Every store inherits this; the subclass provides the `store` fixture."""

    # -- enqueue and get -----------------------------------------------------------------

    async def test_enqueue_returns_new_ids_in_order(self, store: Store) -> None:
        out = await store.enqueue([job(), job(), job()], T0)
        assert [created for _, created in out] == [True, True, True]
        ids = [id for id, _ in out]
        assert len(set(ids)) == 3 and ids == sorted(ids)
        assert await store.enqueue([], T0) == []

    async def test_get_returns_the_queued_record(self, store: Store) -> None:
        [(id, _)] = await store.enqueue(
            [NewJob("hello", {"name": "Zoë", "n": [1, {"a": None}]}, T0 + 5, 4, "k1")], T0
        )
        rec = await store.get(id)
        assert rec is not None
        assert (rec.id, rec.task, rec.status, rec.attempts, rec.max_attempts) == (
            id,
            "hello",
            "queued",
            0,
            4,
        )
        assert rec.args == {"name": "Zoë", "n": [1, {"a": None}]}
        assert (rec.created_at, rec.run_at, rec.key) == (T0, T0 + 5, "k1")
        assert (rec.started_at, rec.finished_at, rec.lease_until, rec.worker) == (None,) * 4
        # Not due for 5 s: shown as scheduled, with when it is due; then queued.
        assert rec.to_json(T0) == {
            "id": id,
            "task": "hello",
            "args": {"name": "Zoë", "n": [1, {"a": None}]},
            "status": "scheduled",
            "attempts": 0,
            "result": None,
            "error": None,
            "created_at": "2027-01-15T08:00:00.000Z",
            "run_at": "2027-01-15T08:00:05.000Z",
            "started_at": None,
            "finished_at": None,
        }
        assert rec.to_json(T0 + 5)["status"] == "queued"
        assert await store.get(id + 1000) is None

    async def test_a_batch_without_keys_keeps_every_field(self, store: Store) -> None:
        # Batches without keys take the SQLite store's JSON path; this one checks its columns.
        jobs = [NewJob("a", {"x": [1.5, None]}, T0 + 7, 5), NewJob("b", {}, None, 1)]
        out = await store.enqueue(jobs, T0)
        a, b = [await store.get(id) for id, _ in out]
        assert a is not None and b is not None
        assert (a.task, a.args, a.run_at, a.max_attempts, a.key) == (
            "a",
            {"x": [1.5, None]},
            T0 + 7,
            5,
            None,
        )
        assert (b.task, b.args, b.run_at, b.max_attempts, b.created_at) == ("b", {}, T0, 1, T0)

    async def test_a_job_without_run_at_is_due_when_enqueued(self, store: Store) -> None:
        [(early, _)] = await store.enqueue([job(run_at=T0 + 1)], T0)
        [(now, _)] = await store.enqueue([NewJob("hello", {"name": "x"})], T0 + 2)
        rec = await store.get(now)
        assert rec is not None and (rec.created_at, rec.run_at) == (T0 + 2, T0 + 2)
        assert await store.claim("w", 10, T0 + 1.5, 30) != []  # only `early` is due
        [got] = await store.claim("w", 10, T0 + 2, 30)
        assert (got.id, got.run_at) == (now, T0 + 2)
        assert early != now

    # -- idempotency keys ----------------------------------------------------------------

    async def test_key_held_by_an_active_job_returns_its_id(self, store: Store) -> None:
        [(a, created)] = await store.enqueue([job(key="k")], T0)
        assert created
        [same, other] = await store.enqueue([job(key="k"), job(key="other")], T0)
        assert same == (a, False) and other[1] and other[0] != a
        await store.claim("w1", 1, T0, 30)  # running is still active
        [(again, created)] = await store.enqueue([job(key="k")], T0)
        assert (again, created) == (a, False)
        assert (await store.counts())["queued"] + (await store.counts())["running"] == 2

    async def test_same_key_twice_in_one_batch_is_one_job(self, store: Store) -> None:
        out = await store.enqueue([job(key="dup"), job(), job(key="dup")], T0)
        assert out[0][1] and out[1][1] and out[2] == (out[0][0], False)
        assert (await store.counts())["queued"] == 2

    async def test_a_finished_job_frees_its_key(self, store: Store) -> None:
        [(a, _)] = await store.enqueue([job(key="k")], T0)
        await store.claim("w1", 1, T0, 30)
        await store.finish([ok(a, "w1", 1)], T0 + 1)
        [(b, created)] = await store.enqueue([job(key="k")], T0 + 2)
        assert created and b != a
        assert await store.cancel(b)
        [(c, created)] = await store.enqueue([job(key="k")], T0 + 3)
        assert created and c not in (a, b)

    # -- claim ---------------------------------------------------------------------------

    async def test_claim_takes_due_jobs_oldest_first(self, store: Store) -> None:
        later = await store.enqueue([job(run_at=T0 + 10)], T0)
        old = await store.enqueue([job(run_at=T0 - 5), job(run_at=T0 - 1)], T0)
        got = await store.claim("w1", 10, T0, 30)
        assert [r.id for r in got] == [old[0][0], old[1][0]]
        r = got[0]
        assert (r.status, r.attempts, r.worker, r.started_at, r.lease_until) == (
            "running",
            1,
            "w1",
            T0,
            T0 + 30,
        )
        assert await store.claim("w2", 10, T0 + 9.9, 30) == []
        [due] = await store.claim("w2", 10, T0 + 10, 30)
        assert due.id == later[0][0]

    async def test_claim_respects_the_limit(self, store: Store) -> None:
        await store.enqueue([job() for _ in range(5)], T0)
        assert len(await store.claim("w1", 2, T0, 30)) == 2
        assert len(await store.claim("w1", 0, T0, 30)) == 0
        assert len(await store.claim("w1", 10, T0, 30)) == 3
        assert await store.claim("w1", 10, T0, 30) == []

    # -- leases --------------------------------------------------------------------------

    async def test_an_expired_lease_is_claimed_again_with_the_attempt_counted(
        self, store: Store
    ) -> None:
        [(id, _)] = await store.enqueue([job()], T0)
        await store.claim("w1", 1, T0, 10)
        assert await store.claim("w2", 1, T0 + 9.99, 10) == []
        [again] = await store.claim("w2", 1, T0 + 10, 10)
        assert (again.id, again.attempts, again.worker, again.started_at) == (id, 2, "w2", T0 + 10)
        # The first worker's late result is ignored: w2 owns the job now.
        await store.finish([ok(id, "w1", "late")], T0 + 11)
        rec = await store.get(id)
        assert rec is not None and rec.status == "running" and rec.result is None
        await store.finish([ok(id, "w2", "mine", attempt=2)], T0 + 12)
        rec = await store.get(id)
        assert rec is not None
        assert (rec.status, rec.result, rec.attempts) == ("succeeded", "mine", 2)

    async def test_renew_extends_only_the_holders_lease(self, store: Store) -> None:
        [(id, _)] = await store.enqueue([job()], T0)
        await store.claim("w1", 1, T0, 10)
        await store.renew([id], "w1", T0 + 5, 10)
        await store.renew([id], "intruder", T0 + 9, 100)  # not the holder: ignored
        assert await store.claim("w2", 1, T0 + 14.9, 10) == []
        [again] = await store.claim("w2", 1, T0 + 15, 10)
        assert again.worker == "w2"
        await store.renew([], "w2", T0, 10)  # no-op

    async def test_an_expired_lease_on_the_last_attempt_is_dead(self, store: Store) -> None:
        [(id, _)] = await store.enqueue([NewJob("hello", {}, T0, max_attempts=2)], T0)
        await store.claim("w1", 1, T0, 10)
        await store.claim("w2", 1, T0 + 10, 10)
        assert await store.claim("w3", 1, T0 + 20, 10) == []
        rec = await store.get(id)
        assert rec is not None
        assert (rec.status, rec.attempts, rec.finished_at) == ("dead", 2, T0 + 20)
        assert rec.error is not None and "lease expired" in rec.error

    # -- finish --------------------------------------------------------------------------

    async def test_finish_records_a_batch_of_outcomes(self, store: Store) -> None:
        ids = [id for id, _ in await store.enqueue([job() for _ in range(4)], T0)]
        await store.claim("w1", 4, T0, 30)
        await store.finish(
            [
                ok(ids[0], "w1", {"ok": [1, 2]}),
                retry(ids[1], "w1", T0 + 7, "boom"),
                ended(ids[2], "w1", "failed", "bad args"),
                ok(ids[3], "w1"),
            ],
            T0 + 1,
        )
        recs = [await store.get(i) for i in ids]
        assert [r.status for r in recs if r] == ["succeeded", "queued", "failed", "succeeded"]
        done, retried, failed, _ = (r for r in recs if r)
        assert (done.result, done.error, done.finished_at) == ({"ok": [1, 2]}, None, T0 + 1)
        assert done.lease_until is None
        assert (retried.error, retried.run_at, retried.attempts, retried.finished_at) == (
            "boom",
            T0 + 7,
            1,
            None,
        )
        assert (failed.error, failed.finished_at) == ("bad args", T0 + 1)
        assert await store.claim("w1", 10, T0 + 6.9, 30) == []
        [again] = await store.claim("w1", 10, T0 + 7, 30)
        assert (again.id, again.attempts) == (ids[1], 2)
        await store.finish([], T0)

    async def test_finish_keeps_every_kind_of_result_exactly(self, store: Store) -> None:
        results: list[object] = [
            0.1 + 0.2,  # 17 significant digits
            [1e-300, 2.5],
            True,
            False,
            None,
            2**70,  # wider than SQLite's 64-bit integers
            -7,
            'Zoë "quoted" \\ \n\t\x01',
            {"nested": {"x": [0.30000000000000004, "s", None, False]}},
            [],
            {},
            "",
        ]
        ids = [id for id, _ in await store.enqueue([job() for _ in results], T0)]
        await store.claim("w1", len(ids), T0, 30)
        await store.finish(
            [ok(id, "w1", r) for id, r in zip(ids, results, strict=True)],
            T0 + 1,
        )
        got = [await store.get(id) for id in ids]
        assert [r.result for r in got if r] == results
        assert [type(r.result) for r in got if r] == [type(r) for r in results]

    async def test_finish_takes_a_batch_from_several_workers(self, store: Store) -> None:
        ids = [id for id, _ in await store.enqueue([job() for _ in range(4)], T0)]
        await store.claim("w1", 2, T0, 30)
        await store.claim("w2", 2, T0, 30)
        await store.finish(
            [
                ok(ids[0], "w1", 1),
                ok(ids[2], "w2", 2),
                retry(ids[3], "w2", T0 + 5, "boom"),
                ok(ids[1], "w2", 3),  # held by w1: ignored
            ],
            T0 + 1,
        )
        recs = [await store.get(id) for id in ids]
        assert [(r.status, r.result) for r in recs if r] == [
            ("succeeded", 1),
            ("running", None),
            ("succeeded", 2),
            ("queued", None),
        ]
        assert await store.counts() == {**EMPTY, "succeeded": 2, "running": 1, "queued": 1}

    async def test_a_result_json_cannot_hold_is_kept_as_its_repr(self, store: Store) -> None:
        [(id, _)] = await store.enqueue([job()], T0)
        await store.claim("w1", 1, T0, 30)
        cycle: list[object] = []
        cycle.append(cycle)
        await store.finish([ok(id, "w1", cycle)], T0 + 1)
        rec = await store.get(id)
        assert rec is not None and rec.status == "succeeded"
        assert rec.result in (cycle, "[[...]]")  # memory keeps the object itself

    async def test_text_no_utf8_can_hold_round_trips_in_json_columns(self, store: Store) -> None:
        # A lone surrogate (JSON "\ud800" in a request) and a NUL, in args and in a result:
        # raw, the first cannot be encoded as UTF-8 and PostgreSQL refuses the second. One
        # such request failed its whole group commit; the JSON columns keep them escaped.
        odd = {"name": "a\ud800b", "nul": "x\x00y"}
        out = await store.enqueue([job(**odd), job(run_at=None, **odd)], T0)
        await store.claim("w1", 2, T0, 30)
        await store.finish([ok(id, "w1", odd) for id, _ in out], T0 + 1)
        for id, _ in out:
            rec = await store.get(id)
            assert rec is not None and (rec.status, rec.args, rec.result) == ("succeeded", odd, odd)

    async def test_an_error_text_no_utf8_can_hold_is_recorded_escaped(self, store: Store) -> None:
        # An error naming a file from a non-UTF-8 disk (os.fsdecode gives a lone surrogate),
        # or holding a NUL: one such outcome failed every finish batch it was in.
        out = await store.enqueue([job(), job(), job()], T0)
        await store.claim("w1", 3, T0, 30)
        (a, _), (b, _), (c, _) = out
        await store.finish(
            [
                ended(a, "w1", "failed", "cannot parse r\udce9sum\udce9.csv"),
                retry(b, "w1", T0 + 5, "a\x00b"),
                ok(c, "w1", "fine"),
            ],
            T0 + 1,
        )
        ra, rb, rc = [await store.get(id) for id, _ in out]
        assert ra is not None and rb is not None and rc is not None
        assert (ra.status, rb.status, rc.status) == ("failed", "queued", "succeeded")
        # Kept as they are where a store can (memory), escaped where it cannot.
        assert ra.error in (
            "cannot parse r\udce9sum\udce9.csv",
            "cannot parse r\\udce9sum\\udce9.csv",
        )
        assert rb.error in ("a\x00b", "a\\x00b")

    async def test_a_failure_on_the_last_attempt_is_dead(self, store: Store) -> None:
        [(id, _)] = await store.enqueue([NewJob("hello", {}, T0, max_attempts=1)], T0)
        await store.claim("w1", 1, T0, 30)
        await store.finish([ended(id, "w1", "dead", "boom")], T0 + 1)
        rec = await store.get(id)
        assert rec is not None and (rec.status, rec.error, rec.attempts) == ("dead", "boom", 1)

    async def test_finish_writes_the_status_it_is_given(self, store: Store) -> None:
        # The lifecycle is decided by the runner (hitpool.hitd.lifecycle); a store keeps no
        # copy of the rules: a retry asked for on the last attempt is written as a retry.
        [(id, _)] = await store.enqueue([NewJob("x", {}, T0, max_attempts=1)], T0)
        await store.claim("w1", 1, T0, 30)
        await store.finish([retry(id, "w1", T0 + 5, "boom")], T0)
        r = await store.get(id)
        assert r is not None and (r.status, r.attempts, r.run_at) == ("queued", 1, T0 + 5)
        assert store.queued_estimate() == 1

    async def test_the_run_fences_a_finish(self, store: Store) -> None:
        # The same worker name on a later claim of the job (released, its attempt given back,
        # then claimed again: attempts is 1 both times): the earlier claim's late outcome
        # must not land on it. `runs` tells the two claims apart.
        [(id, _)] = await store.enqueue([job()], T0)
        [first] = await store.claim("w1", 1, T0, 10)
        await store.release([id], "w1")
        [again] = await store.claim("w1", 1, T0 + 1, 10)
        assert (first.attempts, first.runs, again.attempts, again.runs) == (1, 1, 1, 2)
        await store.finish([ok(id, "w1", "first run", attempt=1)], T0 + 2)
        r = await store.get(id)
        assert r is not None and (r.status, r.result) == ("running", None)
        await store.finish([ended(id, "w1", "failed", "late", attempt=1)], T0 + 2)
        await store.finish([retry(id, "w1", T0 + 20, "late", attempt=1)], T0 + 2)
        assert await store.counts() == {**EMPTY, "running": 1}
        await store.finish([ok(id, "w1", "second run", attempt=2)], T0 + 3)
        r = await store.get(id)
        assert r is not None and (r.status, r.result) == ("succeeded", "second run")

    async def test_finish_and_claim_records_the_outcomes_and_claims_the_next(
        self, store: Store
    ) -> None:
        ids = [id for id, _ in await store.enqueue([job() for _ in range(5)], T0)]
        await store.claim("w1", 2, T0, 30)
        nxt = await store.finish_and_claim(
            [ok(ids[0], "w1", "a"), ok(ids[1], "w1", "b")], T0 + 1, "w1", 2, 30
        )
        assert [(r.id, r.status, r.attempts, r.started_at) for r in nxt] == [
            (ids[2], "running", 1, T0 + 1),
            (ids[3], "running", 1, T0 + 1),
        ]
        for id, result in ((ids[0], "a"), (ids[1], "b")):
            r = await store.get(id)
            assert r is not None and (r.status, r.result, r.finished_at) == (
                "succeeded",
                result,
                T0 + 1,
            )
        # A failure among the outcomes, and more room than jobs left: all recorded, one taken.
        last = await store.finish_and_claim(
            [ok(ids[2], "w1", "c"), ended(ids[3], "w1", "failed", "no")], T0 + 2, "w1", 5, 30
        )
        assert [r.id for r in last] == [ids[4]]
        assert await store.counts() == {**EMPTY, "succeeded": 3, "failed": 1, "running": 1}
        assert store.queued_estimate() == 0

    async def test_finish_and_claim_keeps_the_lease_guard_and_the_claim_order(
        self, store: Store
    ) -> None:
        # w1's job expired under it and w2 took it over: w1's late outcome is ignored, and
        # the claim riding it takes another worker's expired lease before queued jobs.
        [(a, _)] = await store.enqueue([job()], T0)
        [(b, _)] = await store.enqueue([job()], T0 + 1)
        await store.claim("w1", 1, T0, 10)  # a
        [again] = await store.claim("w2", 1, T0 + 10, 5)  # a, attempt 2, lease to T0 + 15
        assert again.id == a
        [(c, _)] = await store.enqueue([job()], T0 + 10)
        nxt = await store.finish_and_claim([ok(a, "w1", "late")], T0 + 16, "w1", 2, 10)
        assert [(r.id, r.attempts) for r in nxt] == [(a, 3), (b, 1)]
        r = await store.get(a)
        assert r is not None and (r.status, r.worker, r.result) == ("running", "w1", None)
        assert (await store.counts())["queued"] == 1  # c
        assert c not in {r.id for r in nxt}

    async def test_a_claimer_never_takes_back_its_own_expired_leases(self, store: Store) -> None:
        # Its wall clock stepped past the lease while its jobs run (NTP, a resumed VM): the
        # claimer is alive, so they are not run a second time by it, nor made dead on their
        # last attempt while they run. Another worker's claim still takes them.
        ids = [id for id, _ in await store.enqueue([job(), NewJob("x", {}, T0, 1)], T0)]
        await store.claim("w1", 2, T0, 10)
        assert await store.claim("w1", 5, T0 + 60, 10) == []
        assert await store.counts() == {**EMPTY, "running": 2}
        await store.renew(ids, "w1", T0 + 60, 10)  # its renewer carries them on
        assert await store.claim("w2", 5, T0 + 60, 10) == []
        [taken] = await store.claim("w2", 5, T0 + 71, 10)
        assert (taken.id, taken.attempts, taken.worker) == (ids[0], 2, "w2")
        assert (await store.counts())["dead"] == 1  # the one on its last attempt

    async def test_a_permanent_failure_is_failed_even_on_the_last_attempt(
        self, store: Store
    ) -> None:
        new = [NewJob("x", {}, T0, max_attempts=1)] * 2
        ids = [id for id, _ in await store.enqueue(new, T0)]
        await store.claim("w1", 2, T0, 30)
        await store.finish(
            [
                ended(ids[0], "w1", "failed", "bad args"),
                ended(ids[1], "w1", "dead", "boom"),
            ],
            T0 + 1,
        )
        a, b = await store.get(ids[0]), await store.get(ids[1])
        assert a is not None and b is not None
        assert (a.status, b.status) == ("failed", "dead")

    async def test_finish_by_someone_else_is_ignored(self, store: Store) -> None:
        [(id, _)] = await store.enqueue([job()], T0)
        await store.finish([ok(id, "w1")], T0)  # not even claimed
        await store.claim("w1", 1, T0, 30)
        await store.finish([ended(id, "w2", "failed", "x")], T0)
        rec = await store.get(id)
        assert rec is not None and (rec.status, rec.worker) == ("running", "w1")

    # -- release and cancel --------------------------------------------------------------

    async def test_release_requeues_without_counting_the_attempt(self, store: Store) -> None:
        ids = [id for id, _ in await store.enqueue([job(), job()], T0)]
        await store.claim("w1", 2, T0, 30)
        await store.release(ids, "someone-else")
        assert (await store.counts())["running"] == 2
        await store.release([ids[0]], "w1")
        rec = await store.get(ids[0])
        assert rec is not None
        assert (rec.status, rec.attempts, rec.worker, rec.lease_until) == ("queued", 0, None, None)
        [again] = await store.claim("w2", 5, T0, 30)
        assert (again.id, again.attempts) == (ids[0], 1)
        await store.release([], "w1")

    async def test_cancel_only_cancels_queued_jobs(self, store: Store) -> None:
        a, b, c = (id for id, _ in await store.enqueue([job(), job(), job()], T0))
        assert await store.cancel(a, T0 + 1) is True
        assert await store.cancel(a) is False  # already cancelled
        await store.claim("w1", 1, T0, 30)  # takes b
        assert await store.cancel(b) is False
        assert await store.cancel(c + 99) is False
        rec = await store.get(a)
        assert rec is not None and (rec.status, rec.finished_at) == ("cancelled", T0 + 1)
        assert [r.id for r in await store.claim("w1", 5, T0, 30)] == [c]

    async def test_expire_hands_a_dead_workers_jobs_out_at_once(self, store: Store) -> None:
        ids = [id for id, _ in await store.enqueue([job(), job(), job()], T0)]
        await store.claim("w1", 2, T0, 30)
        await store.claim("w2", 1, T0, 30)
        assert await store.holders() == {"w1": 2, "w2": 1}
        assert await store.expire("w1") == 2
        assert await store.expire("nobody") == 0
        got = await store.claim("w3", 5, T0, 30)  # no time has passed
        assert sorted((r.id, r.attempts, r.worker) for r in got) == [
            (ids[0], 2, "w3"),
            (ids[1], 2, "w3"),
        ]
        assert await store.holders() == {"w3": 2, "w2": 1}

    # -- counts and the queue depth ------------------------------------------------------

    async def test_counts_and_queued_estimate_follow_every_move(self, store: Store) -> None:
        assert await store.counts() == dict.fromkeys(
            ["queued", "running", "succeeded", "failed", "dead", "cancelled"], 0
        )
        ids = [id for id, _ in await store.enqueue([job() for _ in range(6)], T0)]
        assert store.queued_estimate() == 6
        await store.cancel(ids[5])
        await store.claim("w1", 4, T0, 30)
        assert store.queued_estimate() == 1
        await store.finish(
            [
                ok(ids[0], "w1"),
                retry(ids[1], "w1", T0 + 1, "e"),
                ended(ids[2], "w1", "failed", "e"),
            ],
            T0,
        )
        assert store.queued_estimate() == 2
        await store.release([ids[3]], "w1")
        assert store.queued_estimate() == 3
        counts = await store.counts()
        assert counts == {
            "queued": 3,
            "running": 0,
            "succeeded": 1,
            "failed": 1,
            "dead": 0,
            "cancelled": 1,
        }

    async def test_counts_agree_with_the_jobs_after_every_kind_of_move(self, store: Store) -> None:
        new = [NewJob("t", {"i": i}, T0, max_attempts=1 + i % 2) for i in range(12)]
        ids = [id for id, _ in await store.enqueue(new, T0)]

        async def check() -> None:
            tally = dict.fromkeys(
                ["queued", "running", "succeeded", "failed", "dead", "cancelled"], 0
            )
            for i in ids:
                r = await store.get(i)
                assert r is not None
                tally[r.status] += 1
            assert await store.counts() == tally
            assert store.queued_estimate() == tally["queued"]

        await store.cancel(ids[11])
        got = await store.claim("w1", 8, T0, 10)
        await check()
        await store.finish(
            [
                ok(got[0].id, "w1"),
                retry(got[1].id, "w1", T0 + 1, "x"),
                ended(got[2].id, "w1", "dead", "x"),  # max 1
                ended(got[3].id, "w1", "failed", "x"),  # max 2: a permanent error
                ended(got[4].id, "w1", "failed", "x"),
                ok(got[5].id, "nobody"),  # not held: no move
            ],
            T0,
        )
        await check()
        await store.release([got[5].id], "w1")
        await check()
        # got[6] (max 1) and got[7] (max 2) are still held by w1: let the leases run out.
        await store.claim("w2", 20, T0 + 10, 10)
        await check()
        assert (await store.counts())["dead"] == 2  # got[2], and got[6] expired on its last try

    # -- purge (retention) ---------------------------------------------------------------

    async def test_purge_deletes_only_finished_jobs_older_than_before(self, store: Store) -> None:
        new = [NewJob("t", {"i": i}, T0, max_attempts=1) for i in range(6)]
        a, b, c, d, e, f = (id for id, _ in await store.enqueue(new, T0))
        assert await store.cancel(f, T0 + 4)
        await store.claim("w", 5, T0, 30)  # a..e run; e stays running
        await store.finish([ok(a, "w")], T0 + 1)
        await store.finish([ended(b, "w", "failed", "x")], T0 + 2)
        await store.finish([ended(c, "w", "dead", "x")], T0 + 3)
        await store.finish([ok(d, "w")], T0 + 50)  # finished recently
        g, h = (id for id, _ in await store.enqueue([job(), job(run_at=T0 + 100)], T0 + 5))
        assert await store.purge(T0 + 1, 100) == 0  # finished_at < before, strictly
        assert await store.purge(T0 + 10, 100) == 4
        for id in (a, b, c, f):
            assert await store.get(id) is None
        kept = [await store.get(id) for id in (d, e, g, h)]
        assert [r.status for r in kept if r] == ["succeeded", "running", "queued", "queued"]
        assert await store.counts() == {**EMPTY, "queued": 2, "running": 1, "succeeded": 1}
        assert store.queued_estimate() == 2
        assert await store.purge(T0 + 10, 100) == 0
        # Far in the future: only the finished job goes, never a queued or running one.
        assert await store.purge(T0 + 1e6, 100) == 1
        assert await store.get(d) is None
        assert await store.counts() == {**EMPTY, "queued": 2, "running": 1}
        assert [r.id for r in await store.claim("w2", 5, T0 + 100, 30)] == [g, h]

    async def test_purge_respects_the_limit_lowest_id_first(self, store: Store) -> None:
        ids = [id for id, _ in await store.enqueue([job() for _ in range(6)], T0)]
        await store.claim("w", 6, T0, 30)
        await store.finish([ok(i, "w") for i in ids[:5]], T0 + 1)
        assert await store.purge(T0 + 2, 0) == 0
        assert await store.purge(T0 + 2, 2) == 2
        assert [await store.get(i) is None for i in ids] == [True, True] + [False] * 4
        assert (await store.counts())["succeeded"] == 3
        assert await store.purge(T0 + 2, 2) == 2
        assert await store.purge(T0 + 2, 2) == 1  # fewer than the limit: nothing is left
        assert await store.purge(T0 + 2, 2) == 0
        assert await store.counts() == {**EMPTY, "running": 1}

    async def test_purge_keeps_the_newest_job_so_no_id_is_used_twice(self, store: Store) -> None:
        ids = [id for id, _ in await store.enqueue([job(), job()], T0)]
        await store.claim("w", 2, T0, 30)
        await store.finish([ok(i, "w") for i in ids], T0 + 1)
        assert await store.purge(T0 + 2, 10) == 1
        assert await store.get(ids[0]) is None and await store.get(ids[1]) is not None
        [(new, _)] = await store.enqueue([job()], T0 + 3)
        assert new > ids[1]
        assert await store.purge(T0 + 2, 10) == 1  # no longer the newest
        assert await store.get(ids[1]) is None
        assert await store.counts() == {**EMPTY, "queued": 1}

    async def test_a_purged_jobs_key_is_free(self, store: Store) -> None:
        [(a, _)] = await store.enqueue([job(key="k")], T0)
        await store.claim("w", 1, T0, 30)
        await store.finish([ok(a, "w")], T0 + 1)
        await store.enqueue([job()], T0 + 1)  # a newer job: `a` is not the newest
        assert await store.purge(T0 + 2, 10) == 1
        assert await store.get(a) is None
        [(b, created)] = await store.enqueue([job(key="k")], T0 + 3)
        assert created and b > a
        [(again, created)] = await store.enqueue([job(key="k")], T0 + 4)
        assert (again, created) == (b, False)

    async def test_purge_of_an_empty_store_is_nothing(self, store: Store) -> None:
        assert await store.purge(T0, 10_000) == 0
        [(a, _)] = await store.enqueue([job()], T0)
        assert await store.cancel(a)  # cancelled without a time: no finished_at, kept
        await store.enqueue([job()], T0)
        assert await store.purge(T0 + 1e9, 10) == 0
        assert (await store.counts())["cancelled"] == 1


# -- the backends ----------------------------------------------------------------------------


class HandoffContract:
    """The handoff fast path (`set_handoff`), for every store with `supports_handoff`."""

    def test_supports_it(self, store: Store) -> None:
        assert store.supports_handoff

    async def test_handoff_claims_fresh_due_jobs_in_the_enqueue(self, store: Store) -> None:
        took = Taker(room=3)
        store.set_handoff(took)
        jobs = [job(n=i) for i in range(5)]
        out = await store.enqueue(jobs, T0)
        assert took.got == [(id, j) for (id, _), j in zip(out[:3], jobs, strict=False)]
        for id, j in took.got:
            r = await store.get(id)  # claimed in the enqueue, as a claim would have
            assert r is not None and (r.task, r.args, r.max_attempts) == (j.task, j.args, 3)
            assert (r.status, r.attempts, r.worker, r.lease_until) == ("running", 1, "w", T0 + 9)
            assert (r.started_at, r.run_at, r.created_at) == (T0, T0, T0)
        assert await store.counts() == {**EMPTY, "queued": 2, "running": 3}
        assert store.queued_estimate() == 2
        # Two jobs wait: fresh ones are not handed ahead of them (oldest first).
        took.got.clear()
        await store.enqueue([job()], T0 + 1)
        assert took.got == []
        # Not due yet: never handed off.
        await store.claim("x", 10, T0 + 1, 30)
        await store.enqueue([job(run_at=T0 + 50)], T0 + 2)
        assert took.got == []
        # Detached: plain enqueues.
        store.set_handoff(None)
        await store.enqueue([job()], T0 + 3)
        assert took.got == []
        # Without run_at (due when enqueued) it is handed off too, due at the enqueue's now.
        one = Taker(room=1)
        store.set_handoff(one)
        await store.claim("y", 10, T0 + 60, 30)  # nothing older waits (x's expired)
        [(id, _)] = await store.enqueue([NewJob("hello", {"name": "x"})], T0 + 61)
        assert [i for i, _ in one.got] == [id]
        r = await store.get(id)
        assert r is not None and (r.status, r.run_at, r.created_at) == ("running", T0 + 61, T0 + 61)

    async def test_fresh_jobs_are_not_handed_ahead_of_an_expired_lease(self, store: Store) -> None:
        # A job whose worker died is due (a claim takes it first): fresh ones wait behind it.
        [(old, _)] = await store.enqueue([job()], T0)
        await store.claim("gone", 1, T0, 10)
        took = Taker(room=5)
        store.set_handoff(took)
        await store.enqueue([job()], T0 + 5)  # the lease still holds
        assert len(took.got) == 1
        await store.enqueue([job()], T0 + 11)  # it has run out
        assert len(took.got) == 1
        assert [r.id for r in await store.claim("w2", 1, T0 + 11, 30)] == [old]

    async def test_concurrent_enqueues_never_hand_off_more_than_the_room(
        self, store: Store
    ) -> None:
        took = Taker(room=3)
        store.set_handoff(took)
        outs = await asyncio.gather(*(store.enqueue([job(), job()], T0) for _ in range(5)))
        # In one commit or several, each enqueue saw the room the others took. Fewer than the
        # room (even none) when an enqueue found another's jobs already queued (oldest first):
        # on PostgreSQL the five commit in any order.
        assert len(took.got) <= 3
        assert (await store.counts())["running"] == len(took.got)
        assert {id for id, _ in took.got} <= {id for out in outs for id, _ in out}

    async def test_a_failing_handoff_never_fails_the_enqueue(
        self, store: Store, caplog: pytest.LogCaptureFixture
    ) -> None:
        took = Taker(room=5, fail=True)
        store.set_handoff(took)
        [(id, created)] = await store.enqueue([job()], T0)
        rec = await store.get(id)
        assert created and rec is not None and rec.status == "running"  # committed, leased
        assert "handing 1 jobs to the runner failed" in caplog.text


class PoisonContract:
    """The SQL stores hold JSON as text: nothing that is not strict JSON goes in, and a row
    that cannot be decoded (written by something else, or damaged) fails its job alone.
    The subclass provides `plant(store, id, args_text)`, which writes the column directly."""

    async def plant(self, store: Store, id: int, args_text: str) -> None:
        raise NotImplementedError

    @pytest.mark.parametrize("key", [None, "k"])  # the JSON path and the rows path
    async def test_args_that_are_not_json_are_refused_not_stored(
        self, store: Store, key: str | None
    ) -> None:
        for bad in (float("nan"), float("inf")):
            with pytest.raises(StoreError, match="job 1 of the batch"):
                await store.enqueue([job(), NewJob("x", {"v": [bad]}, T0, key=key)], T0)
        assert await store.counts() == EMPTY

    async def test_a_result_json_cannot_hold_is_stored_as_its_repr(self, store: Store) -> None:
        ids = [id for id, _ in await store.enqueue([job(), job()], T0)]
        await store.claim("w1", 2, T0, 30)
        await store.finish([ok(ids[0], "w1", float("nan")), ok(ids[1], "w1", [1.5])], T0 + 1)
        a, b = await store.get(ids[0]), await store.get(ids[1])
        assert a is not None and b is not None
        assert (a.status, a.result, b.result) == ("succeeded", "nan", [1.5])

    @pytest.mark.parametrize("text", ['{"x": NaN}', "not json", "[1, 2]", '{"x": 1'])
    async def test_a_row_that_cannot_be_decoded_fails_its_job_alone(
        self, store: Store, text: str
    ) -> None:
        ids = [id for id, _ in await store.enqueue([job(i=i) for i in range(3)], T0)]
        await self.plant(store, ids[1], text)
        got = await store.claim("w1", 10, T0, 30)
        assert [r.id for r in got] == [ids[0], ids[2]]
        bad = await store.get(ids[1])  # readable back, with the reason
        assert bad is not None and (bad.status, bad.args, bad.finished_at) == ("failed", {}, T0)
        assert bad.error is not None and "args in the store cannot be decoded" in bad.error
        assert (await store.counts())["failed"] == 1 and store.queued_estimate() == 0
        # The claims after it are not held back.
        [(later, _)] = await store.enqueue([job()], T0)
        assert [r.id for r in await store.claim("w1", 10, T0, 30)] == [later]


class TestMemoryStore(StoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        s = Store.from_url("memory://")
        await s.open()
        yield s
        await s.close()

    def test_is_not_durable(self) -> None:
        assert MemoryStore.durable is False

    async def test_has_no_handoff(self, store: Store) -> None:
        took = Taker(room=5)
        assert not store.supports_handoff
        store.set_handoff(took)  # a no-op
        await store.enqueue([job()], T0)
        assert took.got == [] and (await store.counts())["queued"] == 1


class TestSQLiteStore(StoreContract, HandoffContract, PoisonContract):
    async def plant(self, store: Store, id: int, args_text: str) -> None:
        assert isinstance(store, SQLiteStore)
        with sqlite3.connect(store.path) as db:
            db.execute("UPDATE jobs SET args = ? WHERE id = ?", (args_text, id))

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        s = SQLiteStore(tmp_path / "jobs.db")
        await s.open()
        yield s
        await s.close()

    def test_is_durable(self) -> None:
        assert SQLiteStore.durable is True

    async def test_uses_wal_and_full_sync(self, store: Store) -> None:
        await store.enqueue([job()], T0)
        assert isinstance(store, SQLiteStore)
        conn = sqlite3.connect(store.path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
        # synchronous is per connection: ask the store's own writer connection.
        from hitpool.hitd.store import sqlite as mod

        conn = mod.connect(store.path)
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        conn.close()

    async def test_concurrent_writes_share_commits(self, store: Store) -> None:
        assert isinstance(store, SQLiteStore)
        before = store.commits
        outs = await asyncio.gather(*(store.enqueue([job(), job()], T0) for _ in range(50)))
        ids = [id for out in outs for id, _ in out]
        assert len(set(ids)) == 100
        # 50 enqueue calls issued in one loop turn: the writer merges them into few commits.
        assert store.commits - before < 50
        assert (await store.counts())["queued"] == 100

    async def test_a_dead_writer_fails_every_write_instead_of_hanging(
        self, store: Store, caplog: pytest.LogCaptureFixture
    ) -> None:
        assert isinstance(store, SQLiteStore)

        def crash(c: sqlite3.Connection) -> Any:
            raise KeyboardInterrupt  # not an Exception: escapes the per-operation isolation

        with pytest.raises(StoreError, match="writer stopped"):
            await store._write(crash)
        with pytest.raises(StoreError, match="writer stopped"):
            await store.enqueue([job()], T0)
        assert "the store takes no more writes" in caplog.text

    async def test_merged_enqueues_hand_off_the_first_jobs(self, store: Store) -> None:
        took = Taker(room=3)
        store.set_handoff(took)
        outs = await asyncio.gather(*(store.enqueue([job(), job()], T0) for _ in range(5)))
        assert sorted(id for id, _ in took.got) == [id for id, _ in outs[0] + outs[1][:1]]

    async def test_jobs_survive_close_and_reopen(self, tmp_path: Path) -> None:
        path = tmp_path / "a.db"
        s = SQLiteStore(path)
        await s.open()
        [(id, _)] = await s.enqueue([job(key="k")], T0)
        await s.claim("w1", 1, T0, 30)
        await s.enqueue([job()], T0)
        await s.close()
        await s.close()  # twice is fine
        with pytest.raises(StoreError):
            await s.enqueue([job()], T0)
        s2 = SQLiteStore(path)
        await s2.open()
        assert s2.queued_estimate() == 1
        rec = await s2.get(id)
        assert rec is not None and (rec.status, rec.worker) == ("running", "w1")
        [again] = await s2.claim("w2", 1, T0 + 30, 30)  # expired leases come first
        assert (again.id, again.attempts) == (id, 2)
        await s2.close()

    async def test_missing_directory_is_unavailable(self, tmp_path: Path) -> None:
        s = SQLiteStore(tmp_path / "nope" / "jobs.db")
        with pytest.raises(StoreUnavailable, match="does not exist"):
            await s.open()

    async def test_not_a_database_is_unavailable(self, tmp_path: Path) -> None:
        path = tmp_path / "junk.db"
        path.write_bytes(b"this is not sqlite" * 100)
        with pytest.raises(StoreUnavailable):
            await SQLiteStore(path).open()


class TestSQLiteStoreRowByRow(StoreContract, PoisonContract):
    """The row-by-row path (SQLite < 3.38, or batches with keys) keeps the same contract."""

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        s = SQLiteStore(tmp_path / "jobs.db", use_json=False)
        await s.open()
        yield s
        await s.close()

    plant = TestSQLiteStore.plant


# -- PostgreSQL ------------------------------------------------------------------------------


_pg = _store_fixtures
pg_url = _pg.pg_url  # the session fixture, registered in this module


@pytest.mark.postgres
class TestPostgreSQLStore(StoreContract, HandoffContract, PoisonContract):
    async def plant(self, store: Store, id: int, args_text: str) -> None:
        import asyncpg

        from hitpool.hitd.store.postgresql import PostgreSQLStore

        assert isinstance(store, PostgreSQLStore)
        conn = await asyncpg.connect(store.url, server_settings={"search_path": store.schema})
        try:
            await conn.execute("UPDATE hitd_jobs SET args = $1 WHERE id = $2", args_text, id)
        finally:
            await conn.close()

    @pytest.fixture
    async def store(self, pg_url: str) -> AsyncIterator[Store]:
        async with _pg.fresh_schema(pg_url) as url:
            s = Store.from_url(url)
            await s.open()
            try:
                yield s
            finally:
                await s.close()

    async def test_two_workers_never_claim_the_same_job(self, store: Store) -> None:
        await store.enqueue([job() for _ in range(200)], T0)
        a, b = await asyncio.gather(store.claim("w1", 150, T0, 30), store.claim("w2", 150, T0, 30))
        ids_a, ids_b = {r.id for r in a}, {r.id for r in b}
        assert not ids_a & ids_b and len(ids_a | ids_b) == 200

    async def test_a_runner_drains_it(self, store: Store) -> None:
        from hitpool.hitd.runner import Runner
        from hitpool.hitd.tasks import Registry

        # Due at 0.0: the runner reads the real clock, and T0 lies in the future.
        out = await store.enqueue([NewJob("hello", {"name": str(i)}, 0.0) for i in range(300)], T0)
        async with Runner(store, Registry(include_global=False), workers=8) as runner:
            runner.notify()
            await runner.until_idle()
        counts = await store.counts()
        assert counts["succeeded"] == 300 and store.queued_estimate() == 0
        last = await store.get(out[-1][0])
        assert last is not None and last.result == "Hello, 299!"

    async def test_two_servers_share_it_and_run_every_job_once(self, store: Store) -> None:
        """Two runners, each with its own store (pool) on the same database, as two hitd
        processes would be: each takes its own enqueues by the handoff and claims the rest;
        without a crash no job runs twice and none is left."""
        from hitpool.hitd.runner import Runner
        from hitpool.hitd.store.postgresql import PostgreSQLStore
        from hitpool.hitd.tasks import Registry

        assert isinstance(store, PostgreSQLStore)
        other = PostgreSQLStore(store.url + f"?schema={store.schema}")
        await other.open()
        # Due at 0.0: the runners read the real clock. Some jobs wait before the runners
        # start (claimed), the rest arrive through both stores while they run (handed off).
        early = await store.enqueue([NewJob("hello", {"name": "e"}, 0.0) for _ in range(100)], T0)
        ids = [id for id, _ in early]
        try:
            reg = Registry(include_global=False)
            async with (
                Runner(store, reg, workers=4, worker_name="a") as a,
                Runner(other, reg, workers=4, worker_name="b") as b,
            ):
                for i in range(20):
                    target = store if i % 2 else other
                    batch = [NewJob("hello", {"name": str(i)}) for _ in range(10)]
                    # The real clock, as the intake passes: a handed-off job's lease runs
                    # from this `now`.
                    ids += [id for id, _ in await target.enqueue(batch, time.time())]
                a.notify()
                b.notify()
                await asyncio.gather(a.until_idle(), b.until_idle())
                ran = (a.statistics().completed, b.statistics().completed)
        finally:
            await other.close()
        assert sum(ran) == 300 and min(ran) > 0
        recs = [await store.get(id) for id in ids]
        assert all(r is not None and (r.status, r.attempts) == ("succeeded", 1) for r in recs)
        assert {r.worker for r in recs if r is not None} == {"a", "b"}

    async def test_a_burst_one_process_cannot_start_wakes_another_and_estimates_follow(
        self, store: Store
    ) -> None:
        """Finding 4: A (one busy worker) gets a burst; B (four workers, a poll that never
        comes) is woken by A's NOTIFY and runs all of it; then A's queue-depth estimate,
        behind its 429, follows B's claims down to 0."""
        from hitpool.hitd.runner import Runner
        from hitpool.hitd.store.postgresql import PostgreSQLStore
        from hitpool.hitd.tasks import Registry

        assert isinstance(store, PostgreSQLStore)
        other = PostgreSQLStore(store.url + f"?schema={store.schema}")
        await other.open()
        reg = Registry(include_global=False)
        gate, started, all_done = asyncio.Event(), asyncio.Event(), asyncio.Event()
        done: list[int] = []

        @reg.task
        async def block() -> None:
            started.set()
            await gate.wait()

        @reg.task
        async def count(i: int) -> None:
            done.append(i)
            if len(done) == 40:
                all_done.set()

        try:
            async with (
                Runner(store, reg, workers=1, worker_name="a", poll_s=3600) as a,
                Runner(other, reg, workers=4, worker_name="b", poll_s=3600) as b,
            ):
                await asyncio.gather(a.until_idle(), b.until_idle())  # their first looks
                await store.enqueue([NewJob("block", {})], time.time())
                await started.wait()
                burst = [NewJob("count", {"i": i}) for i in range(40)]
                await store.enqueue(burst, time.time())
                assert store.queued_estimate() == 40  # A's own commit, A's busy worker
                await all_done.wait()
                assert (a.statistics().completed, b.statistics().completed) == (0, 40)

                async def drained() -> bool:
                    return store.queued_estimate() == 0

                await wait_for(drained, timeout=5, what="A's estimate to see B's claims")
                gate.set()
        finally:
            await other.close()

    async def test_servers_opening_one_fresh_database_at_once_all_start(self, pg_url: str) -> None:
        # Replicas started together on a fresh database: the schema is created once.
        async with _pg.fresh_schema(pg_url) as url:
            stores = [Store.from_url(url) for _ in range(6)]
            try:
                results = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
            finally:
                for s in stores:
                    await s.close()
        assert [r for r in results if isinstance(r, BaseException)] == []

    async def test_unreachable_server_is_unavailable(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # nothing listens here once the socket is closed
        with pytest.raises(StoreUnavailable):
            await Store.from_url(f"postgresql://postgres@127.0.0.1:{port}/postgres").open()


@pytest.mark.slow
@pytest.mark.postgres
def test_the_fixture_can_start_its_own_server() -> None:
    """The path taken where no server runs (a fresh CI machine): exercised for real."""
    if _pg.pg_bindir() is None:
        if _pg.IN_CI:
            pytest.fail("no initdb/pg_ctl on this machine")
        pytest.skip("no initdb/pg_ctl on this machine")
    with _pg.own_pg_server() as url:
        assert _pg.answers(url)
    assert not _pg.answers(url)


# -- from_url ---------------------------------------------------------------------------------


def test_from_url_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(Store.from_url("memory://"), MemoryStore)
    rel = Store.from_url("sqlite:///hitd.db")
    assert isinstance(rel, SQLiteStore) and rel.path == "hitd.db"
    absolute = Store.from_url(f"sqlite:///{tmp_path}/x.db")
    assert isinstance(absolute, SQLiteStore) and absolute.path == f"{tmp_path}/x.db"


def test_from_url_postgresql() -> None:
    from hitpool.hitd.store.postgresql import PostgreSQLStore

    pg = Store.from_url("postgresql://u:secret@db.example:5433/jobs?schema=hitd")
    assert isinstance(pg, PostgreSQLStore) and pg.durable
    assert (pg.schema, pg.url) == ("hitd", "postgresql://u:secret@db.example:5433/jobs")
    with pytest.raises(SpecError) as e:
        Store.from_url("postgresql://u@h/db?schema=x;drop")
    assert e.value.field == "store"


@pytest.mark.parametrize(
    "url", ["redis://localhost", "sqlite://", "sqlite:///", "sqlite:///:memory:", "hitd.db", ""]
)
def test_from_url_names_the_store_field_for_a_bad_url(url: str) -> None:
    with pytest.raises(SpecError) as e:
        Store.from_url(url)
    assert e.value.field == "store"
    assert "memory://" in str(e.value) or "sqlite:///" in str(e.value)


def bound(created: dict[int, float], before: float) -> tuple[int, int]:
    """Drive `bisect_created` over jobs {id: created_at}: (the bound, how many probes)."""
    from hitpool.hitd.store.base import bisect_created

    search = bisect_created(min(created), max(created), before)
    probes = 0
    try:
        id = next(search)
        while True:
            probes += 1
            id = search.send(min((i, t) for i, t in created.items() if i >= id)[1])
    except StopIteration as done:
        return done.value, probes


@pytest.mark.parametrize(
    ("created", "before", "expected"),
    [
        ({1: 10.0}, 10.0, 0),  # nothing created before: first - 1
        ({1: 10.0}, 10.5, 1),
        ({1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}, 3.0, 2),
        ({1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}, 99.0, 4),
        ({5: 1.0, 9: 2.0, 40: 3.0, 41: 4.0}, 3.0, 9),  # gaps (purged jobs)
        ({5: 1.0, 9: 2.0, 40: 3.0, 41: 4.0}, 0.5, 4),
        ({1: 1.0, 2: 1.1, 3: 1.05, 4: 5.0}, 2.0, 3),  # roughly growing: still found
    ],
)
def test_bisect_created_finds_the_last_job_created_before(
    created: dict[int, float], before: float, expected: int
) -> None:
    assert bound(created, before)[0] == expected


def test_bisect_created_probes_a_million_ids_twenty_times() -> None:
    created = {i: float(i) for i in range(1, 1_000_001, 997)}  # a sparse million
    at, probes = bound(created, 500_000.0)
    assert at == max(i for i in created if i < 500_000) and probes == 20


async def test_memory_store_forgets_old_finished_jobs_to_stay_bounded() -> None:
    store = MemoryStore(keep_finished=2)
    ids = [id for id, _ in await store.enqueue([job() for _ in range(5)], T0)]
    await store.claim("w", 5, T0, 30)
    await store.finish([ok(i, "w") for i in ids[:4]], T0)
    assert [await store.get(i) is not None for i in ids] == [False, False, True, True, True]
    assert (await store.counts())["succeeded"] == 4  # still counted
    # The lease heap still holds entries of forgotten jobs: they are skipped.
    [again] = await store.claim("w2", 5, T0 + 100, 30)
    assert (again.id, again.attempts) == (ids[4], 2)


async def test_memory_store_purge_uncounts_forgotten_jobs_as_they_grow_old() -> None:
    store = MemoryStore(keep_finished=1)
    ids = [id for id, _ in await store.enqueue([job() for _ in range(5)], T0)]
    await store.claim("w", 5, T0, 30)
    # Two forgotten in the first minute, one in the third; ids[3] still held, ids[4] running.
    for i, at in zip(ids[:4], (T0 + 1, T0 + 2, T0 + 130, T0 + 140), strict=True):
        await store.finish([ok(i, "w") if i != ids[2] else ended(i, "w", "failed", "x")], at)
    assert await store.counts() == {**EMPTY, "running": 1, "succeeded": 3, "failed": 1}
    assert await store.purge(T0 + 2, 10) == 0  # the first minute ended at T0 + 2
    assert await store.purge(T0 + 100, 1) == 1  # a limit applies to them too
    assert await store.purge(T0 + 100, 10) == 1
    assert await store.counts() == {**EMPTY, "running": 1, "succeeded": 1, "failed": 1}
    assert await store.purge(T0 + 1000, 10) == 2  # the third minute, and ids[3]
    assert await store.get(ids[3]) is None
    assert await store.counts() == {**EMPTY, "running": 1}


def test_memory_store_forgotten_minutes_stay_bounded_without_purges() -> None:
    from hitpool.hitd.store.memory import _Forgotten

    tally = _Forgotten()
    for m in range(_Forgotten.MAX_MINUTES + 50):
        tally.add("succeeded", T0 + 60.0 * m)
    assert len(tally._minutes) == _Forgotten.MAX_MINUTES
    # The oldest minutes merged: uncounted together once the latest of them is old enough.
    assert tally.purge(T0 + 60.0 * 50, 10**6) == {}
    assert tally.purge(T0 + 60.0 * 51, 10**6) == {"succeeded": 51}
