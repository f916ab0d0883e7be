"""The administration part of the store contract (listing, retry, delete, queue latency),
one class inherited by every backend, PostgreSQL included, as in test_hitd_store_contract.

Times are plain numbers passed in: nothing here sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hitd import _store_fixtures
from hitpool.hitd.admin import as_stored
from hitpool.hitd.store import NewJob, Outcome, Store
from hitpool.hitd.store.base import JobQuery, page_of, pick_retries
from hitpool.hitd.store.sqlite import SQLiteStore

T0 = 1_800_000_000.0


def job(run_at: float = T0, key: str | None = None, task: str = "hello", **args: object) -> NewJob:
    return NewJob(task, dict(args) or {"name": "x"}, run_at, 1, key)


async def ended(store: Store, new: NewJob, *, permanent: bool, now: float = T0) -> int:
    """A job that ran once and failed: dead (its one attempt used) or failed (permanent)."""
    [(id, _)] = await store.enqueue([new], now)
    [rec] = await store.claim("w", 1, now, 30)
    assert rec.id == id
    status = "failed" if permanent else "dead"  # max_attempts 1 (`job`): the attempt is used
    await store.finish([Outcome(id, "w", rec.attempts, status, error="boom")], now + 1)
    return id


async def succeeded(store: Store, new: NewJob) -> int:
    [(id, _)] = await store.enqueue([new], T0)
    await store.claim("w", 1, T0, 30)
    await store.finish([Outcome(id, "w", 1, "succeeded", result=1)], T0 + 1)
    return id


class AdminContract:
    # -- listing ---------------------------------------------------------------------------

    async def test_lists_newest_first_with_a_cursor(self, store: Store) -> None:
        ids = [id for id, _ in await store.enqueue([job() for _ in range(5)], T0)]
        page = await store.list_jobs(JobQuery(limit=2))
        assert [r.id for r in page.jobs] == ids[:-3:-1]
        assert page.next_before == ids[3]
        page = await store.list_jobs(JobQuery(limit=2, before=page.next_before))
        assert [r.id for r in page.jobs] == [ids[2], ids[1]]
        page = await store.list_jobs(JobQuery(limit=2, before=page.next_before))
        assert [r.id for r in page.jobs] == [ids[0]] and page.next_before is None

    async def test_filters_by_status_task_and_args_text(self, store: Store) -> None:
        dead = await ended(store, job(user="ann"), permanent=False)
        failed = await ended(store, job(user="bob"), permanent=True)
        [(queued, _)] = await store.enqueue([job(task="other", user="ann")], T0)
        page = await store.list_jobs(JobQuery(statuses=("dead", "failed")))
        assert [r.id for r in page.jobs] == [failed, dead]
        assert [r.id for r in (await store.list_jobs(JobQuery(task="other"))).jobs] == [queued]
        page = await store.list_jobs(JobQuery(q='"user":"ann"'))
        assert [r.id for r in page.jobs] == [queued, dead]
        page = await store.list_jobs(JobQuery(q="ann", statuses=("dead",)))
        assert [r.id for r in page.jobs] == [dead] and page.jobs[0].error == "boom"
        assert (await store.list_jobs(JobQuery(q="nobody"))).jobs == []

    async def test_non_ascii_args_are_found_by_their_stored_escapes(self, store: Store) -> None:
        [(id, _), _] = await store.enqueue([job(name="Zoë 🎉"), job(name="Zoe")], T0)
        page = await store.list_jobs(JobQuery(q=as_stored("Zoë 🎉")))
        assert [r.id for r in page.jobs] == [id]
        [(kid, _)] = await store.enqueue([job(key="k", name="Zoë")], T0)  # the rows path
        assert [r.id for r in (await store.list_jobs(JobQuery(q=as_stored("Zoë")))).jobs] == [
            kid,
            id,
        ]

    async def test_a_listing_looks_at_no_more_than_its_scan_bound(self, store: Store) -> None:
        dead = await ended(store, job(), permanent=False)
        ids = [id for id, _ in await store.enqueue([job() for _ in range(4)], T0)]
        page = await store.list_jobs(JobQuery(statuses=("dead",), scan=3))
        # The three newest were looked at, none is dead: an empty page that says where to
        # go on; the next one finds the dead job.
        assert page.jobs == [] and page.next_before == ids[1]
        page = await store.list_jobs(JobQuery(statuses=("dead",), scan=3, before=ids[1]))
        assert [r.id for r in page.jobs] == [dead] and page.next_before is None

    async def test_a_page_stops_once_its_jobs_hold_max_chars(self, store: Store) -> None:
        # Each job's args are {"name":"xxx..."}: 1000 x and 11 characters of JSON around.
        ids = [id for id, _ in await store.enqueue([job(name="x" * 1000) for _ in range(5)], T0)]
        q = JobQuery(max_chars=2500)
        page = await store.list_jobs(q)
        # 1011 + 1011 < 2500: a third job is read, which passes the bound and ends the page.
        assert [r.id for r in page.jobs] == ids[:-4:-1] and page.next_before == ids[2]
        page = await store.list_jobs(q._replace(before=page.next_before))
        assert [r.id for r in page.jobs] == [ids[1], ids[0]] and page.next_before is None
        # A job larger than the bound still comes, alone, so the cursor always moves on.
        page = await store.list_jobs(JobQuery(max_chars=10))
        assert [r.id for r in page.jobs] == [ids[4]] and page.next_before == ids[4]

    async def test_an_empty_store_lists_nothing(self, store: Store) -> None:
        page = await store.list_jobs(JobQuery())
        assert page.jobs == [] and page.next_before is None

    # -- retry -----------------------------------------------------------------------------

    async def test_retry_queues_a_dead_job_now_with_fresh_attempts(self, store: Store) -> None:
        id = await ended(store, job(), permanent=False)
        before = await store.counts()
        assert await store.retry(id, T0 + 50) == "retried"
        rec = await store.get(id)
        assert rec is not None
        assert (rec.status, rec.attempts, rec.run_at, rec.finished_at) == (
            "queued",
            0,
            T0 + 50,
            None,
        )
        assert rec.error == "boom"  # kept until it runs again
        after = await store.counts()
        assert after["dead"] == before["dead"] - 1 and after["queued"] == before["queued"] + 1
        assert store.queued_estimate() == 1
        [claimed] = await store.claim("w2", 5, T0 + 50, 30)
        assert claimed.id == id and claimed.attempts == 1

    async def test_a_late_finish_cannot_land_on_a_retried_job_claimed_again(
        self, store: Store
    ) -> None:
        # Worker w's lease on its one attempt expires while it still runs the job: another
        # worker's claim makes the job dead. An operator retries it (fresh attempts) and w's
        # own runner claims it again: same worker, running, attempts 1 again. The first
        # run's outcome, fenced by what its claim handed out, must not land on the second.
        [(id, _)] = await store.enqueue([job()], T0)
        [first] = await store.claim("w", 1, T0, 10)
        assert await store.claim("v", 1, T0 + 11, 10) == []  # lease expired on its last attempt
        assert (await store.get(id)).status == "dead"  # type: ignore[union-attr]
        assert await store.retry(id, T0 + 12) == "retried"
        [second] = await store.claim("w", 1, T0 + 12, 30)
        assert second.id == id and second.attempts == 1
        assert second.runs != first.runs  # the fence never repeats for one job
        await store.finish([Outcome(id, "w", first.runs, "succeeded", result="stale")], T0 + 13)
        rec = await store.get(id)
        assert rec is not None and (rec.status, rec.result) == ("running", None)
        await store.finish([Outcome(id, "w", second.runs, "succeeded", result="mine")], T0 + 14)
        rec = await store.get(id)
        assert rec is not None and (rec.status, rec.result) == ("succeeded", "mine")

    async def test_retry_queues_a_failed_job(self, store: Store) -> None:
        id = await ended(store, job(), permanent=True)
        assert await store.retry(id, T0 + 5) == "retried"
        assert [r.id for r in await store.claim("w", 5, T0 + 5, 30)] == [id]

    async def test_retry_makes_a_scheduled_job_due_now(self, store: Store) -> None:
        [(id, _)] = await store.enqueue([job(run_at=T0 + 3600)], T0)
        assert await store.claim("w", 5, T0, 30) == []
        assert await store.retry(id, T0) == "retried"
        assert [r.id for r in await store.claim("w", 5, T0, 30)] == [id]

    async def test_retry_of_a_due_queued_job_changes_nothing(self, store: Store) -> None:
        [(id, _)] = await store.enqueue([job(run_at=T0 - 10)], T0)
        assert await store.retry(id, T0) == "retried"
        rec = await store.get(id)
        assert rec is not None and rec.run_at == T0 - 10

    async def test_retry_refuses_running_succeeded_cancelled_and_missing(
        self, store: Store
    ) -> None:
        done = await succeeded(store, job())
        [(running, _), (cancelled, _)] = await store.enqueue([job(), job()], T0)
        await store.claim("w", 1, T0, 30)
        assert await store.cancel(cancelled, T0)
        counts = await store.counts()
        for id in (running, done, cancelled):
            assert await store.retry(id, T0) == "refused"
        assert await store.retry(999_999, T0) == "missing"
        assert await store.counts() == counts

    async def test_retry_refuses_a_job_whose_key_an_active_job_holds(self, store: Store) -> None:
        id = await ended(store, job(key="k"), permanent=False)
        [(other, created)] = await store.enqueue([job(key="k")], T0 + 2)  # the key is free
        assert created and other != id
        assert await store.retry(id, T0 + 3) == "refused"
        await store.cancel(other, T0 + 3)
        assert await store.retry(id, T0 + 4) == "retried"
        [(again, created)] = await store.enqueue([job(key="k")], T0 + 5)
        assert (again, created) == (id, False)  # the retried job holds its key again

    async def test_retry_all_queues_dead_jobs_lowest_id_first(self, store: Store) -> None:
        dead = [await ended(store, job(), permanent=False) for _ in range(3)]
        failed = await ended(store, job(), permanent=True)
        assert await store.retry_all("dead", T0 + 9, 2) == 2
        recs = [await store.get(id) for id in (*dead, failed)]
        assert [r.status for r in recs if r] == ["queued", "queued", "dead", "failed"]
        assert await store.retry_all("dead", T0 + 9, 10) == 1
        assert await store.retry_all("dead", T0 + 9, 10) == 0
        counts = await store.counts()
        assert (counts["dead"], counts["failed"], counts["queued"]) == (0, 1, 3)
        assert store.queued_estimate() == 3

    async def test_retry_all_skips_keys_held_or_taken_twice(self, store: Store) -> None:
        a = await ended(store, job(key="a"), permanent=False)
        a2 = await ended(store, job(key="a"), permanent=False)
        b = await ended(store, job(key="b"), permanent=False)
        await store.enqueue([job(key="b", run_at=T0 + 99)], T0 + 2)  # b's key: held
        plain = await ended(store, job(), permanent=False)
        assert await store.retry_all("dead", T0 + 3, 100) == 2
        statuses = {id: r.status for id in (a, a2, b, plain) if (r := await store.get(id))}
        assert statuses == {a: "queued", a2: "dead", b: "dead", plain: "queued"}

    async def test_retry_all_refuses_other_statuses(self, store: Store) -> None:
        await succeeded(store, job())
        await succeeded(store, job())
        assert await store.retry_all("succeeded", T0, 10) == 0
        assert (await store.counts())["succeeded"] == 2

    # -- delete ----------------------------------------------------------------------------

    async def test_delete_removes_a_finished_job(self, store: Store) -> None:
        id = await succeeded(store, job())
        await store.enqueue([job()], T0)  # a newer job: `id` is not the newest
        assert await store.delete(id) == "deleted"
        assert await store.get(id) is None
        assert (await store.counts())["succeeded"] == 0
        assert await store.delete(id) == "missing"

    async def test_delete_refuses_active_jobs_and_the_newest(self, store: Store) -> None:
        [(queued, _), (running, _)] = await store.enqueue([job(run_at=T0 + 9), job()], T0)
        await store.claim("w", 1, T0, 30)
        assert await store.delete(queued) == "active"
        assert await store.delete(running) == "active"
        newest = await succeeded(store, job())
        assert await store.delete(newest) == "newest"
        [(later, _)] = await store.enqueue([job()], T0)
        assert later > newest  # never an id handed out twice
        assert await store.delete(newest) == "deleted"

    # -- queue latency ---------------------------------------------------------------------

    async def test_oldest_due_is_the_longest_waiting_due_job(self, store: Store) -> None:
        assert await store.oldest_due(T0) is None
        await store.enqueue([job(run_at=T0 + 100)], T0)
        assert await store.oldest_due(T0) is None  # scheduled, not due
        [(a, _), _] = await store.enqueue([job(run_at=T0 - 5), job(run_at=T0 - 2)], T0)
        assert await store.oldest_due(T0) == T0 - 5
        assert [r.id for r in await store.claim("w", 1, T0, 30)] == [a]  # the oldest
        assert await store.oldest_due(T0) == T0 - 2
        assert await store.oldest_due(T0 + 200) == T0 - 2


def test_page_rules() -> None:
    q = JobQuery(limit=2, scan=5)
    assert page_of(q, [], 5, 7) == ([], 7)  # scan bound reached: go on below 7
    assert page_of(q, [], 4, 7) == ([], None)  # fewer than the bound: the end
    assert page_of(q, [], 0, None) == ([], None)


def test_pick_retries_rules() -> None:
    rows = [(1, None), (2, "a"), (3, "a"), (4, "b"), (5, None)]
    assert pick_retries(rows, set()) == [1, 2, 4, 5]
    assert pick_retries(rows, {"a"}) == [1, 4, 5]


class TestMemoryAdmin(AdminContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        s = Store.from_url("memory://")
        await s.open()
        yield s
        await s.close()


class TestSQLiteAdmin(AdminContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        s = SQLiteStore(tmp_path / "jobs.db")
        await s.open()
        yield s
        await s.close()


class TestSQLiteRowByRowAdmin(AdminContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        s = SQLiteStore(tmp_path / "jobs.db", use_json=False)
        await s.open()
        yield s
        await s.close()


_pg = _store_fixtures
pg_url = _pg.pg_url  # the session fixture, registered in this module


@pytest.mark.postgres
class TestPostgreSQLAdmin(AdminContract):
    @pytest.fixture
    async def store(self, pg_url: str) -> AsyncIterator[Store]:
        async with _pg.fresh_schema(pg_url) as url:
            s = Store.from_url(url)
            await s.open()
            try:
                yield s
            finally:
                await s.close()
