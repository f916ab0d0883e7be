"""The HTTP API of hitd: routes, validation of job bodies, error answers.

    POST   /work        the seed's collector: form or JSON {name, delay} -> 201 (task `hello`)
    POST   /jobs        a job object or an array of up to 1000 -> 202 {"id"} / {"ids"}
    GET    /jobs/{id}   the job
    DELETE /jobs/{id}   cancel a job that has not started
    GET    /healthz     liveness; 503 while draining
    GET    /metrics     Prometheus text
    GET    /stats       the same numbers as JSON
    GET    /jobs, POST /jobs/{id}/retry, POST /jobs/retry, DELETE /jobs/{id}?purge=1
                        listing and actions (hitd/admin.py)
    /ui                 the dashboard (hitd/ui.py)

HEAD is routed as GET wherever GET is (the protocol drops the body, RFC 9110 9.3.2).

A 202 (201 for /work) is sent only after the job is committed to the store: the handler
hands the jobs to the `Intake` and returns its future, which resolves after the group commit.
Validation is pure (`parse_job`, `parse_work`, and `durations.parse_seconds` for delays): it
takes `now` and raises `SpecError(field, message)`, which becomes a 400 naming the field.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from .._build import build
from .._errors import DispatcherClosed, SpecError
from ..durations import parse_seconds
from .admin import Admin, parse_purge
from .errors import StoreError, UnknownTask
from .intake import Ids, Intake
from .jsonin import decode
from .messages import Deferred, Request, Response, error_response, json_response
from .metrics import HttpCounters, WorkerNumbers, render
from .rates import RateRing
from .store.base import NewJob, Store, storable
from .ui import Dashboard, UiMode, cross_site

__all__ = [
    "App",
    "AppConfig",
    "MAX_BATCH",
    "parse_job",
    "parse_jobs",
    "parse_work",
]

MAX_BATCH = 1000
MAX_DELAY_S = 366 * 24 * 3600.0  # a job due more than a year ahead is a typo
MAX_ATTEMPTS = 100
MAX_KEY_LEN = 200
WORK_MAX_DELAY_S = 10.0  # the seed's collector allowed at most 10 s of `hello`

_JOB_FIELDS = frozenset({"task", "args", "delay", "max_attempts", "key"})
_BOM = b"\xef\xbb\xbf"
_UNSTORABLE = "must not contain NUL (\\u0000) or an unpaired surrogate (\\ud800-\\udfff)"


# Checks a task name and its args: raises UnknownTask (422) or SpecError (400).
TaskCheck = Callable[[str, Mapping[str, Any]], None]


def parse_job(obj: Any, now: float, prefix: str = "", key: str | None = None) -> NewJob:
    """One job object of POST /jobs -> NewJob, due at `now` + delay."""
    if not isinstance(obj, dict):
        raise SpecError(prefix.rstrip(".") or "body", "a job must be a JSON object")
    if not _JOB_FIELDS.issuperset(obj):
        for name in obj:
            if name not in _JOB_FIELDS:
                allowed = ", ".join(sorted(_JOB_FIELDS))
                raise SpecError(prefix + str(name), f"unknown field; a job has {allowed}")
    task = obj.get("task")
    if not isinstance(task, str) or not task:
        raise SpecError(prefix + "task", "required: the name of a registered task")
    args = obj.get("args")
    if args is None:
        args = {}
    elif not isinstance(args, dict):
        raise SpecError(prefix + "args", "must be a JSON object of keyword arguments")
    # No delay is the common case: no call for it.
    seconds = (
        parse_seconds(obj["delay"], prefix + "delay", max_s=MAX_DELAY_S) if "delay" in obj else 0.0
    )
    max_attempts = obj.get("max_attempts", 3)
    if type(max_attempts) is not int or not 1 <= max_attempts <= MAX_ATTEMPTS:
        raise SpecError(prefix + "max_attempts", f"must be an integer from 1 to {MAX_ATTEMPTS}")
    job_key = obj.get("key", key)
    if job_key is not None:  # keys are optional: most jobs skip both checks
        if not isinstance(job_key, str) or not 0 < len(job_key) <= 200:
            raise SpecError(prefix + "key", f"must be a string of 1 to {MAX_KEY_LEN} characters")
        if storable(job_key) != job_key:  # NUL or a lone surrogate: see `storable`
            raise SpecError(prefix + "key", _UNSTORABLE)
    # No delay: due when committed (run_at None). A float per job is what encoding the
    # batch for the store spent most on (float repr is ~1 us; the rest of a job ~0.8 us).
    return NewJob(task, args, now + seconds if seconds else None, max_attempts, job_key)


def parse_jobs(body: bytes, now: float, header_key: str | None = None) -> tuple[list[NewJob], bool]:
    """The body of POST /jobs: one job object or an array of 1 to 1000. Returns the jobs and
    whether the body was an array (its answer lists ids)."""
    doc = decode(body)
    if isinstance(doc, list):
        if not doc:
            raise SpecError("body", "an empty array: send 1 to 1000 jobs")
        if len(doc) > MAX_BATCH:
            raise SpecError("body", f"{len(doc)} jobs: send at most {MAX_BATCH} per request")
        if header_key is not None:
            raise SpecError(
                "Idempotency-Key", 'applies to one job: give each job of an array its own "key"'
            )
        return [parse_job(obj, now, f"[{i}].") for i, obj in enumerate(doc)], True
    if header_key is not None:
        if not 0 < len(header_key) <= MAX_KEY_LEN:
            raise SpecError("Idempotency-Key", f"must be 1 to {MAX_KEY_LEN} characters")
        if storable(header_key) != header_key:
            raise SpecError("Idempotency-Key", _UNSTORABLE)
    return [parse_job(doc, now, "", header_key)], False


def parse_work(body: bytes, content_type: str, query: str) -> tuple[str, float]:
    """The seed's collector: `name` and `delay` from a form, a JSON object or the query."""
    fields: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    # A BOM is not a form's first character: a body that starts with one is JSON.
    if "json" in content_type or body.lstrip()[:1] == b"{" or body.startswith(_BOM):
        doc = decode(body)
        if not isinstance(doc, dict):
            raise SpecError("body", "must be a JSON object {name, delay}")
        fields.update(doc)
    elif body:
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise SpecError("body", "a form must be UTF-8")
        fields.update(parse_qsl(text, keep_blank_values=True))
    name = fields.get("name")
    if not isinstance(name, str) or not name.strip():
        raise SpecError("name", "You must specify a name.")
    delay = parse_seconds(fields.get("delay", 0), "delay", max_s=WORK_MAX_DELAY_S)
    return name, delay


class _Pending:
    """The intake's answer object for one request (see `intake.Answer`): the ids of its
    committed jobs become the HTTP answer here, in the app, as does a failure."""

    __slots__ = ("_app", "_respond", "deferred")

    def __init__(self, app: App, respond: Callable[[Ids], Response]) -> None:
        self._app = app
        self._respond = respond
        self.deferred = Deferred()

    def done(self) -> bool:
        return self.deferred.done()

    def set_result(self, ids: Ids) -> None:
        try:
            resp = self._respond(ids)
        except Exception as exc:  # a bug: the connection answers 500 and logs it
            self.deferred.set_exception(exc)
            return
        self.deferred.set_result(resp)

    def set_exception(self, exc: BaseException) -> None:
        self.deferred.set_result(self._app._not_committed(exc))


@dataclass(frozen=True, slots=True)
class AppConfig:
    queue_size: int = 100_000
    token: str | None = None
    retry_after_s: int = 1
    ui: UiMode = "on"  # the dashboard: on, read-only (no actions), off (no page)


class App:
    """The request handler. Call it with a Request; it returns a Response or a future."""

    def __init__(
        self,
        store: Store,
        intake: Intake,
        check_task: TaskCheck,
        worker_numbers: Callable[[], WorkerNumbers],
        config: AppConfig | None = None,
        clock: Callable[[], float] = time.time,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        """`notify()`: wake the workers (a retried job is due now)."""
        self.store = store
        self.intake = intake
        self.check_task = check_task
        self.worker_numbers = worker_numbers
        self.config = config or AppConfig()
        self.clock = clock
        self.counters = HttpCounters()
        self.draining = False
        self.started_at = clock()
        self._token = self.config.token.encode() if self.config.token is not None else None
        self._retry = (("Retry-After", str(self.config.retry_after_s)),)
        # The dashboard's rates: fed once a second by the RateSampler that Hitd owns.
        self.rates = RateRing()
        self.admin = Admin(store, clock, notify)
        self.dashboard = Dashboard(
            self.config.ui, self.config.token, store, self.rates, worker_numbers, clock
        )

    # --- routing ----------------------------------------------------------------------------

    def __call__(self, req: Request) -> Response | Deferred | Awaitable[Response]:
        path = req.path
        if path == "/healthz":
            # No token: load balancers and orchestrators probe it.
            if req.method not in ("GET", "HEAD"):
                return self._not_allowed(req, "GET, HEAD")
            if self.draining:
                return json_response(503, {"status": "draining"}, self._retry)
            if (why := self.store.health()) is not None:
                return json_response(503, {"status": "unavailable", "error": why}, self._retry)
            return json_response(200, {"status": "ok"})
        if path.startswith("/ui"):
            # The dashboard's pages: its login page and assets need no token, it checks the
            # token (or its cookie) for the rest itself. None: no such page, answered below.
            page = self.dashboard.route(req, self._authorized)
            if page is not None:
                return page
        # The token before anything else: a 404 or 405 would tell who has none which
        # routes and methods exist.
        if self._token is not None:
            denied = self._authorized(req)
            if denied is not None:
                return denied
        if path != "/jobs" or req.method != "POST":  # POST /jobs, the hot path, skips it
            routed = self._admin_route(req)
            if routed is not None:
                return routed
        if path == "/jobs":
            if req.method != "POST":
                return self._not_allowed(req, "POST")
            # A form on another site can POST a JSON body as text/plain: without a token,
            # any page an operator opens could queue jobs (a `hit` run) here (hitd/ui.py).
            return cross_site(req) or self._post_jobs(req)
        if path.startswith("/jobs/"):
            if req.method not in ("GET", "HEAD", "DELETE"):
                return self._not_allowed(req, "GET, HEAD, DELETE")
            raw = path[len("/jobs/") :]
            if not raw.isdigit() or len(raw) > 18:
                return error_response(404, f"no job {raw!r}: ids are integers", "id")
            if req.method == "DELETE":
                return self._cancel_job(int(raw))
            return self._get_job(int(raw))
        if path == "/work":
            if req.method != "POST":
                return self._not_allowed(req, "POST")
            return cross_site(req) or self._post_work(req)
        if path == "/metrics":
            if req.method not in ("GET", "HEAD"):
                return self._not_allowed(req, "GET, HEAD")
            return self._metrics()
        if path == "/stats":
            if req.method not in ("GET", "HEAD"):
                return self._not_allowed(req, "GET, HEAD")
            return self._stats()
        return error_response(404, f"no route {path!r}", "path")

    def _not_allowed(self, req: Request, allow: str) -> Response:
        msg = f"{req.method} is not allowed on {req.path}: use {allow}"
        return error_response(405, msg, "method", (("Allow", allow),))

    def _authorized(self, req: Request) -> Response | None:
        """None when no token is set or the request carries it; else the 401.

        The scheme is case-insensitive (RFC 9110 11.1); the token is compared as the bytes
        sent with the UTF-8 bytes of --token, in constant time (header values reach us as
        Latin-1 text, one character per byte sent, so encoding back gives the bytes)."""
        if self._token is None:
            return None
        given = req.headers.get("authorization")
        if given is not None:
            scheme, _, credentials = given.partition(" ")
            if scheme.lower() == "bearer":
                try:
                    sent = credentials.strip(" \t").encode("latin-1")
                except UnicodeEncodeError:  # not from the wire: cannot be the token
                    sent = b""
                if hmac.compare_digest(sent, self._token):
                    return None
        if self.dashboard.session(req):  # the dashboard's cookie (hitd/ui.py)
            return self.dashboard.check_write(req)
        if req.method == "POST" and req.path in ("/jobs", "/work"):  # a refused submission
            self.counters.reject(401)
        return error_response(
            401,
            "missing or wrong token: send Authorization: Bearer <token>",
            "Authorization",
            (("WWW-Authenticate", 'Bearer realm="hitd"'),),
        )

    # --- job submission ---------------------------------------------------------------------

    def _admit(self, n: int) -> Response | None:
        """None when `n` more jobs fit; else the 503 (draining) or 429 (queue full)."""
        if self.draining:
            self.counters.reject(503)
            return error_response(503, "the server is draining", None, self._retry)
        if n > self.config.queue_size:  # a retry could never succeed: not a 429
            self.counters.reject(400)
            return error_response(
                400, f"{n} jobs can never fit queue-size {self.config.queue_size}", "body"
            )
        waiting = self.store.queued_estimate() + self.intake.in_flight
        if waiting + n > self.config.queue_size:
            self.counters.reject(429)
            return error_response(
                429,
                f"{waiting} jobs are waiting (queue-size {self.config.queue_size}): retry later",
                "queue",
                self._retry,
            )
        return None

    def _bad(self, e: SpecError | UnknownTask, field: str | None = None) -> Response:
        if isinstance(e, UnknownTask):
            self.counters.reject(422)
            return error_response(422, f"unknown task {e.task!r}", field or "task")
        self.counters.reject(400)
        return error_response(400, e.message, e.field)

    def _submit(
        self, jobs: list[NewJob], respond: Callable[[Ids], Response]
    ) -> Response | Deferred:
        pending = _Pending(self, respond)
        try:
            self.intake.submit_into(jobs, pending)
        except DispatcherClosed:
            self.counters.reject(503)
            return error_response(503, "the server is draining", None, self._retry)
        return pending.deferred

    def _not_committed(self, exc: BaseException) -> Response:
        """The 503 of a request whose jobs the intake could not commit: nothing promised."""
        self.counters.reject(503)
        if isinstance(exc, DispatcherClosed):
            return error_response(503, "the server is shutting down", "store", self._retry)
        # A store's own message (StoreError, OSError); of anything else only its kind.
        reason = str(exc) if isinstance(exc, (StoreError, OSError)) else type(exc).__name__
        return error_response(503, f"the job store failed: {reason}", "store", self._retry)

    def _post_jobs(self, req: Request) -> Response | Deferred:
        try:
            jobs, array = parse_jobs(req.body, self.clock(), req.headers.get("idempotency-key"))
        except SpecError as e:
            return self._bad(e)
        check = self.check_task
        if not array:
            job = jobs[0]
            try:
                check(job.task, job.args)
            except UnknownTask as e:
                return self._bad(e, "task")
            except SpecError as e:
                return self._bad(e)
            denied = self._admit(1)
            if denied is not None:
                return denied
            return self._submit(jobs, self._respond_one)
        for i, job in enumerate(jobs):
            prefix = f"[{i}]."
            try:
                check(job.task, job.args)
            except UnknownTask as e:
                return self._bad(e, prefix + "task")
            except SpecError as e:
                return self._bad(SpecError(prefix + e.field, e.message))
        denied = self._admit(len(jobs))
        if denied is not None:
            return denied
        return self._submit(jobs, self._respond_many)

    def _respond_one(self, ids: Ids) -> Response:
        job_id, created = ids[0]
        if created:
            self.counters.accepted += 1
            return Response(202, b'{"id":%d}' % job_id, (("Location", f"/jobs/{job_id}"),))
        self.counters.deduplicated += 1
        headers = (("Location", f"/jobs/{job_id}"), ("Idempotent-Replayed", "true"))
        return Response(202, b'{"id":%d}' % job_id, headers)

    def _respond_many(self, ids: Ids) -> Response:
        new = sum(1 for _, created in ids if created)
        self.counters.accepted += new
        self.counters.deduplicated += len(ids) - new
        body = b'{"ids":[' + b",".join(b"%d" % i for i, _ in ids) + b"]}"
        return Response(202, body, (("Location", f"/jobs/{ids[0][0]}"),))

    def _post_work(self, req: Request) -> Response | Deferred:
        try:
            name, delay = parse_work(
                req.body, req.headers.get("content-type", "").lower(), req.query
            )
        except SpecError as e:
            return self._bad(e)
        args = {"name": name, "delay": delay}
        try:
            self.check_task("hello", args)
        except (UnknownTask, SpecError) as e:
            return self._bad(e)
        denied = self._admit(1)
        if denied is not None:
            return denied
        counters = self.counters

        def respond(ids: Ids) -> Response:
            counters.accepted += 1
            job_id = ids[0][0]
            body = {"id": job_id, "name": name, "delay": delay}
            return json_response(201, body, (("Location", f"/jobs/{job_id}"),))

        job = NewJob("hello", args, None, 1)
        return self._submit([job], respond)

    # --- reading and cancelling -------------------------------------------------------------

    async def _get_job(self, job_id: int) -> Response:
        try:
            record = await self.store.get(job_id)
        except StoreError as e:
            return error_response(503, f"the job store failed: {e}", "store", self._retry)
        if record is None:
            return error_response(404, f"no job {job_id}", "id")
        return json_response(200, record.to_json(self.clock()))

    async def _cancel_job(self, job_id: int) -> Response:
        """Cancels any job that has not started: queued or scheduled (the runner claims a job
        only into a free worker, so a job not started is never held by one)."""
        now = self.clock()
        try:
            if await self.store.cancel(job_id, now):
                record = await self.store.get(job_id)
                return json_response(200, record.to_json(now) if record else {"id": job_id})
            record = await self.store.get(job_id)
        except StoreError as e:
            return error_response(503, f"the job store failed: {e}", "store", self._retry)
        if record is None:
            return error_response(404, f"no job {job_id}", "id")
        return error_response(
            409,
            f"job {job_id} is {record.status}: only a job that has not started can be cancelled",
            "status",
        )

    # --- numbers ----------------------------------------------------------------------------

    def _metrics(self) -> Response:
        text = render(self.counters, self.worker_numbers(), self.draining)
        return Response(200, text.encode(), content_type="text/plain; version=0.0.4")

    async def _stats(self) -> Response:
        w = self.worker_numbers()
        intake = self.intake.statistics()
        try:
            counts: dict[str, int] | None = await self.store.counts()
        except StoreError:
            counts = None
        c = self.counters
        body = {
            "accepted": c.accepted,
            "deduplicated": c.deduplicated,
            "rejected": {str(k): v for k, v in sorted(c.rejected.items())},
            "completed": w.completed,
            "failed": w.failed,
            "purged": w.purged,
            "queue": {"depth": w.queued, "in_flight": w.in_flight, "size": self.config.queue_size},
            "workers": {"size": w.workers, "busy": w.busy},
            "jobs": counts,
            "intake": {
                "commits": intake.commits,
                "committed": intake.committed,
                "largest_batch": intake.largest_batch,
                "failures": intake.failures,
            },
            "draining": self.draining,
            "uptime_s": round(self.clock() - self.started_at, 3),
            "build": build(),
        }
        return json_response(200, body)

    # --- the admin API and the dashboard (hitd/admin.py, hitd/ui.py) --------------------------

    def _admin_route(self, req: Request) -> Response | Awaitable[Response] | None:
        """The answer of a listing or an action, or None for the routes above. The caller has
        checked the token; an action is refused here when a browser sent it cross-site."""
        path, method = req.path, req.method
        if path == "/jobs":
            if method in ("GET", "HEAD"):
                return self.admin.list_jobs(req.query)
            return self._not_allowed(req, "GET, HEAD, POST")
        if not path.startswith("/jobs/"):
            return None
        read_only = self.config.ui == "read-only"
        if path == "/jobs/retry":
            if method != "POST":
                return self._not_allowed(req, "POST")
            denied = cross_site(req)
            if denied is not None:
                return denied
            return Dashboard.refuse_action() if read_only else self.admin.retry_all(req.query)
        if path.endswith("/retry"):
            if method != "POST":
                return self._not_allowed(req, "POST")
            denied = cross_site(req)
            if denied is not None:
                return denied
            raw = path[len("/jobs/") : -len("/retry")]
            if not raw.isdigit() or len(raw) > 18:
                return error_response(404, f"no job {raw!r}: ids are integers", "id")
            return Dashboard.refuse_action() if read_only else self.admin.retry(int(raw))
        if method == "DELETE" and req.query:
            denied = cross_site(req)
            if denied is not None:
                return denied
            try:
                purge = parse_purge(req.query)
            except SpecError as e:
                return error_response(400, e.message, e.field)
            raw = path[len("/jobs/") :]
            if not purge or not raw.isdigit() or len(raw) > 18:
                return None  # a cancel, or a bad id: answered by the job routes
            return Dashboard.refuse_action() if read_only else self.admin.delete(int(raw))
        return None
