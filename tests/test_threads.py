"""Behaviour of ThreadDispatcher: the same contract as Dispatcher, blocking."""

from __future__ import annotations

import threading
from itertools import count
from typing import Any

import pytest

from hitpool import DispatcherClosed, JobCancelled, QueueFull, SpecError, ThreadDispatcher
from hitpool._core import PoolState


class Gate:
    def __init__(self, expect: int = 0) -> None:
        self.open = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.started = 0
        self.expect = expect
        self.all_started = threading.Event()

    def job(self, value: object = None) -> object:
        with self.lock:
            self.running += 1
            self.started += 1
            self.peak = max(self.peak, self.running)
            if self.started >= self.expect:
                self.all_started.set()
        try:
            assert self.open.wait(10)
        finally:
            with self.lock:
                self.running -= 1
        return value


def test_results_and_concurrency_bound() -> None:
    gate = Gate(expect=3)
    with ThreadDispatcher(workers=3, queue_size=40) as pool:
        jobs = [pool.dispatch(gate.job, i) for i in range(40)]
        assert gate.all_started.wait(5)
        s = pool.statistics()
        assert (s.busy, s.queued) == (3, 37)
        assert s.dispatched == s.completed + s.failed + s.cancelled + s.queued + s.busy
        gate.open.set()
        assert [j.result(5) for j in jobs] == list(range(40))
    assert gate.peak == 3
    assert {j.worker_id for j in jobs} <= {0, 1, 2}
    assert threading.active_count() == 1


def test_dispatch_blocks_when_full_and_nowait_raises() -> None:
    gate = Gate(expect=1)
    with ThreadDispatcher(workers=1, queue_size=1) as pool:
        pool.dispatch(gate.job)
        assert gate.all_started.wait(5)
        pool.dispatch(gate.job)
        with pytest.raises(QueueFull):
            pool.dispatch_nowait(gate.job)
        entered = threading.Event()
        result: list[object] = []

        def producer() -> None:
            entered.set()
            result.append(pool.dispatch(gate.job, "late").result(5))

        t = threading.Thread(target=producer)
        t.start()
        assert entered.wait(5)
        assert pool.statistics().queued == 1
        gate.open.set()
        t.join(5)
        assert result == ["late"]


def test_errors_join_and_callbacks() -> None:
    errors: list[str] = []

    def boom(i: int) -> None:
        raise ValueError(str(i))

    with ThreadDispatcher(
        workers=4, queue_size=8, on_error=lambda j, e: errors.append(str(e))
    ) as pool:
        for batch in range(10):
            jobs = [pool.dispatch(boom, batch * 10 + i) for i in range(10)]
            pool.join()
            assert all(j.done() for j in jobs)
        with pytest.raises(ValueError, match="99"):
            jobs[-1].result()
    assert sorted(errors, key=int) == [str(i) for i in range(100)]
    assert pool.statistics().failed == 100


def test_fail_fast_and_cancel_of_queued() -> None:
    gate = Gate(expect=1)

    def boom() -> None:
        raise KeyError("k")

    with (
        pytest.raises(KeyError),
        ThreadDispatcher(workers=1, queue_size=10, fail_fast=True) as pool,
    ):
        first = pool.dispatch(gate.job)
        assert gate.all_started.wait(5)
        pool.dispatch(boom)
        rest = [pool.dispatch(gate.job) for _ in range(3)]
        assert rest[0].cancel()
        with pytest.raises(JobCancelled):
            rest[0].result()
        gate.open.set()
        pool.join()
    assert first.status == "succeeded"  # a running thread is never interrupted
    assert {j.status for j in rest} == {"cancelled"}
    with pytest.raises(DispatcherClosed):
        pool.dispatch(gate.job)


def test_stop_cancel_and_exception_in_block() -> None:
    gate = Gate(expect=2)
    with pytest.raises(ZeroDivisionError), ThreadDispatcher(workers=2, queue_size=10) as pool:
        jobs = [pool.dispatch(gate.job) for _ in range(6)]
        assert gate.all_started.wait(5)
        # the running jobs may finish once the last queued one is cancelled
        jobs[-1].add_done_callback(lambda job: gate.open.set())
        1 / 0  # noqa: B018
    assert [j.status for j in jobs].count("cancelled") == 4
    assert pool.statistics().completed == 2
    assert threading.active_count() == 1


def test_delay_orders_and_map() -> None:
    order: list[str] = []
    with ThreadDispatcher(workers=1, queue_size=4) as pool:
        late = pool.dispatch(order.append, "late", delay=0.03)
        pool.dispatch(order.append, "early", delay=0.01)
        pool.dispatch(order.append, "now").result(5)
        late.result(5)
        assert list(pool.map(lambda x: x * 2, range(50))) == [2 * x for x in range(50)]
        assert sorted(pool.map(lambda x: x, range(20), ordered=False)) == list(range(20))
    assert order == ["now", "early", "late"]


def test_map_is_lazy_over_an_infinite_iterable() -> None:
    pulled = count()

    def naturals():  # type: ignore[no-untyped-def]
        while True:
            yield next(pulled)

    with ThreadDispatcher(workers=2, queue_size=2) as pool:
        gen = pool.map(lambda x: x + 1, naturals())
        assert [next(gen) for _ in range(10)] == list(range(1, 11))
        gen.close()
        assert next(pulled) <= 10 + 4 + 1


def test_resize() -> None:
    gate = Gate(expect=2)
    with ThreadDispatcher(workers=2, queue_size=30) as pool:
        for _ in range(20):
            pool.dispatch(gate.job)
        assert gate.all_started.wait(5)
        gate.expect = 5
        gate.all_started.clear()
        pool.resize(5)
        assert gate.all_started.wait(5)
        pool.resize(1)
        gate.open.set()
        pool.join()
        jobs = [pool.dispatch(int, "1") for _ in range(5)]
        pool.join()
        assert {j.worker_id for j in jobs} == {0}
    assert gate.peak == 5


def test_bad_input() -> None:
    with pytest.raises(SpecError):
        ThreadDispatcher(workers=0)
    with ThreadDispatcher(workers=1, queue_size=1) as pool, pytest.raises(SpecError):
        pool.dispatch(int, delay=-1)
    with pytest.raises(RuntimeError, match="with ThreadDispatcher"):
        ThreadDispatcher().dispatch(int)


def test_result_timeout() -> None:
    gate = Gate(expect=1)
    with ThreadDispatcher(workers=1, queue_size=1) as pool:
        job = pool.dispatch(gate.job, 5)
        with pytest.raises(TimeoutError):
            job.result(timeout=0.01)
        gate.open.set()
        assert job.result(5) == 5


# -- found by review --------------------------------------------------------------------


def test_thread_job_raising_system_exit_is_settled_and_join_returns() -> None:
    # sys.exit() in a job (or KeyboardInterrupt, or any BaseException) ends the worker thread
    # silently; the job stays "running" forever and join()/result() hang.
    def job() -> None:
        raise SystemExit(3)

    pool = ThreadDispatcher(workers=1, queue_size=4)
    pool.start()
    j = pool.dispatch(job)
    k = pool.dispatch(lambda: 7)
    try:
        pool.join(timeout=1.0)
        joined = True
    except TimeoutError:
        joined = False
    seen = (j.status, k.status, pool.statistics())
    pool.stop(cancel=True)  # the queued job is cancelled; the dead worker is gone
    assert joined, f"join hangs: {seen}"
    assert j.status == "failed"
    assert k.result(0) == 7


def test_thread_cancelling_the_last_delayed_job_during_a_draining_stop_lets_stop_return() -> None:
    pool = ThreadDispatcher(workers=2, queue_size=4)
    parked_while_stopping = threading.Semaphore(0)

    class Cond(threading.Condition):
        def wait(self, timeout: float | None = None) -> bool:
            if pool._state is PoolState.DRAINING:  # back to sleep after stop() woke it
                parked_while_stopping.release()
            return super().wait(timeout)

    pool._work_cv = Cond(pool._mutex)
    pool.start()
    later = pool.dispatch(lambda: None, delay=60)
    stopper = threading.Thread(target=pool.stop, daemon=True)
    stopper.start()
    for _ in range(2):  # both workers woke, saw the delayed job, and wait again
        assert parked_while_stopping.acquire(timeout=1.0)
    assert later.cancel()
    stopper.join(1.0)
    alive = stopper.is_alive()
    if alive:  # unstick it for the next tests
        with pool._mutex:
            pool._work_cv.notify_all()
        stopper.join(1.0)
    assert not alive, "stop() hangs: idle workers are not told that the delayed job is gone"


def test_thread_statistics_is_one_consistent_snapshot() -> None:
    # busy is read under the lock, then queued / dispatched / failed without it, so a job
    # that fails between the two reads counts as busy and as failed: completed goes to -1.
    go = threading.Event()
    started = threading.Event()

    def fail() -> None:
        started.set()
        go.wait(1.0)
        raise ValueError("x")

    class Probe(ThreadDispatcher):
        armed = False

        def _queued_now(self) -> int:
            if self.armed:
                self.armed = False
                go.set()
                job.wait(1.0)  # the worker settles the job between the two reads
            return super()._queued_now()

    pool = Probe(workers=1, queue_size=4, on_error=lambda j, e: None)
    with pool:
        job = pool.dispatch(fail)
        assert started.wait(1.0)
        pool.armed = True
        s = pool.statistics()
    assert job.status == "failed"
    assert s.completed >= 0 and s.busy + s.failed <= 1, s


def test_thread_resize_down_then_up_while_a_worker_exits_keeps_every_worker() -> None:
    # A worker above the new size leaves the lock, then takes it again in `finally` to
    # remove itself. A resize back up in between sees its id still in _threads, spawns
    # nothing, and the worker then removes itself: the pool runs one thread short for good.
    at_exit = threading.Event()
    resized = threading.Event()

    class Hook:
        def __init__(self, real: Any) -> None:
            self.real = real
            self.armed = False

        def __enter__(self) -> Hook:
            if self.armed and threading.current_thread().name == "hitpool-worker-1":
                self.armed = False
                at_exit.set()
                resized.wait(1.0)
            self.real.acquire()
            return self

        def __exit__(self, *exc: object) -> None:
            self.real.release()

    pool = ThreadDispatcher(workers=2, queue_size=4)
    hook = Hook(pool._mutex)
    pool._mutex = hook  # type: ignore[assignment]  # the conditions keep the real lock
    both = threading.Barrier(2, timeout=1.0)
    with pool:
        for _ in range(2000):  # bounded poll: both workers idle in their wait
            with pool._mutex:
                if pool._idle == 2:
                    break
            threading.Event().wait(0.001)
        hook.armed = True
        pool.resize(1)  # worker 1 wakes, sees it is surplus, returns ...
        assert at_exit.wait(1.0)  # ... and is between the two holds of the lock
        pool.resize(2)
        resized.set()
        a = pool.dispatch(both.wait)
        b = pool.dispatch(both.wait)
        a.wait(2.0)
        b.wait(2.0)
        threads = len(pool._threads)
    assert threads == 2, f"{threads} worker thread(s) left after resize(2)"
    assert a.status == b.status == "succeeded", (a.exception(), b.exception())


def test_thread_done_callback_waiting_for_another_job_does_not_deadlock_the_pool() -> None:
    # Done callbacks (and on_error) run while the worker holds the pool's lock, so one that
    # waits for another job blocks every worker that needs the lock to settle that job.
    release = threading.Event()
    go_b = threading.Event()
    cb_started = threading.Event()
    pool = ThreadDispatcher(workers=2, queue_size=4)
    pool.start()
    a = pool.dispatch(release.wait, 5.0)
    b = pool.dispatch(go_b.wait, 5.0)

    def cb(_: object) -> None:
        cb_started.set()
        a.result(2.0)  # gives up after 2 s, which unsticks the pool

    b.add_done_callback(cb)
    go_b.set()
    assert cb_started.wait(1.0)
    release.set()  # a returns at once; its worker now needs the lock to settle it
    settled = threading.Event()
    threading.Thread(target=lambda: (a.wait(3.0), settled.set()), daemon=True).start()
    ok = settled.wait(1.0)
    pool.stop()
    assert ok, "job a could not settle: b's done callback holds the pool lock while it waits"


def test_thread_job_raising_keyboard_interrupt_fails_and_result_re_raises_it() -> None:
    # Ctrl-C goes to the main thread; a KeyboardInterrupt in a job is the job's own
    # outcome: it fails, the worker goes on, result() re-raises it where it is asked for.
    def job() -> None:
        raise KeyboardInterrupt

    with ThreadDispatcher(workers=1, queue_size=4) as pool:
        j = pool.dispatch(job)
        k = pool.dispatch(lambda: 7)
        assert k.result(1.0) == 7
        with pytest.raises(KeyboardInterrupt):
            j.result(0)
    assert j.status == "failed"
    assert pool.statistics().failed == 1


def test_thread_done_callback_and_on_error_may_join_the_pool() -> None:
    # Both run once the lock is released: join() from either waits for the others' jobs
    # (a done callback's own job is out of its barrier already; on_error's is not, so
    # on_error joins from another thread here).
    joined = threading.Event()
    reported = threading.Event()

    def cb(_: object) -> None:
        pool.join(timeout=1.0)
        joined.set()

    def on_error(job: object, exc: BaseException) -> None:
        reported.set()

    def boom() -> None:
        raise ValueError("x")

    pool = ThreadDispatcher(workers=2, queue_size=4, on_error=on_error)
    with pool:
        pool.dispatch(int, "1").add_done_callback(cb)
        pool.dispatch(boom)
        assert joined.wait(2.0), "join() from a done callback deadlocks"
        pool.join(timeout=1.0)
        assert reported.is_set()  # join() returns after on_error has run
