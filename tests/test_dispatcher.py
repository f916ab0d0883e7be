"""Behaviour of the asyncio Dispatcher. No test sleeps to wait for another task."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Iterator
from itertools import count
from typing import Any

import pytest

from _waiting import finishes
from hitpool import Dispatcher, DispatcherClosed, JobCancelled, QueueFull, SpecError


class Gate:
    """Jobs that block on an event and record how many run at once."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.running = 0
        self.peak = 0
        self.started = 0
        self.all_started = asyncio.Event()
        self.expect = 0

    async def job(self, value: object = None) -> object:
        self.running += 1
        self.started += 1
        self.peak = max(self.peak, self.running)
        if self.started >= self.expect:
            self.all_started.set()
        try:
            await self.open.wait()
        finally:
            self.running -= 1
        return value


def invariant(pool: Dispatcher) -> None:
    s = pool.statistics()
    assert s.dispatched == s.completed + s.failed + s.cancelled + s.queued + s.busy
    assert s.busy <= s.workers


async def test_results_and_handles() -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    def plain(x: int) -> int:
        return x + 1

    async with Dispatcher(workers=3, queue_size=4) as pool:
        jobs = [await pool.dispatch(double, i) for i in range(10)]
        sync_job = await pool.dispatch(plain, 41)
        assert await sync_job == 42
        assert [await j for j in jobs] == [2 * i for i in range(10)]
        assert {j.status for j in jobs} == {"succeeded"}
        assert all(j.worker_id in range(3) for j in jobs)
        assert len({j.id for j in jobs}) == 10
    s = pool.statistics()
    assert (s.dispatched, s.completed, s.failed, s.cancelled, s.queued) == (11, 11, 0, 0, 0)
    assert s.closed


async def test_concurrency_never_exceeds_workers() -> None:
    gate = Gate()
    gate.expect = 4
    async with Dispatcher(workers=4, queue_size=100) as pool:
        for _ in range(50):
            await pool.dispatch(gate.job)
        await gate.all_started.wait()
        s = pool.statistics()
        assert (s.busy, s.idle, s.queued) == (4, 0, 46)
        invariant(pool)
        gate.open.set()
    assert gate.peak == 4
    assert pool.statistics().completed == 50


async def test_dispatch_waits_when_full_and_nowait_raises() -> None:
    gate = Gate()
    gate.expect = 1
    async with Dispatcher(workers=1, queue_size=2) as pool:
        await pool.dispatch(gate.job)
        await gate.all_started.wait()
        await pool.dispatch(gate.job)
        await pool.dispatch(gate.job)
        with pytest.raises(QueueFull):
            pool.dispatch_nowait(gate.job)
        blocked = asyncio.create_task(pool.dispatch(gate.job))
        await asyncio.sleep(0)  # one loop turn: let it reach its wait
        assert not blocked.done()
        assert pool.statistics().queued == 2  # the bound holds
        gate.open.set()
        job = await blocked
        await job
    assert pool.statistics().completed == 4


async def test_blocked_dispatch_cancelled_leaves_no_waiter() -> None:
    gate = Gate()
    gate.expect = 1
    async with Dispatcher(workers=1, queue_size=1) as pool:
        await pool.dispatch(gate.job)
        await gate.all_started.wait()
        await pool.dispatch(gate.job)
        blocked = asyncio.create_task(pool.dispatch(gate.job))
        await asyncio.sleep(0)
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        gate.open.set()
    s = pool.statistics()
    assert s.dispatched == s.completed == 2


async def test_join_is_a_barrier_across_batches() -> None:
    done: list[int] = []

    async def work(i: int) -> None:
        await asyncio.sleep(0)
        done.append(i)

    async with Dispatcher(workers=5, queue_size=8) as pool:
        for batch in range(20):
            for i in range(13):
                await pool.dispatch(work, batch * 13 + i)
            await pool.join()
            assert len(done) == (batch + 1) * 13
            assert pool.statistics().queued == 0
    assert sorted(done) == list(range(260))


async def test_join_waits_only_for_jobs_dispatched_before_it() -> None:
    first, second = Gate(), Gate()
    async with Dispatcher(workers=2, queue_size=4) as pool:
        await pool.dispatch(first.job)
        joiner = asyncio.create_task(pool.join())
        await asyncio.sleep(0)
        await pool.dispatch(second.job)  # after the join: not its business
        first.open.set()
        await joiner
        assert pool.statistics().busy == 1
        second.open.set()


async def test_failure_is_kept_on_the_job_and_counted() -> None:
    seen: list[tuple[int, str]] = []

    async def boom(i: int) -> None:
        raise ValueError(f"bad {i}")

    def on_error(job: object, exc: BaseException) -> None:
        seen.append((job.id, str(exc)))  # type: ignore[attr-defined]

    async with Dispatcher(workers=2, queue_size=4, on_error=on_error) as pool:
        jobs = [await pool.dispatch(boom, i) for i in range(3)]
        ok = await pool.dispatch(asyncio.sleep, 0, "fine")
        await pool.join()
        assert await ok == "fine"
        for j in jobs:
            with pytest.raises(ValueError, match="bad"):
                await j
            assert j.status == "failed"
    assert pool.statistics().failed == 3
    assert sorted(seen) == [(j.id, f"bad {i}") for i, j in enumerate(jobs)]


async def test_unretrieved_exception_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    def boom() -> None:
        raise RuntimeError("nobody looked")

    async with Dispatcher(workers=1, queue_size=1) as pool:
        await pool.dispatch(boom)
        looked = await pool.dispatch(boom)
        await pool.join()
        with pytest.raises(RuntimeError):
            await looked
    del looked
    with caplog.at_level(logging.ERROR, logger="hitpool"):
        gc.collect()
    messages = [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]
    assert len(messages) == 1


async def test_fail_fast_cancels_the_rest_and_raises() -> None:
    gate = Gate()

    async def boom() -> None:
        raise KeyError("first")

    with pytest.raises(KeyError, match="first"):
        async with Dispatcher(workers=2, queue_size=10, fail_fast=True) as pool:
            slow = await pool.dispatch(gate.job)
            await pool.dispatch(boom)
            queued = [await pool.dispatch(gate.job) for _ in range(3)]
            await pool.join()
    assert slow.status == "cancelled"
    assert {j.status for j in queued} == {"cancelled"}
    with pytest.raises(DispatcherClosed):
        pool.dispatch_nowait(gate.job)


async def test_cancel_queued_and_running_jobs() -> None:
    gate = Gate()
    gate.expect = 1
    async with Dispatcher(workers=1, queue_size=4) as pool:
        running = await pool.dispatch(gate.job)
        queued = await pool.dispatch(gate.job)
        await gate.all_started.wait()
        assert queued.cancel()
        assert queued.status == "cancelled"
        assert running.cancel()
        with pytest.raises(JobCancelled):
            await running
        # the worker survived its job's cancellation
        assert await (await pool.dispatch(asyncio.sleep, 0, 7)) == 7
        assert not running.cancel()
    s = pool.statistics()
    assert (s.cancelled, s.completed) == (2, 1)


async def test_stop_drains_by_default() -> None:
    gate = Gate()
    pool = Dispatcher(workers=2, queue_size=8)
    await pool.__aenter__()
    jobs = [await pool.dispatch(gate.job, i) for i in range(6)]
    stopper = asyncio.create_task(pool.stop())
    await asyncio.sleep(0)
    with pytest.raises(DispatcherClosed):
        await pool.dispatch(gate.job)
    gate.open.set()
    await stopper
    assert [await j for j in jobs] == list(range(6))
    assert not pool._tasks


async def test_stop_cancel_cancels_queued_and_running() -> None:
    gate = Gate()
    gate.expect = 2
    pool = Dispatcher(workers=2, queue_size=8)
    await pool.__aenter__()
    jobs = [await pool.dispatch(gate.job) for _ in range(6)]
    await gate.all_started.wait()
    await pool.stop(cancel=True)
    assert {j.status for j in jobs} == {"cancelled"}
    assert pool.statistics().cancelled == 6
    assert not pool._tasks
    invariant(pool)


async def test_leaving_with_an_exception_cancels_and_leaks_no_task() -> None:
    gate = Gate()
    gate.expect = 2
    before = asyncio.all_tasks()
    with pytest.raises(ZeroDivisionError):
        async with Dispatcher(workers=2, queue_size=8) as pool:
            jobs = [await pool.dispatch(gate.job) for _ in range(5)]
            await gate.all_started.wait()
            1 / 0  # noqa: B018
    assert {j.status for j in jobs} == {"cancelled"}
    assert asyncio.all_tasks() == before


async def test_cancelling_the_owner_task_leaks_nothing() -> None:
    gate = Gate()
    gate.expect = 3
    before = asyncio.all_tasks() - {asyncio.current_task()}

    async def owner() -> None:
        async with Dispatcher(workers=3, queue_size=3) as pool:
            while True:
                await pool.dispatch(gate.job)

    task = asyncio.create_task(owner())
    await gate.all_started.wait()
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.all_tasks() - {asyncio.current_task()} == before


async def test_delay_orders_jobs_and_holds_no_worker() -> None:
    order: list[str] = []
    loop = asyncio.get_running_loop()

    def record(name: str) -> None:
        order.append(name)

    async with Dispatcher(workers=1, queue_size=4) as pool:
        t0 = loop.time()
        late = await pool.dispatch(record, "late", delay=0.03)
        early = await pool.dispatch(record, "early", delay=0.01)
        now = await pool.dispatch(record, "now")
        assert pool.statistics().queued == 3
        await now
        assert order == ["now"]  # the delayed jobs held neither the worker nor the queue
        await late
        assert loop.time() - t0 >= 0.03
    assert order == ["now", "early", "late"]
    assert early.status == late.status == "succeeded"


async def test_delayed_jobs_are_bounded_and_cancellable() -> None:
    async with Dispatcher(workers=1, queue_size=2) as pool:
        a = pool.dispatch_nowait(asyncio.sleep, 0, delay=60)
        pool.dispatch_nowait(asyncio.sleep, 0, delay=60)
        with pytest.raises(QueueFull):
            pool.dispatch_nowait(asyncio.sleep, 0, delay=60)
        ready = pool.dispatch_nowait(asyncio.sleep, 0, "ready")  # ready queue has its own room
        assert await ready == "ready"
        assert a.cancel()
        pool.dispatch_nowait(asyncio.sleep, 0, delay=60)
        await pool.stop(cancel=True)
    assert pool.statistics().cancelled == 2 + 1


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "1s", True])
async def test_bad_delay_names_the_field(bad: object) -> None:
    async with Dispatcher(workers=1, queue_size=1) as pool:
        with pytest.raises(SpecError) as err:
            await pool.dispatch(asyncio.sleep, 0, delay=bad)  # type: ignore[arg-type]
    assert err.value.field == "delay"


@pytest.mark.parametrize(("workers", "queue_size"), [(0, 1), (1, 0), (-3, 4), (2.5, 4), (2, None)])
def test_bad_sizes_are_refused(workers: object, queue_size: object) -> None:
    with pytest.raises(SpecError):
        Dispatcher(workers=workers, queue_size=queue_size)  # type: ignore[arg-type]


async def test_resize_up_and_down_while_busy() -> None:
    gate = Gate()
    gate.expect = 2
    async with Dispatcher(workers=2, queue_size=50) as pool:
        for _ in range(30):
            await pool.dispatch(gate.job)
        await gate.all_started.wait()
        gate.expect = 6
        gate.all_started.clear()
        pool.resize(6)
        await gate.all_started.wait()
        assert pool.statistics().busy == 6
        pool.resize(1)
        assert pool.statistics().workers == 1
        gate.open.set()
        await pool.join()
        invariant(pool)
        # only worker 0 is left and takes the next jobs
        jobs = [await pool.dispatch(asyncio.sleep, 0) for _ in range(4)]
        await pool.join()
        assert {j.worker_id for j in jobs} == {0}
    assert gate.peak == 6
    assert pool.statistics().completed == 34


async def test_map_keeps_order_and_is_lazy() -> None:
    pulled = count()

    def naturals() -> Iterator[int]:
        while True:
            yield next(pulled)

    async def square(x: int) -> int:
        await asyncio.sleep(0)
        return x * x

    async with Dispatcher(workers=4, queue_size=4) as pool:
        results = pool.map(square, naturals())
        got = []
        async for r in results:
            got.append(r)
            if len(got) == 20:
                break
        await results.aclose()  # type: ignore[attr-defined]
        assert got == [i * i for i in range(20)]
        assert next(pulled) <= 20 + 4 + 4 + 1  # pulled at most a window ahead
        await pool.join()
        s = pool.statistics()
        assert s.queued == s.busy == 0


async def test_map_unordered_yields_as_completed_from_async_iterable() -> None:
    gates = {i: asyncio.Event() for i in range(3)}

    async def source() -> AsyncIterator[int]:
        for i in range(3):
            yield i

    async def wait_for(i: int) -> int:
        await gates[i].wait()
        return i

    async with Dispatcher(workers=3, queue_size=3) as pool:
        results = pool.map(wait_for, source(), ordered=False)
        gates[2].set()
        assert await anext(results) == 2
        gates[0].set()
        assert await anext(results) == 0
        gates[1].set()
        assert [r async for r in results] == [1]


async def test_map_raises_a_failed_item_and_cancels_the_rest() -> None:
    gate = Gate()

    async def f(i: int) -> int:
        if i == 0:
            raise ValueError("zero")
        return await gate.job(i)  # type: ignore[return-value]

    async with Dispatcher(workers=2, queue_size=2) as pool:
        with pytest.raises(ValueError, match="zero"):
            async for _ in pool.map(f, range(10)):
                pass
        await pool.join()
        assert pool.statistics().cancelled >= 1
        invariant(pool)


async def test_a_zero_delay_is_a_ready_job_and_counts_against_the_queue() -> None:
    gate = Gate()
    gate.expect = 1
    async with Dispatcher(workers=1, queue_size=1) as pool:
        await pool.dispatch(gate.job)
        await gate.all_started.wait()
        pool.dispatch_nowait(gate.job, delay=0)
        with pytest.raises(QueueFull):
            pool.dispatch_nowait(gate.job, delay=0)
        assert pool.statistics().queued == 1
        gate.open.set()


async def test_dispatch_before_start_and_after_close() -> None:
    pool = Dispatcher(workers=1, queue_size=1)
    with pytest.raises(RuntimeError, match="async with"):
        await pool.dispatch(asyncio.sleep, 0)
    with pytest.raises(RuntimeError, match="async with"):
        pool.dispatch_nowait(asyncio.sleep, 0)
    async with pool:
        pass
    with pytest.raises(DispatcherClosed):
        await pool.dispatch(asyncio.sleep, 0)
    with pytest.raises(DispatcherClosed):
        pool.dispatch_nowait(asyncio.sleep, 0)


async def test_done_callbacks_run_once_for_every_outcome() -> None:
    seen: list[str] = []
    async with Dispatcher(workers=1, queue_size=4) as pool:
        ok = await pool.dispatch(asyncio.sleep, 0)
        bad = await pool.dispatch(int, "x")
        for job in (ok, bad):
            job.add_done_callback(lambda j: seen.append(j.status))
        await pool.join()
        ok.add_done_callback(lambda j: seen.append("late " + j.status))
        with pytest.raises(ValueError):
            await bad
    assert seen == ["succeeded", "failed", "late succeeded"]


# -- what a job raises or returns never costs a worker; map yields as results are ready --------


async def test_a_job_that_raises_cancelled_error_itself_does_not_kill_its_worker() -> None:
    # A job awaiting a task that someone else cancelled sees CancelledError although its
    # worker was never cancelled. The worker treats it as its own cancel and exits.
    async def victim() -> None:
        await asyncio.Event().wait()

    async def job() -> None:
        t = asyncio.ensure_future(victim())
        await asyncio.sleep(0)
        t.cancel()
        await t  # raises CancelledError into the job; nobody cancelled the worker

    async def ok() -> int:
        return 7

    async with Dispatcher(workers=1, queue_size=4) as pool:
        j1 = await pool.dispatch(job)
        j2 = await pool.dispatch(ok)
        joined, _ = await finishes(pool.join())
        seen = (j1.status, j2.status, len(pool._tasks))
        if not joined:
            await pool.stop(cancel=True)
        assert joined, f"the only worker died; job statuses and live workers: {seen}"
        assert await j2 == 7


class Fatal(BaseException):
    """A BaseException that is not CancelledError, KeyboardInterrupt or SystemExit."""


async def test_a_job_raising_a_base_exception_is_settled_and_the_worker_survives() -> None:
    async def job() -> None:
        raise Fatal("boom")

    async def ok() -> int:
        return 7

    pool = Dispatcher(workers=1, queue_size=4)
    await pool.__aenter__()
    workers = list(pool._tasks.values())
    j1 = await pool.dispatch(job)
    j2 = await pool.dispatch(ok)
    joined, _ = await finishes(pool.join())
    seen = (j1.status, j2.status, pool.statistics())
    await pool.stop(cancel=True)
    dead = [t.exception() for t in workers if t.done() and not t.cancelled()]
    assert not any(dead), f"a worker task died with {dead}"
    # The worker task died with Fatal; the job stays "running" even after stop(), join()
    # hangs, and statistics() counts the job as completed.
    assert joined, f"join hangs: {seen}"
    assert j1.status == "failed", j1.status


async def test_cancelling_the_last_delayed_job_during_a_draining_stop_lets_stop_return() -> None:
    pool = Dispatcher(workers=2, queue_size=4)
    await pool.__aenter__()
    later = await pool.dispatch(asyncio.sleep, 0, delay=60)
    stopping = asyncio.create_task(pool.stop())  # drains: workers wait for the delayed job
    for _ in range(5):  # a few loop steps: stop() woke the workers, they parked again
        await asyncio.sleep(0)
    assert pool.closed
    assert later.cancel()
    stopped, _ = await finishes(stopping)  # on a hang, cancelling stop() cleans up
    assert stopped, "stop() hangs: the parked workers are never told the delayed job is gone"


async def test_a_function_returning_a_future_is_awaited() -> None:
    # dispatch() is typed Callable[..., Awaitable[T] | T] -> Job[T]; only CoroutineType is
    # awaited, so a function returning a Task/Future "succeeds" with the future itself.
    async def square(n: int) -> int:
        await asyncio.sleep(0)
        return n * n

    def start(n: int) -> asyncio.Task[int]:
        return asyncio.ensure_future(square(n))

    async with Dispatcher(workers=1, queue_size=4) as pool:
        job = await pool.dispatch(start, 3)
        result: Any = await job
        if isinstance(result, asyncio.Future):
            await result
        assert result == 9


async def test_unordered_map_yields_a_finished_result_before_pulling_the_window_full() -> None:
    # "yield the results as they finish": with a source that is slow (a throttle) or that
    # depends on the consumer (a crawler's frontier), map holds every result back until
    # workers + queue_size items have been pulled.
    got_first = asyncio.Event()

    async def source() -> Any:
        yield 1
        await got_first.wait()  # the next item comes only once the first result is seen
        yield 2

    async def double(x: int) -> int:
        return 2 * x

    async def consume() -> list[int]:
        out = []
        async with Dispatcher(workers=2, queue_size=2) as pool:
            async for r in pool.map(double, source(), ordered=False):
                out.append(r)
                got_first.set()
        return out

    ok, out = await finishes(consume())
    assert ok, "map waits for a 2nd item before yielding the 1st result: deadlock"
    assert out == [2, 4]


async def test_ordered_map_cancelled_while_awaiting_the_head_cancels_the_head_job() -> None:
    started = asyncio.Event()

    async def forever(_: int) -> None:
        started.set()
        await asyncio.Event().wait()

    async with Dispatcher(workers=1, queue_size=1) as pool:

        async def consume() -> None:
            async for _ in pool.map(forever, [1]):
                pass

        consumer = asyncio.create_task(consume())
        await started.wait()
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        joined, _ = await finishes(pool.join())
        if not joined:
            await pool.stop(cancel=True)
        assert joined, "map left the job it was awaiting running after the consumer left"
