"""Random operation sequences, run on the memory store and the SQLite store side by side.

Hypothesis draws a sequence of enqueues, claims, finishes, releases, cancels, expiries,
purges and clock moves. After every step both stores must give the same answers and hold the
same jobs, every status change must be one the lifecycle allows, and the invariants must
hold. The memory store is the model; the SQLite store (both of its batch paths) must match it.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hitd import _store_fixtures
from hitpool.hitd.lifecycle import can_transition, outcome_status
from hitpool.hitd.store import JobRecord, NewJob, Outcome, Store
from hitpool.hitd.store.memory import MemoryStore
from hitpool.hitd.store.sqlite import SQLiteStore

T0 = 1_800_000_000.0
WORKERS = ("a", "b")


@dataclass(frozen=True)
class Op:
    kind: str
    args: tuple[Any, ...]


ops = st.one_of(
    st.builds(
        lambda jobs: Op("enqueue", (jobs,)),
        st.lists(
            st.tuples(
                st.sampled_from([None, None, "k1", "k2"]),  # key
                st.sampled_from([0.0, 0.0, 5.0]),  # delay
                st.integers(1, 3),  # max_attempts
            ),
            min_size=1,
            max_size=4,
        ),
    ),
    st.builds(lambda w, n: Op("claim", (w, n)), st.sampled_from(WORKERS), st.integers(1, 4)),
    st.builds(
        # n > 0: the finish carries the next claim of n (Store.finish_and_claim).
        lambda w, picks, n: Op("finish_claim" if n else "finish", (w, picks, n)),
        st.sampled_from(WORKERS),
        st.lists(
            st.tuples(
                st.integers(0, 20), st.sampled_from(["ok", "retry", "final", "perm", "stale"])
            ),
            max_size=4,
        ),
        st.sampled_from([0, 0, 2]),
    ),
    st.builds(
        lambda w, picks: Op("release", (w, picks)),
        st.sampled_from(WORKERS),
        st.lists(st.integers(0, 20), max_size=3),
    ),
    st.builds(lambda i: Op("cancel", (i,)), st.integers(0, 20)),
    st.builds(lambda w: Op("renew", (w,)), st.sampled_from(WORKERS)),
    st.builds(lambda w: Op("expire", (w,)), st.sampled_from(WORKERS)),
    st.builds(lambda dt: Op("tick", (dt,)), st.sampled_from([1.0, 5.0, 10.0, 31.0])),
    st.builds(
        lambda age, limit: Op("purge", (age, limit)),
        st.sampled_from([0.0, 5.0, 30.0]),
        st.integers(1, 3),
    ),
)


async def held_by(store: Store, worker: str, known: list[int]) -> list[int]:
    return [id for id in known if (r := await store.get(id)) and r.worker == worker]


async def apply(store: Store, op: Op, now: float, known: list[int], held: list[int]) -> Any:
    """Run one operation. Ids are picked by index: mostly among the jobs the op's worker holds
    (`held`, read from the model before the step), sometimes among all jobs (`known`), so
    that outcomes from a worker that does not hold the job are tried too."""

    def pick(i: int) -> int:
        if held and i < 16:
            return held[i % len(held)]
        return known[i % len(known)] if known else 10_000 + i

    if op.kind == "enqueue":
        jobs = [
            NewJob("t", {"n": j}, now + delay, max_attempts, key)
            for j, (key, delay, max_attempts) in enumerate(op.args[0])
        ]
        return await store.enqueue(jobs, now)
    if op.kind == "claim":
        recs = await store.claim(op.args[0], op.args[1], now, 30.0)
        return [(r.id, r.attempts) for r in recs]
    if op.kind in ("finish", "finish_claim"):
        worker, picks, n = op.args
        outcomes = []
        for i, kind in picks:
            id = pick(i)
            # The attempt and the status as a runner would send them (the lifecycle's rule),
            # or, for "stale", an earlier attempt's outcome that the fence must refuse.
            r = await store.get(id)
            attempt = 0 if r is None else r.attempts
            if kind == "stale":
                outcomes.append(Outcome(id, worker, attempt - 1, "succeeded", {"stale": 1}))
                continue
            ok, permanent = kind == "ok", kind == "perm"
            run_at = now + 3 if kind == "retry" else None
            max_attempts = 1 if r is None else r.max_attempts
            status = outcome_status(ok, run_at, attempt, max_attempts, permanent)
            result = {"ok": [1, "x"]} if ok else None
            outcomes.append(
                Outcome(id, worker, attempt, status, result, None if ok else "e", run_at)
            )
        # One outcome per job in a batch, as a runner sends them.
        unique = list({o.id: o for o in outcomes}.values())
        if n:
            recs = await store.finish_and_claim(unique, now, worker, n, 30.0)
            return [(r.id, r.attempts) for r in recs]
        return await store.finish(unique, now)
    if op.kind == "release":
        return await store.release(sorted({pick(i) for i in op.args[1]}), op.args[0])
    if op.kind == "cancel":
        return await store.cancel(known[op.args[0] % len(known)] if known else 999, now)
    if op.kind == "renew":
        return await store.renew(held, op.args[0], now, 30.0)
    if op.kind == "expire":
        return await store.expire(op.args[0])
    if op.kind == "purge":
        return await store.purge(now - op.args[0], op.args[1])
    return None


def check_invariants(rec: JobRecord) -> None:
    assert 0 <= rec.attempts <= rec.max_attempts, rec
    if rec.status == "running":
        assert rec.worker is not None and rec.lease_until is not None, rec
    if rec.status == "queued":
        assert rec.worker is None and rec.lease_until is None, rec
    if rec.status == "succeeded":
        assert rec.result == {"ok": [1, "x"]} and rec.error is None, rec


async def run(sequence: list[Op], use_json: bool, real: Store | None = None) -> None:
    """Run `sequence` on the memory model and on `real` (SQLite by default). A store may
    number its jobs differently (PostgreSQL's sequence leaves gaps), so ids are mapped."""
    with tempfile.TemporaryDirectory() as d:
        model = MemoryStore()
        real = real or SQLiteStore(Path(d) / "m.db", use_json=use_json)
        await model.open()
        await real.open()
        to_real: dict[int, int] = {}
        to_model: dict[int, int] = {}
        try:
            now, known = T0, []
            before: dict[int, str] = {}
            for op in sequence:
                if op.kind == "tick":
                    now += op.args[0]
                    continue
                worker = (
                    op.args[0] if op.kind in ("finish", "finish_claim", "release", "renew") else ""
                )
                held = await held_by(model, worker, known) if worker else []
                a = await apply(model, op, now, known, held)
                b = await apply(
                    real, op, now, [to_real[i] for i in known], [to_real[i] for i in held]
                )
                if op.kind == "enqueue":
                    for (ia, created), (ib, _) in zip(a, b, strict=True):
                        if created:
                            to_real[ia], to_model[ib] = ib, ia
                    known.extend(id for id, created in a if created)
                if op.kind in ("enqueue", "claim", "finish_claim"):
                    b = [(to_model[i], x) for i, x in b]
                assert a == b, (op, a, b)
                for id in known:
                    ra, rb = await model.get(id), await real.get(to_real[id])
                    if ra is None:  # purged from both
                        assert rb is None, (op, id, rb)
                        continue
                    assert rb is not None
                    assert ra == rb._replace(id=id), (op, ra, rb)
                    check_invariants(ra)
                    old = before.get(id)
                    if old is not None and old != ra.status:
                        assert can_transition(old, ra.status), (op, old, ra.status)  # type: ignore[arg-type]
                    before[id] = ra.status
                assert await model.counts() == await real.counts()
                assert model.queued_estimate() == real.queued_estimate()
        finally:
            await model.close()
            await real.close()


# Every sequence starts with a few jobs, so that claims, finishes and releases find work.
START = Op("enqueue", ([(None, 0.0, 2), (None, 0.0, 1), ("k1", 0.0, 3), (None, 5.0, 2)],))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(ops, min_size=5, max_size=30), st.booleans())
def test_sqlite_matches_the_memory_model(sequence: list[Op], use_json: bool) -> None:
    asyncio.run(run([START, *sequence], use_json))


_pg = _store_fixtures
pg_url = _pg.pg_url


@pytest.mark.postgres
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=st.lists(ops, min_size=5, max_size=30))
def test_postgresql_matches_the_memory_model(pg_url: str, sequence: list[Op]) -> None:
    async def go() -> None:
        async with _pg.fresh_schema(pg_url) as url:
            await run([START, *sequence], False, Store.from_url(url))

    asyncio.run(go())
