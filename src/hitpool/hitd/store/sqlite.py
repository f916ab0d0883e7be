"""sqlite:///path — the default store: one file, WAL, synchronous=FULL.

Throughput comes from grouping, not from cutting corners on durability: one FULL commit costs
an fsync, so every write goes through ONE writer thread that
takes whatever operations are pending (enqueues from several requests, a claim, a batch of
finishes) and runs them in ONE transaction with one fsync. Each operation's future resolves
only after that COMMIT returned, so a 202 always follows a durable commit.

If one operation in a merged transaction fails, the transaction is rolled back and each
operation is retried in a transaction of its own, so one bad operation cannot fail others.

Reads (`get`) use a second connection, inline on the event loop: a primary-key lookup is
shorter than a hop to a thread and back, WAL lets it run while the writer commits, and it
only ever sees committed jobs.
`counts()` and `queued_estimate()` answer from per-status counts that every commit updates.

A purge (retention) is a write like the others: a chunk of at most `limit` deletes, in one
transaction of the writer, so it holds the write lock for milliseconds, not minutes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..._errors import SpecError
from ..errors import StoreError, StoreUnavailable
from . import sqlite_admin as admin
from . import sqlite_ops as ops
from ._codec import COLUMNS, args_json, dumps_strict, result_json, row_record, storable
from .base import (
    EXPIRED,
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
)

T = TypeVar("T")

log = logging.getLogger("hitpool.hitd.store")

# At most this many operations share one transaction, so one commit stays short (a claim of
# a few hundred jobs plus a few hundred enqueues is a few milliseconds of work).
MAX_OPS_PER_COMMIT = 512


def connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode (we write BEGIN/COMMIT ourselves), WAL, FULL sync."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreUnavailable(f"SQLite store {path!r}: cannot switch to WAL (got {mode!r})")
    # FULL: the WAL is fsynced at every commit, so a committed job survives power loss,
    # not only a process crash (NORMAL would lose the last commits on power loss).
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


# An operation runs on the writer thread inside an open transaction and returns its result and
# the jobs it moved between statuses (applied to the counts only once the commit succeeded).
Op = Callable[[sqlite3.Connection], tuple[Any, ops.Moves]]


class SQLiteStore(Store):
    """The default durable store. See the module docstring for how writes are grouped."""

    durable: ClassVar[bool] = True
    supports_handoff: ClassVar[bool] = True

    def __init__(self, path: str | Path, *, use_json: bool | None = None) -> None:
        """`use_json`: move batches as JSON (see sqlite_ops); None picks it when SQLite can."""
        if str(path) in ("", ":memory:"):
            # The writer and the reader are two connections: two different in-memory databases.
            raise SpecError("store", "an in-memory SQLite database cannot be shared: use memory://")
        self.path = str(path)
        self._use_json = use_json
        self._ops: queue.SimpleQueue[tuple[Op, asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._writer_thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rconn: sqlite3.Connection | None = None
        self._counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        self._closed = False
        self._broken: StoreError | None = None  # set if the writer thread died, or the file
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened
        self._handoff: Handoff | None = None
        self._handed = 0  # jobs handed off in committed transactions (writer thread)
        self._delivered = 0  # of those, delivered to the runner (loop thread)
        self._txn_handed = 0  # handed off in the transaction under way (writer thread)
        self._txn_after: list[Callable[[], None]] = []
        self.commits = 0  # transactions committed, for measurements (ops / commits = grouping)

    # -- opening and closing -------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        try:
            parent = Path(self.path).parent
            if not parent.is_dir():
                raise StoreUnavailable(
                    f"SQLite store {self.path!r}: directory {str(parent)!r} does not exist"
                )
            conn = await asyncio.to_thread(self._open_conn)
        except StoreUnavailable:
            raise
        except (sqlite3.Error, OSError) as e:
            raise StoreUnavailable(f"SQLite store {self.path!r}: {e}") from e
        # Counted once here (a scan of the table), then kept by every commit.
        for status, n in conn.execute("SELECT status, count(*) FROM jobs GROUP BY status"):
            self._counts[status] = n
        st = os.stat(self.path)
        self._file = (st.st_dev, st.st_ino)
        self._rconn = connect(self.path)
        self._writer_thread = threading.Thread(
            target=self._write_loop, args=(conn,), name="hitd-sqlite-write", daemon=True
        )
        self._writer_thread.start()

    def _open_conn(self) -> sqlite3.Connection:
        conn = connect(self.path)
        conn.executescript(ops.SCHEMA)
        ops.migrate(conn)
        if self._use_json is None or self._use_json:
            self._use_json = ops.has_json(conn)
        return conn

    async def close(self) -> None:
        if self._closed or self._writer_thread is None:
            self._closed = True
            return
        self._closed = True
        self._ops.put(None)  # the writer finishes what is queued before the sentinel
        await asyncio.to_thread(self._writer_thread.join)
        if self._rconn is not None:
            self._rconn.close()
            self._rconn = None

    # -- the writer thread ---------------------------------------------------------------

    async def _write(self, op: Op) -> Any:
        if self._closed or self._loop is None:
            raise StoreError("the SQLite store is closed (or was never opened)")
        if self._broken is not None:
            raise self._broken
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._ops.put((op, fut))
        if self._broken is not None and not fut.done():
            fut.set_exception(self._broken)  # the writer died: nobody will take this op
        return await fut

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        stop = False
        try:
            while not stop:
                first = self._ops.get()
                if first is None:
                    break
                batch = [first]
                while len(batch) < MAX_OPS_PER_COMMIT:
                    try:
                        item = self._ops.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                try:
                    self._run_batch(conn, batch)
                except BaseException as e:  # never leave a caller waiting on a dead thread
                    err = StoreError(f"the SQLite writer stopped: {e!r}")
                    self._broken = err
                    log.critical("%s; the store takes no more writes", err, exc_info=True)
                    rest = [batch]
                    while True:
                        try:
                            item = self._ops.get_nowait()
                        except queue.Empty:
                            break
                        if item is not None:
                            rest.append([item])
                    for b in rest:
                        self._fail(b, err)
                    return
        finally:
            conn.close()

    def _apply(self, moves: ops.Moves) -> None:
        # On the writer thread, after the commit; the loop thread only reads the counts.
        counts = self._counts
        for status, n in moves.items():
            counts[status] += n

    def _fail(self, batch: list[tuple[Op, asyncio.Future[Any]]], err: StoreError) -> None:
        assert self._loop is not None
        try:
            done: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = [
                (fut, None, err) for _, fut in batch
            ]
            self._loop.call_soon_threadsafe(_resolve, done)
        except RuntimeError:
            pass

    def _gone(self) -> str | None:
        """Why the file this store opened is no longer the one at its path, or None. SQLite
        keeps writing to an open file that was deleted (its directory `rm -rf`'d): every
        commit would go into an inode nobody can open again, and a restart finds none of
        those jobs. So each transaction checks first (one stat)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return f"SQLite store {self.path!r}: the database file was deleted"
        except OSError as e:
            return f"SQLite store {self.path!r}: cannot stat the database file: {e}"
        if (st.st_dev, st.st_ino) != self._file:
            return f"SQLite store {self.path!r}: the database file was replaced"
        return None

    def health(self) -> str | None:
        if self._broken is not None:
            return str(self._broken)
        return None if self._file is None or self._closed else self._gone()

    def _run_batch(
        self, conn: sqlite3.Connection, batch: list[tuple[Op, asyncio.Future[Any]]]
    ) -> None:
        done: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        if self._broken is None and (why := self._gone()) is not None:
            # For good: the open connection points at the old inode, and what is committed
            # there is lost. Every write from now on answers StoreUnavailable (503).
            self._broken = StoreUnavailable(f"{why}; restart hitd once it is restored")
            log.critical("%s: the store takes no more writes", why)
        if self._broken is not None:
            self._fail(batch, self._broken)
            return
        after: list[Callable[[], None]] = []  # handoffs, run on the loop once committed
        try:
            self._txn_begin()
            conn.execute("BEGIN IMMEDIATE")
            outs = [op(conn) for op, _ in batch]
            conn.execute("COMMIT")
            self.commits += 1
            after += self._txn_committed()
            for (_, fut), (result, moves) in zip(batch, outs, strict=True):
                self._apply(moves)
                done.append((fut, result, None))
        except Exception:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            # Isolate the failure: each operation alone, in its own transaction.
            for op, fut in batch:
                try:
                    self._txn_begin()
                    conn.execute("BEGIN IMMEDIATE")
                    result, moves = op(conn)
                    conn.execute("COMMIT")
                    self.commits += 1
                    after += self._txn_committed()
                    self._apply(moves)
                    done.append((fut, result, None))
                except Exception as e:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    err = e if isinstance(e, StoreError) else StoreError(f"SQLite: {e}")
                    err.__cause__ = e if err is not e else None
                    done.append((fut, None, err))
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(_resolve, done, after)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more

    # Handoff bookkeeping. Jobs handed off but not yet delivered (the delivery runs on the
    # loop after the commit) must count against the runner's room, or several enqueues in a
    # row would each see the same room. `_handed` is written only by the writer thread,
    # `_delivered` only by the loop, so neither loses an update; a stale read only hands off
    # less.

    def _txn_begin(self) -> None:
        self._txn_handed = 0
        self._txn_after = []

    def _txn_committed(self) -> list[Callable[[], None]]:
        self._handed += self._txn_handed
        after, self._txn_after = self._txn_after, []
        self._txn_handed = 0
        return after

    # -- the contract --------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], now: float) -> list[tuple[int, bool]]:
        if not jobs:
            return []
        n = len(jobs)
        if self._use_json and all(j.key is None for j in jobs):
            try:
                blob = dumps_strict([[j.task, j.args, j.max_attempts, j.run_at] for j in jobs])
            except (ValueError, RecursionError):
                # Not JSON (NaN, Infinity, too deep): the rows path names the job; nothing
                # that is not strict JSON is ever stored (see `_codec`).
                pass
            else:
                h = self._handoff
                ids: list[tuple[int, bool]]
                if h is None or not all(j.run_at is None or j.run_at <= now for j in jobs):
                    ids, _ = await self._write(lambda c: ops.enqueue_json(c, blob, n, now))
                    return ids
                ids, _ = await self._write(self._handoff_op(h, jobs, blob, now))
                return ids
        rows = [
            (j.task, _args(jobs, i), j.max_attempts, j.run_at, j.key) for i, j in enumerate(jobs)
        ]
        result: list[tuple[int, bool]] = await self._write(lambda c: ops.enqueue_rows(c, rows, now))
        return result

    def set_handoff(self, handoff: Handoff | None) -> None:
        self._handoff = handoff

    def _handoff_op(self, h: Handoff, jobs: Sequence[NewJob], blob: str, now: float) -> Op:
        worker, lease_until = h.worker, now + h.lease_s

        def room() -> int:  # on the writer thread
            return h.room() - (self._handed - self._delivered) - self._txn_handed

        def op(c: sqlite3.Connection) -> tuple[Any, ops.Moves]:
            (ids, k), moves = ops.enqueue_json(c, blob, len(jobs), now, (worker, lease_until, room))
            if k:
                self._txn_handed += k
                handed = [id for id, _ in ids[:k]]
                self._txn_after.append(lambda: self._deliver(h, handed, jobs[:k]))
            return (ids, k), moves

        return op

    def _deliver(self, h: Handoff, ids: list[int], jobs: Sequence[NewJob]) -> None:
        self._delivered += len(ids)
        try:
            h.deliver(ids, jobs)
        except Exception:  # the jobs are committed: never fail the enqueue over this
            log.exception(
                "handing %d jobs to the runner failed; their leases will expire", len(ids)
            )

    async def claim(self, worker: str, limit: int, now: float, lease_s: float) -> list[JobRecord]:
        if limit <= 0:
            return []
        use_json = bool(self._use_json)
        result: list[JobRecord] = await self._write(
            lambda c: ops.claim(c, worker, limit, now, now + lease_s, use_json)
        )
        return result

    async def renew(self, ids: Sequence[int], worker: str, now: float, lease_s: float) -> None:
        if not ids:
            return
        rows = [(now + lease_s, id, worker) for id in ids]

        def op(c: sqlite3.Connection) -> tuple[None, ops.Moves]:
            c.executemany(
                "UPDATE jobs SET lease_until = ? WHERE id = ? AND worker = ? "
                "AND status = 'running'",
                rows,
            )
            return None, ops.NO_MOVES

        await self._write(op)

    async def finish(self, outcomes: Sequence[Outcome], now: float) -> None:
        if not outcomes:
            return
        if self._use_json:
            # By worker (one runner: one group), so the SQL takes the worker as a parameter.
            workers = {o.worker for o in outcomes}
            groups = (
                [(outcomes[0].worker, outcomes)]
                if len(workers) == 1
                else [(w, [o for o in outcomes if o.worker == w]) for w in workers]
            )
            try:
                blobs = [ops.finish_blobs(w, batch) for w, batch in groups]
            except (ValueError, RecursionError):  # NaN, Infinity or a cycle: the rows path
                pass
            else:
                await self._write(lambda c: ops.finish_json(c, blobs, now))
                return
        ok_rows = [
            (result_json(o.result), now, o.id, o.worker, o.run)
            for o in outcomes
            if o.status == "succeeded"
        ]
        retry_rows = [
            (storable(o.error), o.run_at, o.id, o.worker, o.run)
            for o in outcomes
            if o.status == "queued"
        ]
        final_rows = [
            (o.status, storable(o.error), now, o.id, o.worker, o.run)
            for o in outcomes
            if o.status in ("failed", "dead")
        ]
        await self._write(lambda c: ops.finish_rows(c, ok_rows, retry_rows, final_rows))

    async def release(self, ids: Sequence[int], worker: str) -> None:
        if not ids:
            return
        rows = [(id, worker) for id in ids]

        def op(c: sqlite3.Connection) -> tuple[None, ops.Moves]:
            cur = c.executemany(
                "UPDATE jobs SET status = 'queued', attempts = attempts - 1, worker = NULL, "
                "lease_until = NULL, started_at = NULL "
                "WHERE id = ? AND worker = ? AND status = 'running'",
                rows,
            )
            return None, {"running": -cur.rowcount, "queued": cur.rowcount}

        await self._write(op)

    async def cancel(self, id: int, now: float | None = None) -> bool:
        def op(c: sqlite3.Connection) -> tuple[bool, ops.Moves]:
            cur = c.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ? "
                "WHERE id = ? AND status = 'queued'",
                (now, id),
            )
            return cur.rowcount == 1, {"queued": -cur.rowcount, "cancelled": cur.rowcount}

        result: bool = await self._write(op)
        return result

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # Reads run inline on the loop: a primary-key lookup is shorter than a hop to a
        # reader thread and back. In WAL mode a reader never waits for the writer.
        if self._closed or self._rconn is None:
            raise StoreError("the SQLite store is closed (or was never opened)")
        try:
            return fn(self._rconn)
        except sqlite3.Error as e:
            raise StoreError(f"SQLite: {e}") from e

    async def get(self, id: int) -> JobRecord | None:
        def fn(c: sqlite3.Connection) -> JobRecord | None:
            r = c.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (id,)).fetchone()
            return None if r is None else row_record(r)

        return await self._read(fn)

    async def counts(self) -> dict[str, int]:
        """From the counts kept by every commit: exact while this store is the only writer of
        the file (one hitd per SQLite file), and free, where a GROUP BY over a million jobs
        takes half a second."""
        if self._closed or self._writer_thread is None:
            raise StoreError("the SQLite store is closed (or was never opened)")
        return dict(self._counts)

    def queued_estimate(self) -> int:
        return self._counts["queued"]

    async def holders(self) -> dict[str, int]:
        def fn(c: sqlite3.Connection) -> dict[str, int]:
            rows = c.execute(
                "SELECT worker, count(*) FROM jobs WHERE status = 'running' GROUP BY worker"
            )
            return {w: n for w, n in rows if w is not None}

        return await self._read(fn)

    async def expire(self, worker: str) -> int:
        def op(c: sqlite3.Connection) -> tuple[int, ops.Moves]:
            cur = c.execute(
                "UPDATE jobs SET lease_until = ? WHERE worker = ? AND status = 'running'",
                (EXPIRED, worker),
            )
            return cur.rowcount, ops.NO_MOVES

        result: int = await self._write(op)
        return result

    async def purge(self, before: float, limit: int) -> int:
        if limit <= 0:
            return 0
        # Through the writer like every write: the counts move with the commit.
        result: int = await self._write(lambda c: ops.purge(c, before, limit))
        return result

    # -- administration (see Store; the SQL is in sqlite_admin) ----------------------------

    async def list_jobs(self, query: JobQuery) -> JobPage:
        return await self._read(lambda c: admin.list_jobs(c, query))

    async def retry(self, id: int, now: float) -> RetryOutcome:
        result: RetryOutcome = await self._write(lambda c: admin.retry(c, id, now))
        return result

    async def retry_all(self, status: JobStatus, now: float, limit: int) -> int:
        result: int = await self._write(lambda c: admin.retry_all(c, status, now, limit))
        return result

    async def delete(self, id: int) -> DeleteOutcome:
        result: DeleteOutcome = await self._write(lambda c: admin.delete(c, id))
        return result

    async def oldest_due(self, now: float) -> float | None:
        return await self._read(lambda c: admin.oldest_due(c, now))


def _args(jobs: Sequence[NewJob], i: int) -> str:
    """Job i's arguments as strict JSON, or StoreError naming the job (see `_codec`)."""
    try:
        return args_json(jobs[i].args)
    except ValueError as e:
        raise StoreError(f"job {i} of the batch: {e}") from e


def _resolve(
    done: list[tuple[asyncio.Future[Any], Any, BaseException | None]],
    after: list[Callable[[], None]] = [],  # noqa: B006 - never mutated
) -> None:
    for fn in after:
        fn()
    for fut, result, err in done:
        if fut.done():
            continue  # the caller was cancelled; the write happened anyway (at least once)
        if err is None:
            fut.set_result(result)
        else:
            fut.set_exception(err)
