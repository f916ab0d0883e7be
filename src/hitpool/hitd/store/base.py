"""The job store contract: what every backend (memory, SQLite, PostgreSQL) promises.

A store holds jobs and their lifecycle; it never runs them. Times are plain floats (seconds
since the epoch) passed in by the caller, so a store never reads a clock and tests drive it
with a fake one.

Promises every backend keeps (and `tests/hitd/test_hitd_store_contract.py` checks):

- `enqueue` writes a whole batch in ONE transaction, committed (durably, for a durable store)
  before it returns. A `key` already held by an *active* job (queued or running) returns that
  job's id with `created=False`; once the job is finished the key is free again.
- `claim` hands out due queued jobs (`run_at <= now`, oldest `run_at` first, then id) and
  running jobs whose lease expired (their worker died: at least once) under another
  worker: a claimer is alive, so the jobs it holds run in it, and it never takes them
  back itself (a wall clock stepped past the lease would run each of them twice, and make
  one on its last attempt `dead` while it runs); its renewals carry them on. A claimed job is
  `running`, `attempts += 1`, `runs += 1`, `lease_until = now + lease_s`, `worker` set.
  An expired job that
  has already used `max_attempts` attempts is not claimed again: it becomes `dead`.
- `renew`, `finish` and `release` only touch jobs still held by that worker: a worker whose
  lease expired and whose job was claimed by another cannot overwrite the newer attempt.
  `finish` is fenced by the run too (`Outcome.run`: the job's `runs` when it was claimed).
  `runs` counts every claim of the job and nothing else moves it: a release gives the
  attempt back and an admin retry resets `attempts`, but neither touches `runs`, so a run
  whose lease was lost can never match a later claim, even one by its own worker.
- `finish` records a batch of outcomes in one transaction, each with the status the runner
  decided (`Outcome.status`, from `hitpool.hitd.lifecycle`): the rules live once, in
  Python, and a store only writes them (saq's `Queue.finish`/`retry` over its backends'
  `_finish`/`_retry`). `succeeded` keeps the result; `queued` is a retry at `run_at`,
  error kept; `failed` and `dead` are final.
- `release` puts held jobs back to `queued` at once and does not count the attempt (jobs
  claimed that never started, on graceful shutdown).
- `cancel` cancels a job that has not started (queued, due or not).
- Optional fast path (`set_handoff`, SQLite and PostgreSQL; `HandoffContract` in the tests):
  a store may give freshly enqueued due jobs straight to an attached runner, claimed in the
  enqueue's own transaction, but never more than the runner's `room()` (counting enqueues
  still under way) and only when no older due job is waiting (queued, or running on an
  expired lease), so jobs still start oldest first. It saves a claim per job.
- `expire(worker)` ends the leases of a worker known to be dead (a restarted server finds
  its previous process gone), so its jobs run again at once instead of after `lease_s`.
- `purge(before, limit)` deletes up to `limit` finished jobs (succeeded, failed, dead,
  cancelled) whose `finished_at < before`, lowest id first, in ONE transaction, and returns
  how many. It never touches a queued or running job; `counts()` drops with it; a purged
  job's `get()` is None. A job without `finished_at` (cancelled without a time) is kept, and
  so is the newest job (the highest id): SQLite numbers new jobs from it, and an id used
  again would show a client polling an old job someone else's.
  Ids grow with time, so a store may stop looking at the first job created at or after
  `before`: such a job cannot have finished before it. Retention (`hitd --retention`) calls
  it in chunks, so each transaction stays short.

Administration (`list_jobs`, `retry`, `retry_all`, `delete`, `oldest_due`; the contract is
in `tests/hitd/test_hitd_store_admin.py`): a listing is newest first, keyset-paginated by
id and bounded in what it reads; a retry gives a failed or dead job fresh attempts and never
lets two active jobs share a key; a delete takes one finished job and, like `purge`, keeps
the newest. Their rules are the functions at the end of this module.

Queue depth for the HTTP side's 429 decision: `queued_estimate()` is a plain (non-async)
method that answers from a counter kept in memory, never waiting on the database. It is
exact for a store one process owns (memory, SQLite: the counter moves with every committed
enqueue, claim, retry, release and cancel). For PostgreSQL, shared by several processes, it
moves with this process's commits and the other processes' announcements (NOTIFY), and is
read from the table every second, so every process's claims show within a second.
`counts()` is the exact, slower answer (one query over the table).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Generator, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, NamedTuple, Protocol
from urllib.parse import urlsplit

from mypy_extensions import mypyc_attr

from ..._errors import SpecError

JobStatus = Literal["queued", "running", "succeeded", "failed", "dead", "cancelled"]
STATUSES: tuple[JobStatus, ...] = ("queued", "running", "succeeded", "failed", "dead", "cancelled")
ACTIVE: tuple[JobStatus, ...] = ("queued", "running")
FINISHED: tuple[JobStatus, ...] = ("succeeded", "failed", "dead", "cancelled")
# The statuses an attempt can end in (`Outcome.status`).
OutcomeStatus = Literal["succeeded", "queued", "failed", "dead"]
EXPIRED = float("-inf")  # the lease_until of an expired lease: before any `now`


# The three records below are NamedTuples, not frozen dataclasses: each is built once per job
# on the hot path, where a frozen dataclass's __init__ pays one object.__setattr__ per field.
# Immutable all the same.


class NewJob(NamedTuple):
    """A job to enqueue. `run_at` is when it becomes due; None (the usual case) means at
    once: the store uses the enqueue's `now`, so the job is due when it is created."""

    task: str
    args: dict[str, Any]
    run_at: float | None = None
    max_attempts: int = 3
    key: str | None = None


# What `GET /jobs/{id}` says: the stored status, with a queued job that is not due yet (a
# delay, or the backoff before a retry) shown as `scheduled`. Stores keep one `queued`
# status for both (one index of waiting jobs, ordered by run_at).
ShownStatus = Literal["queued", "scheduled", "running", "succeeded", "failed", "dead", "cancelled"]


def shown_status(status: JobStatus, run_at: float, now: float) -> ShownStatus:
    """`scheduled` for a queued job due after `now`, else the stored status."""
    return "scheduled" if status == "queued" and run_at > now else status


def iso(t: float | None) -> str | None:
    """Seconds since the epoch -> ISO-8601 UTC with milliseconds, e.g. 2026-11-22T03:00:00.123Z."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def storable(text: str | None) -> str | None:
    """`text` as every store can keep it in a text column: a NUL (PostgreSQL refuses it) as
    `\\x00`, a lone surrogate (no UTF-8 for it; an error naming a file from a non-UTF-8 disk
    has one) as `\\udcXX`. For error texts, which a worker writes as they come: one such
    outcome failed its whole finish batch. JSON columns need none of this: the encoders
    escape both."""
    if text is None or ("\x00" not in text and text.isascii()):
        return text
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def bisect_created(first: int, last: int, before: float) -> Generator[int, float, int]:
    """Where a purge can stop looking: the last id (among first..last) of a job created
    before `before`. A bisection without I/O, for the SQL stores to drive: it yields an id
    to probe and is sent the `created_at` of the first job at or after that id (math.inf if
    there is none); it returns the bound (first - 1 when no job is older).

    Why: with no index on `finished_at` (see `purge`), a purge scans jobs from the lowest
    id, and with nothing old enough to delete it would scan the whole table (under the
    write lock, every minute). Ids grow with time, so no job
    above the bound can have finished before `before`; bisecting costs ~20 primary-key
    lookups. Ids that grow only roughly with `created_at` (clocks of several processes) can
    only make a job near the bound wait for a later purge, never delete a wrong one."""
    lo, hi = first - 1, last
    while lo < hi:
        mid = (lo + hi + 1) // 2
        created = yield mid
        if created < before:
            lo = mid
        else:
            hi = mid - 1
    return lo


class JobRecord(NamedTuple):
    """One job as the store holds it."""

    id: int
    task: str
    args: dict[str, Any]
    status: JobStatus
    attempts: int
    max_attempts: int
    result: Any
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    run_at: float
    key: str | None
    lease_until: float | None
    worker: str | None
    # Claims of this job so far, never reset or given back (unlike `attempts`): the fence
    # of a finish (`Outcome.run`). Not shown by the API.
    runs: int

    def to_json(self, now: float) -> dict[str, Any]:
        """The body of `GET /jobs/{id}` at `now`: times as ISO-8601 UTC strings or null, and
        the status a client sees (`shown_status`: a queued job not due yet is `scheduled`).
        `run_at` is when a job waiting to start is due; null once it has started."""
        waiting = self.status == "queued"
        return {
            "id": self.id,
            "task": self.task,
            "args": self.args,
            "status": shown_status(self.status, self.run_at, now),
            "attempts": self.attempts,
            "result": self.result,
            "error": self.error,
            "created_at": iso(self.created_at),
            "run_at": iso(self.run_at) if waiting else None,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
        }


class Outcome(NamedTuple):
    """How one attempt of a job ended, and the status the job takes for it, decided by the
    runner with `hitpool.hitd.lifecycle` (`outcome_status`); a store only writes it.

    `run` is the claim that ended (the job's `runs` when it was claimed): the fence. A
    store writes the outcome only while the job is still `running`, held by `worker`, on
    that run, so a worker whose lease was taken over cannot overwrite the newer run's
    outcome, even one that shares its worker name: `runs` only grows, so an admin retry
    (which resets `attempts`) followed by a claim by the same runner gets a new number.

    `status`: `succeeded` (with `result`), `queued` again at `run_at` (a retry, with the
    `error` that caused it), `failed` or `dead` (with `error`).
    """

    id: int
    worker: str
    run: int
    status: OutcomeStatus
    result: Any = None
    error: str | None = None
    run_at: float | None = None


class Handoff(Protocol):
    """A runner that takes fresh jobs straight from `enqueue` (see `Store.set_handoff`)."""

    @property
    def worker(self) -> str: ...

    @property
    def lease_s(self) -> float: ...

    def room(self) -> int:
        """How many jobs it can take now. Called on the store's writer thread: a plain read."""
        ...

    def committed(self) -> None:
        """Another process committed queued jobs (a store shared by several processes says
        so): claim them if a worker is free. Called on the event loop; must not raise."""
        ...

    def deliver(self, ids: Sequence[int], jobs: Sequence[NewJob]) -> None:
        """Jobs claimed for it, committed: `jobs[i]`, as given to `enqueue`, is job `ids[i]`,
        on its first attempt, leased to `worker` for `lease_s` from the enqueue's `now`.
        Called on the event loop; must not raise. Their `runs` is 1: a fresh row.

        The jobs as they came, not a `JobRecord` each: the runner needs only the id, task,
        arguments and max_attempts, not fifteen fields built per job."""
        ...


_URL_FORMS = "use memory://, sqlite:///path.db or postgresql://user@host:port/db"


@mypyc_attr(allow_interpreted_subclasses=True)  # memory.py, postgresql.py and tests' fakes
class Store(ABC):
    """The abstract job store. Pick a backend with `Store.from_url(url)`."""

    durable: ClassVar[bool]
    """False for memory://: its jobs die with the process."""

    supports_handoff: ClassVar[bool] = False
    # True when `finish_and_claim` does both in one round trip: the runner then claims for
    # the workers an outcome freed in that outcome's finish, not in a claim of its own.
    claims_with_finish: ClassVar[bool] = False

    def set_handoff(self, handoff: Handoff | None) -> None:
        """Attach (or detach, with None) a runner that takes fresh due jobs straight from
        `enqueue`. A no-op for stores without the fast path (`supports_handoff` is False)."""
        return None

    @staticmethod
    def from_url(url: str) -> Store:
        """memory://, sqlite:///relative.db, sqlite:////absolute.db, postgresql://...

        The backend module is imported only when its URL is used (asyncpg stays optional).
        """
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError as e:  # e.g. "Invalid IPv6 URL": an open bracket
            raise SpecError("store", f"bad store URL ({e}): {_URL_FORMS}") from e
        if scheme == "memory":
            from .memory import MemoryStore

            return MemoryStore()
        if scheme == "sqlite":
            # SQLAlchemy's convention: sqlite:///hitd.db is relative, sqlite:////var/hitd.db
            # is absolute. The part after "sqlite://" must start with "/".
            rest = url[len("sqlite://") :]
            if not rest.startswith("/") or len(rest) < 2:
                raise SpecError(
                    "store",
                    f"bad SQLite URL {url!r}: use sqlite:///relative/path.db "
                    "or sqlite:////absolute/path.db",
                )
            from .sqlite import SQLiteStore

            return SQLiteStore(rest[1:])
        if scheme in ("postgresql", "postgres"):
            try:
                module = importlib.import_module(".postgresql", __package__)
            except ImportError as e:  # asyncpg is the optional `postgres` extra
                raise SpecError(
                    "store", f"postgresql:// needs asyncpg: pip install 'hitpool[postgres]' ({e})"
                ) from e
            store: Store = module.PostgreSQLStore(url)
            return store
        raise SpecError("store", f"unknown store URL {url!r}: {_URL_FORMS}")

    def health(self) -> str | None:
        """Why the store cannot take jobs now (for `/healthz`), or None. Cheap, never waits:
        it reports what the store already knows (a SQLite file deleted under it)."""
        return None

    @abstractmethod
    async def open(self) -> None:
        """Connect and create the schema. Raises StoreUnavailable when it cannot."""

    @abstractmethod
    async def close(self) -> None:
        """Finish pending writes and close. Safe to call twice."""

    @abstractmethod
    async def enqueue(self, jobs: Sequence[NewJob], now: float) -> list[tuple[int, bool]]:
        """Add jobs in ONE committed transaction. Returns (id, created) per job, in order."""

    @abstractmethod
    async def claim(self, worker: str, limit: int, now: float, lease_s: float) -> list[JobRecord]:
        """Take up to `limit` due jobs (and expired leases) for `worker`; see the module doc."""

    @abstractmethod
    async def renew(self, ids: Sequence[int], worker: str, now: float, lease_s: float) -> None:
        """Extend the leases `worker` still holds to `now + lease_s`."""

    @abstractmethod
    async def finish(self, outcomes: Sequence[Outcome], now: float) -> None:
        """Record outcomes in one transaction; ignored for jobs no longer held by that worker."""

    async def finish_and_claim(
        self, outcomes: Sequence[Outcome], now: float, worker: str, limit: int, lease_s: float
    ) -> list[JobRecord]:
        """`finish(outcomes, now)`, then `claim(worker, limit, now, lease_s)`: the workers
        those outcomes freed take their next jobs. A store may do both in one round trip.
        After an error the outcomes may or may not be recorded (this default commits the
        finish before it claims): recording them again is harmless, the lease guard and the
        run fence ignore an outcome for a job no longer held on that run."""
        await self.finish(outcomes, now)
        return await self.claim(worker, limit, now, lease_s)

    @abstractmethod
    async def release(self, ids: Sequence[int], worker: str) -> None:
        """Put jobs `worker` holds back to queued, due now, without counting the attempt."""

    @abstractmethod
    async def get(self, id: int) -> JobRecord | None:
        """The job, or None."""

    @abstractmethod
    async def cancel(self, id: int, now: float | None = None) -> bool:
        """Cancel a queued job. True only if it was queued (now cancelled, finished_at=now)."""

    @abstractmethod
    async def counts(self) -> dict[str, int]:
        """Jobs per status, every status present (exact: one query)."""

    @abstractmethod
    def queued_estimate(self) -> int:
        """Queued jobs, from a counter in memory: cheap enough for every request's 429 check."""

    @abstractmethod
    async def holders(self) -> dict[str, int]:
        """Workers holding running jobs -> how many each holds (to find dead ones at start)."""

    @abstractmethod
    async def expire(self, worker: str) -> int:
        """`worker` is known to be dead: its leases expire now, so its running jobs are
        claimed by the next claim (their attempt counted). Returns how many."""

    @abstractmethod
    async def purge(self, before: float, limit: int) -> int:
        """Delete up to `limit` finished jobs with `finished_at < before`, lowest id first,
        in one transaction. Returns how many; see the module doc."""

    # -- administration: the job listing and the dashboard's actions ------------------------
    #
    # Added for `GET /jobs`, `POST /jobs/{id}/retry`, `POST /jobs/retry` and
    # `DELETE /jobs/{id}?purge=1` (hitd/admin.py). The rules are here, in `RETRYABLE`,
    # `retry_fields` and `pick_retries`; each backend only reads and writes rows.

    @abstractmethod
    async def list_jobs(self, query: JobQuery) -> JobPage:
        """Newest first: the jobs with `id < query.before` matching the query's filters, at
        most `query.limit`, looking at no more than `query.scan` jobs (so that a filter that
        matches little never scans the whole table). See `JobPage` for the cursor."""

    @abstractmethod
    async def retry(self, id: int, now: float) -> RetryOutcome:
        """Make a job run now: a failed or dead job is queued again, due at `now`, with its
        attempts reset (its last error kept until it runs); a queued job not yet due becomes
        due at `now`; a queued job already due is left as it is ("retried" too). Refused for
        running, succeeded and cancelled jobs, and for a job whose key an active job holds
        (two active jobs never share a key)."""

    @abstractmethod
    async def retry_all(self, status: JobStatus, now: float, limit: int) -> int:
        """`retry` for up to `limit` jobs of `status` (failed or dead), lowest id first, in one
        transaction; a job whose key is held (or taken by a lower id of the same call) is
        skipped. Returns how many were queued again."""

    @abstractmethod
    async def delete(self, id: int) -> DeleteOutcome:
        """Delete one finished job (succeeded, failed, dead, cancelled). Refused for an active
        job (cancel it first) and for the newest job, which `purge` keeps for the same
        reason: SQLite numbers new jobs from it, and an id handed out again would show a
        client polling its old job someone else's."""

    @abstractmethod
    async def oldest_due(self, now: float) -> float | None:
        """The `run_at` of the longest-waiting queued job that is due (`run_at <= now`), or
        None: the queue latency is `now` minus it."""


# -- the administration contract's values and rules ----------------------------------------

RETRYABLE: tuple[JobStatus, ...] = ("failed", "dead")
RetryOutcome = Literal["retried", "missing", "refused"]
DeleteOutcome = Literal["deleted", "missing", "active", "newest"]
MAX_LIST = 500  # jobs one listing returns at most
DEFAULT_SCAN = 10_000  # jobs one listing looks at, at most
# Characters of args, result and error one listing returns at most (the job that passes it
# included, so a page always moves the cursor on). Jobs of a megabyte each would otherwise
# make a page of MAX_LIST half a gigabyte, read and encoded on the event loop.
MAX_PAGE_CHARS = 4 * 1024 * 1024


class JobQuery(NamedTuple):
    """A listing: filters (None: any), a keyset cursor and bounds. `q` is a substring of the
    job's args as stored: compact JSON, e.g. `"user":"ann"` or just `ann`."""

    statuses: tuple[JobStatus, ...] | None = None
    task: str | None = None
    q: str | None = None
    before: int | None = None  # only ids below this (the cursor of the previous page)
    limit: int = 50
    scan: int = DEFAULT_SCAN
    max_chars: int = MAX_PAGE_CHARS  # see MAX_PAGE_CHARS

    def matches(self, status: str, task: str, args_json: str) -> bool:
        """The filters, for a store that filters in Python (memory)."""
        return (
            (self.statuses is None or status in self.statuses)
            and (self.task is None or task == self.task)
            and (self.q is None or self.q in args_json)
        )


class JobPage(NamedTuple):
    """One page, newest first. `next_before`: the cursor of the next page (pass it as
    `before`), or None when no job below was left unexamined. It is the id of the last job
    returned when the page is full (`limit` jobs, or `max_chars` of their args, results and
    errors), else the lowest id looked at when the scan bound was reached first, so a page
    may hold fewer than `limit` jobs and still have a next one."""

    jobs: list[JobRecord]
    next_before: int | None


def stored_chars(args: str, result: str | None, error: str | None) -> int:
    """What a job adds to a page's `max_chars`: its args and result as stored (JSON) and
    its error."""
    return len(args) + len(result or "") + len(error or "")


def page_of(
    query: JobQuery, matched: list[JobRecord], scanned: int, lowest: int | None, chars: int = 0
) -> JobPage:
    """The page from what a backend found: `matched` (newest first, at most `limit`, read
    until their `stored_chars` summed to `chars` >= `max_chars`), how many jobs it looked
    at and the lowest id among them."""
    if len(matched) >= query.limit or (matched and chars >= query.max_chars):
        page = matched[: query.limit]
        return JobPage(page, page[-1].id)
    if scanned >= query.scan and lowest is not None:
        return JobPage(matched, lowest)
    return JobPage(matched, None)


def pick_retries(candidates: Sequence[tuple[int, str | None]], held: set[str]) -> list[int]:
    """Of (id, key) rows in id order, those `retry_all` may queue again: a key held by an
    active job, or already taken by a lower id in this call, is skipped."""
    taken = set(held)
    out: list[int] = []
    for id, key in candidates:
        if key is not None:
            if key in taken:
                continue
            taken.add(key)
        out.append(id)
    return out
