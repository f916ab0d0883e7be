"""One HTTP/1.1 server connection as a pure state machine: bytes in, bytes and decisions out.

No socket, no loop, no clock: `H1Connection.receive(data)` feeds httptools' parser (a pure
parser too), hands each complete request to the handler, and queues the answers in request
order; the encoded answers collect in `out`, and what the connection wants done with its
transport is stated in `reading` (keep reading or pause) and `end` (stay open, close after
`out`, linger, abort). The time is an argument (`tick(now)`, and `Shared.now`, advanced by
the shell). `http.HttpServer` is the shell: it writes `out`, applies the decisions, and calls
`tick` once a second. The tests drive this module with bytes alone.

States (`state`), the rules between them written once here:

    IDLE     between requests (or before the first): keep-alive / first-byte timeouts run
    READING  a request has begun and has not fully arrived: the request timeout runs (408)
    LINGER   an answer that closes was sent and the write side shut; what the client still
             sends is read and dropped until it closes, so that closing with unread input
             (which makes the kernel send RST) cannot destroy the answer before it is read;
             aborted after `linger_timeout`
    CLOSED   the shell closed (or is closing) the transport; nothing more is done

    IDLE -> READING on the first byte of a request; READING -> IDLE when it is complete (its
    answer is queued); any -> LINGER or CLOSED when an answer that closes is written.

Limits, counted as the bytes arrive (see `_count_head`): head at most `max_header_bytes` or
431, URL 414, body at most `max_body_bytes` or 413, at most `max_pipeline` answers waiting.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httptools

from .messages import Deferred, Handler, Request, Response, error_response

__all__ = ["CLOSE", "LINGER", "ABORT", "OPEN", "H1Connection", "HttpLimits", "Shared"]

log = logging.getLogger("hitpool.hitd.http")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Limits of one server. Times are seconds."""

    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 1024 * 1024
    keep_alive_timeout: float = 75.0
    # A connection that has sent no byte at all: closed after this, not after the
    # keep-alive's 75 s, so idle sockets cannot hold the server's descriptors.
    first_byte_timeout: float = 10.0
    request_timeout: float = 10.0
    write_timeout: float = 30.0
    max_pipeline: int = 64
    max_connections: int = 10_000
    linger_timeout: float = 2.0  # after an error answer, how long unread input is drained
    sweep_interval: float = 1.0  # how often timeouts are checked (and Date refreshed)


class Shared:
    """What every connection of one server reads: the handler, the limits, a coarse clock
    (advanced by the shell: reading an attribute per request is cheaper than a clock call),
    the Date header line and whether the server is closing."""

    def __init__(self, handler: Handler, limits: HttpLimits) -> None:
        self.handler = handler
        self.limits = limits
        self.now = 0.0
        self.date_line = b""
        self.closing = False

    def notify_idle(self) -> None:
        """A connection answered everything while the server closes (the shell waits)."""


# What a connection wants done with its transport once `out` is written (`end`).
OPEN, CLOSE, LINGER, ABORT = 0, 1, 2, 3

_IDLE, _READING, _CLOSED, _LINGER = 0, 1, 2, 3

_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")}

# What an answer needs beyond the usual, as bits of its `mode` (0 for almost every request):
# an HTTP/1.0 keep-alive request must be told `Connection: keep-alive`; an answer to HEAD
# carries no body. _H10 must stay 1: on_message_complete uses a bool for it.
_H10, _HEAD = 1, 2


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


def encode(resp: Response, keep_alive: bool, date_line: bytes, mode: int = 0) -> bytes:
    """One answer as bytes: status line, Content-Type, Content-Length, Date, extras, body."""
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
            return b"".join((head, length, b"\r\n", date_line, extra, b"\r\n"))
    # join() of a tuple measured faster than %-formatting the same parts.
    return b"".join((head, str(len(body)).encode(), b"\r\n", date_line, extra, b"\r\n", body))


def origin_form(url: bytes) -> bytes:
    """The path and query of a request target. An absolute-form target (``http://host/p?q``,
    RFC 9112 3.2.2: a server must accept it) is routed by its path; others are as sent."""
    if url[:1] == b"/" or b"://" not in url:
        return url
    _, _, rest = url.partition(b"://")
    slash = rest.find(b"/")
    query = rest.find(b"?")
    if slash < 0 or 0 <= query < slash:
        return b"/" + rest[query:] if query >= 0 else b"/"
    return rest[slash:]


class _AbortRequest(Exception):
    """Raised inside a parser callback to stop parsing and answer with `response`."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class _StopParsing(Exception):
    """Raised after a request that closes the connection, or instead of handling one past
    max_pipeline, so the parser reads no further."""


def _nothing() -> None:
    pass


class H1Connection:
    """One client connection: parse, hand to the handler, answer in order.

    `spawn(awaitable)` makes a future of an awaitable handler result that is not one (the
    shell owns those tasks); `can_linger`: whether the transport can shut its write side.
    `on_output()` is called when `out` or the decisions changed outside `receive` (an answer
    became ready, a timeout fired); after `receive` the shell looks itself.
    """

    __slots__ = (
        "_body",
        "_body_bytes",
        "_can_linger",
        "_close_after_flush",
        "_eof",
        "_handler",
        "_head_bytes",
        "_head_fed",
        "_headers",
        "_in_data",
        "_in_head",
        "_limits",
        "_linger",
        "_messages",
        "_parser",
        "_queue",
        "_reading_done",
        "_shared",
        "_spawn",
        "_url",
        "_writing_paused_at",
        "end",
        "on_output",
        "out",
        "reading",
        "since",
        "state",
    )

    def __init__(
        self,
        shared: Shared,
        spawn: Callable[[Awaitable[Response]], Any] | None = None,
        can_linger: bool = True,
    ) -> None:
        self._shared = shared
        self._limits = shared.limits
        # The server's handler, or `_overflow` while max_pipeline answers wait.
        self._handler: Handler = shared.handler
        self._spawn = spawn
        self._can_linger = can_linger
        self._parser = httptools.HttpRequestParser(self)
        # Decisions for the shell.
        self.out: list[bytes] = []
        self.reading = True  # False: pause reading (the shell keeps it in step)
        self.end = OPEN
        self.on_output: Callable[[], None] = _nothing
        self.state = _IDLE
        self.since = shared.now  # when the current state began (the shell's clock)
        self._writing_paused_at: float | None = None
        # Answers in request order: (Response or future, (keep_alive, mode)).
        self._queue: collections.deque[tuple[Any, tuple[bool, int]]] = collections.deque()
        self._in_data = False
        self._close_after_flush = False  # the last answer closes: close once it is written
        self._linger = False  # an answer that closes was sent while input may still arrive
        self._eof = False  # the client half-closed
        self._reading_done = False  # no more requests are read on this connection
        # The request being parsed.
        self._url = b""
        self._headers: dict[str, str] = {}
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        # Invariant: _in_head while the parser may be buffering an unfinished line: from a
        # request's start to the end of its headers, and from a chunk's size line to its
        # first data byte (after the last chunk, the trailers, which are header lines too);
        # then _head_fed counts the bytes read for it so far, or is -1 when it began in the
        # read being parsed (see _count_head). It may stay set after a chunked request
        # completes: the next count starts at a new request, which resets it.
        self._in_head = False
        self._head_fed = 0
        self._messages = 0  # requests parsed on this connection

    @property
    def waiting(self) -> int:
        """Answers not yet written."""
        return len(self._queue)

    # --- input ------------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Bytes from the client; `on_output()` when there is something to write or to
        decide (the shell's `data_received` is this method itself)."""
        if self.state == _CLOSED or self.state == _LINGER:
            return
        self._in_data = True
        in_head, messages = self._in_head, self._messages
        try:
            self._parser.feed_data(data)
            if self._in_head and self._messages == messages:
                self._count_head(data, in_head)
        except httptools.HttpParserUpgrade:
            # httptools raises this after the request's on_message_complete, if it came.
            if self.state == _READING:
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
        # Most requests wait for a commit: nothing to write yet, so the shell is not called.
        if self.out or self._close_after_flush or self._shared.closing:
            self._decide()
            self.on_output()
        elif not self.reading:
            self.on_output()

    def _count_head(self, data: bytes, continued: bool) -> None:
        """Count the bytes of a head still arriving, as they arrive: httptools hands a header
        over only once its line is complete, and buffers it until then (without limit).

        Exact for every read that carries only this head (it began in an earlier read, or
        at the start of this one); a head that began after the end of another request in
        the same read is counted from its next read on (its share of this one is unknown),
        so what a head can hold before its 431 is the limit plus at most one read. The same
        holds for a chunked body's trailers: httptools buffers an unfinished trailer line as
        it does a header line (see on_chunk_header)."""
        fed = self._head_fed
        if fed < 0:
            # Trailers may have begun in this read, after body bytes (which are not charged):
            # counted from the next read on.
            self._head_fed = 0
            return
        self._head_fed = fed + len(data) if continued else len(data)
        if self._head_fed > self._limits.max_header_bytes:
            self._fail(self._headers_too_large())

    def eof(self) -> bool:
        """The client half-closed: True to keep the write side open for pending answers."""
        if not self._queue or self.state == _LINGER:
            return False
        self._eof = True
        return True

    def writing_paused(self) -> None:
        self._writing_paused_at = self._shared.now
        self._pause_reading()

    def writing_resumed(self) -> None:
        self._writing_paused_at = None
        if len(self._queue) < self._limits.max_pipeline:
            self._resume_reading()

    def lost(self) -> None:
        """The transport is gone: nothing more is answered."""
        self.state = _CLOSED
        self._queue.clear()
        self.out.clear()

    # --- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.state = _READING
        self.since = self._shared.now
        self._in_head = True
        self._head_fed = 0
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
        if "transfer-encoding" in self._headers and self._parser.get_http_version() == "1.0":
            # HTTP/1.0 has no Transfer-Encoding: a 1.0 intermediary frames this message by
            # its length or by the close, not by chunks, so serving what follows would read
            # a different request than it sent (smuggling). Faulty framing, RFC 9112 6.1
            # and 6.3: a 400, then close.
            msg = "HTTP/1.0 has no Transfer-Encoding: send Content-Length, or use HTTP/1.1"
            raise _AbortRequest(error_response(400, msg, "Transfer-Encoding"))
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
            self.out.append(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_chunk_header(self) -> None:
        # A chunk's size line ended: its data follows (on_body), or, after the last chunk,
        # the trailers, whose unfinished lines httptools buffers. Counted as a head's bytes.
        self._in_head = True
        self._head_fed = -1

    def on_body(self, chunk: bytes) -> None:
        self._in_head = False  # data of a chunk (see on_chunk_header)
        self._body_bytes += len(chunk)
        if self._body_bytes > self._limits.max_body_bytes:
            raise _AbortRequest(self._too_large())
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        self._messages += 1
        parser = self._parser
        keep_alive = parser.should_keep_alive() and not self._shared.closing
        headers = self._headers
        # An HTTP/1.0 keep-alive request says so in a Connection header; only then does the
        # answer need to echo it (the version is not looked up for every request). The bool
        # is the mode: True is _H10 (1), and skipping `_H10 if ... else 0` saves ~40 Ir.
        mode: int = keep_alive and "connection" in headers and parser.get_http_version() == "1.0"
        url = self._url
        if not url.startswith(b"/"):
            url = origin_form(url)
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
        self.state = _IDLE
        self.since = self._shared.now
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
                self.out.append(encode(result, keep_alive, self._shared.date_line, mode))
                if not keep_alive:
                    self._close_after_flush = True
                return
            self._queue.append((result, ka))
        else:
            assert not isinstance(result, Deferred)
            fut: Any = result
            if not hasattr(result, "add_done_callback"):
                if self._spawn is None:
                    raise TypeError("an awaitable answer needs the shell's spawn")
                fut = self._spawn(result)
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
            return self._shared.handler(request)
        self._end_after_answers()
        raise _StopParsing

    def _on_ready(self, _fut: Any) -> None:
        if self.state == _CLOSED:
            return
        self._drain_queue()
        if not self._in_data:
            if self._close_after_flush or self._eof or self._shared.closing:
                self._decide()  # rare: the usual answer leaves the connection open
            self.on_output()

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
            if not queue and self._shared.closing and self.state != _READING:
                keep_alive = False  # the last answer before a shutdown says so
            self.out.append(encode(resp, keep_alive, self._shared.date_line, mode))
            if not keep_alive:
                self._close_after_flush = True
                queue.clear()
                return
        if not self.reading and self._writing_paused_at is None:
            self._resume_reading()

    def _decide(self) -> None:
        """What the transport does once `out` is written: stay open, close or linger."""
        if self.end != OPEN:
            return
        if self._close_after_flush and self._linger and self._can_linger:
            self._linger = False
            self.state = _LINGER
            self.since = self._shared.now
            self.end = LINGER
            self.reading = True  # drained and dropped: see LINGER
        elif self._close_after_flush or (self._eof and not self._queue):
            self.state = _CLOSED
            self.end = CLOSE
        elif self._shared.closing and not self._queue and self.state == _IDLE:
            self.end = CLOSE
        if not self._queue and self._shared.closing:
            self._shared.notify_idle()  # only the server's close() waits for it

    def _fail(self, resp: Response) -> None:
        """Answer a request the protocol refused, after the ones before it, then close."""
        self.state = _IDLE
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

    def _stop_reading(self) -> None:
        self._reading_done = True
        self._pause_reading()

    def _pause_reading(self) -> None:
        self.reading = False

    def _resume_reading(self) -> None:
        if not self.reading and not self._close_after_flush and not self._reading_done:
            self.reading = True
            self._handler = self._shared.handler  # see _overflow

    def close_if_idle(self) -> None:
        """The server is closing: close now unless a request is arriving or waits."""
        if self.state != _READING and not self._queue and self.end in (OPEN, LINGER):
            self.end = CLOSE
            self.on_output()

    def tick(self, now: float) -> None:
        """Check the timeouts at `now`; the decision (408, close, abort) goes to on_output."""
        limits = self._limits
        if self.state == _CLOSED or self.end == CLOSE or self.end == ABORT:
            return
        if self.state == _LINGER:
            if now - self.since > limits.linger_timeout:
                self._abort()
            return
        if self._writing_paused_at is not None:
            if now - self._writing_paused_at > limits.write_timeout:
                self._abort()
            return
        if self.state == _READING and self.reading:
            if now - self.since > limits.request_timeout:
                msg = f"the request did not arrive within {limits.request_timeout:g} s"
                self._fail(error_response(408, msg, "request"))
                self._decide()
                self.on_output()
        elif not self._queue:
            idle = limits.keep_alive_timeout if self._messages else limits.first_byte_timeout
            if now - self.since > idle:
                self.end = CLOSE
                self.on_output()

    def _abort(self) -> None:
        self.state = _CLOSED
        self.end = ABORT
        self.on_output()

    def _headers_too_large(self) -> Response:
        limit = self._limits.max_header_bytes
        return error_response(431, f"request headers are larger than {limit} bytes", "headers")

    def _too_large(self) -> Response:
        limit = self._limits.max_body_bytes
        return error_response(413, f"the body is larger than {limit} bytes", "body")
