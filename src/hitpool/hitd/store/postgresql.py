"""postgresql://user@host:port/db — a store that several hitd processes can share.

Same contract and the same test suite as the SQLite store. What differs:

- Claims use `FOR UPDATE SKIP LOCKED`: workers on many machines take disjoint batches
  without waiting for each other's row locks.
- Batches cross as arrays (`unnest`), one statement per kind of change, so a batch of 500 is
  a few round trips, not 500.
- Ids come from the table's sequence, allocated for a batch before the insert so the answer
  keeps the order of the request. An idempotency key is held by the partial unique index;
  `ON CONFLICT DO NOTHING` resolves a race between two processes enqueueing the same key.
- Across processes: a commit that leaves jobs queued (an enqueue beyond the free workers of
  this process, a release) sends ONE NOTIFY for the batch, delivered at its commit; every
  other process LISTENs on a connection of its own and claims at once if it has a free
  worker. The poll (the runner's `poll_s`) stays the fallback for a lost notification.
- `queued_estimate()`, behind the 429: moved by this process's commits and the others'
  NOTIFYs, and read from the table every second by a task the store owns, so the others'
  claims show within a second too (a local counter alone would drift).
- The hot path is one statement a batch, so one round trip and no BEGIN/COMMIT: an enqueue
  without keys (ids, insert and the handoff in one INSERT), a claim, and a finish of
  successes only, which carries the claim for the workers it freed (`finish_and_claim`).
  With the handoff (`set_handoff`, as for SQLite) fresh due jobs are inserted already claimed
  by this process's runner, unless older due jobs wait; that saves the claim per batch.
  Several enqueues run at once on the pool, so the room each takes is reserved here before
  its statement runs.

`?schema=name` in the URL puts the table in that schema (created if missing); the tests use
it to give every test a fresh one. Needs asyncpg (the `postgres` extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import re
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from ..._errors import SpecError
from ..errors import StoreError, StoreUnavailable
from . import postgresql_admin as admin
from ._codec import COLUMNS, args_json, decode_row, result_json, row_record, storable
from .base import (
    FINISHED,
    RETRYABLE,
    STATUSES,
    DeleteOutcome,
    Handoff,
    JobPage,
    JobQuery,
    JobRecord,
    JobStatus,
    NewJob,
    Outcome,
    RetryOutcome,
    Store,
    bisect_created,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS hitd_jobs (
    id BIGSERIAL PRIMARY KEY,
    task TEXT NOT NULL,
    args TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    result TEXT,
    error TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    run_at DOUBLE PRECISION NOT NULL,
    key TEXT,
    lease_until DOUBLE PRECISION,
    worker TEXT,
    -- Claims so far; never reset or given back (the fence of a finish: base.Outcome.run).
    runs INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS hitd_jobs_due ON hitd_jobs (run_at, id) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS hitd_jobs_lease ON hitd_jobs (lease_until) WHERE status = 'running';
CREATE UNIQUE INDEX IF NOT EXISTS hitd_jobs_key ON hitd_jobs (key)
    WHERE key IS NOT NULL AND status IN ('queued', 'running');
"""

_RETURNING = ", ".join(f"hitd_jobs.{c}" for c in COLUMNS.split(", "))
_KEY_CONFLICT = "(key) WHERE key IS NOT NULL AND status IN ('queued', 'running')"
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
ESTIMATE_REFRESH_S = 1.0
_SCHEMA_LOCK = 0x68697464  # "hitd": the advisory lock that serializes creating the schema

log = logging.getLogger("hitpool.hitd.store")

# One statement for a batch without keys: ids drawn in the request's order (ordinality; `u` is
# materialized, so each row draws once), the first $7 rows inserted claimed by worker $8 when
# no older due job waits, queued or on an expired lease (a claim would take those first), the
# rest queued, and when some are queued one NOTIFY on channel $10 ("$11 <how many>"), sent
# at the commit: one per batch, not per job. Returns the ids in order and how many were
# claimed.
_ENQUEUE_FAST = """
WITH u AS MATERIALIZED (
    SELECT nextval($6::regclass) AS i, t, a, m, r, o
    FROM unnest($1::text[], $2::text[], $3::int[], $4::float8[]) WITH ORDINALITY AS u(t, a, m, r, o)
), h AS (
    SELECT CASE WHEN $7::int > 0 AND NOT EXISTS (
        SELECT 1 FROM hitd_jobs WHERE status = 'queued' AND run_at <= $5::float8
    ) AND NOT EXISTS (
        SELECT 1 FROM hitd_jobs WHERE status = 'running' AND lease_until <= $5::float8
    ) THEN $7::int ELSE 0 END AS k
), ins AS (
    INSERT INTO hitd_jobs (id, task, args, status, attempts, runs, max_attempts, created_at,
                           started_at, run_at, lease_until, worker)
    SELECT i, t, a, CASE WHEN o <= k THEN 'running' ELSE 'queued' END, (o <= k)::int,
           (o <= k)::int, m, $5,
           CASE WHEN o <= k THEN $5 END, coalesce(r, $5), CASE WHEN o <= k THEN $9::float8 END,
           CASE WHEN o <= k THEN $8::text END
    FROM u, h
), n AS (
    SELECT pg_notify($10::text, $11::text || ' ' || (c.n - h.k)::text)
    FROM h, (SELECT count(*) AS n FROM u) AS c WHERE c.n > h.k
)
SELECT (SELECT array_agg(i ORDER BY o) FROM u), (SELECT k FROM h), (SELECT count(*) FROM n)
"""


# A claim in one statement (one round trip, one commit), at `now` $1 for worker $3, leases to
# $2, at most $4 jobs: expired leases of other workers first (`k` false), then due queued jobs
# in (run_at, id) order (`k` true). Every CTE sees the same snapshot, so the expired jobs on
# their last attempt, which `dead` ends, are kept out of `c` by its `attempts < max_attempts`
# (the two take disjoint rows). `dead` runs to completion though nothing reads it (PostgreSQL
# always does so for a data-modifying CTE). The Limit over the Append pulls lazily, so the
# second arm locks only as many rows as the first left room for.
_CLAIM_CTES = """
dead AS (
    UPDATE hitd_jobs SET status = 'dead', finished_at = $1, lease_until = NULL,
        error = 'lease expired on attempt ' || attempts || ' of ' || max_attempts
    WHERE id IN (SELECT id FROM hitd_jobs WHERE status = 'running' AND lease_until <= $1
                 AND attempts >= max_attempts AND worker <> $3 FOR UPDATE SKIP LOCKED)
), c AS (
    SELECT id, false AS k FROM (
        SELECT id FROM hitd_jobs WHERE status = 'running' AND lease_until <= $1
        AND attempts < max_attempts AND worker <> $3
        ORDER BY lease_until, id LIMIT $4 FOR UPDATE SKIP LOCKED) AS e
    UNION ALL
    SELECT id, true FROM (
        SELECT id FROM hitd_jobs WHERE status = 'queued' AND run_at <= $1
        ORDER BY run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) AS q
    LIMIT $4
)
"""
_CLAIM_TAKE = f"""
UPDATE hitd_jobs SET status = 'running', attempts = attempts + 1, runs = runs + 1,
    lease_until = $2, started_at = $1, worker = $3
FROM c WHERE hitd_jobs.id = c.id RETURNING {_RETURNING}, c.k
"""
_CLAIM = f"WITH {_CLAIM_CTES}{_CLAIM_TAKE}"


async def _migrate(c: asyncpg.Connection) -> None:
    """Bring a table made by an older hitd up to SCHEMA (under the schema lock): `runs` was
    added after it. Its running jobs start from runs = attempts, the fence they hold."""
    if not await c.fetchval(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = 'hitd_jobs' AND column_name = 'runs'"
    ):
        await c.execute("ALTER TABLE hitd_jobs ADD COLUMN runs INTEGER NOT NULL DEFAULT 0")
        await c.execute("UPDATE hitd_jobs SET runs = attempts")


def _record(r: Any) -> JobRecord:
    # The same columns in the same order as SQLite's (COLUMNS): one row -> record rule.
    return row_record(tuple(r))


def _by_id(r: JobRecord) -> int:
    return r.id


def _by_due(r: JobRecord) -> tuple[float, int]:
    return (r.run_at, r.id)


def _args_column(jobs: Sequence[NewJob]) -> list[str]:
    """The arguments of a batch as strict JSON, or StoreError naming the job (see `_codec`)."""
    out = []
    for i, j in enumerate(jobs):
        try:
            out.append(args_json(j.args))
        except ValueError as e:
            raise StoreError(f"job {i} of the batch: {e}") from e
    return out


def _count(status: str) -> int:
    """asyncpg's status string, e.g. 'UPDATE 3' -> 3."""
    return int(status.rsplit(" ", 1)[-1])


class PostgreSQLStore(Store):
    """A shared, durable store on PostgreSQL (asyncpg)."""

    durable: ClassVar[bool] = True
    supports_handoff: ClassVar[bool] = True
    claims_with_finish: ClassVar[bool] = True

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        parts = _parse_url(url)
        query = dict(parse_qsl(parts.query))
        schema = query.pop("schema", None)
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise SpecError("store", f"bad schema name {schema!r}: letters, digits and _ only")
        self.schema = schema
        self.url = urlunsplit(parts._replace(query=urlencode(query)))
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        # Queued jobs in the table, as this process knows it: moved by its own commits and by
        # the other processes' NOTIFYs, and read from the table every ESTIMATE_REFRESH_S
        # (`_refresher`), so every process's claims show within that.
        self._queued = 0
        self._seq = ""  # the id sequence's name, read at open
        self._handoff: Handoff | None = None
        self._reserved = 0  # room taken by enqueues whose statement is under way
        # Jobs queued by a commit are announced on `channel` (one per schema), so an idle
        # process claims them at once rather than at its next poll. `_token` tells this
        # process's own announcements from the others'.
        self.channel = f"hitd_{schema}"[:63] if schema else "hitd_jobs"
        self._token = f"{os.getpid()}:{random.getrandbits(32):08x}"
        self._listener: asyncpg.Connection | None = None
        self._refresher: asyncio.Task[None] | None = None

    @property
    def _db(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("the PostgreSQL store is closed (or was never opened)")
        return self._pool

    async def open(self) -> None:
        settings = {"search_path": self.schema} if self.schema else {}
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self._pool_size,
                server_settings=settings,
                reset=_keep_session,
            )
            async with self._pool.acquire() as c, c.transaction():
                # CREATE ... IF NOT EXISTS is not safe against itself in PostgreSQL: servers
                # started together on a fresh database collided in the catalog ("duplicate
                # key ... pg_type_typname_nsp_index") and all but one failed to start.
                await c.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                if self.schema:
                    await c.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                await c.execute(SCHEMA)
                await _migrate(c)
                self._queued = await c.fetchval(
                    "SELECT count(*) FROM hitd_jobs WHERE status = 'queued'"
                )
                self._seq = await c.fetchval("SELECT pg_get_serial_sequence('hitd_jobs', 'id')")
            await self._listen()
        except (*_DB_ERRORS, ValueError) as e:
            # ValueError: asyncpg's parse of a malformed URL (a bad port, an open bracket).
            await self.close()
            raise StoreUnavailable(f"PostgreSQL store {_safe(self.url)}: {_describe(e)}") from e
        self._refresher = asyncio.get_running_loop().create_task(
            self._refresh_loop(), name="hitd-pg-refresher"
        )

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        if self._listener is not None:
            listener, self._listener = self._listener, None
            with contextlib.suppress(*_DB_ERRORS):
                await listener.close(timeout=2)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _run(self, fn: Any, *args: Any) -> Any:
        """Run fn(conn, *args) in one transaction; database errors become StoreError."""
        try:
            async with self._db.acquire() as c, c.transaction():
                return await fn(c, *args)
        except _DB_ERRORS as e:
            raise _store_error(e) from e

    async def _on_conn(self, fn: Any, *args: Any) -> Any:
        """Run fn(conn, *args) on one connection, each statement its own transaction."""
        try:
            async with self._db.acquire() as c:
                return await fn(c, *args)
        except _DB_ERRORS as e:
            raise _store_error(e) from e

    async def _one(self, method: str, sql: str, *args: Any) -> Any:
        """One statement, its own transaction (one round trip: no BEGIN and COMMIT)."""
        try:
            async with self._db.acquire() as c:
                return await getattr(c, method)(sql, *args)
        except _DB_ERRORS as e:
            raise _store_error(e) from e

    # -- across processes: NOTIFY and the queue-depth estimate ------------------------------

    async def _listen(self) -> None:
        """A connection of its own that LISTENs on `channel` (the pool's connections are
        handed around and cannot hold a LISTEN)."""
        settings = {"search_path": self.schema} if self.schema else {}
        conn = await asyncpg.connect(self.url, server_settings=settings)
        try:
            await conn.add_listener(self.channel, self._on_notify)
        except BaseException:
            await conn.close()
            raise
        self._listener = conn

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        token, _, n = payload.partition(" ")
        if token == self._token or not n.isdigit():
            return  # our own commit: already counted, and our runner already knows
        self._queued += int(n)
        h = self._handoff
        if h is not None:
            h.committed()

    async def refresh_estimate(self) -> None:
        """Read the queued jobs from the table into `queued_estimate()` (an index-only count
        over the queued jobs' partial index), and listen again if the listener was lost."""
        self._queued = await self._one(
            "fetchval", "SELECT count(*) FROM hitd_jobs WHERE status = 'queued'"
        )
        if self._listener is None or self._listener.is_closed():
            self._listener = None
            try:
                await self._listen()
            except _DB_ERRORS as e:
                raise _store_error(e) from e
            h = self._handoff
            if h is not None:
                h.committed()  # announcements may have been missed meanwhile

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(ESTIMATE_REFRESH_S)
            try:
                await self.refresh_estimate()
            except StoreError as e:  # the store is down: the next claim or request says so
                log.debug("queue-depth refresh failed: %s", e)

    def set_handoff(self, handoff: Handoff | None) -> None:
        self._handoff = handoff

    # -- enqueue ----------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], now: float) -> list[tuple[int, bool]]:
        if not jobs:
            return []
        if all(j.key is None for j in jobs):
            return await self._enqueue_fast(jobs, now)
        out: list[tuple[int, bool]] = await self._run(self._enqueue, list(jobs), now)
        self._queued += sum(1 for _, created in out if created)
        return out

    async def _notify(self, c: asyncpg.Connection, n: int) -> None:
        """Tell the other processes that `n` jobs were queued, at this transaction's commit."""
        if n > 0:
            await c.execute("SELECT pg_notify($1, $2)", self.channel, f"{self._token} {n}")

    async def _enqueue_fast(self, jobs: Sequence[NewJob], now: float) -> list[tuple[int, bool]]:
        """A batch without keys in one statement; with a handoff, its first jobs claimed."""
        h, room = self._handoff, 0
        if h is not None and all(j.run_at is None or j.run_at <= now for j in jobs):
            room = max(0, min(len(jobs), h.room() - self._reserved))
        self._reserved += room
        try:
            row = await self._one(
                "fetchrow",
                _ENQUEUE_FAST,
                [j.task for j in jobs],
                _args_column(jobs),
                [j.max_attempts for j in jobs],
                [j.run_at for j in jobs],
                now,
                self._seq,
                room,
                None if h is None else h.worker,
                None if h is None else now + h.lease_s,
                self.channel,
                self._token,
            )
        finally:
            self._reserved -= room
        ids: list[int] = row[0]
        handed: int = row[1]
        self._queued += len(ids) - handed
        if handed and h is not None:
            try:
                h.deliver(ids[:handed], jobs[:handed])
            except Exception:  # the jobs are committed: never fail the enqueue over this
                log.exception(
                    "handing %d jobs to the runner failed; their leases will expire", handed
                )
        return [(id, True) for id in ids]

    async def _enqueue(
        self, c: asyncpg.Connection, jobs: list[NewJob], now: float
    ) -> list[tuple[int, bool]]:
        # Within the batch, a repeated key is the first job with that key.
        first_of: dict[str, int] = {}
        unique: list[int] = []  # indexes into jobs of the rows to insert
        for i, j in enumerate(jobs):
            if j.key is not None:
                if j.key in first_of:
                    continue
                first_of[j.key] = i
            unique.append(i)
        rows = [jobs[i] for i in unique]
        ids: list[int] = await c.fetchval(
            "SELECT array_agg(nextval(pg_get_serial_sequence('hitd_jobs', 'id'))) "
            "FROM generate_series(1, $1)",
            len(rows),
        )
        inserted = {
            r[0]
            for r in await c.fetch(
                "INSERT INTO hitd_jobs (id, task, args, status, max_attempts, created_at, "
                "run_at, key) SELECT i, t, a, 'queued', m, $7, coalesce(r, $7), k FROM "
                "unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::float8[], "
                "$6::text[]) AS u(i, t, a, m, r, k) "
                f"ON CONFLICT {_KEY_CONFLICT} DO NOTHING RETURNING id",
                ids,
                [j.task for j in rows],
                _args_column(rows),
                [j.max_attempts for j in rows],
                [j.run_at for j in rows],
                [j.key for j in rows],
                now,
            )
        }
        by_row: dict[int, tuple[int, bool]] = {}
        lost = [(i, id) for i, id in zip(unique, ids, strict=True) if id not in inserted]
        if lost:
            keys = [jobs[i].key for i, _ in lost]
            held = dict(
                await c.fetch(
                    "SELECT key, id FROM hitd_jobs WHERE key = ANY($1::text[]) "
                    "AND status IN ('queued', 'running')",
                    keys,
                )
            )
            for i, _ in lost:
                key = jobs[i].key
                if key not in held:  # the holder finished between our insert and select
                    raise StoreError(f"key {key!r} changed hands during enqueue; submit again")
                by_row[i] = (held[key], False)
        for i, id in zip(unique, ids, strict=True):
            if id in inserted:
                by_row[i] = (id, True)
        await self._notify(c, len(inserted))
        out: list[tuple[int, bool]] = []
        for i, j in enumerate(jobs):
            if i in by_row:
                out.append(by_row[i])
            else:  # a repeat of a key earlier in this batch
                assert j.key is not None
                out.append((by_row[first_of[j.key]][0], False))
        return out

    # -- claim, renew, finish, release ------------------------------------------------------

    async def claim(self, worker: str, limit: int, now: float, lease_s: float) -> list[JobRecord]:
        if limit <= 0:
            return []
        # One statement, so no BEGIN and COMMIT: its own transaction (see _CLAIM).
        recs, due = await self._on_conn(self._claim, worker, limit, now, now + lease_s)
        self._queued -= due
        return list(recs)

    async def _claim(
        self,
        c: asyncpg.Connection,
        worker: str,
        limit: int,
        now: float,
        lease_until: float,
        sql: str = _CLAIM,
        extra: Sequence[Any] = (),
    ) -> tuple[list[JobRecord], int]:
        rows = await c.fetch(sql, now, lease_until, worker, limit, *extra)
        expired: list[JobRecord] = []
        due: list[JobRecord] = []
        poison: list[tuple[int, str]] = []
        for r in rows:
            rec, bad = decode_row(tuple(r)[:-1])
            if bad is not None:
                poison.append((rec.id, bad))
            elif r[-1]:
                due.append(rec)
            else:
                expired.append(rec)
        if poison:
            # Rows that cannot be decoded (not written by this store, or damaged): failed
            # with the reason, so no worker gets them and no later claim trips on them.
            # Under this claim's lease guard: a crash before this commit leaves them
            # running under our lease, and the claim that takes them over fails them.
            await c.execute(
                "UPDATE hitd_jobs SET status = 'failed', error = u.e, finished_at = $3, "
                "lease_until = NULL FROM unnest($1::bigint[], $2::text[]) AS u(i, e) "
                "WHERE hitd_jobs.id = u.i AND hitd_jobs.worker = $4 "
                "AND hitd_jobs.status = 'running'",
                [id for id, _ in poison],
                [storable(why) for _, why in poison],
                now,
                worker,
            )
        expired.sort(key=_by_id)
        due.sort(key=_by_due)
        return expired + due, sum(1 for r in rows if r[-1])

    async def renew(self, ids: Sequence[int], worker: str, now: float, lease_s: float) -> None:
        if not ids:
            return
        await self._run(
            lambda c: c.execute(
                "UPDATE hitd_jobs SET lease_until = $1 WHERE id = ANY($2::bigint[]) "
                "AND worker = $3 AND status = 'running'",
                now + lease_s,
                list(ids),
                worker,
            )
        )

    async def finish(self, outcomes: Sequence[Outcome], now: float) -> None:
        if not outcomes:
            return
        if all(o.status == "succeeded" for o in outcomes):  # the usual batch: one statement
            await self._one("execute", _FINISH_OK, *_ok_args(outcomes, now))
            return
        requeued: int = await self._run(self._finish, list(outcomes), now)
        self._queued += requeued

    async def finish_and_claim(
        self, outcomes: Sequence[Outcome], now: float, worker: str, limit: int, lease_s: float
    ) -> list[JobRecord]:
        if limit <= 0 or not all(o.status == "succeeded" for o in outcomes):
            return await super().finish_and_claim(outcomes, now, worker, limit, lease_s)
        ok = _ok_args(outcomes, now)[:4]
        recs, due = await self._on_conn(
            self._claim, worker, limit, now, now + lease_s, _FINISH_CLAIM, ok
        )
        self._queued -= due
        return list(recs)

    async def _finish(self, c: asyncpg.Connection, outcomes: list[Outcome], now: float) -> int:
        # The statuses are the runner's (`Outcome.status`): written as given, under the lease
        # guard and the run fence.
        ok = [o for o in outcomes if o.status == "succeeded"]
        retry = [o for o in outcomes if o.status == "queued"]
        final = [o for o in outcomes if o.status in ("failed", "dead")]
        if ok:
            await c.execute(_FINISH_OK, *_ok_args(ok, now))
        requeued = 0
        if retry:
            requeued = _count(
                await c.execute(
                    "UPDATE hitd_jobs SET status = 'queued', error = u.e, run_at = u.r, "
                    "lease_until = NULL, worker = NULL FROM unnest($1::bigint[], $2::text[], "
                    f"$3::int[], $4::text[], $5::float8[]) AS u(i, w, a, e, r) WHERE {_HELD}",
                    [o.id for o in retry],
                    [o.worker for o in retry],
                    [o.run for o in retry],
                    [storable(o.error) for o in retry],
                    [o.run_at for o in retry],
                )
            )
        if final:
            await c.execute(
                "UPDATE hitd_jobs SET status = u.s, error = u.e, finished_at = $6, "
                "lease_until = NULL FROM unnest($1::bigint[], $2::text[], $3::int[], "
                f"$4::text[], $5::text[]) AS u(i, w, a, e, s) WHERE {_HELD}",
                [o.id for o in final],
                [o.worker for o in final],
                [o.run for o in final],
                [storable(o.error) for o in final],
                [o.status for o in final],
                now,
            )
        return requeued

    async def release(self, ids: Sequence[int], worker: str) -> None:
        if not ids:
            return

        async def fn(c: asyncpg.Connection) -> int:
            n = _count(
                await c.execute(
                    "UPDATE hitd_jobs SET status = 'queued', attempts = attempts - 1, "
                    "worker = NULL, lease_until = NULL, started_at = NULL "
                    "WHERE id = ANY($1::bigint[]) AND worker = $2 AND status = 'running'",
                    list(ids),
                    worker,
                )
            )
            await self._notify(c, n)
            return n

        self._queued += await self._run(fn)

    # -- reads and cancel -------------------------------------------------------------------

    async def get(self, id: int) -> JobRecord | None:
        r = await self._run(
            lambda c: c.fetchrow(f"SELECT {COLUMNS} FROM hitd_jobs WHERE id = $1", id)
        )
        return None if r is None else _record(r)

    async def cancel(self, id: int, now: float | None = None) -> bool:
        status: str = await self._run(
            lambda c: c.execute(
                "UPDATE hitd_jobs SET status = 'cancelled', finished_at = $2 "
                "WHERE id = $1 AND status = 'queued'",
                id,
                now,
            )
        )
        done = _count(status) == 1
        self._queued -= int(done)
        return done

    async def counts(self) -> dict[str, int]:
        rows = await self._run(
            lambda c: c.fetch("SELECT status, count(*) FROM hitd_jobs GROUP BY status")
        )
        out: dict[str, int] = dict.fromkeys(STATUSES, 0)
        for status, n in rows:
            out[status] = n
        return out

    def queued_estimate(self) -> int:
        return max(0, self._queued)

    async def holders(self) -> dict[str, int]:
        rows = await self._run(
            lambda c: c.fetch(
                "SELECT worker, count(*) FROM hitd_jobs WHERE status = 'running' "
                "AND worker IS NOT NULL GROUP BY worker"
            )
        )
        return {r[0]: r[1] for r in rows}

    async def expire(self, worker: str) -> int:
        status: str = await self._run(
            lambda c: c.execute(
                "UPDATE hitd_jobs SET lease_until = '-Infinity' WHERE worker = $1 "
                "AND status = 'running'",
                worker,
            )
        )
        return _count(status)

    # -- retention --------------------------------------------------------------------------

    async def purge(self, before: float, limit: int) -> int:
        if limit <= 0:
            return 0
        n: int = await self._run(self._purge, before, limit)
        return n

    async def _purge(self, c: asyncpg.Connection, before: float, limit: int) -> int:
        # No index on finished_at, as for SQLite (every finish would write it): the scan goes
        # by id up to the last job created before `before`. SKIP LOCKED: two servers purging
        # at once take different rows instead of waiting for each other.
        bound = await self._purge_bound(c, before)
        status: str = await c.execute(
            "DELETE FROM hitd_jobs WHERE id IN (SELECT id FROM hitd_jobs WHERE id <= $1 "
            "AND status = ANY($2::text[]) AND finished_at < $3 ORDER BY id LIMIT $4 "
            "FOR UPDATE SKIP LOCKED)",
            bound,
            list(FINISHED),
            before,
            limit,
        )
        return _count(status)

    @staticmethod
    async def _purge_bound(c: asyncpg.Connection, before: float) -> int:
        """The last id a purge looks at: of a job created before `before` (see
        `bisect_created`), and below the newest job, which the contract keeps."""
        first = await c.fetchval("SELECT min(id) FROM hitd_jobs")
        if first is None:
            return 0
        last = await c.fetchval("SELECT max(id) FROM hitd_jobs")
        search = bisect_created(first, last - 1, before)
        try:
            id = next(search)
            while True:
                created = await c.fetchval(
                    "SELECT created_at FROM hitd_jobs WHERE id >= $1 ORDER BY id LIMIT 1", id
                )
                id = search.send(math.inf if created is None else created)
        except StopIteration as done:
            return int(done.value)

    # -- administration (see Store; the SQL is in postgresql_admin) --------------------------

    async def list_jobs(self, query: JobQuery) -> JobPage:
        page: JobPage = await self._run(admin.list_jobs, query)
        return page

    async def retry(self, id: int, now: float) -> RetryOutcome:
        try:
            outcome: RetryOutcome = await self._run(admin.retry, id, now)
        except StoreError as e:
            # Another process queued a job with the same key between the check and the
            # update: the partial unique index refused it, as the contract refuses it.
            if isinstance(e.__cause__, asyncpg.UniqueViolationError):
                return "refused"
            raise
        if outcome == "retried":
            self._queued += 1  # refreshed from the database within a second anyway
        return outcome

    async def retry_all(self, status: JobStatus, now: float, limit: int) -> int:
        if status not in RETRYABLE or limit <= 0:
            return 0
        n: int = await self._run(admin.retry_all, status, now, limit)
        self._queued += n
        return n

    async def delete(self, id: int) -> DeleteOutcome:
        outcome: DeleteOutcome = await self._run(admin.delete, id)
        return outcome

    async def oldest_due(self, now: float) -> float | None:
        value = await self._one(
            "fetchval",
            "SELECT min(run_at) FROM hitd_jobs WHERE status = 'queued' AND run_at <= $1",
            now,
        )
        return None if value is None else float(value)


# The lease guard and the run fence of a finish: only the holder, on the run (claim) that
# ended (`u` is the unnest of the outcomes: id i, worker w, run a).
_HELD = (
    "hitd_jobs.id = u.i AND hitd_jobs.worker = u.w AND hitd_jobs.status = 'running' "
    "AND hitd_jobs.runs = u.a"
)
_FINISH_OK = (
    "UPDATE hitd_jobs SET status = 'succeeded', result = u.r, error = NULL, finished_at = $5, "
    "lease_until = NULL FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[]) "
    f"AS u(i, w, a, r) WHERE {_HELD}"
)

# Successes recorded and the next claim, in one statement (one round trip, one commit): the
# claim of _CLAIM ($1-$4) with _FINISH_OK's update ($5-$8, finished at $1) as a CTE. They
# touch disjoint rows: the finished jobs are held by this worker, and a claim takes only
# queued jobs and other workers' expired leases.
_FINISH_CLAIM = (
    "WITH f AS (UPDATE hitd_jobs SET status = 'succeeded', result = u.r, error = NULL, "
    "finished_at = $1, lease_until = NULL FROM unnest($5::bigint[], $6::text[], $7::int[], "
    f"$8::text[]) AS u(i, w, a, r) WHERE {_HELD}), {_CLAIM_CTES}{_CLAIM_TAKE}"
)


def _ok_args(ok: Sequence[Outcome], now: float) -> tuple[Any, ...]:
    return (
        [o.id for o in ok],
        [o.worker for o in ok],
        [o.run for o in ok],
        [result_json(o.result) for o in ok],
        now,
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release. asyncpg's default sends a reset query (unlock advisory
    locks, CLOSE ALL, UNLISTEN, RESET ALL): a second round trip for every statement of ours,
    which set none of those. A transaction left open is still rolled back by the pool itself
    before this runs."""


# What asyncpg raises when the database fails or cannot be reached. InternalClientError is
# what a connection killed under a statement (pg_terminate_backend) can give.
_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
_UNREACHABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, pg_terminate_backend
    asyncpg.exceptions.CannotConnectNowError,
)


def _describe(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _store_error(e: BaseException) -> StoreError:
    """A database error as the store's own: StoreUnavailable when the connection is gone (a
    restart, a network cut, a terminated backend), else StoreError; both readable."""
    if isinstance(e, _UNREACHABLE):
        return StoreUnavailable(f"PostgreSQL is unavailable: {_describe(e)}")
    return StoreError(f"PostgreSQL: {_describe(e)}")


def _parse_url(url: str) -> SplitResult:
    """The URL's parts, or SpecError naming `store` for one that cannot be a PostgreSQL
    address (a port that is not a number, an IPv6 host without its closing bracket)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsed on access: raises ValueError for a bad port
    except ValueError as e:
        raise SpecError(
            "store",
            f"bad PostgreSQL URL {_safe_text(url)!r} ({e}): use "
            "postgresql://user[:password]@host[:port]/database[?schema=name], "
            "an IPv6 host in brackets",
        ) from e
    if not parts.hostname and "host=" not in parts.query:
        raise SpecError(
            "store",
            f"bad PostgreSQL URL {_safe_text(url)!r}: no host; use "
            "postgresql://user[:password]@host[:port]/database",
        )
    return parts


def _safe_text(url: str) -> str:
    """A URL that may not parse, with anything between ':' and '@' (a password) hidden."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
