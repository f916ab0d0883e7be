"""The SQL of the SQLite store's administration methods (listing, retry, delete).

Each write runs inside a transaction of the store's writer and returns its result and its
`Moves`, as the operations of `sqlite_ops` do; the reads run on the reader connection. The
rules (what may be retried, which keyed jobs a bulk retry skips) are `base`'s.
"""

from __future__ import annotations

import sqlite3
from typing import Any

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
from .sqlite_ops import NO_MOVES, Moves

# Back to queued, due at ? (the first parameter), with fresh attempts; the error is kept
# until the job runs again, so the operator still sees why it had failed.
REQUEUE = (
    "UPDATE jobs SET status = 'queued', attempts = 0, result = NULL, started_at = NULL, "
    "finished_at = NULL, run_at = ?, worker = NULL, lease_until = NULL"
)
_ACTIVE_KEY = "SELECT 1 FROM jobs WHERE key = ? AND status IN ('queued', 'running')"
_NO_CURSOR = 2**63 - 1  # above every id: SQLite's rowid is a signed 64-bit integer


def list_jobs(c: sqlite3.Connection, query: JobQuery) -> JobPage:
    # The window (the newest `scan` jobs below the cursor) walks the primary key backwards;
    # the filters apply inside it only, so no listing reads more than `scan` rows.
    where: list[str] = []
    params: list[Any] = [_NO_CURSOR if query.before is None else query.before, query.scan]
    if query.statuses is not None:
        where.append(f"status IN ({', '.join('?' * len(query.statuses))})")
        params += query.statuses
    if query.task is not None:
        where.append("task = ?")
        params.append(query.task)
    if query.q is not None:
        where.append("instr(args, ?) > 0")
        params.append(query.q)
    # The window as an id range: its lowest id comes from the primary key alone, and the
    # rows are then read by one range scan (a subquery of whole rows read twice as many).
    sql = (
        f"SELECT {COLUMNS} FROM jobs WHERE id < ?1 AND id >= (SELECT min(id) FROM (SELECT id "
        f"FROM jobs WHERE id < ?1 ORDER BY id DESC LIMIT ?2)) "
        f"{''.join(' AND ' + w for w in where)} ORDER BY id DESC LIMIT ?"
    )
    # Rows are stepped one by one, and no further once the page holds `max_chars`: the rest
    # of the range is never read.
    matched: list[JobRecord] = []
    chars = 0
    rows = c.execute(sql, [*params, query.limit])
    try:
        for r in rows:
            matched.append(row_record(r))
            chars += stored_chars(r[2], r[6], r[7])
            if chars >= query.max_chars:
                return page_of(query, matched, 0, None, chars)
    finally:
        rows.close()  # a statement left open would hold the reader's snapshot
    if len(matched) >= query.limit:
        return page_of(query, matched, 0, None)
    scanned, lowest = c.execute(
        "SELECT count(*), min(id) FROM (SELECT id FROM jobs WHERE id < ? ORDER BY id DESC LIMIT ?)",
        params[:2],
    ).fetchone()
    return page_of(query, matched, scanned, lowest)


def oldest_due(c: sqlite3.Connection, now: float) -> float | None:
    # The partial index jobs_due (run_at, id) WHERE status = 'queued' answers this.
    row = c.execute(
        "SELECT min(run_at) FROM jobs WHERE status = 'queued' AND run_at <= ?", (now,)
    ).fetchone()
    return None if row[0] is None else float(row[0])


def retry(c: sqlite3.Connection, id: int, now: float) -> tuple[RetryOutcome, Moves]:
    row = c.execute("SELECT status, run_at, key FROM jobs WHERE id = ?", (id,)).fetchone()
    if row is None:
        return "missing", NO_MOVES
    status, run_at, key = row
    if status == "queued":
        if run_at > now:
            c.execute("UPDATE jobs SET run_at = ? WHERE id = ?", (now, id))
        return "retried", NO_MOVES
    if status not in RETRYABLE:
        return "refused", NO_MOVES
    if key is not None and c.execute(_ACTIVE_KEY, (key,)).fetchone() is not None:
        return "refused", NO_MOVES
    c.execute(REQUEUE + " WHERE id = ?", (now, id))
    return "retried", {status: -1, "queued": 1}


def retry_all(
    c: sqlite3.Connection, status: JobStatus, now: float, limit: int
) -> tuple[int, Moves]:
    if status not in RETRYABLE or limit <= 0:
        return 0, NO_MOVES
    rows = c.execute(
        "SELECT id, key FROM jobs WHERE status = ? ORDER BY id LIMIT ?", (status, limit)
    ).fetchall()
    keys = sorted({key for _, key in rows if key is not None})
    held = {k for k in keys if c.execute(_ACTIVE_KEY, (k,)).fetchone() is not None}
    ids = pick_retries(rows, held)
    c.executemany(REQUEUE + " WHERE id = ?", [(now, id) for id in ids])
    return len(ids), {status: -len(ids), "queued": len(ids)}


def delete(c: sqlite3.Connection, id: int) -> tuple[DeleteOutcome, Moves]:
    row = c.execute("SELECT status FROM jobs WHERE id = ?", (id,)).fetchone()
    if row is None:
        return "missing", NO_MOVES
    if row[0] in ("queued", "running"):
        return "active", NO_MOVES
    if c.execute("SELECT max(id) FROM jobs").fetchone()[0] == id:
        return "newest", NO_MOVES
    c.execute("DELETE FROM jobs WHERE id = ?", (id,))
    return "deleted", {row[0]: -1}
