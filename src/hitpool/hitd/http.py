"""A small HTTP/1.1 server: an `asyncio.Protocol` around httptools' request parser.

Why not uvicorn, Starlette or aiohttp: measured on one core, a 202 after a grouped SQLite
commit came out at 44-47k jobs/s with this shape and at 16-27k with the others. The speed
comes from doing little per request: no coroutine per request on the fast path (a handler
returns a `Response`, or a future when it must wait, e.g. for the commit), one write per
batch of pipelined responses, and one timer per server rather than one per connection.

What it guarantees, and why:

- Keep-alive, and pipelined requests answered in the order they arrived (RFC 9112 9.3.2):
  each connection keeps a queue of answers, written from the head as they become ready.
- Limits: the request line plus headers at most ``max_header_bytes`` (16 KiB, h11's figure;
  nginx allows 8 KiB per line, Node 16 KiB in all) or 431 (RFC 6585 5), counted as the bytes
  arrive, so a header line that never ends is refused at the limit however it is chunked;
  the body at most ``max_body_bytes`` (1 MiB) or 413 (RFC 9110 15.5.14), decided from
  ``Content-Length`` before the body is read, and counted as a chunked body arrives.
- Timeouts, checked once a second by one sweeper: an idle keep-alive connection is closed
  after ``keep_alive_timeout``; a request that has started but not finished arriving after
  ``request_timeout`` gets 408 (slowloris); a client that stops reading its answers for
  ``write_timeout`` is dropped.
- Bounded memory: at most ``max_pipeline`` unanswered requests per connection and at most
  ``max_connections`` connections (more get 503 and are closed). When ``max_pipeline`` answers
  wait, reading pauses; a request already read beyond them (in the same read) is not handed to
  the handler: the waiting answers are written, the last saying ``Connection: close``, and the
  connection closes. Nothing was done for the requests left unanswered, so nothing is promised,
  and the client resends them as after any close. Checking this costs nothing per request: the
  connection swaps its handler for `_Connection._overflow` only while its queue is full.
- HEAD is answered without a body but with the ``Content-Length`` of the GET (RFC 9110 9.3.2);
  the handler sees the method and routes HEAD as it routes GET.
- ``Upgrade`` (and CONNECT) is not supported: the request is handled and answered once, the
  header ignored (RFC 9110 7.8), and the connection closes after the answers, since what
  follows may be in the other protocol. httptools stops parsing at the end of the head: the
  handler gets no body even if one was announced.

Errors the protocol answers itself (400 malformed, 408, 413, 431, 503) carry the same JSON
body as the application's: ``{"error": ..., "field": ..., "message": ...}``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast

import httptools

from .messages import Deferred, Handler, Request, Response, error_response

__all__ = ["HttpLimits", "HttpServer"]

log = logging.getLogger("hitpool.hitd.http")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Limits of one server. Times are seconds."""

    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 1024 * 1024
    keep_alive_timeout: float = 75.0
    request_timeout: float = 10.0
    write_timeout: float = 30.0
    max_pipeline: int = 64
    max_connections: int = 10_000
    linger_timeout: float = 2.0  # after an error answer, how long unread input is drained
    sweep_interval: float = 1.0  # how often timeouts are checked (and Date refreshed)


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


_STATUS_LINES: dict[int, bytes] = {s.value: _status_line(s.value) for s in HTTPStatus}
# Status line + content type + "content-length: ", built once per (status, content type):
# a handful of distinct pairs, so the cache stays small (and is capped all the same).
_HEADS: dict[tuple[int, str], bytes] = {}
_HEADS_MAX = 256
# Header names as sent -> lower-case str. Clients send the same few names on every request;
# capped so that a client inventing names cannot grow it.
_NAMES: dict[bytes, str] = {}
_NAMES_MAX = 1024


def _head(status: int, content_type: str) -> bytes:
    head = _HEADS.get((status, content_type))
    if head is None:
        status_line = _STATUS_LINES.get(status) or _status_line(status)
        ctype = content_type.encode("latin-1")
        head = status_line + b"content-type: " + ctype + b"\r\ncontent-length: "
        if len(_HEADS) < _HEADS_MAX:
            _HEADS[(status, content_type)] = head
    return head


class _AbortRequest(Exception):
    """Raised inside a parser callback to stop parsing and answer with `response`."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


# _LINGER: an error answer was sent and the write side shut; what the client still sends is
# read and dropped until it closes, so that closing with unread input (which makes the
# kernel send RST) cannot destroy the answer before the client has read it.
_IDLE, _READING, _CLOSED, _LINGER = 0, 1, 2, 3

_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")}

# What an answer needs beyond the usual, as bits of its `mode` (0 for almost every request):
# an HTTP/1.0 keep-alive request must be told `Connection: keep-alive`; an answer to HEAD
# carries no body. _H10 must stay 1: on_message_complete uses a bool for it.
_H10, _HEAD = 1, 2


class HttpServer:
    """Owns the listening socket, every connection and the timeout sweeper.

    Lifecycle: `await start(host, port)`, then `stop_accepting()` closes the listening socket,
    and `await close(timeout)` lets connections finish what they were answering, then closes
    them. ``closing`` makes every further answer carry ``Connection: close``.
    """

    def __init__(self, handler: Handler, limits: HttpLimits | None = None) -> None:
        self.handler = handler
        self.limits = limits or HttpLimits()
        self.connections: set[_Connection] = set()
        self.closing = False
        self.date_line = b""
        # A coarse clock for timeouts, advanced by the sweeper: reading an attribute per
        # request is cheaper than loop.time(), and timeouts are only checked per sweep.
        self.now = 0.0
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._idle_event = asyncio.Event()
        self._update_date()

    @property
    def sockets(self) -> tuple[Any, ...]:
        return tuple(self._server.sockets) if self._server is not None else ()

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, sock: Any = None) -> None:
        loop = asyncio.get_running_loop()
        if sock is not None:
            self._server = await loop.create_server(lambda: _Connection(self), sock=sock)
        else:
            self._server = await loop.create_server(
                lambda: _Connection(self), host, port, reuse_address=True, backlog=4096
            )
        self.now = loop.time()
        self._sweeper = asyncio.create_task(self._sweep(), name="hitd-http-sweeper")

    def stop_accepting(self) -> None:
        """Close the listening socket; open connections keep being served."""
        if self._server is not None:
            self._server.close()

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, close idle connections, wait up to `grace` s for the busy ones."""
        self.closing = True
        self.stop_accepting()
        deadline = time.monotonic() + grace
        for conn in list(self.connections):
            conn.close_if_idle()
        while self.connections and time.monotonic() < deadline:
            self._idle_event.clear()
            try:
                await asyncio.wait_for(self._idle_event.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
            for conn in list(self.connections):
                conn.close_if_idle()
        for conn in list(self.connections):
            conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
            self._sweeper = None
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _notify_idle(self) -> None:
        self._idle_event.set()

    def _update_date(self) -> None:
        self.date_line = b"date: " + formatdate(usegmt=True).encode() + b"\r\n"

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.limits.sweep_interval)
            self._update_date()
            self.now = now = loop.time()
            for conn in list(self.connections):
                conn.check_timeouts(now)


class _Connection(asyncio.Protocol):
    """One client connection: parse, hand to the handler, answer in order."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._limits = server.limits
        # The server's handler, or `_overflow` while max_pipeline answers wait.
        self._handler: Handler = server.handler
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._state = _CLOSED
        self._since = 0.0  # when the current state began (loop time)
        self._reading_paused = False
        self._writing_paused_at: float | None = None
        # Answers in request order: (Response or future, (keep_alive, mode)).
        self._queue: collections.deque[tuple[Any, tuple[bool, int]]] = collections.deque()
        self._out: list[bytes] = []
        self._in_data = False
        self._tasks: set[asyncio.Task[Response]] = set()
        # The request being parsed.
        self._url = b""
        self._headers: dict[str, str] = {}
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        # Invariant: _in_head while a request has begun and its headers are not complete;
        # then _head_fed counts the bytes read for it so far (see _count_head).
        self._in_head = False
        self._head_fed = 0
        self._messages = 0  # requests parsed on this connection

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        if len(self._server.connections) >= self._limits.max_connections or self._server.closing:
            resp = error_response(503, "too many connections", headers=(("Retry-After", "1"),))
            transport.write(self._encode(resp, keep_alive=False))
            transport.close()
            return
        self._server.connections.add(self)
        self._state = _IDLE
        self._since = self._server.now

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        self._queue.clear()
        for task in self._tasks:
            task.cancel()
        self._server.connections.discard(self)
        self._server._notify_idle()

    def data_received(self, data: bytes) -> None:
        if self._state == _CLOSED or self._state == _LINGER:
            return
        self._in_data = True
        in_head, messages = self._in_head, self._messages
        try:
            self._parser.feed_data(data)
            if self._in_head and self._messages == messages:
                self._count_head(data, in_head)
        except httptools.HttpParserUpgrade:
            # httptools raises this after the request's on_message_complete, if it came.
            if self._state == _READING:
                self._fail(error_response(400, "protocol upgrades are not supported", "Upgrade"))
            else:
                # Handled: its answer is the only one (the Upgrade is ignored, RFC 9110 7.8).
                # What follows it may be in the protocol asked for: read nothing more.
                self._end_after_answers()
        except httptools.HttpParserCallbackError as exc:
            ctx = exc.__context__
            if isinstance(ctx, _AbortRequest):
                self._fail(ctx.response)
            elif isinstance(ctx, _StopParsing):
                # A request asked to close, or came past max_pipeline (_overflow): the answers
                # are queued, the rest of the input is not read.
                pass
            else:
                log.exception("error while handling a request", exc_info=ctx)
                self._fail(error_response(500, "internal error"))
        except httptools.HttpParserError as exc:
            self._fail(error_response(400, f"malformed HTTP request: {exc}", "request"))
        finally:
            self._in_data = False
        # Most requests wait for a commit: nothing to write yet, so skip the flush.
        if self._out or self._close_after_flush or self._server.closing:
            self._flush()

    def _count_head(self, data: bytes, continued: bool) -> None:
        """Count the bytes of a head still arriving, as they arrive: httptools hands a header
        over only once its line is complete, and buffers it until then (without limit).

        Exact for every read that carries only this head (it began in an earlier read, or
        at the start of this one); a head that began after the end of another request in
        the same read is counted from its next read on (its share of this one is unknown),
        so what a head can hold before its 431 is the limit plus at most one read."""
        self._head_fed = self._head_fed + len(data) if continued else len(data)
        if self._head_fed > self._limits.max_header_bytes:
            self._fail(self._headers_too_large())

    def pause_writing(self) -> None:
        self._writing_paused_at = self._server.now
        self._pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused_at = None
        if len(self._queue) < self._limits.max_pipeline:
            self._resume_reading()

    def eof_received(self) -> bool | None:
        # A half-closed client may still read its answers: keep the write side open while
        # answers are pending, then close.
        if not self._queue or self._state == _LINGER:
            return None
        self._eof = True
        return True

    # --- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._state = _READING
        self._in_head = True
        self._head_fed = 0
        self._since = self._server.now
        self._url = b""
        self._headers = {}
        self._head_bytes = 0
        self._body = []
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > self._limits.max_header_bytes:
            raise _AbortRequest(error_response(414, "the URL is too long", "url"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self._limits.max_header_bytes:
            raise _AbortRequest(self._headers_too_large())
        key = _NAMES.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
            if len(_NAMES) < _NAMES_MAX:
                _NAMES[name] = key
        headers = self._headers
        if key in headers:
            headers[key] += ", " + value.decode("latin-1")
        else:
            headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._in_head = False
        length = self._headers.get("content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                raise _AbortRequest(error_response(400, "not a number", "Content-Length"))
            if size > self._limits.max_body_bytes:
                raise _AbortRequest(self._too_large())
        expect = self._headers.get("expect")
        if (
            expect is not None
            and expect.lower() == "100-continue"
            and not self._queue
            and self._parser.get_http_version() != "1.0"
        ):
            # Only when nothing is pending: an interim answer may not overtake earlier ones.
            # Never to HTTP/1.0, which has no 1xx answers (RFC 9110 10.1.1).
            self._out.append(b"HTTP/1.1 100 Continue\r\n\r\n")
            if not self._in_data:
                self._flush()

    def on_body(self, chunk: bytes) -> None:
        self._body_bytes += len(chunk)
        if self._body_bytes > self._limits.max_body_bytes:
            raise _AbortRequest(self._too_large())
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        self._messages += 1
        parser = self._parser
        keep_alive = parser.should_keep_alive() and not self._server.closing
        headers = self._headers
        # An HTTP/1.0 keep-alive request says so in a Connection header; only then does the
        # answer need to echo it (the version is not looked up for every request). The bool
        # is the mode: True is _H10 (1), and skipping `_H10 if ... else 0` saves ~40 Ir.
        mode: int = keep_alive and "connection" in headers and parser.get_http_version() == "1.0"
        url = self._url
        if b"?" in url:
            raw_path, _, raw_query = url.partition(b"?")
            path, query = raw_path.decode("latin-1"), raw_query.decode("latin-1")
        else:
            path, query = url.decode("latin-1"), ""
        body = self._body
        method = parser.get_method()
        name = _METHODS.get(method) or method.decode("ascii", "replace")
        if name == "HEAD":  # on the str: ~100 Ir, half a bytes compare (callgrind)
            mode |= _HEAD
        request = Request(
            name,
            path,
            query,
            headers,
            body[0] if len(body) == 1 else b"".join(body),
        )
        self._body = []
        self._state = _IDLE
        self._since = self._server.now
        try:
            result = self._handler(request)
        except _StopParsing:
            raise  # from `_overflow`: this request is not handled, nor any after it
        except Exception:
            log.exception("handler failed on %s %s", request.method, request.path)
            result = error_response(500, "internal error")
        self._answer(result, keep_alive, mode)
        if not keep_alive:
            # Nothing after this request is read: stop the parser feeding more.
            self._stop_reading()
            raise _StopParsing

    # --- answering in order -----------------------------------------------------------------

    def _answer(
        self, result: Response | Deferred | Awaitable[Response], keep_alive: bool, mode: int
    ) -> None:
        ka = (keep_alive, mode)
        if type(result) is Deferred:
            # The usual case (a job waiting for its commit): checked first, by exact type.
            self._queue.append((result, ka))
            if result.done():
                self._drain_queue()
            else:
                result._callback = self._on_ready
        elif isinstance(result, Response):
            if not self._queue:
                self._out.append(self._encode(result, keep_alive, mode))
                if not keep_alive:
                    self._close_after_flush = True
                return
            self._queue.append((result, ka))
        else:
            fut: asyncio.Future[Response]
            assert not isinstance(result, Deferred)
            if asyncio.isfuture(result):
                fut = result  # type: ignore[assignment]
            else:
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                fut = task
            self._queue.append((fut, ka))
            fut.add_done_callback(self._on_ready)
        if len(self._queue) >= self._limits.max_pipeline:
            # Pausing stops the next reads, not the parsing of this one: the rest of it goes
            # to `_overflow` instead of the handler, until reading resumes.
            self._pause_reading()
            self._handler = self._overflow

    def _overflow(self, request: Request) -> Response | Deferred | Awaitable[Response]:
        """The handler while max_pipeline answers wait: the request arrived in the same read
        as those before it and is refused, unhandled, by ending the connection after them."""
        if len(self._queue) < self._limits.max_pipeline:  # an answer was ready at once
            return self._server.handler(request)
        self._end_after_answers()
        raise _StopParsing

    def _on_ready(self, _fut: asyncio.Future[Response] | Deferred) -> None:
        if self._state == _CLOSED:
            return
        self._drain_queue()
        if not self._in_data:
            self._flush()

    def _drain_queue(self) -> None:
        queue = self._queue
        while queue:
            item, (keep_alive, mode) = queue[0]
            if type(item) is Deferred:
                if item.response is not None:
                    resp = item.response
                elif item.error is not None:
                    log.error("handler failed", exc_info=item.error)
                    resp = error_response(500, "internal error")
                else:
                    return
            elif not isinstance(item, Response):
                if not item.done():
                    return
                if item.cancelled():
                    resp = error_response(503, "the server is shutting down")
                    keep_alive = False
                else:
                    exc = item.exception()
                    if exc is not None:
                        log.error("handler failed", exc_info=exc)
                        resp = error_response(500, "internal error")
                    else:
                        resp = item.result()
            else:
                resp = item
            queue.popleft()
            if not queue and self._server.closing and self._state != _READING:
                keep_alive = False  # the last answer before a shutdown says so
            self._out.append(self._encode(resp, keep_alive, mode))
            if not keep_alive:
                self._close_after_flush = True
                queue.clear()
                return
        if self._reading_paused and self._writing_paused_at is None:
            self._resume_reading()

    _close_after_flush = False
    _linger = False  # an answer that closes was sent while input may still be arriving
    _eof = False

    def _flush(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            self._out.clear()
            return
        if self._out:
            out = self._out
            transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        if self._close_after_flush and self._linger and transport.can_write_eof():
            self._linger = False
            self._state = _LINGER
            self._since = self._server.now
            transport.write_eof()
            self._reading_paused = False
            try:
                transport.resume_reading()
            except RuntimeError:
                pass
        elif self._close_after_flush or (self._eof and not self._queue):
            self._state = _CLOSED
            transport.close()
        elif self._server.closing and not self._queue and self._state == _IDLE:
            transport.close()
        if not self._queue and self._server.closing:
            self._server._notify_idle()  # only close() waits for it

    def _encode(self, resp: Response, keep_alive: bool, mode: int = 0) -> bytes:
        status, body, headers, content_type = resp
        head = _HEADS.get((status, content_type)) or _head(status, content_type)
        if len(headers) == 1:  # the usual case: Location
            name, value = headers[0]
            extra = f"{name}: {value}\r\n".encode("latin-1")
        elif headers:
            extra = "".join([f"{name}: {value}\r\n" for name, value in headers]).encode("latin-1")
        else:
            extra = b""
        if not keep_alive:
            extra += b"connection: close\r\n"
        if mode:  # rare: see _H10 and _HEAD
            if keep_alive and mode & _H10:
                extra += b"connection: keep-alive\r\n"
            if mode & _HEAD:  # the length the GET would have, and no body (RFC 9110 9.3.2)
                length = str(len(body)).encode()
                return b"".join((head, length, b"\r\n", self._server.date_line, extra, b"\r\n"))
        # join() of a tuple measured faster than %-formatting the same parts.
        return b"".join(
            (head, str(len(body)).encode(), b"\r\n", self._server.date_line, extra, b"\r\n", body)
        )

    def _fail(self, resp: Response) -> None:
        """Answer a request the protocol refused, after the ones before it, then close."""
        self._state = _IDLE
        self._linger = True
        self._queue.append((resp, (False, 0)))
        self._stop_reading()
        self._drain_queue()

    def _end_after_answers(self) -> None:
        """Read no further request: write the answers waiting, then close, lingering (what
        the client sent meanwhile is read and dropped, so no reset destroys the answers)."""
        self._stop_reading()
        self._linger = True
        queue = self._queue
        if queue:
            item, (_, mode) = queue[-1]
            queue[-1] = (item, (False, mode))  # the last answer says `connection: close`
        else:
            # The last answer is encoded already, without saying so: clients must expect a
            # close after any answer (RFC 9112 9.3), and this path is rare (an Upgrade).
            self._close_after_flush = True

    # --- flow control and timeouts ----------------------------------------------------------

    _reading_done = False  # no more requests are read on this connection

    def _stop_reading(self) -> None:
        self._reading_done = True
        self._pause_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            try:
                self._transport.pause_reading()
            except RuntimeError:
                pass

    def _resume_reading(self) -> None:
        if (
            self._reading_paused
            and self._transport is not None
            and not self._close_after_flush
            and not self._reading_done
        ):
            self._reading_paused = False
            self._handler = self._server.handler  # see _overflow
            try:
                self._transport.resume_reading()
            except RuntimeError:
                pass

    def close_if_idle(self) -> None:
        if self._transport is None:
            return
        if self._state != _READING and not self._queue:
            self._flush()
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def check_timeouts(self, now: float) -> None:
        limits = self._limits
        if self._transport is None or self._state == _CLOSED:
            return
        if self._state == _LINGER:
            if now - self._since > limits.linger_timeout:
                self.abort()
            return
        if self._writing_paused_at is not None:
            if now - self._writing_paused_at > limits.write_timeout:
                self.abort()
            return
        if self._state == _READING and not self._reading_paused:
            if now - self._since > limits.request_timeout:
                msg = f"the request did not arrive within {limits.request_timeout:g} s"
                self._fail(error_response(408, msg, "request"))
                self._flush()
        elif not self._queue and now - self._since > limits.keep_alive_timeout:
            self._transport.close()

    def _headers_too_large(self) -> Response:
        limit = self._limits.max_header_bytes
        return error_response(431, f"request headers are larger than {limit} bytes", "headers")

    def _too_large(self) -> Response:
        limit = self._limits.max_body_bytes
        return error_response(413, f"the body is larger than {limit} bytes", "body")


class _StopParsing(Exception):
    """Raised after a request that closes the connection, or instead of handling one past
    max_pipeline, so the parser reads no further."""
