"""A run in child processes (``-p``, or ``run_async(isolate=True)``), merged exactly.

Each child is started with the "spawn" context (no fork of a process with a running loop)
and runs `drive` on its own uvloop loop over its share of the lanes. The lanes are the
unit of the split: a process with a third of the connections sends a third of the
requests (-n) and, under --rps, a third of the rate, so no process is starved of
connections for its rate (process k sends at ``rps * c_k / c`` from ``k / rps``; when P
divides c that is exactly requests k, k+P, ... of the one global schedule).

A `Channel` (a socketpair, length-prefixed messages) carries the protocol: the child sends
("ready" | "cannot_start"), the parent answers ("go", t0) with one CLOCK_MONOTONIC start
for all, the child sends ("tick", tick) every second and finally ("done", wire summary);
("stop", None) ends it early. A child treats SIGTERM as that stop and ignores SIGINT (a
terminal's Ctrl-C reaches the whole group; the parent decides). A child is born with both
blocked, so a signal to the group (`timeout`, Ctrl-C) while it is still importing neither
kills it nor prints a traceback: SIGINT is ignored before it is unblocked, and a pending
SIGTERM is taken as a stop once the child's loop handles it. The parent waits on the
channels and on the processes' sentinels with its loop, never a thread, and reaps every
child it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import multiprocessing.resource_tracker
import signal
import socket
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable, Sequence
from multiprocessing.process import BaseProcess
from typing import Any

import uvloop

from ._channel import Channel
from ._errors import CannotStart, WorkerLost
from .driver import drive
from .progress import Tick, TickMerger
from .spec import Spec
from .summary import Summary

__all__ = ["WorkerLost", "run_processes", "split"]


def _shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` integers that differ by at most one."""
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


def _proportional(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` split in proportion to ``weights``, largest remainders first (exact sum)."""
    whole = sum(weights)
    out = [total * w // whole for w in weights]
    left = total - sum(out)
    by_remainder = sorted(range(len(weights)), key=lambda k: -(total * weights[k] % whole))
    for k in by_remainder[:left]:
        out[k] += 1
    return out


def split(spec: Spec) -> list[tuple[int, int | None, float | None, float]]:
    """Each process's ``(lanes, requests, rate, offset)``: its share of the requests and of
    the rate is its share of the connections."""
    lanes = spec.lanes if spec.requests is not None else spec.concurrency
    p = min(spec.processes, lanes)
    per_process = _shares(lanes, p)
    requests = (
        _proportional(spec.requests, per_process) if spec.requests is not None else [None] * p
    )
    out: list[tuple[int, int | None, float | None, float]] = []
    target = spec.target_rps  # --rps, or the mean rate of the --stage shape
    for k, c_k in enumerate(per_process):
        rate = target * c_k / lanes if target is not None else None
        offset = k / spec.rps if spec.rps is not None else 0.0
        out.append((c_k, requests[k], rate, offset))
    return out


# How long the children of a run get to exit on their own before they are killed. A run
# that ended has their results: they are only closing connections and the interpreter.
_EXIT_GRACE_S = 5.0
# A cancelled run (a hard stop, a timeout) wants nothing more from them: a child still
# connecting (up to spec.timeout) or stuck must not hold its caller up for long.
_CANCEL_GRACE_S = 0.5
# How long the children get to report once told to stop (Ctrl-C, SIGTERM, the caller's
# stop): a child cancels what is in flight and sends its summary, which takes
# milliseconds. One that has not reported by then (frozen: SIGSTOP, a debugger, swapped
# out) is killed, so the stop always ends the run; without this bound it waited forever.
STOP_GRACE_S = 5.0
# The same bound before "go": a child may still be starting (spawning and importing take
# seconds on a loaded machine), and one that reports late still sent nothing.
_STOP_GRACE_STARTING_S = 30.0


# How far ahead of "go" the one start of all children is set.
START_AHEAD_NS = 5_000_000

# Blocked from before a child is spawned until it handles them (the mask survives exec).
_STOPS = frozenset({signal.SIGINT, signal.SIGTERM})


def _start_shielded(procs: Sequence[BaseProcess], started: list[BaseProcess]) -> None:
    """Start the processes with SIGINT and SIGTERM blocked: each child inherits the mask,
    and a signal that reaches this process meanwhile waits until the mask is restored."""
    # The first spawn starts multiprocessing's resource tracker, which unblocks both
    # signals once it has started its own process: start it before blocking them.
    multiprocessing.resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
    try:
        for proc in procs:
            proc.start()
            started.append(proc)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


async def _recv(chan: Channel, proc: BaseProcess, name: str) -> Any:
    """The next whole message from a child process (WorkerLost when it is gone)."""
    try:
        return await chan.recv()
    except (EOFError, OSError):
        # Its end of the socket closed, so it is exiting: its exit code says why.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await _exited([proc])
        raise WorkerLost(
            f"{name} (pid {proc.pid}) exited without its results: {_why(proc)}"
        ) from None


def _why(proc: BaseProcess) -> str:
    code = proc.exitcode
    if code is None:
        return "it closed its end of the channel but is still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


async def _exited(procs: Sequence[BaseProcess]) -> None:
    """Wait until the processes have exited, and collect their exit codes. On the loop and
    with no thread (a process's sentinel fd becomes readable when it exits): an executor
    thread could be queued behind the caller's own blocking work, as hitd's plain tasks are."""
    loop = asyncio.get_running_loop()
    by_fd = {proc.sentinel: proc for proc in procs if proc.exitcode is None}
    left = set(by_fd)
    if not left:
        return
    done: asyncio.Future[None] = loop.create_future()

    def gone(fd: int) -> None:
        loop.remove_reader(fd)
        # The sentinel closes a moment before the process can be waited for: join() waits
        # out that moment (exitcode alone would still say None).
        by_fd[fd].join(0.1)
        left.discard(fd)
        if not left and not done.done():
            done.set_result(None)

    for fd in list(left):
        loop.add_reader(fd, gone, fd)
    try:
        await done
    finally:
        for fd in left:
            loop.remove_reader(fd)
        done.cancel()


async def _reap(procs: Sequence[BaseProcess], grace: float) -> None:
    """Give the processes ``grace`` seconds to exit, kill the others, collect every status."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace):
            await _exited(procs)
    for proc in procs:
        if proc.exitcode is None:
            proc.kill()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):  # SIGKILL cannot be caught: this waits on the kernel
            await _exited(procs)


async def run_processes(
    spec: Spec,
    *,
    stop: asyncio.Event | None,
    timeline: bool,
    on_tick: Callable[[Tick], None] | None,
) -> Summary:
    shares = split(spec)
    p = len(shares)
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with a running loop
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(p)]
    procs = [
        ctx.Process(
            target=_child,
            args=(spec, *shares[k], pairs[k][1], timeline, on_tick is not None, (k, p)),
            name=f"hit-{k + 1}",
            daemon=True,
        )
        for k in range(p)
    ]
    names = [f"hit worker process {k + 1} of {p}" for k in range(p)]
    chans: list[Channel] = []
    started: list[BaseProcess] = []
    # Everything waiting on a channel. gather() does not cancel the others when one fails,
    # and none may outlive this call: cancelled on the way out.
    waiting: list[asyncio.Future[Any]] = []

    def watch(aw: Awaitable[Any]) -> asyncio.Future[Any]:
        fut = asyncio.ensure_future(aw)
        waiting.append(fut)
        return fut

    def unanswered(late: list[int], grace_s: float) -> WorkerLost:
        who = ", ".join(f"{names[k]} (pid {procs[k].pid})" for k in late)
        return WorkerLost(f"{who} did not report within {grace_s:g} s of the stop: killed")

    def tell_all(message: tuple[str, Any]) -> None:
        for c in chans:
            c.send(message)

    grace = _EXIT_GRACE_S
    try:
        _start_shielded(procs, started)
        for ours, theirs in pairs:
            theirs.close()
            chans.append(await Channel.open(ours))
        # A stop while the children connect (a host that does not answer can take -t) is
        # passed on at once: each child then reports its empty, interrupted result.
        answers = [watch(_recv(chans[k], procs[k], names[k])) for k in range(p)]
        connecting = asyncio.gather(*answers)
        if stop is not None:
            await asyncio.wait({connecting, watch(stop.wait())}, return_when=FIRST_COMPLETED)
            if stop.is_set():  # (also when they all connected at that moment: no "go")
                tell_all(("stop", None))
        if stop is not None and stop.is_set():
            try:
                async with asyncio.timeout(_STOP_GRACE_STARTING_S):
                    readies = await connecting
            except TimeoutError:
                grace = _CANCEL_GRACE_S
                late = [k for k in range(p) if not answers[k].done()]
                raise unanswered(late, _STOP_GRACE_STARTING_S) from None
        else:
            readies = await connecting
        failed = [msg for kind, msg in readies if kind == "cannot_start"]
        if failed:
            raise CannotStart(failed[0])
        # ("done", wire) in place of "ready": that child was stopped while it connected
        done: list[Any] = [msg if kind == "done" else None for kind, msg in readies]
        if stop is None or not stop.is_set():
            # CLOCK_MONOTONIC is shared by the processes. Ahead: time for every child
            # to read "go" before its first request is due, so none starts late.
            tell_all(("go", time.perf_counter_ns() + START_AHEAD_NS))
        merger = TickMerger(p)

        def show(ticks: list[Tick]) -> None:
            if on_tick is not None:
                for t in ticks:
                    on_tick(t)

        async def collect(k: int) -> None:
            while done[k] is None:
                kind, msg = await _recv(chans[k], procs[k], names[k])
                if kind == "done":
                    done[k] = msg
                else:
                    show(merger.add(k, Tick.from_wire(msg)))  # ("tick", wire)
            show(merger.ended(k))

        collecting = asyncio.gather(*(watch(collect(k)) for k in range(p)))
        if stop is not None:
            stopping = watch(stop.wait())
            await asyncio.wait({collecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                tell_all(("stop", None))  # (a child ignores a second one)
                try:
                    async with asyncio.timeout(STOP_GRACE_S):
                        await collecting
                except TimeoutError:
                    grace = _CANCEL_GRACE_S
                    raise unanswered(
                        [k for k in range(p) if done[k] is None], STOP_GRACE_S
                    ) from None
        await collecting
        return Summary.merge(done, processes=p, target_rps=spec.target_rps)
    except asyncio.CancelledError:
        grace = _CANCEL_GRACE_S
        raise
    finally:
        for w in waiting:
            w.cancel()
        tell_all(("stop", None))
        try:
            await _reap(started, grace)
        finally:
            for child in started:
                if child.exitcode is None:
                    child.kill()  # cancelled again while reaping: kill, wait no more
                else:
                    child.close()
            for c in chans:
                with contextlib.suppress(Exception):
                    await c.aclose()
            for ours, theirs in pairs:
                ours.close()
                theirs.close()


def _child(
    spec: Spec,
    lanes: int,
    requests: int | None,
    rate: float | None,
    offset: float,
    sock: socket.socket,
    timeline: bool,
    ticks: bool,
    part: tuple[int, int] = (0, 1),  # (k, P): this is process k of P
) -> None:
    """A worker process: connect, report ready, wait for go, run, send the wire summary."""
    # Born with SIGINT and SIGTERM blocked (`_start_shielded`). SIGINT: the parent decides
    # when to stop, so one that came while this child imported is dropped here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    # SIGTERM stays blocked until the loop takes it as a stop (`_child_async`): one sent to
    # the group before then waits, and this child still reports its (empty) result.
    gc.freeze()  # as the CLI does: the cyclic GC need not re-scan the imported modules
    try:
        uvloop.run(_child_async(spec, lanes, requests, rate, offset, sock, timeline, ticks, part))
    except (BrokenPipeError, ConnectionResetError, EOFError):
        # The parent closed its end (it was cancelled or is gone) before this child could
        # report: there is nobody to tell, so end quietly rather than print a traceback.
        pass
    finally:
        sock.close()


async def _child_async(
    spec: Spec,
    lanes: int,
    requests: int | None,
    rate: float | None,
    offset: float,
    sock: socket.socket,
    timeline: bool,
    ticks: bool,
    part: tuple[int, int],
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)  # as the parent's stop: a partial result
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # a pending one lands now
    chan = await Channel.open(sock)
    started: asyncio.Future[int] = loop.create_future()

    async def listen() -> None:
        while True:
            try:
                kind, msg = await chan.recv()
            except (EOFError, OSError):
                kind, msg = "stop", None
            if kind == "go" and not started.done():
                started.set_result(msg)
                continue
            stop.set()
            if not started.done():
                # stopped before "go": drive sees the stop once go() returns and sends
                # nothing; the result it reports is the empty, interrupted one
                started.set_result(time.perf_counter_ns())
            return

    listener = loop.create_task(listen())

    async def go() -> int:
        chan.send(("ready", None))
        t0 = await started
        # The start is ahead of "go": wait for it. A closed-model lane sends as soon as it
        # asks, and a request sent before t0 would end before this share's clock started
        # (a short run reported 0 s at 0 req/s, each latency longer than the run).
        ahead = t0 - time.perf_counter_ns()
        if ahead > 0 and not stop.is_set():
            # the loop's timers round to the millisecond: 1 ms more, never early
            await asyncio.sleep(ahead / 1e9 + 0.001)
        return t0

    try:
        summary = await drive(
            spec,
            lanes=lanes,
            requests=requests,
            rate=rate,
            offset=offset,
            go=go,
            part=part,  # (k, P): a scenario run's feeders partition their rows by it
            stop=stop,
            timeline=timeline,
            on_tick=(lambda t: chan.send(("tick", t.to_wire()))) if ticks else None,
        )
    except CannotStart as exc:
        chan.send(("cannot_start", str(exc)))
        await chan.drain()
        return
    except asyncio.CancelledError:
        return
    finally:
        listener.cancel()
    wire = summary.to_wire()
    wire["target_rps"] = rate
    chan.send(("done", wire))
    await chan.drain()
    await chan.aclose()
