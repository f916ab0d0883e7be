"""The one duration parser: Go's syntax plus bare seconds."""

from __future__ import annotations

import math

import pytest

from hitpool import SpecError
from hitpool.durations import parse_seconds


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (2.5, 2.5),
        ("2.5", 2.5),
        ("10s", 10.0),
        ("250ms", 0.25),
        ("100us", 1e-4),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        (" 7s ", 7.0),
    ],
)
def test_parses(value: object, seconds: float) -> None:
    assert parse_seconds(value, "delay") == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [
        *("", "s", "5 s", "5sec", "-1s", -1, math.nan, math.inf, True, None, [1]),
        # An int float() cannot convert (OverflowError), as 400 digits of JSON give.
        pytest.param(10**400, id="400-digit-int"),
        pytest.param(-(10**400), id="-400-digit-int"),
    ],
)
def test_refuses_naming_the_field(value: object) -> None:
    with pytest.raises(SpecError) as err:
        parse_seconds(value, "args.delay")
    assert err.value.field == "args.delay"


def test_upper_bound() -> None:
    assert parse_seconds("1h", "delay", max_s=3600) == 3600
    with pytest.raises(SpecError, match="at most 3600"):
        parse_seconds("61m", "delay", max_s=3600)


def test_a_text_seen_before_is_checked_again_against_each_bound_and_field() -> None:
    assert parse_seconds("90s", "delay") == 90.0
    with pytest.raises(SpecError, match="at most 60") as err:
        parse_seconds("90s", "-t", max_s=60)
    assert err.value.field == "-t"
    for field in ("a", "b"):
        with pytest.raises(SpecError) as err:
            parse_seconds("1e400", field)  # float("1e400") is inf: refused every time
        assert err.value.field == field
