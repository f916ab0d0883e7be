"""The channel between a run's processes and the per-second ticks they send: pure tables,
and the channel's framing byte by byte on uvloop (a message split across reads)."""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
import uvloop

from hitpool.hit._channel import Channel
from hitpool.hit.progress import Tick, TickMerger, progress_of
from hitpool.hit.stats import Second, index_of

T = TypeVar("T")


def _tick(second: int, requests: int, latencies_us: list[int], *, rate: float = 0.0) -> Tick:
    counts: dict[int, int] = {}
    for v in latencies_us:
        counts[index_of(v)] = counts.get(index_of(v), 0) + 1
    row = Second(second, len(latencies_us), 0, tuple(sorted(counts.items())), requests + 1, 1)
    return Tick(second, second + 1.0, requests, 0, 1, rate, row)


def test_a_second_is_shown_once_every_running_process_sent_it() -> None:
    m = TickMerger(2)
    assert m.add(0, _tick(0, 10, [100] * 10, rate=10)) == []
    assert m.add(0, _tick(1, 20, [100] * 10, rate=10)) == []  # process 1 is a second behind
    [first] = m.add(1, _tick(0, 5, [900] * 5, rate=5))
    assert (first.second, first.requests, first.rate, first.row.requests) == (0, 15, 15, 15)
    [second] = m.add(1, _tick(1, 7, [900] * 2, rate=2))
    assert (second.second, second.requests, second.rate) == (1, 27, 12)


def test_a_process_that_ended_holds_no_second_back() -> None:
    m = TickMerger(2)
    assert m.add(0, _tick(0, 10, [100], rate=1)) == []
    [t] = m.ended(1)  # process 1 finished before its first whole second
    assert (t.second, t.requests) == (0, 10)
    [t] = m.add(0, _tick(1, 11, [100], rate=1))
    assert t.second == 1


def test_progress_is_the_last_seconds_rate_and_p99() -> None:
    t = _tick(3, 1000, [1000] * 98 + [50_000] * 2, rate=100.0)
    p = progress_of(t)
    assert (p.requests, p.rps) == (1000, 100.0)
    assert p.p99_s == pytest.approx(0.05, rel=0.01)
    assert progress_of(_tick(4, 1000, [], rate=0.0)).p99_s is None  # nothing ended


def test_a_tick_crosses_the_wire_unchanged() -> None:
    t = _tick(2, 30, [10, 20, 20, 5000], rate=4.0)
    assert Tick.from_wire(pickle.loads(pickle.dumps(t.to_wire()))) == t


def _on_uvloop(fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(fn())


def test_a_message_split_across_reads_arrives_whole_on_uvloop() -> None:
    message = ("done", {"counts": list(range(20_000))})
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    frame = struct.pack("!Q", len(data)) + data
    ours, theirs = socket.socketpair()

    async def main() -> object:
        chan = await Channel.open(ours)
        got = asyncio.ensure_future(chan.recv())
        # the header alone, then half, then the rest: the reader wakes for each piece
        for piece in (frame[:4], frame[4:8], frame[8 : len(frame) // 2], frame[len(frame) // 2 :]):
            theirs.sendall(piece)
            await asyncio.sleep(0)
            assert piece is frame[len(frame) // 2 :] or not got.done()
        result = await got
        await chan.aclose()
        return result

    try:
        assert _on_uvloop(main) == message
    finally:
        theirs.close()


def test_a_peer_gone_mid_message_is_eof_not_a_partial_message() -> None:
    ours, theirs = socket.socketpair()

    async def main() -> None:
        chan = await Channel.open(ours)
        theirs.sendall(struct.pack("!Q", 100) + b"x" * 10)
        theirs.close()
        with pytest.raises(EOFError):
            await chan.recv()
        await chan.aclose()

    _on_uvloop(main)
