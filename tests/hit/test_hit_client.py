"""The engine against well-behaved and misbehaving servers on loopback: every request
ends exactly once, under the right kind, and the server saw exactly what was sent."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from hitpool.hit import CannotStart, Progress, Spec, run, run_async, send_n
from hitpool.hit.client import ERROR_KINDS
from hitpool.hit.report import progress_line

from .servers import Server, serve_in_thread


def _consistent(summary, n: int) -> None:  # type: ignore[no-untyped-def]
    assert summary.requests == n
    assert summary.successes + summary.errors == n
    assert sum(summary.errors_by_kind.values()) == summary.errors
    assert set(summary.errors_by_kind) == set(ERROR_KINDS)


async def test_exactly_n_requests_whatever_the_concurrency(server: Server) -> None:
    s = await run_async(Spec(server.url("/ok"), requests=103, concurrency=10))
    _consistent(s, 103)
    assert s.successes == 103 and s.status_codes == {200: 103}
    assert server.seen["/ok"] == 103
    assert server.connections == 10  # one keep-alive connection per lane
    assert s.bytes == 103 * len(b"HTTP/1.1 200 X\r\nContent-Length: 2\r\n\r\nok")
    assert s.histogram.total == 103 and 0 < s.latency_s()["p50"] <= s.latency_s()["max"]


async def test_fewer_requests_than_lanes_opens_fewer_connections(server: Server) -> None:
    s = await run_async(Spec(server.url("/ok"), requests=3, concurrency=50))
    _consistent(s, 3)
    assert server.connections == 3 and s.concurrency == 3


@pytest.mark.parametrize(
    ("path", "extra", "kind"),
    [
        ("/reset", {}, "reset"),
        ("/midbody", {}, "closed"),
        ("/silent", {"timeout": 0.2}, "timeout"),
        ("/garbage", {}, "bad_response"),
        ("/status/500", {}, "status"),
        ("/nope", {}, "status"),
    ],
)
async def test_each_misbehaviour_counts_under_its_kind(
    server: Server, path: str, extra: dict[str, float], kind: str
) -> None:
    s = await run_async(Spec(server.url(path), requests=12, concurrency=4, **extra))  # type: ignore[arg-type]
    _consistent(s, 12)
    assert s.errors_by_kind[kind] == 12, s.errors_by_kind
    assert s.successes == 0
    assert server.seen[path] == 12  # every request reached the server exactly once


@pytest.mark.parametrize(
    ("path", "method", "codes"),
    [
        ("/chunked", "GET", {200: 9}),
        ("/big", "GET", {200: 9}),
        ("/eof", "GET", {200: 9}),
        ("/close", "GET", {200: 9}),
        ("/continue", "GET", {200: 9}),
        ("/head", "HEAD", {200: 9}),
        ("/status/204", "GET", {204: 9}),
    ],
)
async def test_body_framings_all_succeed(
    server: Server, path: str, method: str, codes: dict[int, int]
) -> None:
    s = await run_async(Spec(server.url(path), requests=9, concurrency=2, method=method))
    _consistent(s, 9)
    assert s.successes == 9 and s.status_codes == codes, s.errors_by_kind
    assert server.seen[path] == 9


async def test_a_response_nobody_asked_for_is_not_counted(server: Server) -> None:
    s = await run_async(Spec(server.url("/double"), requests=1, concurrency=1))
    _consistent(s, 1)
    assert s.successes == 1 and s.status_codes == {200: 1}


async def test_big_bodies_are_counted_in_bytes(server: Server) -> None:
    s = await run_async(Spec(server.url("/big"), requests=3, concurrency=1))
    assert s.bytes > 3 * (2 << 20)


async def test_connection_close_is_honoured_by_reconnecting(server: Server) -> None:
    s = await run_async(Spec(server.url("/close"), requests=20, concurrency=3))
    assert s.successes == 20 and server.connections == 20


async def test_redirects_are_counted_not_followed(server: Server) -> None:
    s = await run_async(Spec(server.url("/redirect"), requests=5, concurrency=2))
    assert s.status_codes == {302: 5} and s.errors_by_kind["status"] == 5
    assert server.seen["/ok"] == 0
    s = await run_async(Spec(server.url("/redirect"), requests=5, concurrency=2, ok=((200, 399),)))
    assert s.successes == 5


async def test_304_has_no_body_and_ok_ranges_decide_success(server: Server) -> None:
    s = await run_async(Spec(server.url("/status/304"), requests=6, concurrency=2))
    assert s.status_codes == {304: 6} and s.errors_by_kind["status"] == 6
    s = await run_async(
        Spec(server.url("/status/304"), requests=6, concurrency=2, ok=((304, 304),))
    )
    assert s.successes == 6


async def test_post_body_and_headers_reach_the_server(server: Server) -> None:
    spec = Spec(
        server.url("/echo"),
        requests=4,
        concurrency=2,
        method="POST",
        body=b'[{"job": 1}]',
        content_type="application/json",
        headers=(("X-Test", "1"),),
    )
    s = await run_async(spec)
    assert s.successes == 4 and server.bodies == [b'[{"job": 1}]'] * 4
    assert b"Content-Type: application/json\r\n" in spec.request_bytes()
    assert b"X-Test: 1\r\n" in spec.request_bytes()
    vhost = Spec(server.url("/ok"), headers=(("host", "example.test"),)).request_bytes()
    assert b"Host: example.test\r\n" in vhost and vhost.count(b"ost:") == 1


async def test_a_server_that_stops_answering_times_out_the_rest(server: Server) -> None:
    s = await run_async(Spec(server.url("/stall/5"), requests=15, concurrency=3, timeout=0.2))
    _consistent(s, 15)
    # after each timeout the lane reconnects and its next request times out too
    assert s.successes == 5 and s.errors_by_kind["timeout"] == 10 == s.errors
    assert server.seen["/stall/5"] == 15


async def test_refused_mid_run_counts_connect_refused(server: Server) -> None:
    s = await run_async(Spec(server.url("/down/4"), requests=10, concurrency=1))
    _consistent(s, 10)
    assert s.successes == 4 and s.errors_by_kind["connect_refused"] == 6
    assert server.seen["/down/4"] == 4


async def test_refused_everywhere_cannot_start() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(CannotStart, match="connect_refused"):
            await run_async(Spec(f"http://127.0.0.1:{port}/", requests=5, concurrency=2))


async def test_unresolvable_host_cannot_start() -> None:
    with pytest.raises(CannotStart, match="resolve"):
        await run_async(Spec("http://no-such-host.invalid/", requests=1))


async def test_ipv6_literal() -> None:
    try:
        s6 = await Server().start("::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        s = await run_async(Spec(s6.url("/ok"), requests=7, concurrency=2))
        assert s.successes == 7 and s6.seen["/ok"] == 7
        assert b"Host: [::1]:" in Spec(s6.url("/ok")).request_bytes()
    finally:
        await s6.stop()


async def test_duration_mode_sends_until_the_deadline(server: Server) -> None:
    s = await run_async(Spec(server.url("/ok"), duration=0.3, concurrency=4))
    assert s.requests > 0 and s.successes == s.requests == server.seen["/ok"]
    assert s.duration_s >= 0.3


async def test_duration_mode_with_rate_sends_the_scheduled_count(server: Server) -> None:
    s = await run_async(Spec(server.url("/ok"), duration=0.25, rps=40, concurrency=2))
    # due times 0, 0.025, ... 0.225 are before the 0.25 s deadline: exactly 10
    assert s.requests == 10 == server.seen["/ok"] and s.target_rps == 40


async def test_paced_run_sends_exactly_n_counted_not_timed(server: Server) -> None:
    s = await run_async(Spec(server.url("/ok"), requests=30, rps=300, concurrency=3))
    _consistent(s, 30)
    assert s.successes == 30 == server.seen["/ok"] and s.target_rps == 300


async def test_stop_returns_the_partial_summary(server: Server) -> None:
    stop = asyncio.Event()
    server.notify_at = 8
    task = asyncio.create_task(
        run_async(Spec(server.url("/stall/5"), requests=1000, concurrency=3), stop=stop)
    )
    await server.reached.wait()
    stop.set()
    s = await task
    assert s.interrupted
    assert s.requests == s.successes + s.errors < 1000
    assert s.successes == 5 and s.errors_by_kind["cancelled"] == 3


async def test_cancelling_the_run_closes_everything(server: Server) -> None:
    server.notify_at = 2
    task = asyncio.create_task(run_async(Spec(server.url("/silent"), requests=10, concurrency=2)))
    await server.reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the client closed both connections: the server sees them go, well before any timeout
    await asyncio.wait_for(server.all_closed.wait(), 2)


async def test_send_n_yields_every_result(server: Server) -> None:
    results = [r async for r in send_n(Spec(server.url("/ok"), requests=25, concurrency=4))]
    assert len(results) == 25 and {r.status for r in results} == {200}
    assert all(r.error is None and r.latency_s > 0 for r in results)
    errors = [r async for r in send_n(Spec(server.url("/status/503"), requests=3, concurrency=1))]
    assert [r.error for r in errors] == ["status"] * 3


async def test_send_n_backpressure_and_early_exit(server: Server) -> None:
    got = 0
    async with contextlib.aclosing(
        send_n(Spec(server.url("/ok"), requests=500, concurrency=4), buffer=8)
    ) as results:
        async for _ in results:
            got += 1
            if got == 20:
                break
    # the buffer holds at most 8 results beyond what was consumed, plus what was in flight
    assert server.seen["/ok"] <= 20 + 8 + 4
    await asyncio.wait_for(server.all_closed.wait(), 2)


async def test_memory_is_constant_in_n(server: Server) -> None:
    small = await run_async(Spec(server.url("/ok"), requests=10, concurrency=2))
    big = await run_async(Spec(server.url("/ok"), requests=3000, concurrency=2))
    assert len(big.histogram.counts) == len(small.histogram.counts)
    assert len(big.histogram.to_dict()["counts"]) < 2 * 2000  # sparse, bounded by slots


async def test_progress_and_timeline_tick_once_a_second(server: Server) -> None:
    seen: list[Progress] = []
    s = await run_async(
        Spec(server.url("/ok"), duration=1.2, concurrency=2, rps=50),
        progress=seen.append,
        timeline=True,
    )
    assert len(seen) == 1 and seen[0].requests > 0 and seen[0].p99_s is not None
    assert [r.second for r in s.timeline] == [0, 1]
    assert sum(r.requests for r in s.timeline) == s.requests == 60
    assert "req/s" in progress_line(seen[0])


async def test_a_worker_process_killed_mid_run_is_reported(server: Server) -> None:
    import multiprocessing
    import os
    import signal

    from hitpool.hit.processes import WorkerLost

    server.notify_at = 2  # both processes have a request in flight
    spec = Spec(server.url("/silent"), requests=10, concurrency=2, processes=2, timeout=20)
    task = asyncio.create_task(run_async(spec))
    await server.reached.wait()
    victim = multiprocessing.active_children()[0]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    with pytest.raises(WorkerLost):
        await task
    assert multiprocessing.active_children() == []  # the other one was stopped and joined


async def test_a_mix_of_misbehaviours_is_counted_request_by_request(server: Server) -> None:
    s = await run_async(Spec(server.url("/mix"), requests=300, concurrency=8, timeout=0.15))
    _consistent(s, 300)
    c = server.chosen
    assert sum(c.values()) == 300 == server.seen["/mix"]
    assert s.successes == c["ok"] + c["chunked"] + c["close"] + c["eof"]
    expected = {
        "reset": c["reset"],
        "closed": c["midbody"],
        "bad_response": c["garbage"],
        "status": c["status"],
        "timeout": c["silent"],
    }
    assert {k: v for k, v in s.errors_by_kind.items() if v} == {
        k: v for k, v in expected.items() if v
    }


def test_the_same_mix_under_uvloop() -> None:
    # run() drives the engine on uvloop (as the CLI does); the server runs in a thread
    with serve_in_thread() as srv:
        s = run(Spec(srv.url("/mix"), requests=300, concurrency=8, timeout=0.15))
        c = srv.chosen
    _consistent(s, 300)
    assert s.successes == c["ok"] + c["chunked"] + c["close"] + c["eof"]
    assert s.errors_by_kind["reset"] == c["reset"]
    assert s.errors_by_kind["closed"] == c["midbody"]
    assert s.errors_by_kind["bad_response"] == c["garbage"]
    assert s.errors_by_kind["status"] == c["status"]
    assert s.errors_by_kind["timeout"] == c["silent"]
