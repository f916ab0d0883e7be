"""Anchor: the barest uvloop + httptools HTTP/1.1 client, to show what one Python core can do.

    bare_client.py [-c 50] [-z 5] [-m GET] [-d BODY] [-H 'Name: value']... URL

C keep-alive connections, each an `asyncio.Protocol` that writes the same pre-built request
bytes again as soon as the previous response is complete: no coroutine, no future, no
allocation per request beyond what the parser does. It keeps a count and a status check and no
latency statistics, so it is the ceiling that `hit` (which has its statistics on) is measured
against. After Z seconds no new request is sent; those in flight are awaited (at most 2 s).

Prints one JSON line: {"requests", "errors", "rps", "duration_s", "p99_s": null, ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import cast
from urllib.parse import urlsplit

import httptools
import uvloop


class _Run:
    """Counters shared by every connection (one loop, one thread: no locks)."""

    def __init__(self, request: bytes, conns: int) -> None:
        self.request = request
        self.sending = True
        self.ok = 0
        self.bad_status = 0
        self.errors = 0
        self.open = conns
        self.all_idle = asyncio.get_running_loop().create_future()

    def idle(self) -> None:
        self.open -= 1
        if self.open == 0 and not self.all_idle.done():
            self.all_idle.set_result(None)


class _Conn(asyncio.Protocol):
    def __init__(self, run: _Run) -> None:
        self.run = run
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.in_flight = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they implement its methods.
        self.transport = cast(asyncio.Transport, transport)
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        if self.run.sending:
            self.in_flight = True
            self.transport.write(self.run.request)
        else:
            self.in_flight = False
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.run.errors += 1
            self.in_flight = False
            assert self.transport is not None
            self.transport.close()

    # httptools callback
    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if 200 <= status < 300:
            self.run.ok += 1
        else:
            self.run.bad_status += 1
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.in_flight:
            # The server closed with our request unanswered; nginx here keeps connections open.
            self.run.errors += 1
        self.run.idle()


async def _main(args: argparse.Namespace) -> dict[str, object]:
    url = urlsplit(args.url)
    if url.scheme != "http" or not url.hostname:
        raise SystemExit("bare_client.py: URL must be http://host:port/path")
    host, port = url.hostname, url.port or 80
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    body = args.d.encode() if args.d else b""
    head = [f"{args.m} {path} HTTP/1.1", f"Host: {url.netloc}", "User-Agent: bare"]
    head += args.H
    if body:
        head.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body

    loop = asyncio.get_running_loop()
    run = _Run(request, args.c)
    t0 = time.perf_counter()
    await asyncio.gather(
        *(loop.create_connection(lambda: _Conn(run), host, port) for _ in range(args.c))
    )
    await asyncio.sleep(args.z - (time.perf_counter() - t0))
    run.sending = False
    try:
        await asyncio.wait_for(run.all_idle, 2.0)
    except TimeoutError:
        pass
    duration = time.perf_counter() - t0
    done = run.ok + run.bad_status
    return {
        "tool": "bare",
        "requests": done,
        "successes": run.ok,
        "errors": run.errors + run.bad_status,
        "rps": done / duration,
        "duration_s": duration,
        "p99_s": None,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", type=int, default=50, help="connections (default 50)")
    p.add_argument("-z", type=float, default=5.0, help="seconds of sending (default 5)")
    p.add_argument("-m", default="GET", help="method (default GET)")
    p.add_argument("-d", default="", help="request body")
    p.add_argument("-H", action="append", default=[], help="extra header 'Name: value'")
    p.add_argument("url")
    args = p.parse_args()
    print(json.dumps(uvloop.run(_main(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
