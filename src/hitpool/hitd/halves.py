"""Retrying a batch the store refused, in halves: one bad item must not fail the others.

The intake commits the requests of one loop turn together, and the runner records the
outcomes of many jobs in one finish(). If the store refuses such a batch because of one item
(a text it cannot encode, say), retrying the whole batch fails again forever, and every item
that joins it with it. `retry_in_halves` tries the halves, and their halves, down to single
items, which it hands to `alone`. If both halves of a split fail before anything has gone
through, the store itself is failing, not an item: the rest is returned untried, so an
outage costs a few calls per batch, not one per item.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

__all__ = ["retry_in_halves"]

T = TypeVar("T")


async def retry_in_halves(
    items: Sequence[T],
    err: Exception,
    attempt: Callable[[Sequence[T]], Awaitable[object]],
    alone: Callable[[T, Exception], Awaitable[bool]],
) -> list[T]:
    """`attempt(items)` just failed with `err`: attempt halves of it, recursively. An item
    that fails alone goes to `alone(item, error)`, which returns whether the store took it
    after all (in some form). Returns the items not taken, in order."""
    worked = False  # the store took a part: it works, so keep splitting
    down = False  # both halves of a split failed before that: stop trying
    left: list[T] = []

    async def tried(part: Sequence[T]) -> bool:
        nonlocal worked
        if down:
            left.extend(part)
            return False
        refused: Exception | None = None
        try:
            await attempt(part)
        except Exception as e:
            refused = e  # awaited after the except: see scripts/check_compiled.py
        if refused is not None:
            return await failed(part, refused)
        worked = True
        return True

    async def failed(part: Sequence[T], e: Exception) -> bool:
        nonlocal worked, down
        if len(part) == 1:
            if await alone(part[0], e):
                worked = True
                return True
            left.append(part[0])
            return False
        half = len(part) // 2
        first = await tried(part[:half])
        second = await tried(part[half:])
        if not (first or second or worked):
            down = True
        return first or second

    await failed(items, err)
    return left
