"""Helpers the hitd tests share (imported as `hitd._helpers`; tests/ is on pytest's path)."""

from __future__ import annotations

import asyncio
import time
from typing import Any


async def wait_for(check: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll an external process (bounded): the condition lives in another process."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
