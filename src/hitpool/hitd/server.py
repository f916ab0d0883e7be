"""The hitd process: open the store, start the workers and the intake, bind, serve, drain.

Roles: `hitd` is intake and workers in one process; `hitd --workers 0` is intake only (the
jobs wait in a shared PostgreSQL store for `hitd worker` processes, `worker.py`).

    startup:  store.open -> Runner.start -> Intake.start -> bind -> Purger.start
              -> "hitd listening on ..."
    SIGTERM:  purger cancelled (no deletes while draining)
              draining (POSTs and /healthz answer 503 + Retry-After; reads still served)
              -> intake.close (everything already received is committed and answered 202)
              -> runner.stop(grace) (running jobs get `grace` s, the rest are released)
              -> HTTP close (pending answers written, connections closed)
              -> store.close -> exit 0
    a restart: every queued job and every released job is claimed again; a job whose
               worker was killed (-9) is claimed again once its lease expires.

`Hitd` is the in-process form (the tests start it on port 0); `run(config)` is the process.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._build import build
from .._errors import HitpoolError, SpecError
from .app import App, AppConfig
from .http import HttpLimits, HttpServer, connection_cap, raise_fd_limit
from .intake import Intake
from .metrics import RunTimeHistogram, WorkerNumbers
from .rates import RateSampler
from .retention import DEFAULT_RETENTION_S, Purger, describe
from .runner import Runner
from .store.base import Store
from .tasks import HitLimits, Registry, load_modules
from .ui import UiMode

__all__ = ["DEFAULT_STORE", "Hitd", "ServerConfig", "ServerState", "run"]

log = logging.getLogger("hitpool.hitd")

DEFAULT_STORE = "sqlite:///./hitd.db"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 16
    queue_size: int = 100_000
    store: str = DEFAULT_STORE
    tasks: tuple[str, ...] = ()
    token: str | None = None
    allow_targets: tuple[str, ...] = ()
    grace_s: float = 30.0
    lease_s: float = 30.0
    max_body_bytes: int = 1024 * 1024
    log_level: str = "info"
    retention_s: float = DEFAULT_RETENTION_S  # finished jobs older than this are purged; 0: never
    ui: UiMode = "on"  # the dashboard at /ui: on, read-only, off
    # Clients and the `hit` task (see http.connection_cap, tasks.HitLimits).
    max_connections: int = 10_000
    first_byte_timeout_s: float = 10.0
    hit_limits: HitLimits = field(default_factory=HitLimits)


class ServerState(enum.Enum):
    """The server's lifecycle, one state (`Hitd.state`), in this order only."""

    NEW = "new"
    SERVING = "serving"
    DRAINING = "draining"  # stop() under way: new jobs get 503, what came is committed
    STOPPED = "stopped"


class Hitd:
    """One server: `await start()`, then `await stop()` (what SIGTERM does).

    `config.workers == 0` is an intake only: no runner; the jobs wait in the store for
    worker processes (`hitd worker`). `clock` is the wall clock of every part (job times,
    retention); tests move it."""

    def __init__(
        self,
        config: ServerConfig,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store if store is not None else Store.from_url(config.store)
        self.registry = Registry(allowed_targets=config.allow_targets, hit_limits=config.hit_limits)
        self.runner: Runner | None = None
        if config.workers > 0:
            self.runner = Runner(
                self.store,
                self.registry,
                workers=config.workers,
                lease_s=config.lease_s,
                grace_s=config.grace_s,
                clock=clock,
                args_checked=True,  # the App checks every job with registry.check first
            )
        self.intake = Intake(
            self.store,
            clock=clock,
            on_commit=None if self.runner is None else self.runner.committed,
        )
        self.purger = Purger(self.store, config.retention_s, clock=clock)
        app_config = AppConfig(queue_size=config.queue_size, token=config.token, ui=config.ui)
        if self.runner is None:  # intake only: a retried job waits for the workers' poll
            self.app = App(
                self.store,
                self.intake,
                self.registry.check,
                self._worker_numbers,
                app_config,
                clock=clock,
            )
        else:
            self.app = App(
                self.store,
                self.intake,
                self.registry.check,
                self._worker_numbers,
                app_config,
                clock=clock,
                notify=self.runner.notify,
            )
        self.rates = RateSampler(self.app.rates, self._rate_totals, clock=clock)
        limits = HttpLimits(
            max_body_bytes=config.max_body_bytes,
            max_connections=connection_cap(config.max_connections),
            first_byte_timeout=config.first_byte_timeout_s,
        )
        self.http = HttpServer(self.app, limits)
        self._state = ServerState.NEW
        self._done = asyncio.Event()  # set on reaching STOPPED: what a second stop() awaits

    def _set_state(self, state: ServerState) -> None:
        self._state = state
        # The app's hot-path cache of the state, written here only.
        self.app.draining = state in (ServerState.DRAINING, ServerState.STOPPED)

    @property
    def state(self) -> ServerState:
        return self._state

    def _rate_totals(self) -> tuple[int, int, int]:
        if self.runner is None:
            return (self.app.counters.accepted, 0, 0)
        s = self.runner.statistics()
        return (self.app.counters.accepted, s.completed, s.failed)

    def _worker_numbers(self) -> WorkerNumbers:
        if self.runner is None:
            return WorkerNumbers(
                workers=0,
                busy=0,
                queued=self.store.queued_estimate(),
                in_flight=self.intake.in_flight,
                completed=0,
                failed=0,
                run_time=RunTimeHistogram().snapshot(),
                purged=self.purger.purged,
            )
        s = self.runner.statistics()
        return WorkerNumbers(
            workers=s.workers,
            busy=s.busy,
            queued=self.store.queued_estimate(),
            in_flight=self.intake.in_flight,
            completed=s.completed,
            failed=s.failed,
            run_time=s.run_time,
            purged=self.purger.purged,
        )

    @property
    def stopped(self) -> bool:
        return self._state is ServerState.STOPPED

    @property
    def port(self) -> int:
        return self.http.port

    async def start(self, sock: Any = None) -> None:
        if self._state is not ServerState.NEW:
            raise RuntimeError(f"start() of a server that is {self._state.value}")
        await self.store.open()
        try:
            if self.runner is not None:
                await self.runner.start()
            self.intake.start()
            await self.http.start(self.config.host, self.config.port, sock=sock)
            self.registry.listeners = tuple(
                (str(s.getsockname()[0]), int(s.getsockname()[1])) for s in self.http.sockets
            )
        except BaseException:
            await self.intake.close()  # its flusher tasks (nothing was submitted)
            if self.runner is not None:
                await self.runner.stop(grace_s=0)
            await self.store.close()
            self._set_state(ServerState.STOPPED)
            self._done.set()
            raise
        self._set_state(ServerState.SERVING)
        self.purger.start()
        self.rates.start()

    async def stop(self) -> None:
        """Drain: refuse new jobs, commit what came, let running jobs finish, close."""
        if self._state is ServerState.NEW:
            self._set_state(ServerState.STOPPED)
            self._done.set()
            return
        if self._state is not ServerState.SERVING:
            await self._done.wait()
            return
        self._set_state(ServerState.DRAINING)
        await self.purger.stop()
        await self.rates.stop()
        await self.intake.close()
        if self.runner is not None:
            await self.runner.stop(grace_s=self.config.grace_s)
        await self.http.close(grace=2.0)
        await self.store.close()
        self._set_state(ServerState.STOPPED)
        self._done.set()

    def draining_line(self) -> str:
        return f"new jobs get 503; running jobs get {self.config.grace_s:g} s"

    def stopped_line(self) -> str:
        return f"{self.intake.statistics().committed} jobs committed this run"

    def startup_line(self) -> str:
        c = self.config
        durable = "durable" if self.store.durable else "NOT durable: jobs die with the process"
        auth = ", token required" if c.token else ""
        ui = {"on": ", dashboard /ui", "read-only": ", dashboard /ui read-only", "off": ""}[c.ui]
        cap = self.http.limits.max_connections
        if cap < c.max_connections:
            auth += f", at most {cap} connections (open-files limit)"
        host = f"[{c.host}]" if ":" in c.host else c.host
        workers = f"{c.workers} workers" if c.workers else "intake only: no workers"
        return (
            f"hitd listening on http://{host}:{self.port} "
            f"(store {c.store} [{durable}], {workers}, queue-size {c.queue_size}, "
            f"retention {describe(c.retention_s)}{ui}{auth}, {build()} build)"
        )


class Service(Protocol):
    """What `serve_until_signalled` runs: `Hitd` (intake and workers) or `WorkerProcess`."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def startup_line(self) -> str: ...

    def draining_line(self) -> str: ...

    def stopped_line(self) -> str: ...


async def serve_until_signalled(
    prog: str, tasks: Sequence[str], make: Callable[[], Service]
) -> int:
    """The life of a hitd process, whatever its role: load the task modules, build the
    service, start it, run until SIGTERM or SIGINT, drain. Exit 2 for a configuration the
    service refuses, 1 when it cannot start, 0 after a drain."""
    before, after = raise_fd_limit()
    if after > before:
        log.info("raised the open-files limit from %d to %d (the hard limit)", before, after)
    try:
        if tasks:
            load_modules(tasks)
        service = make()
    except SpecError as e:
        print(f"{prog}: error: --{e.field}: {e.message}", file=sys.stderr)
        return 2
    # Signals are handled from before the start: a SIGTERM that comes while the store opens
    # or right after the start-up line drains (exit 0) instead of killing with the default
    # action.
    stop = stop_on_signals()
    try:
        await service.start()
    except (HitpoolError, OSError) as e:
        print(f"{prog}: error: cannot start: {e}", file=sys.stderr)
        return 1
    tune_gc()
    print(service.startup_line(), flush=True)
    await stop.wait()
    print(f"{prog}: draining ({service.draining_line()})", flush=True)
    await service.stop()
    print(f"{prog}: stopped; {service.stopped_line()}", flush=True)
    return 0


def stop_on_signals() -> asyncio.Event:
    """An event set by the first SIGTERM or SIGINT (drain); a second one exits at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            # A second signal: the operator does not want to wait for the grace period.
            # Committed jobs are safe; running ones run again after their lease.
            print("hitd: second signal, exiting now", file=sys.stderr, flush=True)
            os._exit(1)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    return stop


def tune_gc() -> None:
    """Once started, for the life of the process: what exists now (modules, the store, the
    pools) is frozen out of the cyclic collector, and young collections run less often.
    Every request allocates tuples, dicts and lists, and with the default threshold (700) the
    collector keeps walking the server's own long-lived objects. Cycles are still
    collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 1000)


def run(config: ServerConfig) -> int:
    """Run hitd until SIGTERM/SIGINT; the exit code (0 after a clean drain)."""
    import uvloop

    return int(uvloop.run(serve_until_signalled("hitd", config.tasks, lambda: Hitd(config))))
