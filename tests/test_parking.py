"""`ParkingLot`, the one way the asyncio dispatcher waits: FIFO wake-ups, wake-all, one
worker on its way at a time, and no wake-up lost to a cancel."""

from __future__ import annotations

import asyncio

from hitpool._parking import ParkingLot


async def _park_all(lot: ParkingLot, n: int, order: list[int]) -> list[asyncio.Task[None]]:
    loop = asyncio.get_running_loop()

    async def one(i: int) -> None:
        await lot.park(loop)
        order.append(i)

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    await asyncio.sleep(0)  # every task has parked
    assert len(lot) == n
    return tasks


async def test_wake_one_wakes_the_first_parked_and_wake_all_the_rest_in_order() -> None:
    lot, order = ParkingLot(), list[int]()
    tasks = await _park_all(lot, 4, order)
    assert lot.wake_one()
    await asyncio.sleep(0)
    assert order == [0]
    lot.wake_all()
    await asyncio.wait(tasks)
    assert order == [0, 1, 2, 3]
    assert not lot.wake_one()  # nobody is parked


async def test_first_parks_at_the_front() -> None:
    lot, order = ParkingLot(), list[int]()
    tasks = await _park_all(lot, 2, order)
    front = asyncio.create_task(lot.park(asyncio.get_running_loop(), True))
    await asyncio.sleep(0)
    lot.wake_one()
    await asyncio.sleep(0)
    assert front.done() and order == []
    lot.wake_all()
    await asyncio.wait(tasks)


async def test_one_on_its_way_at_a_time() -> None:
    lot, order = ParkingLot(), list[int]()
    tasks = await _park_all(lot, 3, order)
    lot.wake_one_on_its_way()
    lot.wake_one_on_its_way()  # one is on its way: this wakes nobody
    assert lot.on_its_way == 1 and len(lot) == 2
    await asyncio.sleep(0)
    assert order == [0] and lot.on_its_way == 0  # it resumed
    lot.wake_one_on_its_way()
    await asyncio.sleep(0)
    assert order == [0, 1]
    lot.wake_all()
    await asyncio.wait(tasks)
    assert lot.on_its_way == 0


async def test_a_task_cancelled_after_its_wake_up_hands_it_on() -> None:
    lot, order = ParkingLot(), list[int]()
    tasks = await _park_all(lot, 2, order)
    lot.wake_one_on_its_way()
    tasks[0].cancel()  # woken, then cancelled before it resumed
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert tasks[0].cancelled()
    assert order == [1], "the wake-up was lost with the cancelled task"
    assert lot.on_its_way == 0 and len(lot) == 0


async def test_a_task_cancelled_while_parked_leaves_the_lot() -> None:
    lot, order = ParkingLot(), list[int]()
    tasks = await _park_all(lot, 2, order)
    tasks[0].cancel()
    lot.wake_one()  # skips the cancelled one
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert order == [1] and len(lot) == 0
