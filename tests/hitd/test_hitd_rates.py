"""The dashboard's per-second rates (hitd/rates.py): a pure ring, driven with plain numbers."""

from __future__ import annotations

import pytest

from hitpool.hitd.rates import RateRing, RateSampler


def test_first_sample_is_the_baseline_and_later_ones_count_the_growth() -> None:
    r = RateRing(("a", "b"), seconds=5)
    r.sample(100.2, (10, 3))
    r.sample(101.1, (15, 3))
    r.sample(101.9, (16, 4))  # same second: adds to it
    r.sample(102.0, (20, 4))
    assert r.series(102.5) == {"t": [100, 101, 102], "a": [0, 6, 4], "b": [0, 1, 0]}


@pytest.mark.parametrize(
    ("samples", "now", "expect"),
    [
        # A gap without samples counts zero; the growth lands on the second that saw it.
        ([(10, 0), (11, 2), (14, 5)], 14, {"t": [10, 11, 12, 13, 14], "a": [0, 2, 0, 0, 3]}),
        # Older seconds fall off the ring (5 seconds kept).
        ([(10, 0), (11, 1), (20, 4)], 20, {"t": [16, 17, 18, 19, 20], "a": [0, 0, 0, 0, 3]}),
        # A clock stepped back adds to the current second; the past is not rewritten.
        ([(10, 0), (12, 1), (11, 3)], 12, {"t": [10, 11, 12], "a": [0, 0, 3]}),
        # A total that fell (a reset) never makes a rate negative.
        ([(10, 5), (11, 2), (12, 4)], 12, {"t": [10, 11, 12], "a": [0, 0, 2]}),
        # Asked later than the last sample: the seconds since count zero.
        ([(10, 0), (11, 1)], 13, {"t": [10, 11, 12, 13], "a": [0, 1, 0, 0]}),
    ],
)
def test_ring_table(samples: list[tuple[float, int]], now: float, expect: dict) -> None:
    r = RateRing(("a",), seconds=5)
    for t, total in samples:
        r.sample(t, (total,))
    assert r.series(now) == expect


def test_the_ring_holds_the_growth_since_its_oldest_second() -> None:
    r = RateRing(("a",), seconds=60)
    total = 0
    for i in range(200):
        total += i % 7
        r.sample(1000 + i + 0.5, (total,))
        kept = r.series(1000 + i)["a"]
        assert len(kept) <= 60
        assert sum(kept) == total - (sum(k % 7 for k in range(i - len(kept) + 1)) if i >= 60 else 0)


def test_refuses_mismatched_totals() -> None:
    with pytest.raises(ValueError):
        RateRing(("a", "b")).sample(1.0, (1,))
    with pytest.raises(ValueError):
        RateRing(("a",), seconds=0)


async def test_the_sampler_samples_until_stopped() -> None:
    import asyncio

    ticks = asyncio.Queue[None]()
    totals = iter(range(100))
    now = iter(float(t) for t in range(100, 200))

    async def wait(_: float) -> None:
        await ticks.put(None)
        await asyncio.Event().wait()  # parked until stop() cancels it

    s = RateSampler(RateRing(("a",)), lambda: (next(totals),), clock=lambda: next(now), wait=wait)
    s.start()
    await ticks.get()
    await s.stop()
    assert s.ring.series(100) == {"t": [100], "a": [0]}


async def test_the_sampler_keeps_to_whole_seconds_though_each_sleep_overshoots() -> None:
    # Every sleep ends 4 ms late, as a busy loop's do. Samples 1 s apart would drift into the
    # next second after 250 of them: a second with no sample (0) beside one with two (2).
    import asyncio

    clock = 1000.3
    done = asyncio.Event()
    samples = 0

    def totals() -> tuple[int]:
        nonlocal samples
        samples += 1  # one more counted per sample: each second should show exactly 1
        return (samples,)

    async def wait(d: float) -> None:
        nonlocal clock
        clock += d + 0.004
        if samples >= 400:
            done.set()
            await asyncio.Event().wait()  # parked until stop() cancels it

    s = RateSampler(RateRing(("a",), seconds=600), totals, clock=lambda: clock, wait=wait)
    s.start()
    await done.wait()
    await s.stop()
    counts = s.ring.series(clock)["a"]
    assert counts[0] == 0 and set(counts[1:-1]) == {1}, counts
