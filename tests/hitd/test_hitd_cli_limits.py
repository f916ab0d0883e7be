"""hitd's flags for client and `hit` task bounds: parsed into the config, bad ones exit 2
naming the flag."""

from __future__ import annotations

import pytest

from hitpool.hitd.cli import parse_config
from hitpool.hitd.tasks import HitLimits


def test_defaults_and_flags_reach_the_config() -> None:
    c = parse_config([], {})
    assert (c.max_connections, c.first_byte_timeout_s, c.hit_limits) == (10_000, 10.0, HitLimits())
    c = parse_config(
        [
            "--max-connections=500",
            "--first-byte-timeout=2.5",
            "--hit-max-requests=10",
            "--hit-max-duration=90s",
            "--hit-max-concurrency=4",
            "--hit-allow-self",
        ],
        {},
    )
    assert (c.max_connections, c.first_byte_timeout_s) == (500, 2.5)
    assert c.hit_limits == HitLimits(10, 90.0, 4, True)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--max-connections", "0"], "--max-connections"),
        (["--first-byte-timeout", "soon"], "--first-byte-timeout"),
        (["--hit-max-requests", "-1"], "--hit-max-requests"),
        (["--hit-max-duration", "7d"], "--hit-max-duration"),
        (["--hit-max-concurrency", "x"], "--hit-max-concurrency"),
    ],
)
def test_bad_values_exit_2_naming_the_flag(argv, flag, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        parse_config(argv, {})
    assert e.value.code == 2
    assert flag in capsys.readouterr().err
