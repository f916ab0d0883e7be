"""One process's share of a scenario run (``hit -f``): iterations on a schedule or in a
loop, each a coroutine calling a scenario with its own `Session`.

Open model (``--rps R`` or ``--stage``): iteration ``i`` of the one global schedule is
due at its time whatever the server does; each process runs its share of the rate (as
-p splits it), from its own offset, so together they keep the total.
At its due time an iteration starts as a task, unless ``--max-inflight`` iterations are
running: then it is counted as dropped and never runs (k6's dropped_iterations, never
hidden). Which scenario it runs is fixed by its index in this process (`script.Mix`):
each process runs the whole weighted cycle, so weights hold in every process and in all
of them together, and every process's feeder rows get used. Closed model (``-c C``):
C virtual users, each running iterations back to back.

``-n N`` counts iterations started; ``-z D``: no iteration starts after D; the running
ones keep going (each request bounded by -t) until D + -t, when what is left is
cancelled (its request in flight counts as ``cancelled``, the iteration as failed).

Every task belongs to this object: `stop` cancels them and waits for them.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ..schedule import OpenSchedule, StagedSchedule, scaled
from . import feeder
from .client import LATE_NS, CannotStart
from .pool import Pool, RequestFailed
from .progress import Tick
from .scenario_stats import IterTally
from .script import Mix, Scenario, load_script
from .session import Route, Session, resolve
from .spec import Spec, Target
from .stats import Timeline
from .summary import Summary
from .targets import targets_scenario

__all__ = ["DEFAULT_MAX_INFLIGHT", "Iterations", "drive_scenarios"]

DEFAULT_MAX_INFLIGHT = 10_000  # over all processes, unless --max-inflight says otherwise
_NEVER = 1 << 62
_CANCELLED = "the run ended (-z plus -t, or a stop) while the iteration ran"


def _example() -> str:
    """The traceback of the exception being handled (formatted for the first of a kind only)."""
    return traceback.format_exc()


def _share(total: int, k: int, p: int) -> int:
    return total // p + (1 if k < total % p else 0)


class Iterations:
    """The iterations of one process (see the module docstring)."""

    def __init__(
        self,
        spec: Spec,
        scenarios: tuple[Scenario, ...],
        *,
        part: tuple[int, int] = (0, 1),
        rate: float | None = None,
        offset: float = 0.0,
        vus: int,
        iterations: int | None,
        clock: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        from .scenario_stats import Stats

        self.spec = spec
        self.loop = asyncio.get_running_loop()
        self.clock = clock
        self.part = part  # (k, P): feeders and the in-flight cap are split by it
        # this process's iterations per second and its first one's due time: its share of
        # --rps (or of the --stage shape) as the processes' split gave it
        self.rate = rate if rate is not None else spec.target_rps
        self.offset = offset
        self.mix = Mix(scenarios)
        self.timeout_ns = int(spec.timeout * 1e9)
        self.stats = Stats([spec.is_ok(s) for s in range(1000)], self.timeout_ns)
        self.pool = Pool(timeout=spec.timeout, insecure=spec.insecure, clock=clock)
        self.base: Target = spec.target
        self.prefix = spec.target.path.partition("?")[0].rstrip("/")
        self.headers = spec.headers
        self.targets: dict[str, tuple[Target, str]] = {}  # resolved paths, see session.resolve
        self.routes: dict[tuple[str, str], Route] = {}  # (method, path): see session._route
        k, p = part
        self.open_model = spec.rps is not None or bool(spec.stages)
        cap = spec.max_inflight if spec.max_inflight is not None else DEFAULT_MAX_INFLIGHT
        self.max_inflight = max(1, _share(cap, k, p))
        self.vus = vus
        self.limit = iterations  # this process's iterations (None: until the deadline)
        self.taken = 0  # iterations due so far (started or dropped)
        self.late = 0
        # Every task of the run (iterations of the open model, users of the closed one).
        # ``waiting``: iteration tasks not running yet, with their scenario, so one that is
        # cancelled before it ran still counts as failed (started == completed + failed).
        self.tasks: set[asyncio.Task[None]] = set()
        self.waiting: dict[asyncio.Task[None], list[Scenario | None]] = {}
        self.t0 = 0
        self.deadline = _NEVER
        self.last = 0
        self.schedule: OpenSchedule | StagedSchedule | None = None
        self.pacer: asyncio.TimerHandle | None = None
        self.ender: asyncio.TimerHandle | None = None
        self.sending = False
        self.stopped = False
        self.done: asyncio.Future[None] = self.loop.create_future()

    # -- what sessions use ---------------------------------------------------------------

    def target_of(self, path: str) -> tuple[Target, str]:
        return resolve(self.base, self.prefix, path, self.targets)

    # -- the run -------------------------------------------------------------------------

    async def preflight(self) -> None:
        """One connection to the base URL before the clock starts: CannotStart if none."""
        try:
            conn = await self.pool.open(self.base)
        except RequestFailed as exc:
            raise CannotStart(f"cannot connect to {self.base.host_header}: {exc.kind}") from None
        self.pool.release(conn)

    def begin(self, t0: int, duration: float | None) -> None:
        self.t0 = self.last = t0
        self.sending = True
        self.pool.start_sweep()
        if duration is not None:
            self.deadline = t0 + int(duration * 1e9)
            # no iteration starts after the deadline; what runs gets -t more, then stops
            self.ender = self.loop.call_later(
                max(0, self.deadline + self.timeout_ns - self.clock()) / 1e9, self.stop_late
            )
        if self.open_model:
            spec = self.spec
            assert self.rate is not None
            if spec.stages:
                whole = StagedSchedule(spec.stages)
                share = self.rate / whole.mean_rate if whole.mean_rate else 1.0
                self.schedule = StagedSchedule(scaled(spec.stages, share))
            else:
                self.schedule = OpenSchedule(self.rate, self.offset)
            if duration is not None:
                due = self.schedule.due_by(duration - 1e-9)
                self.limit = due if self.limit is None else min(self.limit, due)
            self._pace()
        else:
            for _ in range(self.vus):
                self._spawn(self._user())
        self._maybe_done()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        mark = self.waiting.pop(task, None)
        if mark is not None and mark[0] is not None:  # cancelled before it ran
            self.stats.scenario(mark[0].name).fail("Cancelled", lambda: _CANCELLED)
        self._maybe_done()

    def _pace(self) -> None:
        """Start every iteration due by now; wake again at the next due time."""
        self.pacer = None
        s = self.schedule
        assert s is not None
        if not self.sending:
            return
        now = self.clock()
        limit = self.limit if self.limit is not None else _NEVER
        while self.taken < limit:
            due = self.t0 + int(s.due(self.taken) * 1e9)
            if due > now:
                self.pacer = self.loop.call_later((due - now) / 1e9, self._pace)
                return
            scen = self.mix.pick(self.taken)
            self.taken += 1
            stats = self.stats.scenario(scen.name)
            if len(self.tasks) >= self.max_inflight:
                stats.dropped += 1
                continue
            stats.started += 1
            mark: list[Scenario | None] = [scen]  # _iterate clears it when it runs
            self.waiting[self._spawn(self._iterate(scen, due, mark, stats))] = mark
        self.sending = False
        self._maybe_done()

    async def _user(self) -> None:
        """A virtual user of the closed model: iterations back to back."""
        limit = self.limit if self.limit is not None else _NEVER
        n = 0
        while self.sending and self.taken < limit and self.clock() < self.deadline:
            scen = self.mix.pick(self.taken)
            self.taken += 1
            stats = self.stats.scenario(scen.name)
            stats.started += 1
            await self._iterate(scen, self.clock(), None, stats)
            n += 1
            if not n & 63:
                # an iteration that never waits (one that raises at once, say) would
                # otherwise keep the loop from everything else, the stop and -z included
                await asyncio.sleep(0)
        self.sending = False

    async def _iterate(
        self,
        scen: Scenario,
        due: int,
        mark: list[Scenario | None] | None = None,
        stats: IterTally | None = None,  # the scenario's, when the caller has it at hand
    ) -> None:
        if mark is not None:
            mark[0] = None
        if stats is None:
            stats = self.stats.scenario(scen.name)
        late = self.clock() - due
        if late > LATE_NS:
            self.late += 1
        elif late < 0:
            late = 0
        try:
            await scen.fn(Session(self, late))
        except asyncio.CancelledError:
            stats.fail("Cancelled", lambda: _CANCELLED)
            raise
        except RequestFailed as exc:
            stats.fail(f"RequestFailed({exc.kind})", _example)
        except Exception as exc:
            stats.fail(type(exc).__name__, _example)
        else:
            stats.completed += 1
            stats.hist.record((self.clock() - due) // 1000)
        finally:
            self.last = self.clock()

    def _maybe_done(self) -> None:
        if self.done.done() or self.tasks:
            return
        limit = self.limit if self.limit is not None else _NEVER
        if not self.sending or self.taken >= limit:
            self._end()

    def stop_late(self) -> None:
        """-z plus -t passed: cancel what still runs (not an interruption)."""
        self.ender = None
        self.sending = False
        self._cancel_all()

    def stop(self) -> None:
        """Stop early (Ctrl-C): nothing more starts, what runs is cancelled."""
        if self.done.done():
            return
        self.stopped = True
        self.sending = False
        self._cancel_all()

    def _cancel_all(self) -> None:
        if self.pacer is not None:
            self.pacer.cancel()
            self.pacer = None
        for task in list(self.tasks):
            task.cancel()
        if not self.tasks:
            self._end()

    def _end(self) -> None:
        for handle in (self.pacer, self.ender):
            if handle is not None:
                handle.cancel()
        self.pacer = self.ender = None
        self.sending = False
        self.pool.close()
        if not self.done.done():
            self.done.set_result(None)

    async def wait_closed(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.pool.close()

    # -- the outcome ---------------------------------------------------------------------

    def summary(self, end: int, timeline: Timeline | None) -> Summary:
        total = self.stats.total()
        spec = self.spec
        return Summary(
            url=spec.target.shown,  # the password, if the URL holds one, is not reported
            method="*",
            requests=total.finished,
            successes=total.successes,
            errors=total.errors_total,
            errors_by_kind=dict(total.errors),
            status_codes=total.status_codes(),
            bytes=total.bytes,
            duration_s=max(0, end - self.t0) / 1e9,
            target_rps=self.rate if self.open_model else None,
            late=self.late,
            concurrency=self.max_inflight if self.open_model else self.vus,
            processes=1,
            interrupted=self.stopped,
            histogram=total.histogram(),
            timeline=tuple(timeline.rows) if timeline is not None else (),
            dropped=sum(it.dropped for it in self.stats.scenarios.values()),
            # --targets: its one scenario only restates the steps
            scenarios=self.stats.scenarios_wire() if not spec.targets else {},
            steps=self.stats.steps_wire(),
        )


async def drive_scenarios(
    spec: Spec,
    *,
    lanes: int,
    requests: int | None,
    rate: float | None,
    offset: float,
    go: Callable[[], Awaitable[int]],
    stop: asyncio.Event | None,
    part: tuple[int, int],
    timeline: bool,
    on_tick: Callable[[Tick], None] | None,
) -> Summary:
    """`driver.drive` for a scenario script (or --targets): load it in this process,
    connect once, wait for ``go``, run to the end or to ``stop``."""
    if spec.script is not None:
        feeder.set_part(*part)
        scenarios = load_script(spec.script)
    else:
        scenarios = (targets_scenario(spec.targets, spec.targets_order, part),)
    it = Iterations(
        spec, scenarios, part=part, rate=rate, offset=offset, vus=lanes, iterations=requests
    )
    loop = asyncio.get_running_loop()
    # one snapshot of the totals a second feeds both the -o timeline and the ticks
    tl = Timeline() if timeline or on_tick is not None else None
    ticker: asyncio.TimerHandle | None = None
    stopper: asyncio.Task[None] | None = None
    try:
        await it.preflight()
        base = await go()
        if stop is not None and stop.is_set():  # stopped while the other processes started
            it.t0 = it.last = base
            it.stop()
            return it.summary(base, tl if timeline else None)
        it.begin(base, spec.duration)
        if stop is not None:
            stopper = loop.create_task(_stop_when(stop, it))
        prev = base

        def tick(second: int) -> None:
            nonlocal ticker, prev
            assert tl is not None
            now = it.clock()
            total = it.stats.total()  # once a second: the steps added up
            in_flight = len(it.pool.busy)
            row = tl.tick(
                second, total.histogram(), total.finished, total.errors_total,
                total.finished + in_flight,
            )  # fmt: skip
            if not timeline:
                tl.rows.clear()
            if on_tick is not None:
                on_tick(
                    Tick(
                        second=second,
                        elapsed_s=(now - base) / 1e9,
                        requests=total.finished,
                        errors=total.errors_total,
                        in_flight=in_flight,
                        rate=row.requests * 1e9 / max(1, now - prev),
                        row=row,
                    )
                )
            prev = now
            due = base + (second + 2) * 1_000_000_000
            ticker = loop.call_later(max(0, due - it.clock()) / 1e9, tick, second + 1)

        if tl is not None:
            ticker = loop.call_later(max(0, base + 1_000_000_000 - it.clock()) / 1e9, tick, 0)
        await asyncio.shield(it.done)
        end = it.last if not it.stopped else it.clock()
        if timeline:
            assert tl is not None
            last = max(0, (end - base - 1) // 1_000_000_000)
            if not tl.rows or tl.rows[-1].second < last:
                total = it.stats.total()
                tl.tick(
                    int(last), total.histogram(), total.finished, total.errors_total,
                    total.finished,
                )  # fmt: skip
        return it.summary(end, tl if timeline else None)
    finally:
        if ticker is not None:
            ticker.cancel()
        if stopper is not None:
            stopper.cancel()
        it.stop()
        await it.wait_closed()


async def _stop_when(stop: asyncio.Event, it: Iterations) -> None:
    await stop.wait()
    it.stop()
