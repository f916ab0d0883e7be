"""The hot path: HTTP/1.1 keep-alive connections driven from asyncio.Protocol callbacks.

One `Conn` per concurrency lane carries one request at a time. There is no coroutine
per request: when httptools reports a complete response inside ``data_received``, the
connection records it (integer nanoseconds -> microseconds into the histogram, a
status counter) and, if the `Engine` hands it the next ticket, writes the same
pre-built request bytes again. Coroutines run only to connect.

Error kinds (``Engine.errors`` keys), each a request that got no usable response:

    timeout          no complete response within -t (connect time included)
    connect_refused  the server refused the connection
    connect_error    another connect failure (unreachable, no route, ...)
    tls              handshake or certificate verification failed
    reset            the peer reset the connection (ECONNRESET, EPIPE)
    closed           the peer closed the connection before the response was complete
    bad_response     the bytes were not an HTTP/1.x response
    status           a complete response whose status is outside --ok
    cancelled        still in flight when the run was stopped (Ctrl-C)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools

from .._errors import HitpoolError
from ..schedule import OpenSchedule
from ..stats import (
    COUNTS_LEN,
    SUB_BUCKET_BITS,
    SUB_BUCKET_COUNT,
    SUB_BUCKET_HALF_MAGNITUDE,
    Histogram,
    index_of,
)
from .spec import Spec

ERROR_KINDS = (
    "timeout",
    "connect_refused",
    "connect_error",
    "tls",
    "reset",
    "closed",
    "bad_response",
    "status",
    "cancelled",
)

# A request that leaves more than this after its due time counts as late. libuv timers
# tick in whole milliseconds, so anything under 2 ms is timer granularity, not backlog.
LATE_NS = 2_000_000


class CannotStart(HitpoolError):
    """The run could not start: the host does not resolve or no connection could be made."""


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
    """True when the response head in ``head`` has no Content-Length and is not chunked,
    so its body ends when the connection does (RFC 9112 §6.3, rule 8)."""
    end = head.find(b"\r\n\r\n")
    if end < 0:
        return False
    block = head[:end].lower()
    return b"\ncontent-length:" not in block and b"\ntransfer-encoding:" not in block


class Conn(asyncio.Protocol):
    """One keep-alive connection; a request in flight between ``send`` and its response."""

    __slots__ = (
        "busy",
        "dead",
        "e",
        "head",
        "parser",
        "rx",
        "sent",
        "start",
        "transport",
    )

    def __init__(self, engine: Engine) -> None:
        self.e = engine
        self.transport: asyncio.Transport | None = None
        self.parser: Any = httptools.HttpResponseParser(self)
        self.busy = False  # a request (or the connect for one) is in flight
        self.dead = False  # closed or failed: the lane moves to a new Conn
        self.start = 0  # ns the latency is measured from (due time or write time)
        self.sent = 0  # ns of the write (or connect start), for the timeout sweep
        self.rx = 0  # response bytes of the request in flight
        self.head = b""  # the first chunk of the response, for a close-delimited body

    # -- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.e.transports += 1

    def data_received(self, data: bytes) -> None:
        if self.dead:
            return
        if not self.rx:
            self.head = data
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
        e = self.e
        if not (e.fast and e.ok[status] and p.should_keep_alive()):
            self.finish(status, p.should_keep_alive())
            return
        now = e.clock()
        lat = (now - self.start) // 1000  # microseconds, into the histogram's slots
        if lat < SUB_BUCKET_COUNT:
            e.counts[lat] += 1
        else:
            b = lat.bit_length() - SUB_BUCKET_BITS
            i = (b << SUB_BUCKET_HALF_MAGNITUDE) + (lat >> b)
            e.counts[i if i < COUNTS_LEN else COUNTS_LEN - 1] += 1
        e.lat_sum += lat
        if lat > e.lat_max:
            e.lat_max = lat
        if lat < e.lat_min:
            e.lat_min = lat
        e.codes[status] += 1
        e.successes += 1
        e.finished += 1
        e.bytes += self.rx
        if e.remaining > 0 and now < e.fast_deadline:
            # the next ticket, closed model: same connection, same bytes
            e.remaining -= 1
            e.issued += 1
            self.start = self.sent = now
            self.rx = 0
            self.transport.write(e.request)  # type: ignore[union-attr]
        else:
            self.busy = False
            e.next(self, now)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost decides what it meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.e.transport_lost()
        if self.dead:
            return
        if self.busy:
            if exc is None and self.rx and _close_delimited(self.head):
                self.finish(self.parser.get_status_code(), False)
            else:
                self.fail(io_error_kind(exc) if exc is not None else "closed")
        self.dead = True
        self.transport = None
        self.e.live.discard(self)

    # -- the request cycle -------------------------------------------------------------

    def send(self, start: int, now: int) -> None:
        """Write the request (connecting first when this Conn has no transport)."""
        self.busy = True
        self.start = start
        self.sent = now
        self.rx = 0
        self.e.issued += 1
        self.e.remaining -= 1
        t = self.transport
        if t is not None:
            t.write(self.e.request)
        else:
            self.e.spawn_connect(self)

    def finish(self, status: int, keep_alive: bool) -> None:
        """A complete response: count it, then take the next ticket or go idle."""
        e = self.e
        now = e.clock()
        self.busy = False
        e.finished += 1
        e.bytes += self.rx
        e.record((now - self.start) // 1000)
        e.codes[status] += 1
        if e.ok[status]:
            e.successes += 1
            if e.sink is not None:
                e.sink(Result(status, (now - self.start) / 1e9, self.rx, None))
        else:
            e.errors["status"] += 1
            if e.sink is not None:
                e.sink(Result(status, (now - self.start) / 1e9, self.rx, "status"))
        if not keep_alive or status == 101:
            self.close()
        e.next(self, now)

    def fail(self, kind: str) -> None:
        """The request in flight got no usable response: count it, drop the connection."""
        e = self.e
        now = e.clock()
        was_busy = self.busy
        self.busy = False
        self.close()
        if was_busy:
            e.finished += 1
            e.bytes += self.rx
            e.errors[kind] += 1
            if e.sink is not None:
                e.sink(Result(0, (now - self.start) / 1e9, self.rx, kind))
            e.next(self, now)

    def close(self) -> None:
        self.dead = True
        self.e.live.discard(self)
        t = self.transport
        self.transport = None
        if t is not None:
            t.abort()


class HeadConn(Conn):
    """For HEAD: the response ends with its headers whatever Content-Length says, which
    httptools cannot be told, so the parser is replaced after each response."""

    __slots__ = ()

    def on_headers_complete(self) -> None:
        p = self.parser
        status = p.get_status_code()
        if status < 200:
            return
        keep = p.should_keep_alive()
        self.parser = httptools.HttpResponseParser(self)
        self.finish(status, keep)

    def on_message_complete(self) -> None:
        return None


class Engine:
    """The lanes of one process: tickets (closed model, -z deadline, or an open schedule),
    the timeout sweep, and the tallies the summary is built from."""

    def __init__(
        self,
        spec: Spec,
        *,
        lanes: int,
        requests: int | None,
        rate: float | None = None,
        offset: float = 0.0,
        addr: tuple[Any, ...] | None = None,
        family: int = 0,
        sink: Callable[[Result], None] | None = None,
        clock: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self.spec = spec
        self.loop = asyncio.get_running_loop()
        self.clock = clock
        self.request = spec.request_bytes()
        self.conn_class = HeadConn if spec.method == "HEAD" else Conn
        self.ssl = ssl_context(spec.insecure) if spec.target.tls else None
        self.addr = addr
        self.family = family
        self.lanes = lanes
        self.limit = requests  # None: until the deadline
        self.rate = rate
        self.offset = offset
        self.schedule: OpenSchedule | None = None
        self.sink = sink
        self.timeout_ns = int(spec.timeout * 1e9)
        # tallies
        # latencies (µs): the histogram's counts are updated in place by the hot path;
        # total, sum, min and max are kept here and copied in by ``histogram()``
        self.hist = Histogram()
        self.counts = self.hist.counts
        self.lat_sum = 0
        self.lat_min = 1 << 62
        self.lat_max = -1
        self.fast = False  # closed model, no consumer: on_message_complete needs no checks
        self.remaining = 0  # tickets left for the fast path
        self.fast_deadline = 1 << 62
        self.codes = [0] * 1000
        self.ok = [spec.is_ok(s) for s in range(1000)]
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.issued = 0
        self.finished = 0
        self.successes = 0
        self.bytes = 0
        self.late = 0
        # state
        self.base = 0
        self.deadline: int | None = None
        self.gate = False  # tickets may be handed out
        self.paused = False
        self.stopped = False
        self.idle: list[Conn] = []
        self.live: set[Conn] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.pacer: asyncio.TimerHandle | None = None
        self.sweeper: asyncio.TimerHandle | None = None
        self.sweep_s = min(0.25, max(0.005, spec.timeout / 8))
        self.last = 0  # ns of the last completion
        self.transports = 0  # open transports, so the end can wait until they are closed
        self.all_closed: asyncio.Future[None] | None = None

    def record(self, lat: int) -> None:
        """One latency in µs (the slow path's twin of the inlined code)."""
        if lat < 0:
            lat = 0
        self.counts[index_of(lat)] += 1
        self.lat_sum += lat
        if lat > self.lat_max:
            self.lat_max = lat
        if lat < self.lat_min:
            self.lat_min = lat

    def histogram(self) -> Histogram:
        """The latency histogram, its totals brought up to date."""
        h = self.hist
        h.total = sum(h.counts)
        h.sum = self.lat_sum
        h.min = self.lat_min if h.total else 0
        h.max = self.lat_max if h.total else 0
        return h

    def _refresh(self) -> None:
        """Recompute what the fast path relies on after the model or the gate changed."""
        self.fast = self.gate and not self.paused and self.schedule is None and self.sink is None
        limit = self.limit if self.limit is not None else 1 << 62
        self.remaining = max(0, limit - self.issued)
        self.fast_deadline = self.deadline if self.deadline is not None else 1 << 62

    # -- connections -------------------------------------------------------------------

    async def resolve(self) -> None:
        """Resolve the host once; every connection uses the address found."""
        t = self.spec.target
        try:
            infos = await self.loop.getaddrinfo(t.host, t.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise CannotStart(f"cannot resolve {t.host!r}: {exc.strerror}")
        self.family, _, _, _, self.addr = infos[0]

    async def _open(self, conn: Conn) -> None:
        t = self.spec.target
        assert self.addr is not None
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await self.loop.sock_connect(sock, self.addr)
            await self.loop.create_connection(
                lambda: conn,
                sock=sock,
                ssl=self.ssl,
                # SNI and the name checked against the certificate; the ssl module sends
                # no SNI for an IP literal and checks it against the IP SANs instead
                server_hostname=t.host if self.ssl is not None else None,
                ssl_handshake_timeout=self.spec.timeout if self.ssl is not None else None,
            )
        except BaseException:
            sock.close()
            raise
        self.live.add(conn)

    async def _connect_then_send(self, conn: Conn) -> None:
        try:
            await self._open(conn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not conn.dead:
                conn.fail(connect_error_kind(exc))
            return
        if conn.dead:  # timed out or stopped while connecting
            if conn.transport is not None:
                conn.transport.abort()
                conn.transport = None
            return
        if conn.transport is None:  # pragma: no cover - create_connection always sets it
            return
        conn.sent = self.clock()  # the timeout runs from the write from here on
        conn.transport.write(self.request)

    def spawn_connect(self, conn: Conn) -> None:
        self.live.add(conn)  # so the timeout sweep sees a connect that hangs
        task = self.loop.create_task(self._connect_then_send(conn))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def open_lanes(self) -> None:
        """Connect every lane before the clock starts; CannotStart when none connects."""
        await self.resolve()
        conns = [self.conn_class(self) for _ in range(self.lanes)]
        results = await asyncio.gather(
            *(asyncio.wait_for(self._open(c), self.spec.timeout) for c in conns),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        for c, r in zip(conns, results, strict=True):
            if isinstance(r, BaseException):
                c.dead = True
                self.live.discard(c)
            self.idle.append(c)  # a dead Conn is replaced when its lane gets a ticket
        if len(failures) == len(conns):
            exc = failures[0]
            if isinstance(exc, asyncio.CancelledError):
                raise exc
            t = self.spec.target
            why = str(exc) or type(exc).__name__
            raise CannotStart(
                f"cannot connect to {t.host_header}: {connect_error_kind(exc)} ({why})"
            )

    # -- tickets -----------------------------------------------------------------------

    def begin(self, base: int, duration: float | None) -> None:
        """Start the clock at ``base`` (ns) and hand out the first tickets."""
        self.base = base
        self.last = base
        if duration is not None:
            self.deadline = base + int(duration * 1e9)
        if self.rate is not None:
            self.schedule = OpenSchedule(self.rate, self.offset)
            if duration is not None:
                # the open schedule's tickets due strictly before the deadline
                by_deadline = self.schedule.due_by(duration - 1e-9)
                self.limit = by_deadline if self.limit is None else min(self.limit, by_deadline)
        self.gate = True
        self._refresh()
        self._arm_sweep()
        self.kick()

    def _has_ticket(self, now: int) -> int:
        """The start time of the next ticket if one is available at ``now``, else -1."""
        if not self.gate or self.paused:
            return -1
        if self.limit is not None and self.issued >= self.limit:
            return -1
        s = self.schedule
        if s is None:
            if self.deadline is not None and now >= self.deadline:
                return -1
            return now
        due = self.base + int(s.due(self.issued) * 1e9)
        return due if due <= now else -1

    def next(self, conn: Conn, now: int) -> None:
        """``conn`` is free: give it the next ticket or park it."""
        self.last = now
        start = self._has_ticket(now)
        if start >= 0:
            if now - start > LATE_NS:
                self.late += 1
            if conn.dead:
                conn = self.conn_class(self)
            conn.send(start, now)
            return
        self.idle.append(conn)
        if self.finished == self.issued and self._exhausted(now):
            self._finish()
        else:
            self._arm_pacer(now)

    def kick(self) -> None:
        """Hand tickets to idle lanes (start, the pacer, resume)."""
        self.pacer = None
        now = self.clock()
        while self.idle:
            start = self._has_ticket(now)
            if start < 0:
                break
            if now - start > LATE_NS:
                self.late += 1
            conn = self.idle.pop()
            if conn.dead:
                conn = self.conn_class(self)
            conn.send(start, now)
        if self.finished == self.issued and self._exhausted(now):
            self._finish()
        else:
            self._arm_pacer(now)

    def _exhausted(self, now: int) -> bool:
        if self.stopped:
            return True
        if self.paused:
            return False
        if self.limit is not None and self.issued >= self.limit:
            return True
        return self.schedule is None and self.deadline is not None and now >= self.deadline

    def _arm_pacer(self, now: int) -> None:
        if self.pacer is not None or not self.idle or self.schedule is None or not self.gate:
            return
        if self.limit is not None and self.issued >= self.limit:
            return
        due = self.base + int(self.schedule.due(self.issued) * 1e9)
        self.pacer = self.loop.call_later(max(0, due - now) / 1e9, self.kick)

    def pause(self) -> None:
        self.paused = True
        self.fast = False

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self._refresh()
            if self.gate:
                self.kick()

    # -- timeouts and the end ----------------------------------------------------------

    def _arm_sweep(self) -> None:
        self.sweeper = self.loop.call_later(self.sweep_s, self._sweep)

    def _sweep(self) -> None:
        now = self.clock()
        limit = self.timeout_ns
        for conn in [c for c in self.live if c.busy and now - c.sent > limit]:
            conn.fail("timeout")
        if not self.done.done():
            self._arm_sweep()

    def stop(self) -> None:
        """Stop sending; what is in flight counts as cancelled."""
        if self.done.done():
            return
        self.stopped = True
        self.gate = False
        self.fast = False
        for conn in [c for c in self.live if c.busy]:
            conn.fail("cancelled")
        self._finish()

    def _finish(self) -> None:
        if self.done.done():
            return
        self.gate = False
        self.fast = False
        for handle in (self.pacer, self.sweeper):
            if handle is not None:
                handle.cancel()
        for task in list(self.tasks):
            task.cancel()
        for conn in list(self.live):
            conn.close()
        self.done.set_result(None)

    def transport_lost(self) -> None:
        self.transports -= 1
        if self.transports <= 0 and self.all_closed is not None and not self.all_closed.done():
            self.all_closed.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until the connect tasks have ended and every socket is closed (aborted
        transports close their sockets on the next loop iteration)."""
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.transports > 0:
            self.all_closed = self.loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.all_closed), 1.0)
