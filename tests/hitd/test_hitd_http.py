"""The HTTP/1.1 protocol of hitd on real sockets: keep-alive, pipelining, limits, timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from hitpool.hitd.http import HttpLimits, HttpServer
from hitpool.hitd.messages import Deferred, Request, Response, json_response

Handler = Callable[[Request], "Response | Deferred | Awaitable[Response]"]


def echo(req: Request) -> Response:
    return json_response(
        200, {"method": req.method, "path": req.path, "query": req.query, "len": len(req.body)}
    )


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[HttpServer]]]:
    servers: list[HttpServer] = []

    async def start(handler: Handler = echo, **limits: Any) -> HttpServer:
        server = HttpServer(handler, HttpLimits(**limits))
        await server.start("127.0.0.1", 0)
        servers.append(server)
        return server

    yield start
    for s in servers:
        await s.close(grace=1.0)


async def test_keep_alive_serves_many_requests_on_one_connection(serve, connect) -> None:
    server = await serve()
    c = await connect(server.port)
    for i in range(3):
        r = await c.request("GET", f"/x/{i}?a=1")
        assert r.status == 200
        assert r.json() == {"method": "GET", "path": f"/x/{i}", "query": "a=1", "len": 0}
        assert r.headers["content-type"] == "application/json"
        assert "date" in r.headers
        assert "connection" not in r.headers
    assert len(server.connections) == 1


async def test_pipelined_requests_are_answered_in_order_even_when_ready_out_of_order(
    serve, connect
) -> None:
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[Response]] = []
    arrived = asyncio.Event()

    def handler(req: Request) -> Response | Awaitable[Response]:
        if req.path == "/now":
            return json_response(200, {"path": req.path})
        fut: asyncio.Future[Response] = loop.create_future()
        futures.append(fut)
        if len(futures) == 3:
            arrived.set()
        return fut

    server = await serve(handler)
    c = await connect(server.port)
    raw = b"".join(c.encode("GET", p) for p in ("/a", "/now", "/b", "/c"))
    await c.send(raw)
    await arrived.wait()
    # Resolve the last first: nothing may be written before /a is ready.
    futures[2].set_result(json_response(200, {"path": "/c"}))
    futures[1].set_result(json_response(200, {"path": "/b"}))
    futures[0].set_result(json_response(200, {"path": "/a"}))
    replies = await c.replies(4)
    assert [r.json()["path"] for r in replies] == ["/a", "/now", "/b", "/c"]


async def test_deferred_answers_are_written_in_request_order(serve, connect) -> None:
    answers: list[Deferred] = []
    arrived = asyncio.Event()

    def handler(req: Request) -> Response | Deferred:
        if req.path == "/now":
            return json_response(200, {"path": req.path})
        answer = Deferred()
        answers.append(answer)
        if len(answers) == 4:
            arrived.set()
        return answer

    server = await serve(handler)
    c = await connect(server.port)
    raw = b"".join(c.encode("GET", p) for p in ("/a", "/now", "/b", "/c", "/boom"))
    await c.send(raw)
    await arrived.wait()
    answers[3].set_exception(RuntimeError("a bug"))  # a failed answer is a 500, in its turn
    answers[2].set_result(json_response(200, {"path": "/c"}))
    answers[1].set_result(json_response(200, {"path": "/b"}))
    assert answers[1].done() and not answers[0].done()
    answers[0].set_result(json_response(200, {"path": "/a"}))
    with pytest.raises(asyncio.InvalidStateError):
        answers[0].set_result(json_response(200, {"path": "/a"}))
    replies = await c.replies(5)
    assert [r.json().get("path") for r in replies[:4]] == ["/a", "/now", "/b", "/c"]
    assert replies[4].status == 500
    assert replies[4].json()["error"] == "internal_server_error"


async def test_deferred_answer_after_client_left_then_close(serve, connect) -> None:
    answers: list[Deferred] = []
    arrived = asyncio.Event()

    def handler(req: Request) -> Response | Deferred:
        if req.path != "/slow":
            return json_response(200, {"path": req.path})
        answers.append(Deferred())
        arrived.set()
        return answers[-1]

    server = await serve(handler)
    c = await connect(server.port)
    await c.send(c.encode("GET", "/slow"))
    await arrived.wait()
    await c.aclose()
    # The server keeps a half-closed connection until its answer is out, then closes it.
    server._idle_event.clear()
    answers[0].set_result(json_response(200, {"path": "/slow"}))
    async with asyncio.timeout(5):
        while server.connections:
            await server._idle_event.wait()  # set by connection_lost
            server._idle_event.clear()
    r = await (await connect(server.port)).request("GET", "/next")
    assert r.status == 200 and r.json() == {"path": "/next"}


async def test_coroutine_handler_and_post_body(serve, connect) -> None:
    async def handler(req: Request) -> Response:
        await asyncio.sleep(0)
        return json_response(201, {"body": req.body.decode()})

    server = await serve(handler)
    c = await connect(server.port)
    r = await c.request("POST", "/p", b"hello")
    assert (r.status, r.json()) == (201, {"body": "hello"})


async def test_chunked_body_is_assembled(serve, connect) -> None:
    server = await serve()
    c = await connect(server.port)
    head = b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw = head + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    await c.send(raw)
    (r,) = await c.replies(1)
    assert r.json()["len"] == 5


async def test_body_over_the_limit_by_content_length_is_413_and_closes(serve, connect) -> None:
    server = await serve(max_body_bytes=100)
    c = await connect(server.port)
    # Only the head is sent: the 413 comes from Content-Length before any body is read.
    await c.send(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n")
    (r,) = await c.replies(1)
    assert r.status == 413
    assert r.json()["field"] == "body"
    assert r.headers["connection"] == "close"
    assert await c.closed()


async def test_chunked_body_over_the_limit_is_413(serve, connect) -> None:
    server = await serve(max_body_bytes=10)
    c = await connect(server.port)
    chunk = b"8\r\n12345678\r\n"
    await c.send(b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 2)
    (r,) = await c.replies(1)
    assert r.status == 413
    assert await c.closed()


async def test_headers_over_the_limit_are_431(serve, connect) -> None:
    server = await serve(max_header_bytes=1024)
    c = await connect(server.port)
    await c.send(c.encode("GET", "/", headers={"X-Big": "a" * 2000}))
    (r,) = await c.replies(1)
    assert r.status == 431
    assert r.json()["field"] == "headers"
    assert await c.closed()


async def test_malformed_request_is_400_json_and_closes(serve, connect) -> None:
    server = await serve()
    c = await connect(server.port)
    await c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nNOT HTTP AT ALL\r\n\r\n")
    r1, r2 = await c.replies(2)
    assert r1.status == 200
    assert r2.status == 400
    assert r2.json()["error"] == "bad_request"
    assert r2.json()["field"] == "request"
    assert await c.closed()


async def test_error_after_pending_answers_waits_its_turn(serve, connect) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Response] = loop.create_future()
    server = await serve(lambda req: fut)
    c = await connect(server.port)
    await c.send(c.encode("GET", "/slow") + b"BAD\r\n\r\n")
    await asyncio.sleep(0)  # let the server read; the answer to /slow is not ready
    fut.set_result(json_response(200, {"ok": True}))
    r1, r2 = await c.replies(2)
    assert (r1.status, r2.status) == (200, 400)


async def test_connection_close_and_http10_close_after_the_answer(serve, connect) -> None:
    server = await serve()
    c = await connect(server.port)
    await c.send(c.encode("GET", "/a", headers={"Connection": "close"}) + c.encode("GET", "/b"))
    (r,) = await c.replies(1)
    assert r.headers["connection"] == "close"
    assert await c.closed()
    c10 = await connect(server.port)
    await c10.send(b"GET /old HTTP/1.0\r\n\r\n")
    (r,) = await c10.replies(1)
    assert r.json()["path"] == "/old"
    assert await c10.closed()


async def test_http10_keep_alive_is_honoured(serve, connect) -> None:
    server = await serve()
    c = await connect(server.port)
    await c.send(b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    (r,) = await c.replies(1)
    assert r.headers["connection"] == "keep-alive"
    r = await c.request("GET", "/2")
    assert r.status == 200


async def test_handler_exception_is_500_json(serve, connect) -> None:
    def broken(req: Request) -> Response:
        raise RuntimeError("boom")

    server = await serve(broken)
    c = await connect(server.port)
    r = await c.request("GET", "/")
    assert r.status == 500
    assert r.json()["error"] == "internal_server_error"
    assert (await c.request("GET", "/")).status == 500  # the connection survives


async def test_idle_keep_alive_connection_is_closed(serve, connect) -> None:
    server = await serve(keep_alive_timeout=0.1, sweep_interval=0.02)
    c = await connect(server.port)
    assert (await c.request("GET", "/")).status == 200
    assert await c.closed(timeout=2.0)


async def test_slow_client_gets_408(serve, connect) -> None:
    server = await serve(request_timeout=0.1, sweep_interval=0.02)
    c = await connect(server.port)
    await c.send(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Len")  # and then nothing
    (r,) = await c.replies(1, timeout=2.0)
    assert r.status == 408
    assert r.json()["field"] == "request"
    assert await c.closed()


async def test_too_many_connections_get_503(serve, connect) -> None:
    server = await serve(max_connections=1)
    c1 = await connect(server.port)
    assert (await c1.request("GET", "/")).status == 200
    c2 = await connect(server.port)
    (r,) = await c2.replies(1)
    assert r.status == 503
    assert r.headers["retry-after"] == "1"
    assert await c2.closed()


async def test_expect_100_continue(serve, connect) -> None:
    server = await serve()
    c = await connect(server.port)
    await c.send(
        b"POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    )
    line = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 2.0)
    assert line == b"HTTP/1.1 100 Continue\r\n\r\n"
    await c.send(b"ok")
    (r,) = await c.replies(1)
    assert r.json()["len"] == 2


async def test_no_100_continue_to_http10(serve, connect) -> None:
    """HTTP/1.0 has no 1xx answers: a server must ignore its 100-continue (RFC 9110 10.1.1)."""
    server = await serve()
    c = await connect(server.port)
    await c.send(b"POST /e HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok")
    raw = await asyncio.wait_for(c.reader.read(), 5.0)  # to the close: HTTP/1.0
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), raw
    assert raw.count(b"HTTP/1.1 ") == 1


async def test_a_client_keeping_max_pipeline_requests_in_flight_is_served_in_order(
    serve, connect
) -> None:
    loop = asyncio.get_running_loop()

    def handler(req: Request) -> Response | Awaitable[Response]:
        fut: asyncio.Future[Response] = loop.create_future()
        loop.call_soon(fut.set_result, json_response(200, {"path": req.path}))
        return fut

    server = await serve(handler, max_pipeline=4)
    c = await connect(server.port)
    # A window of 4: each answer lets one more request go. Writes coalesce while the server
    # pauses reading, but never more than 4 requests are unanswered: none is refused.
    await c.send(b"".join(c.encode("GET", f"/{i}") for i in range(4)))
    paths = []
    for i in range(4, 304):
        (r,) = await c.replies(1)
        paths.append(r.json()["path"])
        if i < 300:
            await c.send(c.encode("GET", f"/{i}"))
    assert paths == [f"/{i}" for i in range(300)]
    assert (await c.request("GET", "/after")).json()["path"] == "/after"


async def test_at_most_max_pipeline_requests_wait_per_connection(serve, connect) -> None:
    """Requests read in one go beyond max_pipeline waiting answers are never handled: the
    connection answers those waiting, says `connection: close` on the last, and closes."""
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[Response]] = []
    full = asyncio.Event()

    def handler(req: Request) -> Awaitable[Response]:
        fut: asyncio.Future[Response] = loop.create_future()
        futures.append(fut)
        if len(futures) == 4:
            full.set()
        return fut

    server = await serve(handler, max_pipeline=4)
    c = await connect(server.port)
    await c.send(b"".join(c.encode("GET", f"/p/{i}") for i in range(10)))  # one write
    await full.wait()
    for i, fut in enumerate(futures):
        fut.set_result(json_response(200, {"path": f"/p/{i}"}))
    replies = await c.replies(10)  # what arrives before the server closes
    assert len(futures) == 4
    assert [r.json()["path"] for r in replies] == ["/p/0", "/p/1", "/p/2", "/p/3"]
    assert [r.headers.get("connection") for r in replies] == [None, None, None, "close"]
    assert await c.closed()


async def test_an_answer_to_head_has_no_body(serve, connect) -> None:
    """RFC 9110 9.3.2: the Content-Length the GET would have, and no body; a body would be
    read as the start of the next answer on the connection."""
    server = await serve(lambda req: json_response(200, {"path": req.path}))
    c = await connect(server.port)
    await c.send(c.encode("HEAD", "/x") + c.encode("GET", "/x") + c.encode("GET", "/y"))
    head = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 5.0)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    lines = head.decode().lower().split("\r\n")
    length = int(next(h for h in lines if h.startswith("content-length:")).split(":")[1])
    get_x, get_y = await c.replies(2)  # they parse: no body came after the HEAD answer's head
    assert length == len(get_x.body) > 0
    assert get_y.json() == {"path": "/y"}


@pytest.mark.parametrize("answer", ["at once", "later"])
async def test_a_request_with_upgrade_gets_one_answer(serve, connect, answer) -> None:
    """httptools completes the request, then raises HttpParserUpgrade: the request is answered
    once, the Upgrade ignored (RFC 9110 7.8), and nothing after it is read as HTTP. This is
    what `curl --http2 http://...` sends (h2c)."""
    loop = asyncio.get_running_loop()
    paths: list[str] = []
    later: asyncio.Future[Response] = loop.create_future()

    def handler(req: Request) -> Response | Awaitable[Response]:
        paths.append(req.path)
        loop.call_soon(later.set_result, json_response(200, {"path": req.path}))
        return json_response(200, {"path": req.path}) if answer == "at once" else later

    server = await serve(handler)
    c = await connect(server.port)
    upgrade = {
        "Connection": "Upgrade, HTTP2-Settings",
        "Upgrade": "h2c",
        "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA",
    }
    await c.send(c.encode("GET", "/u", headers=upgrade) + c.encode("GET", "/next"))
    replies = await c.replies(2)  # what arrives before the server closes
    assert [(r.status, r.json()) for r in replies] == [(200, {"path": "/u"})]
    if answer == "later":  # still waiting when the Upgrade was seen: it says so
        assert replies[0].headers["connection"] == "close"
    assert paths == ["/u"]
    assert await c.closed()


async def test_connect_gets_one_answer_and_the_tunnel_bytes_are_not_read(serve, connect) -> None:
    server = await serve()
    c = await connect(server.port)
    await c.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01")
    replies = await c.replies(2)
    assert [r.json()["method"] for r in replies] == ["CONNECT"]
    assert await c.closed()


async def test_close_answers_pending_requests_before_closing(serve, connect) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Response] = loop.create_future()
    got = asyncio.Event()

    def handler(req: Request) -> Response | Awaitable[Response]:
        got.set()
        return fut

    server = HttpServer(handler, HttpLimits())
    await server.start("127.0.0.1", 0)
    c = await connect(server.port)
    idle = await connect(server.port)
    await c.send(c.encode("POST", "/jobs", b"{}"))
    await got.wait()
    closing = asyncio.create_task(server.close(grace=5.0))
    assert await idle.closed()  # an idle connection goes at once
    fut.set_result(json_response(202, {"id": 1}))
    (r,) = await c.replies(1)
    assert r.status == 202
    assert r.headers["connection"] == "close"
    assert await c.closed()
    await closing
    assert not server.connections


async def test_413_survives_a_client_that_sends_the_whole_body(serve, connect) -> None:
    server = await serve(max_body_bytes=100)
    c = await connect(server.port)
    body = b"x" * 300_000
    # Everything at once, as load generators do: the answer must not be lost to a reset.
    c.writer.write(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 300000\r\n\r\n" + body)
    (r,) = await c.replies(1)
    assert r.status == 413
    assert await c.closed()


@pytest.mark.parametrize("chunk", [1000, 64 * 1024])
async def test_a_header_line_that_never_ends_is_431_at_the_limit(serve, connect, chunk) -> None:
    """Finding 5: a header value sent in chunks with no CRLF was buffered without limit (the
    limit was checked only when a header line completed)."""
    server = await serve(max_header_bytes=16 * 1024)
    c = await connect(server.port)
    await c.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: ")
    sent = 0
    reply = None
    # Never more than the limit plus one chunk is sent before the 431 arrives: the server
    # answers as soon as it has counted past the limit, and the test reads after each chunk.
    while sent <= 16 * 1024 + chunk:
        try:
            await c.send(b"a" * chunk)
        except ConnectionError:
            break
        sent += chunk
        try:
            (reply,) = await c.replies(1, timeout=0.05 if sent <= 16 * 1024 else 2.0)
            break
        except TimeoutError:
            continue
    assert reply is not None, f"no answer after {sent} bytes of one header"
    assert reply.status == 431
    assert reply.json()["field"] == "headers"
    assert sent <= 16 * 1024 + chunk
    assert await c.closed()


async def test_a_trailer_line_that_never_ends_is_431_at_the_limit(serve, connect) -> None:
    """A chunked body's trailer sent without CRLF was buffered without limit (only the head's
    bytes were counted as they arrived)."""
    server = await serve(max_header_bytes=16 * 1024)
    c = await connect(server.port)
    await c.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    await c.send(b"3\r\nabc\r\n0\r\nX-Trailer: ")
    sent, chunk, reply = 0, 4096, None
    while sent <= 16 * 1024 + 2 * chunk:
        try:
            await c.send(b"a" * chunk)
        except ConnectionError:
            break
        sent += chunk
        try:
            (reply,) = await c.replies(1, timeout=0.05 if sent <= 16 * 1024 else 2.0)
            break
        except TimeoutError:
            continue
    assert reply is not None, f"no answer after {sent} bytes of one trailer"
    assert (reply.status, reply.json()["field"]) == (431, "headers")
    assert await c.closed()


async def test_pipelined_requests_with_heads_under_the_limit_are_served(serve, connect) -> None:
    """Counting head bytes per read must not charge a head for the requests before it."""
    server = await serve(max_header_bytes=2048)
    c = await connect(server.port)
    one = c.encode("POST", "/", b"x" * 1500, {"X-Pad": "p" * 1500})
    await c.send(one * 5)
    replies = await c.replies(5)
    assert [r.status for r in replies] == [200] * 5
