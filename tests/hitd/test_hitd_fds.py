"""File descriptors (issue 10, finding 8), in a real hitd process under a lowered
`ulimit -n`: the soft limit is raised to the hard one, connections past the cap below it get
a 503 (not a reset, and it is logged once), and connections that send nothing are closed
after the first-byte timeout, not held for the keep-alive's 75 s."""

from __future__ import annotations

import asyncio
import resource

from hitpool.hitd.http import connection_cap

SOFT, HARD = 128, 256


def _lower_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, HARD))


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_descriptor_limit_cap_and_silent_connections(hitd_process, connect) -> None:
    p = hitd_process(
        "--store",
        "memory://",
        "--first-byte-timeout",
        "1",
        "--log-level",
        "info",
        preexec_fn=_lower_limit,
    )
    cap = connection_cap(10_000, HARD)  # the soft limit was raised to the hard one
    assert cap > SOFT  # more connections than the lowered soft limit would allow
    assert f"raised the open-files limit from {SOFT} to {HARD}" in p.output
    assert f"at most {cap} connections" in p.output
    silent = [await _open(p.port) for _ in range(cap)]
    refused = []
    for _ in range(3):
        reader, writer = await _open(p.port)
        refused.append(writer)
        head = await asyncio.wait_for(reader.read(4096), 5.0)  # an answer, not a reset
        assert head.startswith(b"HTTP/1.1 503 "), head
        assert b'"too many connections"' in head
        assert await asyncio.wait_for(reader.read(), 5.0) == b""  # then closed
    # The silent ones are closed after the first-byte timeout (1 s, checked each second).
    for reader, _ in silent:
        assert await asyncio.wait_for(reader.read(), 10.0) == b""
    c = await connect(p.port)
    assert (await c.request("GET", "/healthz")).status == 200
    assert p.output.count("new ones get 503") == 1  # logged once for the burst
    for _, writer in silent:
        writer.close()
    for writer in refused:
        writer.close()
