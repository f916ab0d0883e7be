"""The Engine: the lanes of one process, the tickets they take (closed model, -z deadline
or an open --rps schedule), the timeout sweep, and the one `Tally` the connections
report into.

The connections (`client.Conn`) know the tally and the engine's narrow `client.Home`
side (``free``: the next-ticket callback, and the transport bookkeeping), never the
engine's fields. The closed model's fast path spends the tally's ``credit`` without
calling back; everything else goes through ``free``/``kick``.

The lifecycle is one `Phase`, changed in one method (`_set`), which also decides the
credit the fast path may spend:

    READY ──begin──> RUNNING <──pause/resume──> PAUSED
                        │ every ticket ended           │ stop
                        v                              v
                     FINISHED                       STOPPED   (interrupted)
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import time
from collections.abc import Callable
from typing import Any

from ..schedule import OpenSchedule, StagedSchedule, scaled
from .client import (
    LATE_NS,
    CannotStart,
    Conn,
    HeadConn,
    Result,
    SlowConn,
    connect_error_kind,
    ssl_context,
)
from .spec import Spec
from .stats import Histogram
from .tally import Tally


def _result_sink(sink: Callable[[Result], None]) -> Callable[[int, int, int, str | None], None]:
    def put(status: int, latency_ns: int, rx: int, error: str | None) -> None:
        sink(Result(status, latency_ns / 1e9, rx, error))

    return put


class Phase(enum.Enum):
    READY = "ready"  # connecting; no ticket yet
    RUNNING = "running"  # tickets are handed out
    PAUSED = "paused"  # send_n's consumer is behind: no new ticket until resume
    FINISHED = "finished"  # every ticket ended (or the deadline passed and none is in flight)
    STOPPED = "stopped"  # stop(): nothing more is sent, what was in flight is cancelled


_ENDED = (Phase.FINISHED, Phase.STOPPED)
_NEVER = 1 << 62


class Engine:
    """The lanes of one process: tickets (closed model, -z deadline, or an open schedule),
    the timeout sweep, and the tally the summary is built from."""

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
        self.conn_class: type[Conn] = (
            HeadConn if spec.method == "HEAD" else SlowConn if sink is not None else Conn
        )
        self.ssl = ssl_context(spec.insecure) if spec.target.tls else None
        self.addr = addr
        self.family = family
        self.lanes = lanes
        self.limit = requests  # None: until the deadline
        self.rate = rate
        self.offset = offset
        # --stage: this process's part of the shape, at its share of the rate (``rate``,
        # given by the processes' split, over the stages' mean rate)
        self.staged: StagedSchedule | None = None
        if spec.stages:
            whole = StagedSchedule(spec.stages)
            share = rate / whole.mean_rate if rate is not None and whole.mean_rate else 1.0
            self.staged = StagedSchedule(scaled(spec.stages, share))
            self.rate = self.staged.mean_rate
        self.schedule: OpenSchedule | StagedSchedule | None = None
        self.timeout_ns = int(spec.timeout * 1e9)
        self.tally = Tally(
            [spec.is_ok(s) for s in range(1000)],
            self.timeout_ns,
            sink=_result_sink(sink) if sink is not None else None,
        )
        # Tickets handed out, the fast path's spending excluded: ``issued`` below adds it.
        self.taken = 0
        self.lent = 0  # the credit the tally held when it was last set
        self.late = 0
        self.dropped = 0  # tickets due before -z that never left (the deadline came first)
        self.phase = Phase.READY
        self.base = 0
        self.deadline: int | None = None
        self.idle: list[Conn] = []
        self.live: set[Conn] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.pacer: asyncio.TimerHandle | None = None
        self.ender: asyncio.TimerHandle | None = None  # -z under --rps
        self.sweeper: asyncio.TimerHandle | None = None
        self.sweep_s = min(0.25, max(0.005, spec.timeout / 8))
        self.last = 0  # ns of the last completion
        self.transports = 0  # open transports, so the end can wait until they are closed
        self.all_closed: asyncio.Future[None] | None = None

    # -- the one lifecycle ---------------------------------------------------------------

    def _set(self, phase: Phase) -> None:
        """Enter ``phase``; the only place the phase and the fast path's credit change.

        Invariant: ``tally.credit > 0`` only while RUNNING in the closed model with no
        consumer, and then ``issued + tally.credit <= limit``."""
        t = self.tally
        self.taken += self.lent - t.credit  # fold what the fast path spent into ``taken``
        self.phase = phase
        if phase is Phase.RUNNING and self.schedule is None and t.sink is None:
            limit = self.limit if self.limit is not None else _NEVER
            t.credit = max(0, limit - self.taken)
            t.until = self.deadline if self.deadline is not None else _NEVER
        else:
            t.credit = 0
        self.lent = t.credit

    @property
    def issued(self) -> int:
        """Tickets handed out so far (sent, or ended unsent as overdue)."""
        return self.taken + self.lent - self.tally.credit

    @property
    def running(self) -> bool:
        return self.phase is Phase.RUNNING

    @property
    def paused(self) -> bool:
        return self.phase is Phase.PAUSED

    @property
    def stopped(self) -> bool:
        """True when the run was stopped early (the summary's ``interrupted``)."""
        return self.phase is Phase.STOPPED

    @property
    def closed(self) -> bool:
        return self.phase in _ENDED

    # -- the read side the driver builds a Summary from -----------------------------------

    @property
    def finished(self) -> int:
        return self.tally.finished

    @property
    def successes(self) -> int:
        return self.tally.successes

    @property
    def errors(self) -> dict[str, int]:
        return self.tally.errors

    @property
    def codes(self) -> list[int]:
        return self.tally.codes

    @property
    def bytes(self) -> int:
        return self.tally.bytes

    @property
    def hist(self) -> Histogram:
        return self.tally.histogram()

    def histogram(self) -> Histogram:
        return self.tally.histogram()

    # -- client.Home: what a connection calls back into -----------------------------------

    def new_conn(self) -> Conn:
        return self.conn_class(self, self.tally, self.request, self.clock)

    def opened(self, conn: Conn) -> None:
        self.transports += 1

    def lost(self, conn: Conn) -> None:
        self.transports -= 1
        if self.transports <= 0 and self.all_closed is not None and not self.all_closed.done():
            self.all_closed.set_result(None)

    def forget(self, conn: Conn) -> None:
        self.live.discard(conn)

    def connect(self, conn: Conn) -> None:
        self.live.add(conn)  # so the timeout sweep sees a connect that hangs
        task = self.loop.create_task(self._connect_then_send(conn))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

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

    async def open_lanes(self) -> None:
        """Connect every lane before the clock starts; CannotStart when none connects."""
        await self.resolve()
        conns = [self.new_conn() for _ in range(self.lanes)]
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
        if self.staged is not None:
            self.schedule = self.staged
        elif self.rate is not None:
            self.schedule = OpenSchedule(self.rate, self.offset)
        if self.schedule is not None and duration is not None:
            # the open schedule's tickets due strictly before the deadline
            by_deadline = self.schedule.due_by(duration - 1e-9)
            self.limit = by_deadline if self.limit is None else min(self.limit, by_deadline)
        self._set(Phase.RUNNING)
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
        self._maybe_finish(self.clock())

    def _has_ticket(self, now: int) -> int:
        """The start time of the next ticket if one is available at ``now``, else -1."""
        if self.phase is not Phase.RUNNING:
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

    def _hand(self, conn: Conn, start: int, now: int) -> bool:
        """Give the ticket starting at ``start`` to ``conn``; False when it ended unsent.

        A ticket already -t past its due time is a timeout without being sent: its
        latency, counted from the due time, has passed -t whatever the server does. It
        ends at once, so ``requests == successes + errors`` stays exact."""
        if self.tally.credit > 0:
            self.tally.credit -= 1  # a lent ticket: ``issued`` counts it either way
        else:
            self.taken += 1
        if now - start > LATE_NS:
            self.late += 1
        if now - start > self.timeout_ns:
            self.tally.error("timeout", now - start, 0)
            return False
        if conn.dead:
            conn = self.new_conn()
        conn.send(start, now)
        return True

    def free(self, conn: Conn, now: int) -> None:
        """``conn`` is free (client.Home's next-ticket callback): the next ticket or idle."""
        self.last = now
        if self.lent:  # the fast path's credit ran out or its deadline came: take it back
            self._set(self.phase)
        start = self._has_ticket(now)
        while start >= 0:
            if self._hand(conn, start, now):
                return
            start = self._has_ticket(now)
        self.idle.append(conn)
        self._maybe_finish(now)

    def kick(self) -> None:
        """Hand tickets to idle lanes (start, the pacer, resume)."""
        self.pacer = None
        now = self.clock()
        while self.idle:
            start = self._has_ticket(now)
            if start < 0:
                break
            conn = self.idle[-1]
            if self._hand(conn, start, now):
                self.idle.pop()
        self._maybe_finish(now)

    def _maybe_finish(self, now: int) -> None:
        if self.tally.finished == self.issued and self._exhausted(now):
            self._finish(Phase.FINISHED)
        else:
            self._arm_pacer(now)

    def _exhausted(self, now: int) -> bool:
        if self.phase is not Phase.RUNNING:
            return self.phase is not Phase.PAUSED
        if self.limit is not None and self.issued >= self.limit:
            return True
        return self.schedule is None and self.deadline is not None and now >= self.deadline

    def _arm_pacer(self, now: int) -> None:
        if self.pacer is not None or not self.idle or self.schedule is None:
            return
        if self.phase is not Phase.RUNNING:
            return
        if self.limit is not None and self.issued >= self.limit:
            return
        due = self.base + int(self.schedule.due(self.issued) * 1e9)
        self.pacer = self.loop.call_later(max(0, due - now) / 1e9, self.kick)

    def pause(self) -> None:
        if self.phase is Phase.RUNNING:
            self._set(Phase.PAUSED)

    def resume(self) -> None:
        if self.phase is Phase.PAUSED:
            self._set(Phase.RUNNING)
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
        self._set(Phase.STOPPED)
        for conn in [c for c in self.live if c.busy]:
            conn.fail("cancelled")
        self._finish(Phase.STOPPED)

    def _finish(self, phase: Phase = Phase.FINISHED) -> None:
        if self.closed and phase is not Phase.STOPPED:
            return
        if self.phase is not phase:
            self._set(phase)
        for handle in (self.pacer, self.sweeper, self.ender):
            if handle is not None:
                handle.cancel()
        for task in list(self.tasks):
            task.cancel()
        for conn in list(self.live):
            conn.close()
        if not self.done.done():
            self.done.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until the connect tasks have ended and every socket is closed (aborted
        transports close their sockets on the next loop iteration)."""
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.transports > 0:
            self.all_closed = self.loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.all_closed), 1.0)
