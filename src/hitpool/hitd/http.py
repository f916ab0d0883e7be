"""A small HTTP/1.1 server: a thin `asyncio.Protocol` shell around `h1.H1Connection`, the
pure per-connection state machine (httptools' parser inside), as h11 keeps its rules apart
from any socket.

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
  arrive, so a header line that never ends is refused at the limit however it is chunked
  (a chunked body's trailers are header lines too, counted the same way);
  the body at most ``max_body_bytes`` (1 MiB) or 413 (RFC 9110 15.5.14), decided from
  ``Content-Length`` before the body is read, and counted as a chunked body arrives.
- Timeouts, checked once a second by one sweeper: an idle keep-alive connection is closed
  after ``keep_alive_timeout``, one that never sent a byte after ``first_byte_timeout``
  (seconds, so idle sockets cannot hold the descriptors); a request that has started but
  not finished arriving after ``request_timeout`` gets 408 (slowloris, RFC 9110 15.5.9); a
  client that stops reading its answers for ``write_timeout`` is dropped.
- Bounded memory and descriptors: at most ``max_pipeline`` unanswered requests per connection
  and at most ``max_connections`` connections (more get 503 and are closed, RFC 9110
  15.6.4, logged once per burst; `connection_cap` keeps the cap below the process's
  descriptor limit, so a client past it gets an answer, not a reset). When ``max_pipeline``
  answers wait, reading pauses; a request already read beyond them (in the same read) is not
  handed to the handler: the waiting answers are written, the last saying ``Connection:
  close``, and the connection closes. Nothing was done for the requests left unanswered, so
  nothing is promised, and the client resends them as after any close. Checking this costs
  nothing per request: the connection swaps its handler for `H1Connection._overflow` only
  while its queue is full.
- HEAD is answered without a body but with the ``Content-Length`` of the GET (RFC 9110 9.3.2);
  the handler sees the method and routes HEAD as it routes GET.
- ``Upgrade`` (and CONNECT) is not supported: the request is handled and answered once, the
  header ignored (RFC 9110 7.8), and the connection closes after the answers, since what
  follows may be in the other protocol. httptools stops parsing at the end of the head: the
  handler gets no body even if one was announced.

- Framing two parsers could read differently is a 400 and the connection closes (RFC 9112
  6.1, 6.3, 11.2): Content-Length with Transfer-Encoding, two lengths, obs-fold, bare LF or
  CR, an unknown coding, a chunk size past 64 bits, and Transfer-Encoding in HTTP/1.0.

Errors the protocol answers itself (400 malformed, 408, 413, 431, 503) carry the same JSON
body as the application's: ``{"error": ..., "field": ..., "message": ...}``.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Awaitable
from email.utils import formatdate
from typing import Any, cast

from .h1 import ABORT, CLOSE, LINGER, H1Connection, HttpLimits, Shared, encode
from .messages import Handler, Response, error_response

__all__ = ["HttpLimits", "HttpServer", "connection_cap", "raise_fd_limit"]

log = logging.getLogger("hitpool.hitd.http")


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (what an unprivileged
    process may do; the soft default, often 1024, is for programs that do not expect many
    sockets). Returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):  # e.g. a hard limit above the kernel's nr_open
        return soft, soft
    return soft, target


def connection_cap(wanted: int, fd_limit: int | None = None) -> int:
    """The connection cap to use: `wanted`, lowered to leave descriptors for everything
    else hitd opens (its store, its listener, the `hit` task's children and their pipes):
    an eighth of the limit, at least 32. Past the cap a client gets a 503; past the
    descriptor limit it would get a reset (accept fails) and nothing would be logged."""
    if fd_limit is None:
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if fd_limit == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, fd_limit - max(32, fd_limit // 8)))


class HttpServer(Shared):
    """Owns the listening socket, every connection and the timeout sweeper.

    Lifecycle: `await start(host, port)`, then `stop_accepting()` closes the listening socket,
    and `await close(timeout)` lets connections finish what they were answering, then closes
    them. ``closing`` makes every further answer carry ``Connection: close``.
    """

    def __init__(self, handler: Handler, limits: HttpLimits | None = None) -> None:
        super().__init__(handler, limits or HttpLimits())
        self.connections: set[_Protocol] = set()
        self.refused = 0  # connections answered 503 past max_connections
        self._refusing = False  # the cap was hit and logged; reset once below it again
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._idle_event = asyncio.Event()
        self._update_date()

    @property
    def sockets(self) -> tuple[Any, ...]:
        # Read through Any: uvloop's Server.sockets is a list where the stubs say tuple, and
        # the compiled build checks a declared type when the attribute is read.
        server: Any = self._server
        return tuple(server.sockets) if server is not None else ()

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, sock: Any = None) -> None:
        loop = asyncio.get_running_loop()
        if sock is not None:
            self._server = await loop.create_server(lambda: _Protocol(self), sock=sock)
        else:
            self._server = await loop.create_server(
                lambda: _Protocol(self), host, port, reuse_address=True, backlog=4096
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
            conn.core.close_if_idle()
        while self.connections and time.monotonic() < deadline:
            self._idle_event.clear()
            try:
                await asyncio.wait_for(self._idle_event.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
            for conn in list(self.connections):
                conn.core.close_if_idle()
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

    def notify_idle(self) -> None:
        self._idle_event.set()

    def admit(self) -> bool:
        """Whether one more connection may be served; logs the first refusal of a burst."""
        if len(self.connections) < self.limits.max_connections and not self.closing:
            self._refusing = False
            return True
        if not self.closing:
            self.refused += 1
            if not self._refusing:
                self._refusing = True
                log.warning(
                    "%d connections are open (the cap, --max-connections): new ones get 503 "
                    "until some close",
                    len(self.connections),
                )
        return False

    def _update_date(self) -> None:
        self.date_line = b"date: " + formatdate(usegmt=True).encode() + b"\r\n"

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.limits.sweep_interval)
            self._update_date()
            self.now = now = loop.time()
            for conn in list(self.connections):
                conn.core.tick(now)


class _Protocol(asyncio.Protocol):
    """The shell of one connection: bytes from the transport to the core, the core's output
    and decisions (`out`, `reading`, `end`) back to the transport."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._reading = True  # what the transport does; the core's `reading` is the wish
        self._ended = 0  # the `end` already applied
        self._tasks: set[asyncio.Task[Response]] = set()
        self.core = H1Connection(server, self._spawn)
        # The core takes the bytes itself, one call less per read: it calls back (_apply)
        # only when there is something to write or to decide.
        self.data_received = self.core.receive  # type: ignore[method-assign]

    def _spawn(self, awaitable: Awaitable[Response]) -> asyncio.Future[Response]:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        server = self._server
        if not server.admit():
            resp = error_response(503, "too many connections", headers=(("Retry-After", "1"),))
            transport.write(encode(resp, False, server.date_line))
            transport.close()
            self.core.lost()
            return
        server.connections.add(self)
        self.core._can_linger = transport.can_write_eof()
        self.core.on_output = self._apply

    def connection_lost(self, exc: Exception | None) -> None:
        self.core.lost()
        for task in self._tasks:
            task.cancel()
        self._server.connections.discard(self)
        self._server.notify_idle()

    def data_received(self, data: bytes) -> None:  # replaced per instance: see __init__
        self.core.receive(data)

    def eof_received(self) -> bool | None:
        # A half-closed client may still read its answers: keep the write side open while
        # answers are pending, then close.
        return True if self.core.eof() else None

    def pause_writing(self) -> None:
        self.core.writing_paused()
        self._apply()

    def resume_writing(self) -> None:
        self.core.writing_resumed()
        self._apply()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _apply(self) -> None:
        core = self.core
        transport = self._transport
        out = core.out
        if transport is None or transport.is_closing():
            out.clear()
            return
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            # Cleared before the write: write() calls pause_writing(), and so this method,
            # at once when the data passes the buffer's high-water mark; `out` must then be
            # empty, or the same bytes go out twice and the stream after them is garbage.
            out.clear()
            transport.write(data)
        end = core.end
        if end != self._ended:
            self._ended = end
            if end == LINGER:
                transport.write_eof()
                self._set_reading(True)
                return
            if end == CLOSE:
                transport.close()
                return
            if end == ABORT:
                transport.abort()
                return
        if core.reading is not self._reading and end != LINGER:
            self._set_reading(core.reading)

    def _set_reading(self, on: bool) -> None:
        assert self._transport is not None
        self._reading = on
        try:
            if on:
                self._transport.resume_reading()
            else:
                self._transport.pause_reading()
        except RuntimeError:  # the transport is closing
            pass
