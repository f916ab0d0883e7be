"""What an HTTP handler of hitd takes and gives: `Request`, `Response`, `Deferred`.

The protocol (`http.HttpServer`) parses a `Request` and calls the handler, which answers at
once with a `Response` or later through a `Deferred` (or an awaitable). `error_response` is
the one error shape every 4xx and 5xx of hitd carries, the protocol's own included.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any, NamedTuple

__all__ = ["Deferred", "Handler", "Request", "Response", "error_response", "json_response"]

log = logging.getLogger("hitpool.hitd.http")


# Request and Response are NamedTuples, not frozen dataclasses: both are built once per
# request on the hot path, and a frozen dataclass's __init__ costs ~1 us more (measured).


class Request(NamedTuple):
    """One parsed request. Header names are lower-case; repeated headers are joined by ', '."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes


class Response(NamedTuple):
    """One answer. ``headers`` are extra headers; the protocol adds Content-Length and Date."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"


class Deferred:
    """An answer that comes later, cheaper than a future: `set_result` hands the response to
    the connection at once, where a future's done-callback costs a loop handle and a turn.

    It has the part of the future interface a producer needs (`done`, `set_result`,
    `set_exception`), so code that resolves futures resolves these too. Single use.
    """

    __slots__ = ("_callback", "error", "response")

    def __init__(self) -> None:
        self.response: Response | None = None
        self.error: BaseException | None = None
        self._callback: Callable[[Deferred], None] | None = None

    def done(self) -> bool:
        return self.response is not None or self.error is not None

    def set_result(self, response: Response) -> None:
        if self.done():
            raise asyncio.InvalidStateError("the answer is already set")
        self.response = response
        self._fire()

    def set_exception(self, error: BaseException) -> None:
        if self.done():
            raise asyncio.InvalidStateError("the answer is already set")
        self.error = error
        self._fire()

    def _fire(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            try:
                callback(self)
            except Exception:  # the producer (e.g. the intake) must go on answering others
                log.exception("error while writing an answer")


# A handler answers at once (a Response) or later: best a Deferred, else an awaitable (a
# plain future; a coroutine costs a Task per request).
Handler = Callable[[Request], "Response | Deferred | Awaitable[Response]"]


_ENCODE = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _finite(value: Any) -> Any:
    """`value` with NaN and the infinities as null: what RFC 8259 JSON can say of them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def json_response(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """A JSON answer, compact, one line, and always JSON: a non-finite float (a task's
    result, say) is sent as null, never as the bare token NaN no JSON parser reads."""
    try:
        text = _ENCODE(payload)
    except ValueError:
        text = _ENCODE(_finite(payload))
    return Response(status, text.encode(), headers)


def error_response(
    status: int,
    message: str,
    field: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> Response:
    """The one error shape: the reason phrase as a snake_case word, the field, the message."""
    error = HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    return json_response(status, {"error": error, "field": field, "message": message}, headers)
