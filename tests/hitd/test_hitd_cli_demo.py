"""`make demo` in small: hitd as a real process, jobs sent with hit, none lost."""

from __future__ import annotations

import pytest

from hitpool.demo import main

pytestmark = pytest.mark.slow


def test_demo_runs_every_accepted_job(capsys) -> None:
    assert main(["--jobs", "3000", "-c", "8", "--workers", "8"]) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert lines["accepted"].strip() == "3,000"
    assert lines["processed"].strip() == "3,000"
    assert lines["lost"].strip() == "0"
    assert "wall time" in lines
