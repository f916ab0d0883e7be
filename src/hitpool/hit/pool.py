"""Keep-alive connections for scenario sessions, pooled per origin in one process.

The same protocol as the single-URL mode (an `asyncio.Protocol` around an httptools
parser, no coroutine per byte, no aiohttp), but each request carries its own bytes and
its answer (status, headers, body) goes to a future the session awaits. A connection
that got a keep-alive response goes back to its origin's idle list; any other ending
closes it. A timer sweeps for timeouts a few times per -t (no timer per request), and
``start`` -- from which -t counts -- is the request's corrected start (client.py's rule
under --rps: the iteration's due time plus what the iteration already spent).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any

import httptools

from .._errors import HitpoolError
from .client import _HEAD_KEEP, _close_delimited, connect_error_kind, io_error_kind, ssl_context
from .response import Response
from .spec import Target
from .tally import Tally

__all__ = ["Pool", "RequestFailed"]


class RequestFailed(HitpoolError):
    """A scenario's request got no usable response; ``kind`` is one of hit's error kinds.
    Raised into the scenario (it fails its iteration), never out of a run."""

    def __init__(self, kind: str, url: str) -> None:
        super().__init__(f"{kind}: {url}")
        self.kind = kind
        self.url = url


Origin = tuple[str, str, int]  # scheme, host, port


class PoolConn(asyncio.Protocol):
    """One keep-alive connection of the pool; at most one request in flight."""

    __slots__ = (
        "body",
        "dead",
        "fut",
        "head",
        "name",
        "origin",
        "parser",
        "pool",
        "rx",
        "start",
        "step",
        "transport",
        "url",
    )

    def __init__(self, pool: Pool, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser: Any = httptools.HttpResponseParser(self)
        self.fut: asyncio.Future[Response] | None = None  # the request in flight
        self.body: list[bytes] = []
        self.rx = 0
        self.head = b""
        self.start = 0  # ns -t counts from
        # the request in flight's step, step name and URL (what its response is counted in)
        self.step: Tally | None = None
        self.name = ""
        self.url = ""
        self.dead = False

    # -- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.dead:
            return
        if not self.rx:
            self.head = data
        elif len(self.head) < _HEAD_KEEP:
            self.head += data
        self.rx += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._complete(101, False)
        except httptools.HttpParserCallbackError:
            raise
        except httptools.HttpParserError:
            self.fail("bad_response")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # an interim response: heads() skips it
            return
        self._complete(status, self.parser.should_keep_alive())

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.dead and self.fut is not None:
            if exc is None and self.rx and _close_delimited(self.head):
                self._complete(self.parser.get_status_code(), False)
            else:
                self.fail(io_error_kind(exc) if exc is not None else "closed")
        self.dead = True
        self.transport = None
        self.pool.forget(self)

    # -- the request cycle -------------------------------------------------------------

    def send(
        self, data: bytes, is_head: bool, start: int, step: Tally, name: str, url: str
    ) -> asyncio.Future[Response]:
        """Write the request; the future resolves with its `Response`, counted into ``step``
        (or fails with RequestFailed, counted too) from the protocol callbacks."""
        fut: asyncio.Future[Response] = self.pool.loop.create_future()
        self.fut = fut
        self.body = []
        self.rx = 0
        self.start = start
        self.step = step
        self.name = name
        self.url = url
        t = self.transport
        if t is None:  # closed since it was taken: the request fails as any on a closed one
            self.fail("closed")
            return fut
        if is_head:  # its own parser: no on_headers_complete call for every other response
            self.parser = httptools.HttpResponseParser(_HeadWatch(self))
        self.pool.busy.add(self)
        t.write(data)
        return fut

    def _complete(self, status: int, keep_alive: bool) -> None:
        fut = self.fut
        if fut is None:  # a response nobody asked for: the connection is not usable
            self.close()
            return
        self.fut = None
        pool = self.pool
        pool.busy.discard(self)
        if keep_alive and status != 101:
            pool.release(self)
        else:
            self.close()
        step = self.step
        assert step is not None
        lat = pool.clock() - self.start
        if fut.done():  # cancelled while in flight (its iteration was): counted as that
            step.error("cancelled", lat, 0)
            return
        ok = step.response(status, lat, self.rx)
        if lat > pool.timeout_ns:  # the answer came, but past -t: counted as a timeout
            fut.set_exception(RequestFailed("timeout", self.url))
            return
        body = self.body
        content = body[0] if len(body) == 1 else b"".join(body)
        fut.set_result(Response(status, self.head, content, self.name, step, ok))

    def fail(self, kind: str) -> None:
        fut = self.fut
        self.fut = None
        self.close()
        if fut is None:
            return
        step = self.step
        assert step is not None
        if fut.done():  # cancelled while in flight
            kind = "cancelled"
        step.error(kind, self.pool.clock() - self.start, 0)
        if not fut.done():
            fut.set_exception(RequestFailed(kind, self.url))

    def close(self) -> None:
        self.dead = True
        self.pool.forget(self)
        t = self.transport
        self.transport = None
        if t is not None:
            t.abort()


class _HeadWatch:
    """The parser callbacks while a HEAD request is in flight. A HEAD response ends with its
    head whatever Content-Length says, which httptools cannot be told: at the final head the
    response is complete, and the connection gets a new parser of its own for the next one."""

    __slots__ = ("conn",)

    def __init__(self, conn: PoolConn) -> None:
        self.conn = conn

    def on_headers_complete(self) -> None:
        conn = self.conn
        status = conn.parser.get_status_code()
        if status >= 200:  # an interim response's head is skipped
            keep = conn.parser.should_keep_alive()
            conn.parser = httptools.HttpResponseParser(conn)
            conn._complete(status, keep)


class Pool:
    """The connections of one process, by origin; the timeout sweep over them."""

    def __init__(
        self,
        *,
        timeout: float,
        insecure: bool,
        clock: Callable[[], int],
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.timeout = timeout
        self.timeout_ns = int(timeout * 1e9)
        self.clock = clock
        self.insecure = insecure
        self._ssl: ssl.SSLContext | None = None
        self.idle: dict[Origin, list[PoolConn]] = {}
        self.busy: set[PoolConn] = set()
        self.every: set[PoolConn] = set()
        self.addrs: dict[tuple[str, int], tuple[int, Any]] = {}
        self.sweeper: asyncio.TimerHandle | None = None
        self.sweep_s = min(0.25, max(0.005, timeout / 8))
        self.closed = False

    def start_sweep(self) -> None:
        self.sweeper = self.loop.call_later(self.sweep_s, self._sweep)

    def _sweep(self) -> None:
        now = self.clock()
        for conn in [c for c in self.busy if now - c.start > self.timeout_ns]:
            conn.fail("timeout")
        if not self.closed:
            self.start_sweep()

    async def _addr(self, target: Target) -> tuple[int, Any]:
        key = (target.host, target.port)
        found = self.addrs.get(key)
        if found is None:
            infos = await self.loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
            found = (infos[0][0], infos[0][4])
            self.addrs[key] = found
        return found

    async def open(self, target: Target) -> PoolConn:
        """A new connection to ``target``'s origin (connect errors as RequestFailed)."""
        origin = (target.scheme, target.host, target.port)
        conn = PoolConn(self, origin)
        try:
            family, addr = await self._addr(target)
        except socket.gaierror:
            raise RequestFailed("connect_error", target.host_header) from None
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        tls = None
        if target.tls:
            if self._ssl is None:
                self._ssl = ssl_context(self.insecure)
            tls = self._ssl
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            async with asyncio.timeout(self.timeout):
                await self.loop.sock_connect(sock, addr)
                await self.loop.create_connection(
                    lambda: conn,
                    sock=sock,
                    ssl=tls,
                    server_hostname=target.host if tls is not None else None,
                )
        except asyncio.CancelledError:
            sock.close()
            raise
        except Exception as exc:
            sock.close()
            raise RequestFailed(connect_error_kind(exc), target.host_header) from None
        if self.closed:
            conn.close()
            raise RequestFailed("cancelled", target.host_header)
        self.every.add(conn)
        return conn

    def take(self, target: Target) -> PoolConn | None:
        """An idle connection to ``target``'s origin, if there is one (else `open` one)."""
        idle = self.idle.get((target.scheme, target.host, target.port))
        while idle:
            conn = idle.pop()
            if not conn.dead:
                return conn
        return None

    def release(self, conn: PoolConn) -> None:
        if self.closed or conn.dead:
            conn.close()
            return
        idle = self.idle.get(conn.origin)
        if idle is None:
            self.idle[conn.origin] = [conn]
        else:
            idle.append(conn)

    def forget(self, conn: PoolConn) -> None:
        self.busy.discard(conn)
        self.every.discard(conn)

    @property
    def size(self) -> int:
        """Open connections."""
        return len(self.every)

    def close(self, kind: str = "cancelled") -> None:
        """Close every connection; a request in flight fails with ``kind``."""
        self.closed = True
        if self.sweeper is not None:
            self.sweeper.cancel()
        for conn in list(self.every):
            conn.fail(kind)
        self.idle.clear()
