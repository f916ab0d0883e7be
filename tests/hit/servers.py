"""In-process HTTP/1.1 servers for the hit tests, well-behaved and not.

One server answers by path, so a test picks the misbehaviour with the URL. It parses
requests with httptools and counts every complete request it saw, per path.

    /ok            200, Content-Length body
    /chunked       200, chunked body
    /big           200, a 2 MiB body
    /eof           200, no length: the body ends when the server closes (HTTP/1.0 style)
    /close         200 with Connection: close
    /status/N      status N (204 and 304 without a body, others with one)
    /continue      100 Continue, then 200
    /redirect      302 to /ok (hit counts it and does not follow)
    /head          Content-Length: 1000 without a body (for HEAD)
    /echo          200 with the request body as the response body
    /double        two responses to one request
    /reset         the connection is reset (SO_LINGER 0) instead of an answer
    /midbody       headers promising 100 bytes, 10 bytes, then close
    /silent        never answers (the client's timeout must end it)
    /garbage       a response that is not HTTP
    /slow/MS       200 after MS milliseconds (one connection answers in order)
    /stall/K       answers the first K requests on this path, then stops answering
    /spread/MS     200 after a delay spread evenly over 0..MS milliseconds (wide histograms)
    /delay/MS      200 after MS milliseconds
    /down/K        answers the first K with Connection: close, then stops listening
    /mix           a random one of ok, chunked, close, eof, reset, midbody, garbage,
                   status/500, silent for each request (counted in ``chosen``)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl as _ssl
import struct
import threading
from collections import Counter
from collections.abc import Iterator

import httptools


def _response(status: int, body: bytes = b"", extra: str = "", *, length: bool = True) -> bytes:
    head = f"HTTP/1.1 {status} X\r\n{extra}"
    if length:
        head += f"Content-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


OK = _response(200, b"ok")
MIX = ["ok"] * 6 + ["chunked", "close", "eof", "reset", "midbody", "garbage", "status", "silent"]
MIX_ARGS = {"status": ["500"]}


class Server:
    """The misbehaving-on-request server. ``seen`` counts complete requests per path."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.bodies: list[bytes] = []
        self.chosen: Counter[str] = Counter()  # /mix: the behaviour picked per request
        self.authorizations: Counter[bytes] = Counter()  # Authorization header values seen
        self.rng = random.Random(7)
        self.connections = 0
        self.open: set[asyncio.Transport] = set()
        self.all_closed = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.reached = asyncio.Event()  # set when ``total`` reaches ``notify_at``
        self.notify_at = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def total(self) -> int:
        return sum(self.seen.values())

    async def start(self, host: str = "127.0.0.1", ssl: _ssl.SSLContext | None = None) -> Server:
        self._loop = asyncio.get_running_loop()
        self.server = await self._loop.create_server(lambda: _Proto(self), host, 0, ssl=ssl)
        self.scheme = "https" if ssl is not None else "http"
        self.port = self.server.sockets[0].getsockname()[1]
        self.host = host
        return self

    def url(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{path}"

    async def stop(self) -> None:
        """Stop listening, close every connection and wait until they are gone."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for t in list(self.open):
            t.abort()
        if self.open:
            await asyncio.wait_for(self.all_closed.wait(), 5)

    def saw(self, path: str) -> None:
        self.seen[path] += 1
        if self.notify_at and self.total >= self.notify_at:
            self.reached.set()


class _Proto(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.s = server
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body = b""
        self.transport: asyncio.Transport | None = None
        self.ready_at = 0.0  # /slow: when the last delayed response leaves

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.s.connections += 1
        self.s.open.add(self.transport)  # type: ignore[arg-type]
        self.s.all_closed.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self.s.open.discard(self.transport)  # type: ignore[arg-type]
        if not self.s.open:
            self.s.all_closed.set()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"authorization":
            self.s.authorizations[value] += 1

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        path = self.url.decode()
        self.s.saw(path)
        self.s.bodies.append(self.body)
        self.body = b""
        t = self.transport
        assert t is not None
        parts = path.strip("/").split("/")
        name = parts[0]
        if name == "mix":  # a different behaviour for each request, remembered
            name = self.s.rng.choice(MIX)
            self.s.chosen[name] += 1
            parts = [name, *MIX_ARGS.get(name, [])]
        if name == "ok":
            t.write(OK)
        elif name == "double":
            t.write(OK + OK)
        elif name == "chunked":
            t.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )
        elif name == "big":
            t.write(_response(200, b"x" * (2 << 20)))
        elif name == "eof":
            t.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            t.close()
        elif name == "close":
            t.write(_response(200, b"bye", "Connection: close\r\n"))
            t.close()
        elif name == "status":
            code = int(parts[1])
            t.write(_response(code, b"", length=False) if code in (204, 304) else _response(code))
        elif name == "continue":
            t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            t.write(OK)
        elif name == "redirect":
            t.write(_response(302, b"", "Location: /ok\r\n"))
        elif name == "head":
            t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        elif name == "echo":
            t.write(_response(200, self.s.bodies[-1]))
        elif name == "reset":
            sock = t.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            t.abort()
        elif name == "midbody":
            t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            t.close()
        elif name == "silent":
            pass
        elif name == "garbage":
            t.write(b"SPDY/9 lol what\r\n\r\n")
        elif name == "slow":
            # responses on one connection leave in request order: each waits for the last
            loop = asyncio.get_running_loop()
            at = max(loop.time(), self.ready_at) + int(parts[1]) / 1000
            self.ready_at = at
            loop.call_at(at, _write_unless_closed, t, OK)
        elif name == "stall":
            if self.s.seen[path] <= int(parts[1]):
                t.write(OK)
        elif name == "spread":
            delay = self.s.rng.random() * int(parts[1]) / 1000
            asyncio.get_running_loop().call_later(delay, _write_unless_closed, t, OK)
        elif name == "delay":
            asyncio.get_running_loop().call_later(int(parts[1]) / 1000, _write_unless_closed, t, OK)
        elif name == "down":
            t.write(_response(200, b"bye", "Connection: close\r\n"))
            t.close()
            if self.s.seen[path] >= int(parts[1]) and self.s.server is not None:
                self.s.server.close()
                self.s.server = None
        else:
            t.write(_response(404))


def _write_unless_closed(t: asyncio.Transport, data: bytes) -> None:
    if not t.is_closing():
        t.write(data)


@contextlib.contextmanager
def serve_in_thread(host: str = "127.0.0.1") -> Iterator[Server]:
    """The same server on its own loop in a thread, for code that runs its own loop
    (``run``, the CLI). Stopped and joined on exit."""
    ready = threading.Event()
    holder: list[Server] = []
    stop: list[asyncio.Event] = []
    loop_box: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        s = await Server().start(host)
        holder.append(s)
        done = asyncio.Event()
        stop.append(done)
        loop_box.append(asyncio.get_running_loop())
        ready.set()
        await done.wait()
        await s.stop()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(5), "test server did not start"
    try:
        yield holder[0]
    finally:
        loop_box[0].call_soon_threadsafe(stop[0].set)
        thread.join(5)
