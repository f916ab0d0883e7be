"""Runs in child processes (-p, isolate): every result arrives, however large, and each
process's share of the connections is its share of the rate and of the requests."""

from __future__ import annotations

import pickle

import pytest
import uvloop

from hitpool.hit import Spec, run_async
from hitpool.hit.summary import Summary

from .servers import serve_in_thread


@pytest.mark.slow
def test_results_far_over_16_kib_arrive_whole_under_uvloop() -> None:
    # A latency spread over 0-10 ms fills thousands of histogram slots, and the per-second
    # timeline (-o) carries them again. The merged result is at most the sum of the two
    # children's, so one of them sent more than 16 KiB: a message a pipe delivers in more
    # than one read, and multiprocessing writes in two.
    with serve_in_thread() as srv:
        spec = Spec(srv.url("/spread/10"), duration=1.5, concurrency=64, processes=2)

        async def once() -> Summary:
            return await run_async(spec, timeline=True)

        sent = 0
        for _ in range(3):
            s = uvloop.run(once())
            assert s.processes == 2 and s.requests == s.successes > 0
            assert len(pickle.dumps(s.to_wire())) > 2 * 16 * 1024
            sent += s.requests
        assert srv.seen["/spread/10"] == sent
