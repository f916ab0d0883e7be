"""Shared helpers for the hitd HTTP tests: a raw HTTP/1.1 client on real sockets.

The client is deliberately raw (bytes in, parsed responses out) so tests can pipeline,
send malformed requests and stall mid-request, which a library client would not allow.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import pytest


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


class _ReplyParser:
    def __init__(self) -> None:
        self.done: list[Reply] = []
        self._cur = Reply(0)
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self._cur = Reply(0)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._cur.headers[name.decode().lower()] = value.decode()

    def on_headers_complete(self) -> None:
        self._cur.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._cur.body += body

    def on_message_complete(self) -> None:
        self.done.append(self._cur)


def encode(
    method: str,
    path: str,
    body: bytes | str | Any = b"",
    headers: dict[str, str] | None = None,
) -> bytes:
    if not isinstance(body, bytes | str):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    if body or method in ("POST", "PUT"):
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


class Client:
    """One keep-alive connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._p = _ReplyParser()

    @classmethod
    async def connect(cls, port: int) -> Client:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    encode = staticmethod(encode)

    async def send(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()

    async def replies(self, n: int, timeout: float = 5.0) -> list[Reply]:
        async with asyncio.timeout(timeout):
            while len(self._p.done) < n:
                data = await self.reader.read(65536)
                if not data:
                    break
                self._p.parser.feed_data(data)
        got, self._p.done = self._p.done[:n], self._p.done[n:]
        return got

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | str | Any = b"",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        await self.send(encode(method, path, body, headers))
        (reply,) = await self.replies(1)
        return reply

    async def closed(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (EOF) within `timeout`."""
        async with asyncio.timeout(timeout):
            while True:
                data = await self.reader.read(65536)
                if not data:
                    return True
                self._p.parser.feed_data(data)

    async def aclose(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[int], Any]]:
    clients: list[Client] = []

    async def make(port: int) -> Client:
        c = await Client.connect(port)
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.aclose()


# --- real hitd processes ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HitdProcess:
    """`python -m hitpool.hitd` as a real child process; its output goes to a file."""

    def __init__(
        self,
        args: list[str],
        cwd: Path,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.port = free_port()
        self.cwd = cwd
        full_env = dict(os.environ)
        full_env.update(env or {})
        # Tests pass task modules that live next to them (--tasks test_hitd_...).
        here = str(Path(__file__).parent)
        # The test modules are the task modules (`--tasks test_hitd_...`), and they import
        # their helpers as `hitd._helpers` from tests/.
        tests_root = os.path.dirname(here)
        paths = (here, tests_root, full_env.get("PYTHONPATH", ""))
        full_env["PYTHONPATH"] = os.pathsep.join(paths)
        self.log_path = cwd / f"hitd-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hitpool.hitd", "--port", str(self.port), *args],
            cwd=cwd,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn,  # e.g. lower the child's resource limits
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Poll (bounded) for the startup line: the server is another process."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "hitd listening on" in self.output:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"hitd exited {self.proc.returncode}: {self.output}")
            time.sleep(0.02)
        raise AssertionError(f"hitd did not start listening: {self.output}")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def term(self, timeout: float = 15.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


@pytest.fixture
def hitd_process(tmp_path: Path) -> Iterator[Callable[..., HitdProcess]]:
    procs: list[HitdProcess] = []

    def spawn(
        *args: str,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> HitdProcess:
        p = HitdProcess(list(args), tmp_path, env, preexec_fn)
        procs.append(p)
        p.wait_ready()
        return p

    yield spawn
    for p in procs:
        p.stop()


# --- in-process hitd --------------------------------------------------------------------------


@pytest.fixture
async def start_hitd(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start hitd in this process on 127.0.0.1 port 0 with a SQLite file in tmp_path."""
    from hitpool.hitd.server import Hitd, ServerConfig

    servers: list[Any] = []

    async def start(**overrides: Any) -> Hitd:
        settings: dict[str, Any] = {
            "port": 0,
            "store": f"sqlite:///{tmp_path}/hitd-{len(servers)}.db",
            "workers": 2,
            "grace_s": 5.0,
            "lease_s": 5.0,
        }
        settings.update(overrides)
        hitd = Hitd(ServerConfig(**settings))
        await hitd.start()
        servers.append(hitd)
        return hitd

    yield start
    for s in servers:
        if not s.stopped:
            await s.stop()
