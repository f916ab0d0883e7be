"""The hot path: HTTP/1.1 keep-alive connections driven from asyncio.Protocol callbacks.

One `Conn` per concurrency lane carries one request at a time. There is no coroutine
per request: when httptools reports a complete response inside ``data_received``, the
connection records it into its `Tally` (integer nanoseconds -> microseconds into the
histogram, a status counter) and, while the tally holds closed-model credit, writes the
same pre-built request bytes again; otherwise it calls its `Home` back for the next
ticket. A Conn knows only those two (h11's one-way `_connection` -> `_state`): the
engine that owns the tickets stays out of this module. Coroutines run only to connect.

Error kinds (``Tally.errors`` keys), each a request that got no usable response:

    timeout          no complete response within -t (connect time included)
    connect_refused  the server refused the connection
    connect_error    another connect failure (unreachable, no route, ...)
    tls              handshake or certificate verification failed
    reset            the peer reset the connection (ECONNRESET, EPIPE)
    closed           the peer closed the connection before the response was complete
    bad_response     the bytes were not an HTTP/1.x response
    status           a complete response whose status is outside --ok
    cancelled        still in flight when the run was stopped (Ctrl-C, or -z plus -t
                     passed in a scenario run)
    expect           a scenario's ``r.expect(...)`` rejected the response's status
"""

from __future__ import annotations

import asyncio
import errno
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httptools
from mypy_extensions import mypyc_attr

from ._errors import CannotStart as CannotStart  # engine.py imports it from here
from .stats import COUNTS_LEN, SUB_BUCKET_BITS, SUB_BUCKET_COUNT, SUB_BUCKET_HALF_MAGNITUDE
from .tally import ERROR_KINDS, Tally

__all__ = ["ERROR_KINDS", "LATE_NS", "CannotStart", "Conn", "HeadConn", "Home", "Result"]

# A request that leaves more than this after its due time counts as late. libuv timers
# tick in whole milliseconds, so anything under 2 ms is timer granularity, not backlog.
LATE_NS = 2_000_000


@dataclass(frozen=True, slots=True)
class Result:
    """One request's outcome, as ``send_n`` yields it (the book's Result)."""

    status: int  # 0 when no response came
    latency_s: float  # from the due time under --rps, else from the write
    bytes: int  # response bytes read for this request
    error: str | None  # an error kind (see ERROR_KINDS) or None for a success


def ssl_context(insecure: bool) -> ssl.SSLContext:
    """Certificate and host name verification on; -k turns both off."""
    ctx = ssl.create_default_context()
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect_error_kind(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return "tls"
    if isinstance(exc, ConnectionRefusedError):
        return "connect_refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "connect_error"


def io_error_kind(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, OSError) and exc.errno in (
        errno.ECONNRESET,
        errno.EPIPE,
        errno.ECONNABORTED,
    ):
        return "reset"
    return "reset" if isinstance(exc, ConnectionError) else "closed"


def _close_delimited(head: bytes) -> bool:
    """True when the final response whose bytes start ``head`` has no Content-Length and is
    not chunked, so its body ends when the connection does (RFC 9112 §6.3, rule 8). Interim
    (1xx) responses before it are skipped: their heads say nothing of the final body."""
    start = 0
    while True:
        end = head.find(b"\r\n\r\n", start)
        if end < 0:
            return False
        block = head[start:end].lower()
        if block[9:10] != b"1":  # "HTTP/1.1 1xx": the status code's first digit
            return b"\ncontent-length:" not in block and b"\ntransfer-encoding:" not in block
        start = end + 4


# The bytes of a response kept for `_close_delimited`: enough for its head (and interim
# responses before it), however many reads they came in.
_HEAD_KEEP = 32 * 1024


class Home(Protocol):
    """What a connection calls back into: its owner's side of the connection's life."""

    def free(self, conn: Conn, now: int) -> None:
        """``conn`` got its response (or failed) at ``now``: the next-ticket callback."""

    def connect(self, conn: Conn) -> None:
        """``conn`` has no transport: connect it, then write its request."""

    def opened(self, conn: Conn) -> None:
        """A transport was made for ``conn``."""

    def lost(self, conn: Conn) -> None:
        """``conn``'s transport is gone."""

    def forget(self, conn: Conn) -> None:
        """``conn`` is dead: no sweep or stop needs to see it any more."""


@mypyc_attr(allow_interpreted_subclasses=True)  # tests' fake connections
class Conn(asyncio.Protocol):
    """One keep-alive connection; a request in flight between ``send`` and its response."""

    __slots__ = (
        "busy",
        "clock",
        "dead",
        "head",
        "home",
        "parser",
        "request",
        "rx",
        "sent",
        "start",
        "t",
        "transport",
    )

    def __init__(self, home: Home, tally: Tally, request: bytes, clock: Callable[[], int]) -> None:
        self.home = home
        self.t = tally
        self.request = request  # the bytes written for every request of this lane
        self.clock = clock
        self.transport: asyncio.Transport | None = None
        self.parser: Any = httptools.HttpResponseParser(self)
        self.busy = False  # a request (or the connect for one) is in flight
        self.dead = False  # closed or failed: the lane moves to a new Conn
        self.start = 0  # ns the latency (and -t) is measured from (due time or write time)
        self.sent = 0  # ns of the write (or connect start)
        self.rx = 0  # response bytes of the request in flight
        self.head = b""  # the response's first bytes, for a close-delimited body

    # -- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.home.opened(self)

    def data_received(self, data: bytes) -> None:
        if self.dead:
            return
        if not self.rx:
            self.head = data  # the usual response: one read, nothing more to keep
        elif len(self.head) < _HEAD_KEEP:
            self.head += data  # a head split over reads, or a 1xx first
        self.rx += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.finish(101, False)
        except httptools.HttpParserCallbackError:
            raise
        except httptools.HttpParserError:
            if not self.dead:
                self.fail("bad_response")

    def on_message_complete(self) -> None:
        # The hot path, inlined on purpose: every call and attribute access here is paid
        # once per request. Anything unusual falls back to ``finish``.
        p = self.parser
        status = p.get_status_code()
        if status < 200:  # 1xx interim response: the final one follows
            return
        if not self.busy:  # a response nobody asked for: the connection is not usable
            self.close()
            return
        t = self.t
        now = self.clock()
        if not (t.ok[status] and p.should_keep_alive()) or now - self.start > t.timeout_ns:
            self.finish(status, p.should_keep_alive())
            return
        lat = (now - self.start) // 1000  # microseconds, into the histogram's slots
        h = t.hist
        if lat < SUB_BUCKET_COUNT:
            h.counts[lat] += 1
        else:
            b = lat.bit_length() - SUB_BUCKET_BITS
            i = (b << SUB_BUCKET_HALF_MAGNITUDE) + (lat >> b)
            h.counts[i if i < COUNTS_LEN else COUNTS_LEN - 1] += 1
        if not h.total or lat < h.min:
            h.min = lat
        if lat > h.max:
            h.max = lat
        h.total += 1
        h.sum += lat
        t.codes[status] += 1
        t.successes += 1
        t.finished += 1
        t.bytes += self.rx
        if t.credit > 0 and now < t.until:
            # the next ticket, closed model: same connection, same bytes
            t.credit -= 1
            self.start = self.sent = now
            self.rx = 0
            self.transport.write(self.request)  # type: ignore[union-attr]
        else:
            self.busy = False
            self.home.free(self, now)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost decides what it meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.home.lost(self)
        if self.dead:
            return
        if self.busy:
            if exc is None and self.rx and _close_delimited(self.head):
                self.finish(self.parser.get_status_code(), False)
            else:
                self.fail(io_error_kind(exc) if exc is not None else "closed")
        self.dead = True
        self.transport = None
        self.home.forget(self)

    # -- the request cycle -------------------------------------------------------------

    def send(self, start: int, now: int) -> None:
        """Write the request (connecting first when this Conn has no transport)."""
        self.busy = True
        self.start = start
        self.sent = now
        self.rx = 0
        t = self.transport
        if t is not None:
            t.write(self.request)
        else:
            self.home.connect(self)

    def finish(self, status: int, keep_alive: bool) -> None:
        """A complete response: count it, then take the next ticket or go idle."""
        now = self.clock()
        self.busy = False
        self.t.response(status, now - self.start, self.rx)
        if not keep_alive or status == 101:
            self.close()
        self.home.free(self, now)

    def fail(self, kind: str) -> None:
        """The request in flight got no usable response: count it, drop the connection."""
        now = self.clock()
        was_busy = self.busy
        self.busy = False
        self.close()
        if was_busy:
            self.t.error(kind, now - self.start, self.rx)
            self.home.free(self, now)

    def close(self) -> None:
        self.dead = True
        self.home.forget(self)
        t = self.transport
        self.transport = None
        if t is not None:
            t.abort()


class SlowConn(Conn):
    """Every response through ``finish`` (the tally's sink sees each one: send_n)."""

    __slots__ = ()

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            return
        if not self.busy:
            self.close()
            return
        self.finish(status, self.parser.should_keep_alive())


class HeadConn(Conn):
    """For HEAD: the response ends with its headers whatever Content-Length says, which
    httptools cannot be told, so the parser is replaced after each response."""

    __slots__ = ()

    def on_headers_complete(self) -> None:
        p = self.parser
        status = p.get_status_code()
        if status < 200:
            return
        if not self.busy:  # a response nobody asked for: as in Conn, the connection is done
            self.close()
            return
        keep = p.should_keep_alive()
        self.parser = httptools.HttpResponseParser(self)
        self.finish(status, keep)

    def on_message_complete(self) -> None:
        return None
