"""An answer larger than the socket's buffers is sent once, byte for byte: the transport
pauses the protocol from inside write(), and what was written must not be written again."""

from __future__ import annotations

import asyncio
import json

JSON = {"Content-Type": "application/json"}


async def _read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head, await reader.readexactly(length)


async def test_a_large_answer_is_sent_once_and_the_next_one_follows_it(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    for _ in range(3):  # some 5 MB of jobs: far past the high-water mark and the kernel's
        job = {"task": "hello", "args": {"name": "x" * 900_000}}
        assert (await c.request("POST", "/jobs", job, JSON)).status == 202
    await hitd.runner.until_idle()
    reader, writer = await asyncio.open_connection("127.0.0.1", hitd.port)
    try:
        writer.write(b"GET /jobs?limit=500 HTTP/1.1\r\nHost: t\r\n\r\n")
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        _, body = await _read_answer(reader)
        assert len(json.loads(body)["jobs"]) == 3
        # The very next bytes are the second answer's, not a repeat of part of the first.
        head, body = await _read_answer(reader)
        assert head.startswith(b"HTTP/1.1 200 ") and json.loads(body) == {"status": "ok"}
        writer.write_eof()
        assert await reader.read() == b""  # and nothing after it
    finally:
        writer.close()
