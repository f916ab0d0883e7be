"""hitd says which build runs (pure or compiled): on its startup line and in /stats."""

from __future__ import annotations

from typing import Any

from hitpool._build import build


def test_the_startup_line_names_the_build(hitd_process: Any) -> None:
    server = hitd_process("--store", "memory://")
    line = next(x for x in server.output.splitlines() if x.startswith("hitd listening"))
    assert line.endswith(f", {build()} build)")
    assert server.term() == 0


async def test_stats_names_the_build(start_hitd: Any, connect: Any) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    stats = (await c.request("GET", "/stats")).json()
    assert stats["build"] == build()
