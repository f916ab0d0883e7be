"""An in-process shop for the scenario tests: it checks what it receives.

    POST /login     {"user": U} -> {"token": "tok-U"}; the token is remembered
    GET /items/N    200 {"item": N} with "Authorization: Bearer tok-U" for a token it gave,
                    else 401 (counted in ``bad_tokens``)
    GET /browse     200 (HEAD /browse: the same head, no body)
    GET /slow/MS    200 after MS milliseconds
    anything else   404

``seen`` counts requests per path pattern ("/login", "/items", "/browse", ...),
``users`` the users that logged in, ``pairs`` the (user, item) pairs fetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import Counter
from collections.abc import Iterator

import httptools


def _answer(status: int, body: bytes = b"", ctype: str = "application/json") -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Shop:
    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.users: Counter[str] = Counter()
        self.pairs: Counter[tuple[str, str]] = Counter()
        self.tokens: dict[str, str] = {}
        self.bad_tokens = 0
        self.headers_seen: list[dict[str, str]] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self._notify: list[tuple[str, int, asyncio.Event]] = []

    def notify(self, path: str, n: int) -> asyncio.Event:
        """An event set once ``seen[path]`` reaches ``n``."""
        ev = asyncio.Event()
        self._notify.append((path, n, ev))
        return ev

    async def start(self) -> Shop:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Proto(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


class _Proto(asyncio.Protocol):
    def __init__(self, shop: Shop) -> None:
        self.shop = shop
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body = b""
        self.headers: dict[str, str] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        shop, t = self.shop, self.transport
        assert t is not None
        path = self.url.decode().partition("?")[0]
        method = self.parser.get_method().decode()
        body, headers = self.body, self.headers
        self.url, self.body, self.headers = b"", b"", {}
        parts = path.strip("/").split("/")
        shop.seen["/" + parts[0]] += 1
        for p, n, ev in shop._notify:
            if shop.seen[p] >= n:
                ev.set()
        shop.headers_seen.append(headers)
        if parts[0] == "login" and method == "POST":
            user = json.loads(body)["user"]
            shop.users[user] += 1
            token = f"tok-{user}"
            shop.tokens[token] = user
            t.write(_answer(200, json.dumps({"token": token}).encode()))
        elif parts[0] == "items" and len(parts) == 2:
            auth = headers.get("authorization", "")
            user = shop.tokens.get(auth.removeprefix("Bearer "))
            if user is None:
                shop.bad_tokens += 1
                t.write(_answer(401))
            else:
                shop.pairs[(user, parts[1])] += 1
                t.write(_answer(200, json.dumps({"item": parts[1]}).encode()))
        elif parts[0] == "browse":
            page = _answer(200, b"<html>shop</html>", "text/html; charset=utf-8")
            # HEAD: the same head (its Content-Length included), no body (RFC 9110 §9.3.2)
            t.write(page.partition(b"\r\n\r\n")[0] + b"\r\n\r\n" if method == "HEAD" else page)
        elif parts[0] == "slow":
            loop = asyncio.get_running_loop()
            loop.call_later(int(parts[1]) / 1000, _write_unless_closed, t, _answer(200))
        else:
            t.write(_answer(404))


def _write_unless_closed(t: asyncio.Transport, data: bytes) -> None:
    if not t.is_closing():
        t.write(data)


@contextlib.contextmanager
def shop_in_thread() -> Iterator[Shop]:
    """The shop on its own loop in a thread, for the CLI and child processes."""
    ready = threading.Event()
    box: list[Shop] = []
    loops: list[asyncio.AbstractEventLoop] = []
    done: list[asyncio.Event] = []

    async def main() -> None:
        s = await Shop().start()
        box.append(s)
        loops.append(asyncio.get_running_loop())
        ev = asyncio.Event()
        done.append(ev)
        ready.set()
        await ev.wait()
        await s.stop()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(5), "the shop did not start"
    try:
        yield box[0]
    finally:
        loops[0].call_soon_threadsafe(done[0].set)
        thread.join(5)
