"""The barest durable job intake in Python: the ceiling `benchmarks/intake.sh --servers bare` shows.

    python benchmarks/bare_intake.py --port 8080 [--db ./bare.db]

The shape hitd's HTTP layer was chosen by (a uvloop + httptools `asyncio.Protocol`, commits
grouped per loop turn) with everything else taken away: POST /jobs takes one job object or an
array, checks only that each has a string "task", and answers 202 {"id"} / {"ids"} after the
group's commit to SQLite (WAL, synchronous=FULL, one writer thread, one executemany per
group). It runs no job, validates no arguments, keeps no limits, timeouts or pipelining
order, and answers anything else 404. GET /stats gives {"accepted", "rejected"} as hitd does,
GET /healthz "ok". What hitd costs beyond this is what its promises cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import signal
import sqlite3
import threading
import time
from typing import Any

import httptools
import uvloop


class Store:
    """One writer thread; what the loop gathered in one turn is one transaction."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, task TEXT NOT NULL, "
            "args TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL)"
        )
        self.accepted = 0
        self.pending: list[tuple[str, str]] = []
        self.waiters: list[tuple[Connection, int, bool]] = []
        self._groups: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._loop = asyncio.get_running_loop()
        self._scheduled = False
        threading.Thread(target=self._write_loop, daemon=True).start()

    def submit(self, conn: Connection, rows: list[tuple[str, str]], array: bool) -> None:
        self.pending += rows
        self.waiters.append((conn, len(rows), array))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        self._groups.put((self.pending, self.waiters))
        self.pending, self.waiters = [], []

    def _write_loop(self) -> None:
        while True:
            groups = [self._groups.get()]
            while True:
                try:
                    groups.append(self._groups.get_nowait())
                except queue.Empty:
                    break
            rows = [row for group, _ in groups for row in group]
            now = time.time()
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT INTO jobs (task, args, status, created_at) VALUES (?, ?, 'queued', ?)",
                [(task, args, now) for task, args in rows],
            )
            # One writer: the batch's ids are the last len(rows) ones.
            first = self.conn.execute("SELECT max(id) FROM jobs").fetchone()[0] - len(rows) + 1
            self.conn.execute("COMMIT")
            waiters = [w for _, ws in groups for w in ws]
            self._loop.call_soon_threadsafe(self._answer, waiters, first)

    def _answer(self, waiters: list[tuple[Connection, int, bool]], first: int) -> None:
        next_id = first
        for conn, n, array in waiters:
            ids = range(next_id, next_id + n)
            next_id += n
            self.accepted += n
            body = json.dumps({"ids": list(ids)}).encode() if array else b'{"id":%d}' % ids[0]
            conn.send(202, body, b"location: /jobs/%d\r\n" % ids[0])


class Connection(asyncio.Protocol):
    def __init__(self, store: Store) -> None:
        self.store = store
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.send(400, b'{"error":"bad_request"}')
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, chunk: bytes) -> None:
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        if self.url == b"/jobs":
            try:
                doc = json.loads(body)
                jobs = doc if isinstance(doc, list) else [doc]
                rows = [(job["task"], json.dumps(job.get("args", {}))) for job in jobs]
                if not rows or not all(isinstance(task, str) for task, _ in rows):
                    raise ValueError("a job needs a string task")
            except (ValueError, TypeError, KeyError, AttributeError):
                self.send(400, b'{"error":"bad_request","field":"body"}')
                return
            self.store.submit(self, rows, isinstance(doc, list))
        elif self.url == b"/stats":
            self.send(200, json.dumps({"accepted": self.store.accepted, "rejected": 0}).encode())
        elif self.url == b"/healthz":
            self.send(200, b'{"status":"ok"}')
        else:
            self.send(404, b'{"error":"not_found"}')

    def send(self, status: int, body: bytes, extra: bytes = b"") -> None:
        head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
            status,
            b"Accepted" if status == 202 else b"OK" if status == 200 else b"Error",
            len(body),
        )
        if not self.transport.is_closing():
            self.transport.write(head + extra + b"\r\n" + body)


async def serve(port: int, path: str) -> None:
    store = Store(path)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(store), "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"bare intake listening on http://127.0.0.1:{port} (SQLite {path}, FULL)", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--db", default="./bare.db")
    args = ap.parse_args()
    uvloop.run(serve(args.port, args.db))


if __name__ == "__main__":
    main()
