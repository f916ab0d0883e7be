"""A helper the library's tests share (imported as `_waiting`; tests/ is on pytest's path)."""

from __future__ import annotations

import asyncio
from typing import Any


async def finishes(aw: Any, within: float = 1.0) -> tuple[bool, Any]:
    """Run ``aw`` for at most ``within`` seconds: (True, result) or (False, None), with the
    task cancelled. A bound for a test that would otherwise hang on the bug it checks, with
    no exception chain for pytest to format (pytest on 3.11.7 can crash on long ones)."""
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait([task], timeout=within)
    if done:
        return True, task.result()
    task.cancel()
    await asyncio.wait([task])
    return False, None
