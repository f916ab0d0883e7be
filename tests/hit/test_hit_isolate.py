"""``run_async(spec, isolate=True)``: the run happens in a child process even for -p 1, with
the same summary, and the child never outlives the call (finished, stopped, cancelled, lost)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import socket
from multiprocessing.process import BaseProcess

import pytest

from hitpool.hit import Spec, WorkerLost, run_async
from hitpool.hit.processes import _child

from .servers import Server


def _the_child() -> BaseProcess:
    [child] = [p for p in multiprocessing.active_children() if p.name == "hit-1"]
    assert child.pid is not None and child.pid != os.getpid()
    return child


async def test_an_isolated_run_has_the_same_summary_percentiles_included(server: Server) -> None:
    spec = Spec(server.url("/ok"), requests=103, concurrency=10)
    here = await run_async(spec)
    there = await run_async(spec, isolate=True)
    assert server.seen["/ok"] == 206  # exactly n each time
    assert there.to_json().keys() == here.to_json().keys()
    assert (there.requests, there.successes, there.errors) == (103, 103, 0)
    assert there.status_codes == {200: 103} and there.bytes == here.bytes
    assert (there.processes, there.concurrency, there.interrupted) == (1, 10, False)
    # The histogram crosses the pipe whole: percentiles survive, not only counts.
    assert there.histogram.total == 103
    lat = there.latency_s()
    assert 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"]
    assert multiprocessing.active_children() == []


async def test_stopping_an_isolated_run_returns_the_partial_summary(server: Server) -> None:
    stop = asyncio.Event()
    server.notify_at = 8
    spec = Spec(server.url("/stall/5"), requests=1000, concurrency=3)
    task = asyncio.create_task(run_async(spec, stop=stop, isolate=True))
    await server.reached.wait()
    stop.set()
    s = await task
    assert s.interrupted and s.successes == 5 and s.errors_by_kind["cancelled"] == 3
    assert multiprocessing.active_children() == []


async def test_cancelling_an_isolated_run_stops_its_child_at_once(server: Server) -> None:
    server.notify_at = 2
    spec = Spec(server.url("/silent"), requests=10, concurrency=2, timeout=20)
    task = asyncio.create_task(run_async(spec, isolate=True))
    await server.reached.wait()
    child = _the_child()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert loop.time() - t0 < 2  # it was told to stop, and did: no join timeout ran out
    assert multiprocessing.active_children() == []
    with pytest.raises(ValueError, match="closed"):
        child.is_alive()  # joined and closed, not left behind
    await asyncio.wait_for(server.all_closed.wait(), 2)


async def test_a_child_that_cannot_stop_is_killed_soon_after_a_cancel(server: Server) -> None:
    server.notify_at = 1
    spec = Spec(server.url("/silent"), requests=1, concurrency=1, timeout=20)
    task = asyncio.create_task(run_async(spec, isolate=True))
    await server.reached.wait()
    child = _the_child()
    assert child.pid is not None
    os.kill(child.pid, signal.SIGSTOP)  # it cannot read "stop" any more
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # A cancelled run waits a short grace, not the 5 s a finished run's children get.
    assert loop.time() - t0 < 2
    assert multiprocessing.active_children() == []


async def test_an_isolated_child_killed_mid_run_is_named_in_the_error(server: Server) -> None:
    server.notify_at = 1
    spec = Spec(server.url("/silent"), requests=1, concurrency=1, timeout=20)
    task = asyncio.create_task(run_async(spec, isolate=True))
    await server.reached.wait()
    pid = _the_child().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerLost) as e:
        await task
    assert str(e.value) == (
        f"hit worker process 1 of 1 (pid {pid}) exited without its results: killed by SIGKILL"
    )
    assert multiprocessing.active_children() == []


async def test_a_child_whose_parent_stopped_listening_ends_quietly(
    server: Server, capfd: pytest.CaptureFixture[str]
) -> None:
    # What a cancelled run leaves a child that is still connecting: its pipe's other end is
    # closed before it can say "ready" or send its results.
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = socket.socketpair()
    spec = Spec(server.url("/ok"), requests=1, concurrency=1)
    child = ctx.Process(target=_child, args=(spec, 1, 1, None, 0.0, theirs, False, False))
    child.start()
    theirs.close()
    ours.close()
    await asyncio.to_thread(child.join, 10)
    assert child.exitcode == 0
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("processes", [1, 2])
async def test_a_stop_while_the_children_connect_ends_the_run_at_once(processes: int) -> None:
    # A TLS server that never answers the handshake: every child is stuck connecting, for
    # up to -t (20 s). The stop reaches them there; the result is empty and interrupted.
    connected = asyncio.Event()
    peers: list[asyncio.StreamWriter] = []

    async def mute(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)
        if len(peers) == 2:
            connected.set()

    srv = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    url = f"https://127.0.0.1:{port}/"
    spec = Spec(url, requests=10, concurrency=2, processes=processes, timeout=20)
    stop = asyncio.Event()
    task = asyncio.create_task(run_async(spec, stop=stop, isolate=True))
    await connected.wait()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    stop.set()
    s = await task
    assert loop.time() - t0 < 5  # not the 20 s of -t
    assert s.interrupted and s.requests == 0 and s.processes == processes
    assert multiprocessing.active_children() == []
    for w in peers:
        w.close()
    srv.close()
    await srv.wait_closed()
