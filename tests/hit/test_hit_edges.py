"""Edges of hit's wire handling and inputs, each found wrong once by a review: stray and
split responses, input HTTP/1.1 cannot carry, send_n's smallest buffer, the timeout of a
reconnect, the merged target rate, port 0."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Any

import httptools
import pytest

from hitpool.hit import Spec, run_async, send_n
from hitpool.hit.cli import main, parse_args
from hitpool.hit.client import Conn
from hitpool.hit.engine import Engine
from hitpool.hit.stats import Histogram
from hitpool.hit.summary import Summary

# -- helpers ------------------------------------------------------------------------------


class _FakeTransport:
    """Enough of a transport for a Conn driven by hand: records writes, never closes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def abort(self) -> None:
        self.aborted = True


def _conn_with_one_request(url: str = "http://127.0.0.1:9/") -> tuple[Engine, Conn]:
    engine = Engine(Spec(url, requests=1, concurrency=1), lanes=1, requests=1)
    conn = engine.new_conn()
    conn.connection_made(_FakeTransport())  # type: ignore[arg-type]
    engine.live.add(conn)
    conn.send(engine.clock(), engine.clock())
    return engine, conn


class _RawServer(asyncio.Protocol):
    """A server whose answer to the i-th request (0-based, over all connections) is
    ``answer(i, transport)``."""

    count = 0

    def __init__(self, answer: Callable[[int, asyncio.Transport], None]) -> None:
        self.answer = answer
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        i = type(self).count
        type(self).count += 1
        assert self.transport is not None
        self.answer(i, self.transport)


async def _serve(answer: Callable[[int, asyncio.Transport], None]) -> tuple[Any, int]:
    cls = type("S", (_RawServer,), {"count": 0})
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: cls(answer), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


# -- 1. HEAD: a response nobody asked for is counted as a request ---------------------------


async def test_head_response_nobody_asked_for_is_not_counted() -> None:
    """GET closes a connection that answers when nothing was asked (Conn.on_message_complete
    checks ``busy``); HeadConn.on_headers_complete does not, so a stray response on an idle
    lane is counted, and the request that follows is then dropped uncounted."""
    loop = asyncio.get_running_loop()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    stray = b"HTTP/1.1 418 X\r\nContent-Length: 0\r\n\r\n"

    def answer(i: int, t: asyncio.Transport) -> None:
        t.write(head)
        if i == 0:  # a duplicate answer, well before request 1 is due (100 ms)
            loop.call_later(0.02, t.write, stray)

    server, port = await _serve(answer)
    try:
        async with asyncio.timeout(5):
            s = await run_async(
                Spec(
                    f"http://127.0.0.1:{port}/",
                    method="HEAD",
                    requests=2,
                    concurrency=1,
                    rps=10,
                )
            )
    finally:
        server.close()
    # Both requests were answered 200; the 418 answered nothing.
    assert s.status_codes == {200: 2}, s.status_codes


# -- 2. close-delimited bodies: the framing is judged on the first read only ---------------


async def test_close_delimited_response_whose_head_spans_two_reads_is_a_success() -> None:
    """_close_delimited looks for the blank line in ``head``, the FIRST chunk read. A
    server that writes its status line before its headers gets every request counted as
    ``closed`` although each response was complete (body until EOF, RFC 9112 6.3 rule 8)."""
    engine, conn = _conn_with_one_request()
    conn.data_received(b"HTTP/1.1 200 OK\r\n")
    conn.data_received(b"Connection: close\r\n\r\nthe whole body")
    conn.connection_lost(None)
    assert engine.errors["closed"] == 0, engine.errors
    assert engine.successes == 1 and engine.codes[200] == 1


async def test_truncated_response_after_100_continue_is_not_a_success() -> None:
    """After a 1xx, ``head`` still holds the 1xx's head (no Content-Length), so a final
    response that promised 100 bytes and was cut off at 10 counts as a 200 success."""
    engine, conn = _conn_with_one_request()
    conn.data_received(b"HTTP/1.1 100 Continue\r\n\r\n")
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    conn.connection_lost(None)
    assert engine.successes == 0, "a truncated body counted as a success"
    assert engine.errors["closed"] == 1, engine.errors


# -- 3. bad input that is not latin-1: a traceback instead of exit 2 ---------------------


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["-n", "1", "-H", "X-Name: 日本", "http://127.0.0.1:9/"], "-H"),
        (["-n", "1", "-d", "x", "-T", "text/日本", "http://127.0.0.1:9/"], "-T"),
    ],
)
def test_non_latin1_input_is_a_usage_error(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """request_bytes() encoded latin-1 inside Engine(), unchecked before: the
    UnicodeEncodeError escaped main() as a traceback (exit 1) instead of exit 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and flag in err


def test_a_url_in_any_script_is_sent_percent_encoded_with_an_ascii_host() -> None:
    # As a browser sends it: the path's UTF-8 percent-encoded, the host in its IDNA form.
    t = Spec("http://bücher.example:8080/日本?q=ü").target
    assert (t.host, t.path) == ("xn--bcher-kva.example", "/%E6%97%A5%E6%9C%AC?q=%C3%BC")
    assert t.host_header == "xn--bcher-kva.example:8080"
    assert (
        Spec("http://127.0.0.1:9/日本")
        .request_bytes()
        .startswith(b"GET /%E6%97%A5%E6%9C%AC HTTP/1.1\r\n")
    )


# -- 4. send_n(buffer=1) never resumes ---------------------------------------------------


async def test_send_n_with_buffer_1_yields_every_result() -> None:
    """sink() pauses at len(buf) >= 1; send_n resumes only when len(buf) < 1 // 2 == 0,
    which never holds, so after the first result nothing is sent again: a hang."""
    server, port = await _serve(
        lambda i, t: t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    )
    got = []
    try:
        async with asyncio.timeout(3):
            async for r in send_n(
                Spec(f"http://127.0.0.1:{port}/", requests=5, concurrency=1), buffer=1
            ):
                got.append(r)
    finally:
        server.close()
    assert len(got) == 5


# -- 5. -t after a reconnect: connect time is not in the timeout -------------------------


async def test_timeout_includes_the_connect_time_of_a_reconnect() -> None:
    """-t is 'per-request timeout, connect time included' (docs/hit.md), but
    _connect_then_send resets ``sent`` after the connect, so a request can run for up to
    twice -t before the sweep ends it."""
    server, port = await _serve(lambda i, t: None)  # never answers
    now = [0]
    engine = Engine(
        Spec(f"http://127.0.0.1:{port}/", requests=1, concurrency=1, timeout=1.0),
        lanes=1,
        requests=1,
        clock=lambda: now[0],
    )
    try:
        await engine.resolve()
        conn = engine.new_conn()
        conn.send(0, 0)  # no transport: connects first
        now[0] = 900_000_000  # the connect takes 0.9 s
        await asyncio.gather(*engine.tasks)
        assert conn.transport is not None
        now[0] = 1_500_000_000  # 1.5 s after the request started, no answer
        engine._sweep()
        assert engine.errors["timeout"] == 1, "1.5 s into a 1 s timeout and still waiting"
    finally:
        engine._finish()
        await engine.wait_closed()
        server.close()


# -- 6. -p: target_rps is the sum of floats -----------------------------------------------


def test_merged_target_rps_is_the_rps_given() -> None:
    """Each child reports rps / P and the merge sums them: --rps 1000 -p 6 prints
    target_rps 999.9999999999999 in the hit/1 JSON."""
    p = 6
    part = Summary(
        url="http://x/",
        method="GET",
        requests=0,
        successes=0,
        errors=0,
        errors_by_kind={},
        status_codes={},
        bytes=0,
        duration_s=1.0,
        target_rps=1000 / p,
        late=0,
        concurrency=1,
        processes=1,
        interrupted=False,
        histogram=Histogram(),
    ).to_wire()
    assert Summary.merge([part] * p, processes=p).to_json()["target_rps"] != 1000  # the sum
    merged = Summary.merge([part] * p, processes=p, target_rps=1000)
    assert merged.to_json()["target_rps"] == 1000


# -- 7. port 0 silently becomes the default port ----------------------------------------


def test_port_0_is_a_usage_error_not_port_80(capsys: pytest.CaptureFixture[str]) -> None:
    """parse_url does ``port = port or default``: http://127.0.0.1:0/ loads port 80."""
    assert main(["-n", "1", "http://127.0.0.1:0/"]) == 2
    assert "URL" in capsys.readouterr().err


def test_a_body_in_argv_that_is_not_utf8_is_sent_as_given() -> None:
    # Such argv reaches Python as surrogate escapes; encode() of them was a traceback.
    spec, _ = parse_args(["-m", "POST", "-d", os.fsdecode(b"caf\xe9"), "http://127.0.0.1:9/"])
    assert spec.body == b"caf\xe9"


async def test_stop_while_the_lanes_connect_ends_the_run_at_once() -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, so a connect
    # hangs as to a host that does not answer. Ctrl-C (stop) was only heard after every
    # lane had connected or timed out (-t, 30 s by default).
    with socket.socket() as lsn:
        lsn.bind(("127.0.0.1", 0))
        lsn.listen(0)
        port = lsn.getsockname()[1]
        fillers = []
        for _ in range(4):  # fill the accept queue (never accepted)
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            fillers.append(c)
        stop = asyncio.Event()
        spec = Spec(f"http://127.0.0.1:{port}/", requests=5, concurrency=2, timeout=30)
        run = asyncio.ensure_future(run_async(spec, stop=stop))
        for _ in range(20):  # loop turns: the connects are under way
            await asyncio.sleep(0)
        assert not run.done()
        stop.set()
        done, _ = await asyncio.wait([run], timeout=3)
        for c in fillers:
            c.close()
    assert done, "stop was not heard while the lanes were connecting"
    s = run.result()
    assert (s.interrupted, s.requests) == (True, 0)
