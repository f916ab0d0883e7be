"""The SQL of the PostgreSQL store's administration methods (listing, retry, delete).

Each function runs inside one transaction the store opened (`PostgreSQLStore._run`). The
rules (what may be retried, which keyed jobs a bulk retry skips) are `base`'s. The rows an
action changes are locked first (`FOR UPDATE`), so a retry or delete cannot interleave with
a claim or a finish of the same job in another process; a bulk retry skips rows another
transaction holds (`SKIP LOCKED`) rather than waiting for them.
"""

from __future__ import annotations

from typing import Any

import asyncpg

# The same columns in the same order as SQLite's: one row -> record rule.
from ._codec import COLUMNS, row_record
from .base import (
    RETRYABLE,
    DeleteOutcome,
    JobPage,
    JobQuery,
    JobRecord,
    JobStatus,
    RetryOutcome,
    page_of,
    pick_retries,
    stored_chars,
)

# Back to queued, due at $1, with fresh attempts (the error kept): `retry`'s rule.
REQUEUE = (
    "UPDATE hitd_jobs SET status = 'queued', attempts = 0, result = NULL, started_at = NULL, "
    "finished_at = NULL, run_at = $1, worker = NULL, lease_until = NULL"
)
_ACTIVE_KEY = "SELECT 1 FROM hitd_jobs WHERE key = $1 AND status IN ('queued', 'running')"
_NO_CURSOR = 2**63 - 1  # above every id (BIGSERIAL)


async def list_jobs(c: asyncpg.Connection, query: JobQuery) -> JobPage:
    # As for SQLite: the window (the newest `scan` jobs below the cursor) as an id range from
    # the primary key, then one range scan with the filters.
    where: list[str] = []
    params: list[Any] = [_NO_CURSOR if query.before is None else query.before, query.scan]
    if query.statuses is not None:
        params.append(list(query.statuses))
        where.append(f"status = ANY(${len(params)}::text[])")
    if query.task is not None:
        params.append(query.task)
        where.append(f"task = ${len(params)}")
    if query.q is not None:
        params.append(query.q)
        where.append(f"strpos(args, ${len(params)}) > 0")
    params.append(query.limit)
    sql = (
        f"SELECT {COLUMNS} FROM hitd_jobs WHERE id < $1 AND id >= (SELECT min(id) FROM "
        "(SELECT id FROM hitd_jobs WHERE id < $1 ORDER BY id DESC LIMIT $2) w)"
        f"{''.join(' AND ' + w for w in where)} ORDER BY id DESC LIMIT ${len(params)}"
    )
    # A cursor (inside the store's transaction), so that rows past `max_chars` are not sent.
    matched: list[JobRecord] = []
    chars = 0
    async for r in c.cursor(sql, *params, prefetch=16):
        matched.append(row_record(tuple(r)))
        chars += stored_chars(r[2], r[6], r[7])
        if chars >= query.max_chars:
            return page_of(query, matched, 0, None, chars)
    if len(matched) >= query.limit:
        return page_of(query, matched, 0, None)
    scanned, lowest = await c.fetchrow(
        "SELECT count(*), min(id) FROM (SELECT id FROM hitd_jobs WHERE id < $1 "
        "ORDER BY id DESC LIMIT $2) w",
        *params[:2],
    )
    return page_of(query, matched, scanned, lowest)


async def retry(c: asyncpg.Connection, id: int, now: float) -> RetryOutcome:
    row = await c.fetchrow("SELECT status, run_at, key FROM hitd_jobs WHERE id = $1 FOR UPDATE", id)
    if row is None:
        return "missing"
    status, run_at, key = row
    if status == "queued":
        if run_at > now:
            await c.execute("UPDATE hitd_jobs SET run_at = $2 WHERE id = $1", id, now)
        return "retried"
    if status not in RETRYABLE:
        return "refused"
    if key is not None and await c.fetchval(_ACTIVE_KEY, key) is not None:
        return "refused"
    await c.execute(REQUEUE + " WHERE id = $2", now, id)
    return "retried"


async def retry_all(c: asyncpg.Connection, status: JobStatus, now: float, limit: int) -> int:
    rows = await c.fetch(
        "SELECT id, key FROM hitd_jobs WHERE status = $1 ORDER BY id LIMIT $2 "
        "FOR UPDATE SKIP LOCKED",
        status,
        limit,
    )
    keys = sorted({r[1] for r in rows if r[1] is not None})
    held = {
        r[0]
        for r in await c.fetch(
            "SELECT key FROM hitd_jobs WHERE key = ANY($1::text[]) "
            "AND status IN ('queued', 'running')",
            keys,
        )
    }
    ids = pick_retries([(r[0], r[1]) for r in rows], held)
    await c.execute(REQUEUE + " WHERE id = ANY($2::bigint[])", now, ids)
    return len(ids)


async def delete(c: asyncpg.Connection, id: int) -> DeleteOutcome:
    status = await c.fetchval("SELECT status FROM hitd_jobs WHERE id = $1 FOR UPDATE", id)
    if status is None:
        return "missing"
    if status in ("queued", "running"):
        return "active"
    if await c.fetchval("SELECT max(id) FROM hitd_jobs") == id:
        return "newest"
    await c.execute("DELETE FROM hitd_jobs WHERE id = $1", id)
    return "deleted"
