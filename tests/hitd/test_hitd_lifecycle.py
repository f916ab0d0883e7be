"""The job lifecycle rules, as tables: no clock, no store, no loop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hitpool.hitd.lifecycle import (
    TRANSITIONS,
    RetryPolicy,
    backoff,
    can_transition,
    exhausted,
    final_failure,
    is_final,
    lease_expired,
    outcome_status,
)
from hitpool.hitd.store.base import STATUSES


@pytest.mark.parametrize(
    ("old", "new", "ok"),
    [
        ("queued", "running", True),  # claim
        ("queued", "cancelled", True),  # DELETE /jobs/{id}
        ("queued", "succeeded", False),  # a job must run to succeed
        ("queued", "dead", False),
        ("running", "succeeded", True),
        ("running", "failed", True),
        ("running", "dead", True),
        ("running", "queued", True),  # retry after backoff, or release on stop
        ("running", "running", True),  # lease expired, claimed by another worker
        ("running", "cancelled", False),  # only queued jobs are cancelled
        ("succeeded", "queued", False),
        ("failed", "queued", False),
        ("dead", "queued", False),
        ("cancelled", "queued", False),
    ],
)
def test_transitions(old: str, new: str, ok: bool) -> None:
    assert can_transition(old, new) is ok  # type: ignore[arg-type]


def test_every_status_has_rules_and_the_finished_ones_are_final() -> None:
    assert set(TRANSITIONS) == set(STATUSES)
    assert [s for s in STATUSES if is_final(s)] == ["succeeded", "failed", "dead", "cancelled"]


@pytest.mark.parametrize(
    ("attempt", "rand", "delay"),
    [
        (1, 0.0, 0.5),  # step 1 s: half fixed...
        (1, 0.5, 0.75),
        (1, 0.999, 0.9995),  # ...half jitter, never the full step
        (2, 0.0, 1.0),  # doubles
        (3, 0.0, 2.0),
        (4, 0.5, 6.0),
        (10, 0.0, 30.0),  # 2**9 = 512 capped at 60: 30 fixed
        (10, 0.5, 45.0),
        (1000, 0.0, 30.0),  # no float overflow for absurd attempts
    ],
)
def test_backoff_is_exponential_capped_with_equal_jitter(
    attempt: int, rand: float, delay: float
) -> None:
    assert backoff(attempt, base=1.0, cap=60.0, rand=rand) == pytest.approx(delay)


@pytest.mark.parametrize(("attempt", "rand"), [(0, 0.5), (1, 1.0), (1, -0.1)])
def test_backoff_rejects_bad_input(attempt: int, rand: float) -> None:
    with pytest.raises(ValueError):
        backoff(attempt, 1.0, 60.0, rand)


@given(st.integers(1, 200), st.floats(0, 1, exclude_max=True))
def test_backoff_stays_within_half_and_full_step(attempt: int, rand: float) -> None:
    step = min(60.0, 0.25 * 2.0 ** min(attempt - 1, 64))
    assert step / 2 <= backoff(attempt, 0.25, 60.0, rand) <= step


@pytest.mark.parametrize(
    ("attempts", "max_attempts", "retry_at"),
    [(1, 3, 100.75), (2, 3, 101.5), (3, 3, None), (1, 1, None), (5, 3, None)],
)
def test_retry_policy(attempts: int, max_attempts: int, retry_at: float | None) -> None:
    assert RetryPolicy(base=1.0, cap=60.0).retry_at(attempts, max_attempts, 100.0, 0.5) == (
        retry_at
    )


@pytest.mark.parametrize(
    ("ok", "retry_at", "attempts", "max_attempts", "permanent", "status"),
    [
        (True, None, 1, 3, False, "succeeded"),
        (True, None, 3, 3, False, "succeeded"),
        (False, 10.0, 1, 3, False, "queued"),
        (False, 10.0, 3, 3, False, "dead"),  # no retry past max_attempts, even when asked
        (False, 10.0, 1, 3, True, "failed"),  # permanent wins over a retry
        (False, None, 3, 3, False, "dead"),
        (False, None, 1, 3, False, "failed"),
        (False, None, 1, 3, True, "failed"),
        (False, None, 3, 3, True, "failed"),  # permanent: failed even on the last attempt
    ],
)
def test_outcome_status(
    ok: bool,
    retry_at: float | None,
    attempts: int,
    max_attempts: int,
    permanent: bool,
    status: str,
) -> None:
    assert outcome_status(ok, retry_at, attempts, max_attempts, permanent) == status


@pytest.mark.parametrize(
    ("attempts", "max_attempts", "out"), [(0, 3, False), (2, 3, False), (3, 3, True), (4, 3, True)]
)
def test_exhausted(attempts: int, max_attempts: int, out: bool) -> None:
    assert exhausted(attempts, max_attempts) is out
    assert final_failure(attempts, max_attempts) == ("dead" if out else "failed")


@pytest.mark.parametrize(
    ("lease_until", "now", "out"),
    [(None, 5.0, False), (10.0, 9.999, False), (10.0, 10.0, True), (10.0, 11.0, True)],
)
def test_lease_expired(lease_until: float | None, now: float, out: bool) -> None:
    assert lease_expired(lease_until, now) is out
