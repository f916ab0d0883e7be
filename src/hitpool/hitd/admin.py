"""The job administration API: list and search jobs, retry, bulk retry, delete.

    GET    /jobs?status=dead,failed&task=T&q=TEXT&limit=50&before=ID   newest first
    POST   /jobs/{id}/retry                      a failed, dead or scheduled job runs now
    POST   /jobs/retry?status=dead&limit=1000    the same for up to `limit` jobs of a status
    DELETE /jobs/{id}?purge=1                    delete a finished job

Every action of the dashboard (/ui) is one of these calls. The listing is keyset-paginated
and bounded three times: at most `limit` jobs (MAX_LIST) per page, at most `MAX_PAGE_CHARS`
of their args, results and errors, and at most `DEFAULT_SCAN` jobs looked at per request,
so a search that matches little answers quickly with a page that may be short and a `next`
cursor to go on (see `store.base.JobPage`). Parsing is pure and
raises `SpecError(field, message)`, which becomes a 400 naming the parameter.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from .._errors import SpecError
from .errors import StoreError
from .messages import Response, error_response, json_response
from .store.base import (
    MAX_LIST,
    RETRYABLE,
    STATUSES,
    JobQuery,
    JobRecord,
    JobStatus,
    Store,
    storable,
)

__all__ = ["MAX_BULK", "Admin", "job_json", "parse_bulk", "parse_list", "parse_purge"]

MAX_BULK = 10_000  # jobs one bulk retry queues again at most (one transaction)
DEFAULT_BULK = 1000
MAX_TEXT = 200  # longest task name or search text
_LIST_PARAMS = ("status", "task", "q", "limit", "before")


def _params(
    query: str, allowed: tuple[str, ...], repeatable: tuple[str, ...] = ()
) -> dict[str, str]:
    """The query string as a dict; an unknown or repeated parameter is a SpecError."""
    out: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False, errors="strict")
    except UnicodeDecodeError:
        raise SpecError("query", "must be UTF-8 (percent-encoded)")
    for name, value in pairs:
        if name not in allowed:
            raise SpecError(name, f"unknown parameter; use {', '.join(allowed)}")
        if name in out:
            if name not in repeatable:
                raise SpecError(name, "given twice: give it once")
            value = f"{out[name]},{value}"
        out[name] = value
    return out


def _int(params: dict[str, str], name: str, low: int, high: int, default: int | None) -> int | None:
    text = params.get(name)
    if text is None:
        return default
    if not text.isdigit() or len(text) > 19 or not low <= int(text) <= high:
        raise SpecError(name, f"must be a whole number from {low} to {high}")
    return int(text)


def _statuses(text: str, allowed: tuple[str, ...]) -> tuple[JobStatus, ...]:
    names = [s.strip() for s in text.split(",")]
    for s in names:
        if s not in allowed:
            raise SpecError("status", f"{s!r} is not a status: use {', '.join(allowed)}")
    return tuple(dict.fromkeys(names))  # type: ignore[arg-type]  # checked just above


def _text(params: dict[str, str], name: str) -> str | None:
    text = params.get(name)
    if text is None:
        return None
    if not 0 < len(text) <= MAX_TEXT:
        raise SpecError(name, f"must be 1 to {MAX_TEXT} characters")
    if storable(text) != text:
        raise SpecError(name, "must not contain NUL or an unpaired surrogate")
    return text


def job_json(record: JobRecord, now: float) -> dict[str, Any]:
    """A job as the listing, the actions and the dashboard show it at `now`: `GET
    /jobs/{id}`'s body (one function, so that they cannot drift from it)."""
    return record.to_json(now)


def parse_list(query: str) -> JobQuery:
    """The query string of GET /jobs -> JobQuery."""
    p = _params(query, _LIST_PARAMS, repeatable=("status",))
    statuses = _statuses(p["status"], STATUSES) if "status" in p else None
    limit = _int(p, "limit", 1, MAX_LIST, 50)
    before = _int(p, "before", 1, 2**63 - 1, None)
    assert limit is not None
    q = _text(p, "q")
    return JobQuery(statuses, _text(p, "task"), None if q is None else as_stored(q), before, limit)


def as_stored(text: str) -> str:
    """Search text as the stores hold args: compact JSON with every non-ASCII character
    escaped (`é` as `\\u00e9`), so that `q=Zoë` finds {"name": "Zoë"}. ASCII is left as
    typed, so a fragment of JSON such as `"user":"ann"` still matches."""
    if text.isascii():
        return text
    return "".join(c if c.isascii() else json.dumps(c)[1:-1] for c in text)


def parse_bulk(query: str) -> tuple[JobStatus, int]:
    """The query string of POST /jobs/retry -> (status, limit)."""
    p = _params(query, ("status", "limit"))
    if "status" not in p:
        raise SpecError("status", f"required: which jobs to retry, {' or '.join(RETRYABLE)}")
    statuses = _statuses(p["status"], RETRYABLE)
    if len(statuses) != 1:
        raise SpecError("status", f"one status per call: {' or '.join(RETRYABLE)}")
    status = statuses[0]
    limit = _int(p, "limit", 1, MAX_BULK, DEFAULT_BULK)
    assert limit is not None
    return status, limit


def parse_purge(query: str) -> bool:
    """DELETE /jobs/{id}: True with purge=1 (delete a finished job), False without (cancel)."""
    p = _params(query, ("purge",))
    value = p.get("purge")
    if value is None:
        return False
    if value not in ("1", "true"):
        raise SpecError("purge", "use purge=1 to delete a finished job, or leave it out to cancel")
    return True


class Admin:
    """The handlers of the routes above. `notify()` wakes the workers after a retry, so a
    job queued again runs now rather than at the next poll."""

    def __init__(self, store: Store, clock: Callable[[], float], notify: Callable[[], None]):
        self.store = store
        self.clock = clock
        self.notify = notify

    @staticmethod
    def _store_failed(e: StoreError) -> Response:
        return error_response(503, f"the job store failed: {e}", "store", (("Retry-After", "1"),))

    async def list_jobs(self, query: str) -> Response:
        try:
            q = parse_list(query)
        except SpecError as e:
            return error_response(400, e.message, e.field)
        try:
            page = await self.store.list_jobs(q)
        except StoreError as e:
            return self._store_failed(e)
        now = self.clock()
        nxt = None
        if page.next_before is not None:
            keep = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "before"]
            nxt = "/jobs?" + urlencode([*keep, ("before", str(page.next_before))])
        body = {
            "jobs": [job_json(r, now) for r in page.jobs],
            "next": nxt,
            "next_before": page.next_before,
        }
        return json_response(200, body)

    async def retry(self, job_id: int) -> Response:
        try:
            outcome = await self.store.retry(job_id, self.clock())
            record = await self.store.get(job_id)
        except StoreError as e:
            return self._store_failed(e)
        if outcome == "retried" and record is not None:
            self.notify()
            return json_response(200, job_json(record, self.clock()))
        if outcome == "missing" or record is None:
            return error_response(404, f"no job {job_id}", "id")
        if record.status in RETRYABLE:
            msg = f"job {job_id} is {record.status}, but another active job holds its key"
            return error_response(409, f"{msg}: cancel that one or wait for it", "key")
        return error_response(
            409,
            f"job {job_id} is {record.status}: only a failed, dead or queued job can be retried",
            "status",
        )

    async def retry_all(self, query: str) -> Response:
        try:
            status, limit = parse_bulk(query)
        except SpecError as e:
            return error_response(400, e.message, e.field)
        try:
            n = await self.store.retry_all(status, self.clock(), limit)
        except StoreError as e:
            return self._store_failed(e)
        if n:
            self.notify()
        return json_response(200, {"status": status, "retried": n, "limit": limit})

    async def delete(self, job_id: int) -> Response:
        try:
            outcome = await self.store.delete(job_id)
            record = None if outcome == "deleted" else await self.store.get(job_id)
        except StoreError as e:
            return self._store_failed(e)
        if outcome == "deleted":
            return json_response(200, {"id": job_id, "deleted": True})
        if outcome == "missing" or record is None:
            return error_response(404, f"no job {job_id}", "id")
        if outcome == "active":
            return error_response(
                409,
                f"job {job_id} is {record.status}: only a finished job can be deleted; "
                f"cancel a queued one first (DELETE /jobs/{job_id})",
                "status",
            )
        return error_response(
            409,
            f"job {job_id} is the newest job, kept until another is created "
            "(its id would otherwise be handed out again)",
            "id",
        )
