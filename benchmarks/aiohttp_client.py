"""Anchor: the usual asyncio way, aiohttp with one coroutine per in-flight request.

    aiohttp_client.py [-c 50] [-z 5] URL

C tasks share one ClientSession (a connector limited to C keep-alive connections); each loops
`GET URL` and reads the body until Z seconds have passed. It runs on uvloop when uvloop is
importable (loadgen.sh installs it beside aiohttp), so the difference to bare_client.py is the
coroutine-per-request shape, not the event loop. Prints one JSON line like bare_client.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp

try:
    import uvloop
except ImportError:  # plain asyncio then; the JSON says which loop ran
    uvloop = None  # type: ignore[assignment]


async def _main(args: argparse.Namespace) -> dict[str, object]:
    counts = {"ok": 0, "bad_status": 0, "errors": 0}
    connector = aiohttp.TCPConnector(limit=args.c)
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.perf_counter()
        deadline = t0 + args.z

        async def worker() -> None:
            while time.perf_counter() < deadline:
                try:
                    async with session.get(args.url) as resp:
                        await resp.read()
                        key = "ok" if 200 <= resp.status < 300 else "bad_status"
                        counts[key] += 1
                except aiohttp.ClientError:
                    counts["errors"] += 1

        await asyncio.gather(*(worker() for _ in range(args.c)))
        duration = time.perf_counter() - t0
    done = counts["ok"] + counts["bad_status"]
    return {
        "tool": "aiohttp",
        "loop": "uvloop" if uvloop is not None else "asyncio",
        "requests": done,
        "successes": counts["ok"],
        "errors": counts["errors"] + counts["bad_status"],
        "rps": done / duration,
        "duration_s": duration,
        "p99_s": None,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", type=int, default=50, help="concurrent requests (default 50)")
    p.add_argument("-z", type=float, default=5.0, help="seconds of sending (default 5)")
    p.add_argument("url")
    args = p.parse_args()
    runner = uvloop.run if uvloop is not None else asyncio.run
    print(json.dumps(runner(_main(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
