"""File descriptors: hit raises RLIMIT_NOFILE's soft limit to the hard one before it
connects, and when -c still cannot fit it exits 1 before the first request, naming the
limit and the fix, instead of counting its own EMFILE as the server's connect_error."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .servers import Server, serve_in_thread


@pytest.fixture
def srv() -> Iterator[Server]:
    with serve_in_thread() as s:
        yield s


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _limit(soft: int, hard: int) -> Callable[[], None]:
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _hit(argv: list[str], soft: int, hard: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hitpool.hit", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
        preexec_fn=_limit(soft, hard),
    )


_, HARD = resource.getrlimit(resource.RLIMIT_NOFILE)


@pytest.mark.slow
@pytest.mark.skipif(HARD != resource.RLIM_INFINITY and HARD < 1024, reason="hard limit < 1024")
def test_a_low_soft_limit_is_raised_so_every_connection_opens(srv: Server) -> None:
    done = _hit(["-n", "600", "-c", "300", "--json", srv.url("/ok")], soft=128, hard=1024)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["requests"], doc["successes"], doc["errors"]) == (600, 600, 0)
    assert srv.connections == 300


@pytest.mark.slow
@pytest.mark.parametrize("processes", ["1", "2"])
def test_connections_past_the_hard_limit_exit_1_before_the_first_request(
    srv: Server, processes: str
) -> None:
    argv = ["-n", "600", "-c", "300", "-p", processes, srv.url("/ok")]
    done = _hit(argv, soft=128, hard=128)
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith("hit: cannot start: ")
    assert "RLIMIT_NOFILE allows 128 (hard limit 128)" in done.stderr
    assert "ulimit -Hn" in done.stderr and "-p" in done.stderr
    assert "Traceback" not in done.stderr
    assert srv.total == 0 and srv.connections == 0


@pytest.mark.slow
def test_p_splits_the_connections_so_each_process_fits(srv: Server) -> None:
    # 300 connections do not fit in one process under 256 descriptors; 150 each do.
    done = _hit(["-n", "600", "-c", "300", "-p", "2", "--json", srv.url("/ok")], 256, 256)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["errors"] == 0


@pytest.mark.slow
def test_one_connection_that_does_not_fit_is_not_told_to_use_more_processes(
    srv: Server,
) -> None:
    # -p cannot pass -c: with one connection, "spread them over more processes" is no fix.
    done = _hit(["-n", "5", "-c", "1", srv.url("/ok")], soft=40, hard=40)
    assert done.returncode == 1, done.stdout
    assert "1 connection needs about 65" in done.stderr and "ulimit -Hn 65" in done.stderr
    assert "-p" not in done.stderr
    assert srv.total == 0
