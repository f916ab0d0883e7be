"""The SQL of the SQLite store: each operation runs inside a transaction on a connection.

Two ways to move a batch across the sqlite3 module, chosen once per store:

- JSON (SQLite >= 3.38, JSON functions built in): the whole batch travels as ONE JSON text
  parameter and SQLite unpacks it with `json_each`; a claim returns its jobs as ONE JSON text
  (`json_group_array`). A batch of 500 is then a handful of statement steps instead of 500,
  which matters twice: each step is a Python -> C round trip, and the sqlite3 module releases
  and re-takes the GIL around every step, so a writer thread stepping row by row keeps
  stalling behind the event loop's thread.
- Rows (any SQLite): `executemany` and a SELECT per claimed batch. The fallback, and the
  path for batches that carry idempotency keys (each key needs a lookup anyway).

Both paths pass the same contract suite. Floats cross exactly: Python writes them with
repr() (shortest round-trip), SQLite parses JSON numbers exactly, and a claim reads the times
back with printf('%!.17g'), 17 significant digits, because json_array() keeps only 15.

Each operation returns its result and its `Moves`: how many jobs it moved into (+) and out
of (-) each status, so the store keeps exact counts without scanning the table.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from ._codec import COLUMNS, decode_row, dumps, dumps_strict, loads, not_args, storable
from .base import FINISHED, JobRecord, Outcome, bisect_created

Moves = dict[str, int]  # status -> change in the number of jobs with that status
NO_MOVES: Moves = {}

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    task TEXT NOT NULL,
    args TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    result TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    run_at REAL NOT NULL,
    key TEXT,
    lease_until REAL,
    worker TEXT,
    -- Claims so far; never reset or given back (the fence of a finish: base.Outcome.run).
    runs INTEGER NOT NULL DEFAULT 0
);
-- Partial indexes: only the rows a claim looks at, so finished jobs cost nothing to skip.
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (run_at, id) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (lease_until) WHERE status = 'running';
-- One active job per idempotency key; a finished job frees its key.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_key ON jobs (key)
    WHERE key IS NOT NULL AND status IN ('queued', 'running');
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a database made by an older hitd up to SCHEMA: `runs` was added after it.
    Its running jobs start from runs = attempts, the fence they were claimed with."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
    if "runs" not in columns:
        with conn:
            conn.execute("ALTER TABLE jobs ADD COLUMN runs INTEGER NOT NULL DEFAULT 0")
            conn.execute("UPDATE jobs SET runs = attempts")


def has_json(conn: sqlite3.Connection) -> bool:
    """True when this SQLite has what the JSON path uses (3.38+: ->> and UPDATE FROM)."""
    if sqlite3.sqlite_version_info < (3, 38, 0):
        return False
    try:
        conn.execute("SELECT value ->> 0 FROM json_each('[[1]]')").fetchall()
    except sqlite3.Error:
        return False
    return True


# -- enqueue ----------------------------------------------------------------------------------


def _next_id(c: sqlite3.Connection) -> int:
    # Ids are assigned here, under the write lock BEGIN IMMEDIATE holds, so a whole batch is
    # inserted by one statement (neither executemany nor INSERT ... SELECT reports ids).
    return int(c.execute("SELECT max(id) FROM jobs").fetchone()[0] or 0) + 1


def enqueue_json(
    c: sqlite3.Connection,
    blob: str,
    n: int,
    now: float,
    handoff: tuple[str, float, Callable[[], int]] | None = None,
) -> tuple[Any, Moves]:
    """A batch without keys, as JSON [[task, args, max_attempts, run_at or null], ...].

    `handoff` (worker, lease_until, room), for a batch of due jobs: when no older due job is
    queued or running on an expired lease, the first room() jobs are inserted already claimed
    by that worker. Returns ((ids, handed), moves)."""
    first = _next_id(c)
    k = 0
    if handoff is not None and not c.execute(_ANY_DUE, {"now": now}).fetchone()[0]:
        k = max(0, min(n, handoff[2]()))
    # run_at null: due at once, so due now (see NewJob).
    if k == 0:
        c.execute(
            "INSERT INTO jobs (id, task, args, status, max_attempts, created_at, run_at) "
            "SELECT :first + key, value ->> 0, value -> 1, 'queued', value ->> 2, :now, "
            "coalesce(value ->> 3, :now) FROM json_each(:blob)",
            {"first": first, "now": now, "blob": blob},
        )
    else:
        worker, lease_until, _ = handoff  # type: ignore[misc]
        c.execute(
            "INSERT INTO jobs (id, task, args, status, attempts, runs, max_attempts, "
            "created_at, started_at, run_at, lease_until, worker) "
            "SELECT :first + key, value ->> 0, value -> 1, "
            "CASE WHEN key < :k THEN 'running' ELSE 'queued' END, "
            "CASE WHEN key < :k THEN 1 ELSE 0 END, CASE WHEN key < :k THEN 1 ELSE 0 END, "
            "value ->> 2, :now, "
            "CASE WHEN key < :k THEN :now END, coalesce(value ->> 3, :now), "
            "CASE WHEN key < :k THEN :lease END, CASE WHEN key < :k THEN :worker END "
            "FROM json_each(:blob)",
            {
                "first": first,
                "k": k,
                "now": now,
                "lease": lease_until,
                "worker": worker,
                "blob": blob,
            },
        )
    ids = [(id, True) for id in range(first, first + n)]
    return (ids, k), {"queued": n - k, "running": k}


# A job a claim would take first: due and queued, or running on an expired lease (its worker
# died). Two EXISTS, so that each side uses its partial index.
_ANY_DUE = (
    "SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'queued' AND run_at <= :now) "
    "OR EXISTS (SELECT 1 FROM jobs WHERE status = 'running' AND lease_until <= :now)"
)


def enqueue_rows(
    c: sqlite3.Connection,
    rows: list[tuple[str, str, int, float | None, str | None]],
    now: float,
) -> tuple[Any, Moves]:
    """Any batch: rows of (task, args JSON, max_attempts, run_at, key)."""
    next_id = _next_id(c)
    out: list[tuple[int, bool]] = []
    inserts: list[tuple[Any, ...]] = []
    seen: dict[str, int] = {}  # keys inserted by this batch
    for task, args, max_attempts, run_at, key in rows:
        if key is not None:
            held = seen.get(key)
            if held is None:
                r = c.execute(
                    "SELECT id FROM jobs WHERE key = ? AND status IN ('queued', 'running')",
                    (key,),
                ).fetchone()
                held = None if r is None else r[0]
            if held is not None:
                out.append((held, False))
                continue
            seen[key] = next_id
        inserts.append(
            (next_id, task, args, max_attempts, now, now if run_at is None else run_at, key)
        )
        out.append((next_id, True))
        next_id += 1
    c.executemany(
        "INSERT INTO jobs (id, task, args, status, max_attempts, created_at, run_at, key) "
        "VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)",
        inserts,
    )
    return out, {"queued": len(inserts)}


# -- claim ------------------------------------------------------------------------------------

# Expired leases are other workers' only (`worker <> ?`, see base.Store.claim): the claimer
# is alive, and what it holds is running in it.
_EXPIRE = (
    # A job whose lease expired after its last allowed attempt is dead, not run again.
    "UPDATE jobs SET status = 'dead', finished_at = ?, lease_until = NULL, "
    "error = 'lease expired on attempt ' || attempts || ' of ' || max_attempts "
    "WHERE status = 'running' AND lease_until <= ? AND attempts >= max_attempts "
    "AND worker <> ?"
)
_EXPIRED = (
    "SELECT id FROM jobs WHERE status = 'running' AND lease_until <= ? AND worker <> ? "
    "ORDER BY lease_until, id LIMIT ?"
)
_DUE = "SELECT id FROM jobs WHERE status = 'queued' AND run_at <= ? ORDER BY run_at, id LIMIT ?"
_TAKE = (
    "status = 'running', attempts = attempts + 1, runs = runs + 1, lease_until = ?, "
    "started_at = ?, worker = ?"
)


def claim(
    c: sqlite3.Connection, worker: str, limit: int, now: float, lease_until: float, use_json: bool
) -> tuple[Any, Moves]:
    """Expired leases first (they were due before anything still queued), then due jobs."""
    dead = c.execute(_EXPIRE, (now, now, worker)).rowcount
    if use_json:
        expired: list[int] = loads(
            c.execute(
                f"SELECT json_group_array(id) FROM ({_EXPIRED})", (now, worker, limit)
            ).fetchone()[0]
        )
        due: list[int] = []
        if len(expired) < limit:
            due = loads(
                c.execute(
                    f"SELECT json_group_array(id) FROM ({_DUE})", (now, limit - len(expired))
                ).fetchone()[0]
            )
    else:
        expired = [r[0] for r in c.execute(_EXPIRED, (now, worker, limit))]
        due = (
            [r[0] for r in c.execute(_DUE, (now, limit - len(expired)))]
            if (len(expired) < limit)
            else []
        )
    ids = expired + due
    moves: Moves = {"queued": -len(due), "running": len(due) - dead, "dead": dead}
    poison: list[tuple[str, float, int]] = []  # (why, now, id) of rows that cannot be decoded
    if not ids:
        return [], moves
    if use_json:
        id_blob = dumps(ids)
        c.execute(
            f"UPDATE jobs SET {_TAKE} WHERE id IN (SELECT value FROM json_each(?))",
            (lease_until, now, worker, id_blob),
        )
        # What a claim does not know already: everything but status, worker and the times
        # it just wrote.
        try:
            blob = c.execute(
                "SELECT json_group_array(json_array(id, task, json(args), attempts, "
                "max_attempts, error, printf('%!.17g', created_at), printf('%!.17g', run_at), "
                "key, runs)) FROM jobs WHERE id IN (SELECT value FROM json_each(?))",
                (id_blob,),
            ).fetchone()[0]
        except sqlite3.Error:
            # A row whose args SQLite cannot parse (not written by this store, or damaged):
            # read the rows one by one below, so that it fails alone. The statement's error
            # leaves the transaction and the UPDATE above as they were.
            blob = None
        if blob is not None:
            by_id = {r[0]: r for r in loads(blob)}
            out = []
            for id in ids:
                r = by_id[id]
                if type(r[2]) is not dict:  # JSON, but not an object: not arguments
                    poison.append((not_args(r[2]), now, id))
                    continue
                out.append(
                    JobRecord(
                        r[0],
                        r[1],
                        r[2],
                        "running",
                        r[3],
                        r[4],
                        None,
                        r[5],
                        float(r[6]),
                        now,
                        None,
                        float(r[7]),
                        r[8],
                        lease_until,
                        worker,
                        r[9],
                    )
                )
            if poison:
                fail_poison(c, poison, moves)
            return out, moves
        found = c.execute(
            f"SELECT {COLUMNS} FROM jobs WHERE id IN (SELECT value FROM json_each(?))", (id_blob,)
        )
    else:
        marks = ",".join("?" * len(ids))
        c.execute(
            f"UPDATE jobs SET {_TAKE} WHERE id IN ({marks})", (lease_until, now, worker, *ids)
        )
        found = c.execute(f"SELECT {COLUMNS} FROM jobs WHERE id IN ({marks})", ids)
    rows = {r[0]: r for r in found}
    out = []
    poison = []
    for id in ids:
        rec, bad = decode_row(rows[id])
        if bad is None:
            out.append(rec)
        else:
            poison.append((bad, now, id))
    if poison:
        fail_poison(c, poison, moves)
    return out, moves


def fail_poison(c: sqlite3.Connection, poison: list[tuple[str, float, int]], moves: Moves) -> None:
    """Jobs just claimed whose row cannot be decoded: `failed` with the reason, in the
    claim's transaction, so no worker gets them and no later claim trips on them."""
    c.executemany(
        "UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, lease_until = NULL "
        "WHERE id = ?",
        poison,
    )
    _move(moves, "running", "failed", len(poison))


# -- finish -----------------------------------------------------------------------------------

# The lease guard and the run fence: only the holder, on the run (claim) that ended.
_HELD = "AND worker = ? AND status = 'running' AND runs = ?"


def finish_rows(
    c: sqlite3.Connection,
    ok: list[tuple[Any, ...]],
    retry: list[tuple[Any, ...]],
    final: list[tuple[Any, ...]],
) -> tuple[None, Moves]:
    """ok: (result JSON, now, id, worker, run); retry: (error, run_at, id, worker, run);
    final: (status, error, now, id, worker, run). The statuses are the
    runner's (`Outcome.status`): written as given."""
    moves: Moves = {}
    if ok:
        n = c.executemany(
            "UPDATE jobs SET status = 'succeeded', result = ?, error = NULL, finished_at = ?, "
            f"lease_until = NULL WHERE id = ? {_HELD}",
            ok,
        ).rowcount
        _move(moves, "running", "succeeded", n)
    if retry:
        n = c.executemany(
            "UPDATE jobs SET status = 'queued', error = ?, run_at = ?, lease_until = NULL, "
            f"worker = NULL WHERE id = ? {_HELD}",
            retry,
        ).rowcount
        _move(moves, "running", "queued", n)
    for status, error, now, id, worker, run in final:  # rare: one statement each
        n = c.execute(
            "UPDATE jobs SET status = ?, error = ?, finished_at = ?, lease_until = NULL "
            f"WHERE id = ? {_HELD}",
            (status, error, now, id, worker, run),
        ).rowcount
        _move(moves, "running", status, n)
    return None, moves


def _move(moves: Moves, old: str, new: str, n: int) -> None:
    moves[old] = moves.get(old, 0) - n
    moves[new] = moves.get(new, 0) + n


# The worker is a parameter, not a field of each entry: a batch comes from one runner, and
# extracting it from every entry was a JSON parse per job in SQLite.
_HELD_J = "jobs.worker = ? AND jobs.status = 'running'"


FinishBlobs = tuple[str, str | None, str | None, str | None]  # worker, ok, retry, final


def finish_blobs(worker: str, outcomes: Sequence[Outcome]) -> FinishBlobs:
    """The JSON texts `finish_json` takes for one worker's outcomes. Raises ValueError (NaN,
    Infinity) or RecursionError (a cycle) for a result the JSON path cannot carry."""
    ok = {o.id: [o.result, o.run] for o in outcomes if o.status == "succeeded"}
    others = [o for o in outcomes if o.status != "succeeded"] if len(ok) < len(outcomes) else []
    # Error texts are extracted to text columns (->>): made storable first (see `storable`).
    retry = [[o.id, storable(o.error), o.run_at, o.run] for o in others if o.status == "queued"]
    final = [[o.id, storable(o.error), o.status, o.run] for o in others if o.status != "queued"]
    return (
        worker,
        dumps_strict(ok) if ok else None,
        dumps_strict(retry) if retry else None,
        dumps_strict(final) if final else None,
    )


def finish_json(c: sqlite3.Connection, groups: list[FinishBlobs], now: float) -> tuple[None, Moves]:
    """Outcomes, by worker: (worker, ok, retry, final) with ok: {"id": [result, run]},
    retry: [[id, error, run_at, run]], final: [[id, error, status, run]] (JSON texts,
    None when empty). Each is written only on the run that ended (the fence).

    ok is an object keyed by id: json_each gives the id as its key, with no extraction. Each
    result is wrapped in an array because `j.value` of a bare scalar is an SQL value (a
    float would come back with 15 digits), while `-> 0` copies its JSON text exactly."""
    moves: Moves = {}
    for worker, ok, retry, final in groups:
        if ok is not None:
            n = c.execute(
                "UPDATE jobs SET status = 'succeeded', result = j.value -> 0, error = NULL, "
                "finished_at = ?, lease_until = NULL FROM json_each(?) AS j "
                f"WHERE jobs.id = j.key AND {_HELD_J} AND jobs.runs = j.value ->> 1",
                (now, ok, worker),
            ).rowcount
            _move(moves, "running", "succeeded", n)
        if retry is not None:
            n = c.execute(
                "UPDATE jobs SET status = 'queued', error = j.value ->> 1, "
                "run_at = j.value ->> 2, lease_until = NULL, worker = NULL "
                f"FROM json_each(?) AS j WHERE jobs.id = j.value ->> 0 AND {_HELD_J} "
                "AND jobs.runs = j.value ->> 3",
                (retry, worker),
            ).rowcount
            _move(moves, "running", "queued", n)
        if final is not None:
            for (status,) in c.execute(
                "UPDATE jobs SET status = j.value ->> 2, error = j.value ->> 1, "
                "finished_at = ?, lease_until = NULL "
                f"FROM json_each(?) AS j WHERE jobs.id = j.value ->> 0 AND {_HELD_J} "
                "AND jobs.runs = j.value ->> 3 RETURNING status",
                (now, final, worker),
            ).fetchall():
                _move(moves, "running", status, 1)
    return None, moves


# -- purge ------------------------------------------------------------------------------------

# No index serves this: one on finished_at would be written by every finish, the hot path (a
# million jobs a minute), to help a purge that runs once a minute. The scan goes by id
# instead: ids grow with time, so old finished jobs come first, and it stops at the last job
# created before `before` (`bisect_created`), so a purge with nothing to delete reads a
# logarithm of the table's rows, not the table.
_FINISHED = "status IN ({})".format(", ".join(f"'{s}'" for s in FINISHED))
_OLD = f"id <= ? AND {_FINISHED} AND finished_at < ?"
_PROBE = "SELECT created_at FROM jobs WHERE id >= ? ORDER BY id LIMIT 1"


def purge_bound(c: sqlite3.Connection, before: float) -> int:
    """The last id a purge looks at: of a job created before `before`, and below the newest
    job, which is kept (`_next_id` numbers new jobs from it: no id is used twice)."""
    first = c.execute("SELECT min(id) FROM jobs").fetchone()[0]  # two statements: SQLite
    if first is None:  # finds min and max by one b-tree seek each, not both in one query
        return 0
    last = c.execute("SELECT max(id) FROM jobs").fetchone()[0]
    search = bisect_created(first, last - 1, before)
    try:
        id = next(search)
        while True:
            row = c.execute(_PROBE, (id,)).fetchone()
            id = search.send(math.inf if row is None else row[0])
    except StopIteration as done:
        return int(done.value)


def purge(c: sqlite3.Connection, before: float, limit: int) -> tuple[int, Moves]:
    """Delete up to `limit` finished jobs with finished_at < before, lowest id first."""
    bound = purge_bound(c, before)
    # Counted in SQL, a row per status: reading 10,000 rows back would be 10,000 steps, each
    # giving up the GIL on the writer thread and waiting to take it back from the loop.
    by_status = c.execute(
        "SELECT status, count(*), min(id), max(id) FROM "
        f"(SELECT id, status FROM jobs WHERE {_OLD} ORDER BY id LIMIT ?) GROUP BY status",
        (bound, before, limit),
    ).fetchall()
    if not by_status:
        return 0, NO_MOVES
    # Exactly the rows just counted: the first `limit` matches, so every match between the
    # lowest and the highest of them. One range, not `limit` parameters.
    lo, hi = min(r[2] for r in by_status), max(r[3] for r in by_status)
    n = c.execute(f"DELETE FROM jobs WHERE id >= ? AND {_OLD}", (lo, hi, before)).rowcount
    return n, {status: -count for status, count, _, _ in by_status}
