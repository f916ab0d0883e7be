"""The session a scenario gets (``s``) and the responses it returns.

One `Session` per iteration: ``s.headers`` starts empty each time (per-iteration session
headers, e.g. the token a login returned). Each request goes over the process's pooled
keep-alive connections and is counted into its step's tally (``name=``, or the path
without its query) and into the run's totals.

Latency and -t count from the request's corrected start: the moment it would have been
written had the iteration started at its due time, i.e. the write time minus how late
the iteration started (coordinated omission corrected, as the single-URL mode's --rps).
"""

from __future__ import annotations

import asyncio
import json as _json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from .pool import RequestFailed
from .response import ExpectationFailed, Headers, Response
from .spec import Target, parse_url

if TYPE_CHECKING:
    from .scenario_run import Iterations
    from .tally import Tally

__all__ = ["ExpectationFailed", "Headers", "RequestFailed", "Response", "Session"]


_METHODS_WITH_BODY = ("POST", "PUT", "PATCH")
_DEFAULTS = "User-Agent: hit/0.1\r\nAccept: */*\r\n"


def _json_encoder() -> Callable[[Any], bytes]:
    """``json=``'s encoder, made once: JSONEncoder.encode() builds its C encoder anew at
    every call and tracks every list and dict for cycles. The same bytes as
    ``json.dumps(obj, separators=(",", ":"))`` (ASCII, NaN allowed); a body with a cycle
    raises RecursionError (its iteration fails) where json.dumps raises ValueError."""
    make = getattr(_json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without the _json accelerator
        slow = _json.JSONEncoder(separators=(",", ":")).encode
        return lambda obj: slow(obj).encode()
    enc = make(None, _not_json, _json.encoder.encode_basestring_ascii, None, ":", ",",
               False, False, True)  # fmt: skip
    return lambda obj: "".join(enc(obj, 0)).encode()


def _not_json(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_encode = _json_encoder()


class Session:
    """What a scenario's ``s`` is: requests relative to the base URL (or absolute)."""

    __slots__ = ("_late", "_run", "headers")

    def __init__(self, run: Iterations, late: int) -> None:
        self._run = run
        self._late = late  # ns the iteration started after its due time
        self.headers: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> Awaitable[Response]:
        """Send the request now; what is returned is awaited for its `Response` (a future
        resolved by the connection, or a coroutine when a connection must be opened first).
        RequestFailed raises at the await; ValueError (a header with a line break) at the call."""
        run = self._run
        method = method.upper()
        route = run.routes.get((method, path))
        if route is None:
            route = _route(run, method, path)
        target, url, head, path_name = route
        step_name = name if name is not None else path_name
        step = run.stats.steps.get(step_name) or run.stats.step(step_name)
        if json is not None:
            body = _encode(json)
            ctype: str | None = "application/json"
        elif data is None:
            body = b""
            ctype = None
        elif isinstance(data, bytes | str):
            body = data.encode() if isinstance(data, str) else data
            ctype = None
        elif isinstance(data, Mapping):
            body = urlencode(data).encode()
            ctype = "application/x-www-form-urlencoded"
        else:
            body = bytes(data)
            ctype = None
        session = self.headers
        if not session and not headers and not run.headers:
            # the common head: pre-built per (method, path), only the body's fields added
            if ctype is not None:
                head += f"Content-Type: {ctype}\r\n"
            if body or method in _METHODS_WITH_BODY:
                head += f"Content-Length: {len(body)}\r\n"
            wire = (head + "\r\n").encode("latin-1") + body
        else:
            wire = _request_bytes(method, target, head, run.headers, session, headers, ctype, body)
        now = run.clock()
        start = now - self._late
        if now - start > run.timeout_ns:  # already -t past due: a timeout, unsent
            step.error("timeout", now - start, 0)
            return _failed(run, RequestFailed("timeout", url))
        conn = run.pool.take(target)
        if conn is None:
            return _open_then_send(run, target, wire, method == "HEAD", start, step, step_name, url)
        return conn.send(wire, method == "HEAD", start, step, step_name, url)

    # Keywords spelled out, so no dict is packed per call.
    def get(
        self,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> Awaitable[Response]:
        return self.request("GET", path, json=json, data=data, headers=headers, name=name)

    def post(
        self,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> Awaitable[Response]:
        return self.request("POST", path, json=json, data=data, headers=headers, name=name)

    def put(
        self,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> Awaitable[Response]:
        return self.request("PUT", path, json=json, data=data, headers=headers, name=name)

    def patch(
        self,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> Awaitable[Response]:
        return self.request("PATCH", path, json=json, data=data, headers=headers, name=name)

    def delete(
        self,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> Awaitable[Response]:
        return self.request("DELETE", path, json=json, data=data, headers=headers, name=name)

    def head(
        self,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> Awaitable[Response]:
        return self.request("HEAD", path, json=json, data=data, headers=headers, name=name)


def _failed(run: Iterations, exc: BaseException) -> asyncio.Future[Response]:
    fut: asyncio.Future[Response] = run.loop.create_future()
    fut.set_exception(exc)
    return fut


async def _open_then_send(
    run: Iterations,
    target: Target,
    wire: bytes,
    is_head: bool,
    start: int,
    step: Tally,
    name: str,
    url: str,
) -> Response:
    """A request when no idle connection was at hand: a new one, then the request on it."""
    try:
        conn = await run.pool.open(target)
    except RequestFailed as exc:
        step.error(exc.kind, run.clock() - start, 0)
        raise RequestFailed(exc.kind, url) from None
    except BaseException:  # cancelled (the run was stopped): counted, then re-raised
        step.error("cancelled", run.clock() - start, 0)
        raise
    return await conn.send(wire, is_head, start, step, name, url)


_FIXED = frozenset({"host", "user-agent", "accept", "content-type", "content-length"})


def _request_bytes(
    method: str,
    target: Target,
    head: str,
    run_headers: tuple[tuple[str, str], ...],
    session: Mapping[str, str],
    extra: Mapping[str, str] | None,
    ctype: str | None,
    body: bytes,
) -> bytes:
    """The request's bytes; later headers replace earlier ones of the same name: hit's
    defaults, then -H, then ``s.headers``, then the request's own ``headers=``. ``head`` is
    the route's fixed part (request line, Host, hit's defaults): kept whole unless one of
    the headers given replaces a field of it or another given one (then `_merged_bytes`)."""
    lines = []
    seen: set[str] = set()
    for source in (run_headers, session.items(), extra.items() if extra else ()):
        for n, v in source:
            if "\r" in v or "\n" in v or "\r" in n or "\n" in n or ":" in n:
                raise ValueError(f"header {n!r}: a name or value cannot hold ':' or a line break")
            low = n.lower()
            if low in _FIXED or low in seen:
                return _merged_bytes(method, target, run_headers, session, extra, ctype, body)
            seen.add(low)
            lines.append(f"{n}: {v}\r\n")
    if ctype is not None:
        head += f"Content-Type: {ctype}\r\n"
    head += "".join(lines)
    if body or method in _METHODS_WITH_BODY:
        head += f"Content-Length: {len(body)}\r\n"
    return (head + "\r\n").encode("latin-1") + body


def _merged_bytes(
    method: str,
    target: Target,
    run_headers: tuple[tuple[str, str], ...],
    session: Mapping[str, str],
    extra: Mapping[str, str] | None,
    ctype: str | None,
    body: bytes,
) -> bytes:
    """`_request_bytes` when a header given replaces another: each name once, in the place
    of its first occurrence, with the last value given and the last spelling of its name."""
    merged: dict[str, tuple[str, str]] = {
        "host": ("Host", target.host_header),
        "user-agent": ("User-Agent", "hit/0.1"),
        "accept": ("Accept", "*/*"),
    }
    if ctype is not None:
        merged["content-type"] = ("Content-Type", ctype)
    for source in (run_headers, session.items(), extra.items() if extra else ()):
        for n, v in source:
            if "\r" in v or "\n" in v or "\r" in n or "\n" in n or ":" in n:
                raise ValueError(f"header {n!r}: a name or value cannot hold ':' or a line break")
            merged[n.lower()] = (n, v)
    if body or method in _METHODS_WITH_BODY:
        merged["content-length"] = ("Content-Length", str(len(body)))
    lines = [f"{method} {target.path} HTTP/1.1"]
    lines += [f"{n}: {v}" for n, v in merged.values()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


Route = tuple[Target, str, str, str]  # target, its URL, its head's fixed part, its step name


def _route(run: Iterations, method: str, path: str) -> Route:
    """What a (method, path) always sends: its target, and the head's fixed part -- request
    line, Host and hit's defaults -- as one string. Cached, up to a thousand."""
    target, url = run.target_of(path)
    head = f"{method} {target.path} HTTP/1.1\r\nHost: {target.host_header}\r\n" + _DEFAULTS
    route = (target, url, head, target.path.partition("?")[0])
    if len(run.routes) < 1000:
        run.routes[(method, path)] = route
    return route


def resolve(
    base: Target, prefix: str, path: str, cache: dict[str, tuple[Target, str]]
) -> tuple[Target, str]:
    """``path`` against the base URL: absolute URLs as they are, anything else appended to
    the base URL's path (without its trailing slash). Cached, up to a thousand."""
    found = cache.get(path)
    if found is not None:
        return found
    if path.startswith(("http://", "https://")):
        url = path
    else:
        origin = f"{base.scheme}://{base.host_header}"
        url = origin + prefix + (path if path.startswith("/") else "/" + path)
    target = parse_url(url)
    if len(cache) < 1000:
        cache[path] = (target, url)
    return target, url
