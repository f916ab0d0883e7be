"""The Engine: the lanes of one process, the tickets they take (closed model, -z deadline
or an open --rps schedule), the timeout sweep, and the tallies a Summary is built from.

The connections (`client.Conn`) call back into it on every response: the closed model's
fast path touches only the counters; everything else goes through ``next``/``kick``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any

from ..schedule import OpenSchedule
from .client import (
    ERROR_KINDS,
    LATE_NS,
    CannotStart,
    Conn,
    HeadConn,
    Result,
    connect_error_kind,
    ssl_context,
)
from .spec import Spec
from .stats import Histogram, index_of


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
        self.dropped = 0  # tickets due before -z that never left (the deadline came first)
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
        self.closed = False  # _finish ran (``done`` itself may have been cancelled)
        self.pacer: asyncio.TimerHandle | None = None
        self.ender: asyncio.TimerHandle | None = None  # -z under --rps
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
        # `sent` stays where send() set it: the timeout counts the connect too (-t's help).
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
        if self.schedule is not None and self.deadline is not None:
            self.ender = self.loop.call_later(
                max(0, self.deadline - self.clock()) / 1e9, self._deadline_passed
            )
        self.kick()

    def _deadline_passed(self) -> None:
        """-z under --rps: nothing more is sent. The tickets due before the deadline that
        never left (every lane was busy) are dropped; what is in flight keeps its -t."""
        self.ender = None
        if self.limit is not None and self.limit > self.issued:
            self.dropped += self.limit - self.issued
            self.limit = self.issued
            self._refresh()
        if self.finished == self.issued and self._exhausted(self.clock()):
            self._finish()

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

    def _overdue(self, start: int, now: int) -> bool:
        """A ticket already -t past its due time when a lane frees up is a timeout without
        being sent: its latency, counted from the due time, has passed -t whatever the
        server does. It ends at once, so ``requests == successes + errors`` stays exact."""
        if now - start <= self.timeout_ns:
            return False
        self.issued += 1
        self.remaining -= 1
        self.finished += 1
        self.late += 1
        self.errors["timeout"] += 1
        if self.sink is not None:
            self.sink(Result(0, (now - start) / 1e9, 0, "timeout"))
        return True

    def next(self, conn: Conn, now: int) -> None:
        """``conn`` is free: give it the next ticket or park it."""
        self.last = now
        start = self._has_ticket(now)
        while start >= 0 and self._overdue(start, now):
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
            if self._overdue(start, now):
                continue
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
        # from the ticket's start: its due time under --rps, so a request that left late
        # has only what is left of its -t
        for conn in [c for c in self.live if c.busy and now - c.start > limit]:
            conn.fail("timeout")
        if not self.closed:
            self._arm_sweep()

    def stop(self) -> None:
        """Stop sending; what is in flight counts as cancelled."""
        if self.closed:
            return
        self.stopped = True
        self.gate = False
        self.fast = False
        for conn in [c for c in self.live if c.busy]:
            conn.fail("cancelled")
        self._finish()

    def _finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.gate = False
        self.fast = False
        for handle in (self.pacer, self.sweeper, self.ender):
            if handle is not None:
                handle.cancel()
        for task in list(self.tasks):
            task.cancel()
        for conn in list(self.live):
            conn.close()
        if not self.done.done():
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
