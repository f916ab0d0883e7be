"""The connection state machine (`hitd.h1`) driven with bytes alone: no socket, no loop, the
time an argument. The same rules the socket tests in test_hitd_http.py check end to end."""

from __future__ import annotations

import json

import httptools
import pytest

from hitpool.hitd.h1 import (
    ABORT,
    CLOSE,
    LINGER,
    OPEN,
    H1Connection,
    HttpLimits,
    Shared,
    origin_form,
)
from hitpool.hitd.messages import Deferred, Request, Response, json_response


def echo(req: Request) -> Response:
    return json_response(200, {"method": req.method, "path": req.path, "query": req.query})


def conn(handler=echo, **limits) -> H1Connection:
    return H1Connection(Shared(handler, HttpLimits(**limits)))


def answers(c: H1Connection) -> list[tuple[int, dict[str, str], bytes]]:
    """Parse and take what the connection wrote."""
    got: list[tuple[int, dict[str, str], bytes]] = []

    class P:
        def on_message_begin(self) -> None:
            self.headers: dict[str, str] = {}
            self.body = b""

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers[name.decode().lower()] = value.decode()

        def on_body(self, body: bytes) -> None:
            self.body += body

        def on_message_complete(self) -> None:
            got.append((parser.get_status_code(), self.headers, self.body))

    parser = httptools.HttpResponseParser(P())
    data = b"".join(c.out)
    c.out.clear()
    if data:
        parser.feed_data(data)
    return got


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def test_pipelined_requests_are_answered_in_order_of_arrival() -> None:
    deferred: dict[str, Deferred] = {}

    def handler(req: Request) -> Response | Deferred:
        deferred[req.path] = d = Deferred()
        return d

    c = conn(handler)
    c.receive(get("/a") + get("/b") + get("/c"))
    assert answers(c) == []
    deferred["/c"].set_result(json_response(200, {"p": "c"}))
    deferred["/b"].set_result(json_response(200, {"p": "b"}))
    assert answers(c) == []  # /a is not ready: nothing may overtake it
    deferred["/a"].set_result(json_response(200, {"p": "a"}))
    assert [json.loads(b)["p"] for _, _, b in answers(c)] == ["a", "b", "c"]
    assert (c.end, c.reading) == (OPEN, True)


def test_connection_close_ends_after_the_answer_and_reads_no_further() -> None:
    c = conn()
    c.receive(get("/a", "Connection: close\r\n") + get("/never"))
    [(status, headers, _)] = answers(c)
    assert (status, headers["connection"]) == (200, "close")
    assert c.end == CLOSE and not c.reading


@pytest.mark.parametrize("step", [1, 7, 1000, 64 * 1024])
def test_a_head_is_431_at_the_limit_however_it_is_chunked(step: int) -> None:
    c = conn(max_header_bytes=1024)
    data = b"GET / HTTP/1.1\r\nHost: t\r\nX-Long: " + b"a" * 100_000
    fed = 0
    while fed < len(data) and not c.out:
        c.receive(data[fed : fed + step])
        fed += step
    [(status, _, body)] = answers(c)
    assert (status, json.loads(body)["field"]) == (431, "headers")
    assert fed <= 1024 + step  # refused as soon as the count passed the limit
    assert c.end == LINGER  # the answer is not destroyed by a reset: see LINGER


@pytest.mark.parametrize("step", [1, 7, 1000, 64 * 1024])
def test_a_trailer_line_that_never_ends_is_431_at_the_limit(step: int) -> None:
    """httptools buffers an unfinished trailer line as it does a header line; only the head
    was counted, so a trailer sent without CRLF was held without limit."""
    c = conn(max_header_bytes=1024)
    c.receive(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunks = b"3\r\nabc\r\n0\r\n"
    data = chunks + b"X-Trailer: " + b"a" * 100_000
    fed = 0
    while fed < len(data) and not c.out:
        c.receive(data[fed : fed + step])
        fed += step
    [(status, _, body)] = answers(c)
    assert (status, json.loads(body)["field"]) == (431, "headers")
    # Refused at the limit, plus the read in which the trailers began (not charged).
    assert fed - len(chunks) <= 1024 + 2 * step
    assert c.end == LINGER


@pytest.mark.parametrize("split", [0, 1, 2])
def test_chunked_bodies_and_their_trailers_are_not_charged_as_head_bytes(split: int) -> None:
    """Chunk data is body (up to max_body_bytes), not head: a large chunk read together with
    the last chunk's size line, or with trailers that arrive later, is served."""
    c = conn(max_header_bytes=1024, max_body_bytes=100_000)
    head = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n" % 50_000 + b"b" * 50_000 + b"\r\n"
    parts = [head + b"10\r\n" + b"c" * 16 + b"\r\n", chunk + b"0\r\n", b"X-T: 1\r\n\r\n"]
    if split == 1:  # the size line of a chunk ends a read, its data begins the next
        parts = [head + chunk[:6], chunk[6:] + b"0\r\nX-T: 1\r\n", b"\r\n"]
    elif split == 2:  # all in one read, twice
        parts = [(head + chunk + b"0\r\nX-T: 1\r\n\r\n") * 2]
    for part in parts:
        c.receive(part)
    assert [s for s, _, _ in answers(c)] == [200] * (2 if split == 2 else 1)
    assert c.end == OPEN


def test_heads_after_other_requests_in_one_read_are_not_overcharged() -> None:
    c = conn(max_header_bytes=600)
    one = b"POST / HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"p" * 400 + b"\r\nContent-Length: 500\r\n\r\n"
    c.receive((one + b"x" * 500) * 4)
    assert [s for s, _, _ in answers(c)] == [200] * 4


def test_body_over_the_limit_is_413_by_length_or_as_chunks_arrive() -> None:
    c = conn(max_body_bytes=10)
    c.receive(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n")
    assert [s for s, _, _ in answers(c)] == [413]
    c = conn(max_body_bytes=10)
    c.receive(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    c.receive(b"6\r\nabcdef\r\n")
    assert answers(c) == []
    c.receive(b"6\r\nabcdef\r\n")
    assert [s for s, _, _ in answers(c)] == [413]


NEXT = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
CHUNKED = b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n" + CHUNKED[27:] + b"\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc",
        b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc",
        b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"GET /a HTTP/1.1\nHost: t\n\n",
        b"GET /a HTTP/1.1\r\nHost: t\nX: y\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: t\rX: y\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost : t\r\n\r\n",
        CHUNKED + b"\r\nFFFFFFFFFFFFFFFFF1\r\n",
        CHUNKED + b"\r\n3;a\nb\r\nabc\r\n0\r\n\r\n",
        CHUNKED + b"\r\n3\r\nabcXX0\r\n\r\n",
        CHUNKED + b"\r\n0\r\nContent-Length: 5\r\n\r\n",
    ],
)
def test_smuggling_shapes_are_400_and_nothing_after_them_is_read(raw: bytes) -> None:
    """Every framing two parsers could read differently is refused, and the connection ends:
    the request after it is never handled."""
    seen: list[str] = []

    def handler(req: Request) -> Response:
        seen.append(req.path)
        return echo(req)

    c = conn(handler)
    c.receive(raw + NEXT)
    [(status, headers, _)] = answers(c)
    assert status == 400 and headers["connection"] == "close"
    assert "/smuggled" not in seen and c.end in (LINGER, CLOSE)


def test_transfer_encoding_in_http_1_0_is_400_and_closes() -> None:
    """HTTP/1.0 has no chunked coding: a 1.0 front end frames such a message by its close,
    so the keep-alive request after it was a smuggled one (RFC 9112 6.1: faulty framing)."""
    c = conn()
    c.receive(
        b"POST /a HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    [(status, headers, body)] = answers(c)
    assert (status, json.loads(body)["field"]) == (400, "Transfer-Encoding")
    assert headers["connection"] == "close" and c.end == LINGER


def test_timeouts_are_decided_from_the_time_given() -> None:
    shared = Shared(
        echo, HttpLimits(first_byte_timeout=2, keep_alive_timeout=75, request_timeout=10)
    )
    silent = H1Connection(shared)
    silent.tick(2.0)
    assert silent.end == OPEN
    silent.tick(2.5)
    assert silent.end == CLOSE  # sent nothing: seconds, not the keep-alive's 75 s

    served = H1Connection(shared)
    served.receive(get("/"))
    served.tick(50.0)
    assert served.end == OPEN  # a keep-alive client that was served gets its 75 s
    served.tick(76.0)
    assert served.end == CLOSE

    shared.now = 100.0
    slow = H1Connection(shared)
    slow.receive(b"POST / HTTP/1.1\r\nContent-Len")
    slow.tick(110.5)
    [(status, _, _)] = answers(slow)
    assert status == 408 and slow.end == LINGER
    slow.tick(113.0)
    assert slow.end == ABORT  # lingered past linger_timeout


def test_past_max_pipeline_the_rest_of_a_read_is_not_handled() -> None:
    handled: list[str] = []

    def handler(req: Request) -> Deferred:
        handled.append(req.path)
        return Deferred()

    c = conn(handler, max_pipeline=2)
    c.receive(b"".join(get(f"/{i}") for i in range(5)))
    assert handled == ["/0", "/1"]
    assert not c.reading


@pytest.mark.parametrize(
    ("target", "path"),
    [
        (b"http://host/healthz", b"/healthz"),
        (b"HTTP://host:8080/jobs/7?x=1", b"/jobs/7?x=1"),
        (b"https://host", b"/"),
        (b"http://host?q", b"/?q"),
        (b"/plain", b"/plain"),
        (b"*", b"*"),
    ],
)
def test_absolute_form_targets_are_routed_by_their_path(target: bytes, path: bytes) -> None:
    assert origin_form(target) == path


def test_an_absolute_form_request_reaches_its_route() -> None:
    c = conn()
    c.receive(b"GET http://example.com/healthz?a=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    [(_, _, body)] = answers(c)
    assert json.loads(body) == {"method": "GET", "path": "/healthz", "query": "a=1"}
