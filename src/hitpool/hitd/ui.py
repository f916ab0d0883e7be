"""The dashboard at /ui: one page, its static files, its login, and the state it polls.

    GET  /ui                 the page (the login form instead, when a token is set and the
                             browser has no session)
    GET  /ui/static/NAME     the page's script and style, and uPlot, all from the installed
                             package (importlib.resources): the page fetches nothing elsewhere
    POST /ui/login           form field `token`: sets the session cookie, 303 to /ui
    POST /ui/logout          clears it
    GET  /ui/state           what /stats does not have: rates per second of the last minutes,
                             queue latency, busy workers per process, recent failed and dead
                             jobs, recent `hit` runs, and the mode

The page polls /stats and /ui/state once a second and acts only through the job API
(`hitd/admin.py`, `DELETE /jobs/{id}`), no JS build step. Its script writes every string
that comes from a job (task, args, errors, results) with textContent, never as markup, and
the Content-Security-Policy allows scripts from this origin only, so a job's args cannot
run in an operator's browser.

The session: a token in the URL would stay in the history and in logs, so the login form
posts it and the answer sets the cookie `hitd_session` (HttpOnly, SameSite=Strict), holding
the time of the login and an HMAC of it keyed by the token, never the token. It is good for
SESSION_S after the login, then the form is shown again: a cookie copied off a machine does
not stay worth the token for ever (any hitd with the same token accepts it, so several hitd
processes behind one name share the login). A request with that cookie is authorized as one with
the Bearer token; a write with it (POST, DELETE) must also carry `X-Requested-With:
hitd-ui`, a header no cross-site form can send.

Cross-site writes: without a token, the job API answers anyone who can reach it, and an
operator's browser can reach a loopback hitd from any page it opens; a plain HTML form on
another site may POST there with no preflight. So the actions (retry, bulk retry, delete)
and job submissions (`App`) refuse a request the browser marks as sent from elsewhere:
`Sec-Fetch-Site` other than `same-origin` or `none`, or an `Origin` that is not this
server's (`cross_site`). Clients other than browsers send neither header and are not
affected.

Modes (`hitd --ui`): `on`; `read-only` hides the actions on the page and refuses them: the
retry, bulk retry and delete routes answer 403, and so does a cancel sent with the session
cookie (the Bearer API keeps its cancel); `off` serves no page (404 under /ui).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Literal
from urllib.parse import parse_qsl

from .admin import job_json
from .errors import StoreError
from .messages import Request, Response, error_response, json_response
from .metrics import WorkerNumbers
from .rates import RateRing
from .store.base import JobQuery, Store

__all__ = ["UI_MODES", "Dashboard", "UiMode", "cross_site"]

UiMode = Literal["on", "read-only", "off"]
UI_MODES: tuple[UiMode, ...] = ("on", "read-only", "off")

COOKIE = "hitd_session"
SESSION_S = 12 * 3600  # how long a login lasts
_SKEW_S = 300  # a login stamped this far ahead of this clock (another process's) is accepted
UI_HEADER = "x-requested-with"
UI_HEADER_VALUE = "hitd-ui"
# The dashboard's lists look at the newest jobs only, so a poll stays cheap on a big table
# (an SQLite read runs on the event loop): a failure older than this many jobs drops off
# the panel and is found with the search instead.
RECENT_SCAN = 5000
RECENT_FAILURES = 10
ERROR_HEAD = 500  # characters of an error the failures panel shows (one table cell)
RECENT_HIT_RUNS = 5

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = (
    ("Content-Security-Policy", _CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}


def _load_static() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, content type): the dashboard's files and uPlot, read once."""
    assets = resources.files("hitpool") / "_assets"
    files = {
        "dashboard.js": assets / "hitd-ui" / "dashboard.js",
        "dashboard.css": assets / "hitd-ui" / "dashboard.css",
        "report.js": assets / "report" / "report.js",  # hit's charts, drawn as in its report
        "uPlot.iife.min.js": assets / "uplot" / "uPlot.iife.min.js",
        "uPlot.min.css": assets / "uplot" / "uPlot.min.css",
    }
    return {name: (f.read_bytes(), _TYPES[name[name.rindex(".") :]]) for name, f in files.items()}


def _page(name: str) -> str:
    return (resources.files("hitpool") / "_assets" / "hitd-ui" / name).read_text()


def _cookies(header: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            out.setdefault(name, value)
    return out


class Dashboard:
    """The /ui routes and the session check the App asks for (`session`, `check_write`)."""

    def __init__(
        self,
        mode: UiMode,
        token: str | None,
        store: Store,
        rates: RateRing,
        worker_numbers: Callable[[], WorkerNumbers],
        clock: Callable[[], float],
    ) -> None:
        self.mode = mode
        self.store = store
        self.rates = rates
        self.worker_numbers = worker_numbers
        self.clock = clock
        self._token = token
        self._static = _load_static() if mode != "off" else {}
        self._index = _page("index.html").encode() if mode != "off" else b""
        self._login = _page("login.html") if mode != "off" else ""

    # --- the session, for App._authorized --------------------------------------------------

    def session(self, req: Request) -> bool:
        """True when the request carries the dashboard's session cookie."""
        if self._token is None or self.mode == "off":
            return False
        given = _cookies(req.headers.get("cookie")).get(COOKIE)
        if given is None:
            return False
        stamp, _, mac = given.partition(".")
        if not stamp.isdigit() or len(stamp) > 12:
            return False
        if not hmac.compare_digest(mac.encode(), self._sign(int(stamp)).encode()):
            return False
        age = self.clock() - int(stamp)
        return -_SKEW_S <= age < SESSION_S

    def _sign(self, stamp: int) -> str:
        assert self._token is not None
        msg = f"hitd ui session {stamp}".encode()
        return hmac.new(self._token.encode(), msg, hashlib.sha256).hexdigest()

    def check_write(self, req: Request) -> Response | None:
        """For a request authorized by the cookie: None, or the 403 of a write without the
        dashboard's header (a cross-site form) or a cancel in read-only mode."""
        if req.method in ("GET", "HEAD"):
            return None
        if req.headers.get(UI_HEADER) != UI_HEADER_VALUE:
            return error_response(
                403,
                f"a write with the dashboard's cookie must send {UI_HEADER}: {UI_HEADER_VALUE}",
                "X-Requested-With",
            )
        if self.mode == "read-only" and not req.path.startswith("/ui/"):
            return self.refuse_action()
        return None

    @staticmethod
    def refuse_action() -> Response:
        return error_response(
            403,
            "hitd runs with --ui read-only: the dashboard's actions are off "
            "(restart with --ui on to allow them)",
            "ui",
        )

    # --- routes ---------------------------------------------------------------------------

    def route(
        self, req: Request, authorized: Callable[[Request], Response | None]
    ) -> Response | Awaitable[Response] | None:
        """The answer for a path under /ui, or None (no such page: the App answers 404)."""
        if self.mode == "off":
            return None
        path = req.path
        get = req.method in ("GET", "HEAD")
        if path.startswith("/ui/static/"):
            found = self._static.get(path[len("/ui/static/") :])
            if found is None:
                return None
            if not get:
                return _not_allowed(req, "GET, HEAD")
            return Response(200, found[0], (("Cache-Control", "no-cache"),), found[1])
        if path in ("/ui", "/ui/"):
            if not get:
                return _not_allowed(req, "GET, HEAD")
            if authorized(req) is not None:
                return self._login_page(200, "")
            return Response(200, self._index, _PAGE_HEADERS, _TYPES[".html"])
        if path == "/ui/login":
            if req.method != "POST":
                return _not_allowed(req, "POST")
            return self._login_post(req)
        if path == "/ui/logout":
            if req.method != "POST":
                return _not_allowed(req, "POST")
            clear = f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
            return Response(303, b"", (("Location", "/ui"), ("Set-Cookie", clear)))
        if path == "/ui/state":
            if not get:
                return _not_allowed(req, "GET, HEAD")
            return authorized(req) or self._state()
        return None

    def _login_page(self, status: int, message: str) -> Response:
        # The message is one of ours, never the client's input: no escaping needed, and none
        # of the request is echoed.
        body = self._login.replace("{{message}}", message).encode()
        return Response(status, body, _PAGE_HEADERS, _TYPES[".html"])

    def _login_post(self, req: Request) -> Response:
        if self._token is None:
            return Response(303, b"", (("Location", "/ui"),))
        try:
            form = dict(parse_qsl(req.body.decode(), keep_blank_values=True))
        except UnicodeDecodeError:
            form = {}
        given = form.get("token", "")
        if not hmac.compare_digest(given.encode(), self._token.encode()):
            return self._login_page(401, "Wrong token.")
        stamp = int(self.clock())
        cookie = (
            f"{COOKIE}={stamp}.{self._sign(stamp)}; Path=/; HttpOnly; SameSite=Strict; "
            f"Max-Age={SESSION_S}"
        )
        return Response(303, b"", (("Location", "/ui"), ("Set-Cookie", cookie)))

    async def _state(self) -> Response:
        now = self.clock()
        w = self.worker_numbers()
        try:
            oldest = await self.store.oldest_due(now)
            holders = await self.store.holders()
            failures = await self.store.list_jobs(
                JobQuery(statuses=("failed", "dead"), limit=RECENT_FAILURES, scan=RECENT_SCAN)
            )
            runs = await self.store.list_jobs(
                JobQuery(
                    statuses=("succeeded",), task="hit", limit=RECENT_HIT_RUNS, scan=RECENT_SCAN
                )
            )
        except StoreError as e:
            return error_response(
                503, f"the job store failed: {e}", "store", (("Retry-After", "1"),)
            )
        body: dict[str, Any] = {
            "mode": self.mode,
            "token": self._token is not None,
            "now": now,
            "rates": self.rates.series(now),
            "queue_latency_s": None if oldest is None else max(0.0, now - oldest),
            "workers": {"size": w.workers, "busy": w.busy, "by_process": holders},
            "recent_failures": [_failure(job_json(r, now)) for r in failures.jobs],
            "hit_runs": [_hit_run(job_json(r, now)) for r in runs.jobs],
        }
        return json_response(200, body)


def _failure(job: dict[str, Any]) -> dict[str, Any]:
    """A failed or dead job for the panel: what its row shows, not its args and result
    (each up to a request body, polled every second), and the head of its error (the whole
    error is on the job's page)."""
    out = {k: job[k] for k in ("id", "task", "status", "attempts", "finished_at")}
    error = job["error"]
    if isinstance(error, str) and len(error) > ERROR_HEAD:
        error = error[:ERROR_HEAD] + "…"
    out["error"] = error
    return out


def _hit_run(job: dict[str, Any]) -> dict[str, Any]:
    """A `hit` job for the dashboard's list: its headline numbers, not the whole result."""
    result = job.get("result") if isinstance(job.get("result"), dict) else {}
    assert isinstance(result, dict)
    keep = ("url", "requests", "errors", "rps", "duration_s", "latency_s")
    return {
        "id": job["id"],
        "finished_at": job["finished_at"],
        "summary": {k: result[k] for k in keep if k in result},
    }


def cross_site(req: Request) -> Response | None:
    """The 403 of a write a browser sent from another origin (see the module doc), or None.

    `Sec-Fetch-Site` decides when the browser sends it (all current ones do): the browser
    computes it, so a proxy that rewrites Host changes nothing. `same-site` is refused too: a
    site is scheme and host only, so another port of 127.0.0.1 is the same site. A browser
    without it is judged by `Origin`, which must name the Host the request was sent to."""
    fetch_site = req.headers.get("sec-fetch-site")
    if fetch_site is not None:
        if fetch_site in ("same-origin", "none"):
            return None
        return error_response(
            403,
            f"a {req.method} sent by a browser from another origin (Sec-Fetch-Site: "
            f"{fetch_site}) is refused: act from hitd's own page, or with curl or the API",
            "Sec-Fetch-Site",
        )
    origin = req.headers.get("origin")
    if origin is None:
        return None
    host = (req.headers.get("host") or "").lower()
    if host and origin.lower() in (f"http://{host}", f"https://{host}"):
        return None
    return error_response(
        403,
        f"a {req.method} from the origin {origin!r} is refused: it is not this server "
        f"({host!r}); act from hitd's own page, or with curl or the API",
        "Origin",
    )


def _not_allowed(req: Request, allow: str) -> Response:
    msg = f"{req.method} is not allowed on {req.path}: use {allow}"
    return error_response(405, msg, "method", (("Allow", allow),))
