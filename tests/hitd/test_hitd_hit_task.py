"""The built-in `hit` task run by a Runner: the load test runs in a child process, its summary
is stored, and the child never outlives the job (done, timed out, hard-stopped or killed)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hitpool.hitd.runner import Runner
from hitpool.hitd.store import NewJob
from hitpool.hitd.store.memory import MemoryStore
from hitpool.hitd.tasks import Registry

_TCP = Path("/proc/net/tcp")


def _owner(port: int) -> int | None:
    """The pid, this process or one of its children, holding the TCP socket bound to local
    ``port``: who really opened a connection the test server accepted (Linux /proc)."""
    inodes = set()
    for line in _TCP.read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            inodes.add(f"socket:[{fields[9]}]")
    for pid in [os.getpid(), *(c.pid for c in multiprocessing.active_children())]:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):  # an fd closed while we look
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return pid
    return None


class _Server:
    """A loopback HTTP/1.1 server: ``/`` answers 200 with an empty body, keep-alive;
    ``/silent`` never answers. It notes who opened each connection and the first request."""

    def __init__(self) -> None:
        self.owners: list[int | None] = []
        self.reached = asyncio.Event()
        self.port = 0

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class _Proto(asyncio.Protocol):
    def __init__(self, server: _Server) -> None:
        self.s = server
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.t = transport
        if _TCP.exists():
            self.s.owners.append(_owner(transport.get_extra_info("peername")[1]))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            self.s.reached.set()
            if not head.startswith(b"GET /silent "):
                self.t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
async def server() -> AsyncIterator[_Server]:
    s = _Server()
    srv = await asyncio.get_running_loop().create_server(lambda: _Proto(s), "127.0.0.1", 0)
    s.port = srv.sockets[0].getsockname()[1]
    yield s
    srv.close()
    with contextlib.suppress(TimeoutError):  # a connection left half-open by a killed child
        async with asyncio.timeout(1):
            await srv.wait_closed()


async def _enqueue(store: MemoryStore, reg: Registry, args: dict[str, Any]) -> int:
    reg.check("hit", args)  # what hitd does at submit: the target is allowed
    [(id, _)] = await store.enqueue([NewJob("hit", args, 0.0, max_attempts=1)], 0.0)
    return id


def _the_child() -> int:
    [child] = [p for p in multiprocessing.active_children() if p.name == "hit-1"]
    assert child.pid is not None and child.pid != os.getpid()
    return child.pid


@pytest.mark.skipif(not _TCP.exists(), reason="finds a socket's owner in /proc")
async def test_a_hit_job_runs_in_a_child_process_and_stores_the_summary(server: _Server) -> None:
    store, reg = MemoryStore(), Registry(include_global=False)
    id = await _enqueue(store, reg, {"url": server.url(), "requests": 20, "concurrency": 2})
    async with Runner(store, reg, workers=1) as runner:
        runner.notify()
        await runner.until_idle()
    rec = await store.get(id)
    assert rec is not None and rec.status == "succeeded", rec
    # Both connections came from one other process: the load test ran off hitd's loop.
    [child] = set(server.owners)
    assert len(server.owners) == 2 and child is not None and child != os.getpid()
    r = rec.result
    assert (r["schema"], r["requests"], r["successes"], r["errors"]) == ("hit/1", 20, 20, 0)
    assert r["status_codes"] == {"200": 20}
    assert (r["processes"], r["concurrency"], r["interrupted"]) == (1, 2, False)
    lat = r["latency_s"]  # the histogram crossed the pipe whole: percentiles are real
    assert 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"]
    assert multiprocessing.active_children() == []


@pytest.mark.skipif(not _TCP.exists(), reason="finds a socket's owner in /proc")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="hit allows one process per core")
async def test_a_hit_job_with_two_processes_merges_them_exactly(server: _Server) -> None:
    store, reg = MemoryStore(), Registry(include_global=False)
    args = {"url": server.url(), "requests": 21, "concurrency": 4, "processes": 2}
    id = await _enqueue(store, reg, args)
    async with Runner(store, reg, workers=1) as runner:
        runner.notify()
        await runner.until_idle()
    rec = await store.get(id)
    assert rec is not None and rec.status == "succeeded", rec
    owners = set(server.owners)
    assert len(server.owners) == 4 and len(owners) == 2 and os.getpid() not in owners
    r = rec.result
    assert (r["requests"], r["successes"], r["processes"], r["concurrency"]) == (21, 21, 2, 4)
    assert 0 < r["latency_s"]["p99"] <= r["latency_s"]["max"]
    assert multiprocessing.active_children() == []


async def test_a_timed_out_hit_job_leaves_no_child(server: _Server) -> None:
    store, reg = MemoryStore(), Registry(include_global=False)
    reg.add(dataclasses.replace(reg.get("hit"), timeout=1.0))  # the per-task asyncio.timeout
    args = {"url": server.url("/silent"), "requests": 1, "concurrency": 1, "timeout": 20}
    id = await _enqueue(store, reg, args)
    async with Runner(store, reg, workers=1) as runner:
        runner.notify()
        await runner.until_idle()
    rec = await store.get(id)
    assert rec is not None and (rec.status, rec.error) == ("dead", "timed out after 1s"), rec
    assert multiprocessing.active_children() == []


async def test_a_hard_stop_kills_the_child_and_uses_the_attempt(server: _Server) -> None:
    store, reg = MemoryStore(), Registry(include_global=False)
    args = {"url": server.url("/silent"), "requests": 1, "concurrency": 1, "timeout": 20}
    id = await _enqueue(store, reg, args)
    async with Runner(store, reg, workers=1) as runner:
        runner.notify()
        await server.reached.wait()  # the child is mid-run
        pid = _the_child()
        os.kill(pid, signal.SIGSTOP)  # and cannot read "stop": it must be killed
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await runner.stop(grace_s=0)
        assert loop.time() - t0 < 2  # a short grace, then SIGKILL
    assert multiprocessing.active_children() == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped
    rec = await store.get(id)
    # Cancelled at the end of the grace period: its only attempt is used (a job that always
    # outlives the grace period must not run again after every restart).
    assert rec is not None and (rec.status, rec.attempts) == ("dead", 1), rec


async def test_a_killed_child_fails_the_job_with_a_clear_error(server: _Server) -> None:
    store, reg = MemoryStore(), Registry(include_global=False)
    args = {"url": server.url("/silent"), "requests": 1, "concurrency": 1, "timeout": 20}
    id = await _enqueue(store, reg, args)
    async with Runner(store, reg, workers=1) as runner:
        runner.notify()
        await server.reached.wait()
        pid = _the_child()
        os.kill(pid, signal.SIGKILL)
        await runner.until_idle()
    rec = await store.get(id)
    assert rec is not None and rec.status == "dead", rec  # failed, no attempt left
    assert rec.error == (
        f"WorkerLost: hit worker process 1 of 1 (pid {pid}) exited without its results: "
        "killed by SIGKILL"
    )
    assert multiprocessing.active_children() == []


async def test_a_hit_job_bounded_by_duration_alone_sends_at_most_max_requests(
    server: _Server,
) -> None:
    """--hit-max-requests bounds every `hit` job: one with only a duration ran until its
    duration ended, sending as many requests as the target answered."""
    from hitpool.hitd.tasks import HitLimits

    store = MemoryStore()
    reg = Registry(include_global=False, hit_limits=HitLimits(max_requests=30))
    id = await _enqueue(store, reg, {"url": server.url(), "duration": "3s", "concurrency": 2})
    async with Runner(store, reg, workers=1) as runner:
        runner.notify()
        await runner.until_idle()
    rec = await store.get(id)
    assert rec is not None and rec.status == "succeeded", rec
    assert (rec.result["requests"], rec.result["successes"]) == (30, 30)
    assert multiprocessing.active_children() == []
