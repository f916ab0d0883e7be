"""SIGTERM (from `timeout`, CI, a supervisor) is a stop like Ctrl-C: the partial summary is
printed and the exit code is 143. Under -p too, whether the signal reaches the parent
alone or the whole process group, children included. Real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
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


class _Reached:
    """Stands in for the server's asyncio.Event so the test thread can wait on it."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def set(self) -> None:
        self.event.set()


def _terminate_when_stalled(
    srv: Server, argv: list[str], seen: int, *, group: bool
) -> tuple[int, str, str]:
    """Run hit until the server has seen ``seen`` requests, then SIGTERM it (or its group)."""
    reached = _Reached()
    srv.notify_at = seen
    srv.reached = reached  # type: ignore[assignment]
    cmd = [sys.executable, "-m", "hitpool.hit", *argv]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), start_new_session=True
    )
    try:
        assert reached.event.wait(15), "hit never reached the server"
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.slow
def test_sigterm_prints_the_partial_summary_and_exits_143(srv: Server) -> None:
    argv = ["-n", "1000", "-c", "3", srv.url("/stall/6")]
    code, out, err = _terminate_when_stalled(srv, argv, 9, group=False)
    assert code == 143, err
    assert "interrupted" in out and "Requests: 9" in out and "cancelled" in out
    assert "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("group", [False, True], ids=["parent", "group"])
def test_sigterm_under_p_merges_every_childs_partial_result(srv: Server, group: bool) -> None:
    argv = ["-n", "1000", "-c", "4", "-p", "2", "--json", srv.url("/stall/6")]
    code, out, err = _terminate_when_stalled(srv, argv, 10, group=group)
    assert code == 143, err
    doc = json.loads(out)
    assert (doc["processes"], doc["interrupted"], doc["requests"]) == (2, True, 10)
    assert doc["successes"] == 6 and doc["errors_by_kind"]["cancelled"] == 4
    assert "Traceback" not in err and "exited without its results" not in err


def _spawned_worker(parent: int) -> int | None:
    """The pid of a -p worker child of ``parent`` (not the resource tracker), if one exists."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            return int(entry)
    return None


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["TERM", "INT"]
)
def test_a_group_signal_while_the_children_import_stops_the_run(
    srv: Server, signum: int, code: int
) -> None:
    """`timeout` and a terminal's Ctrl-C signal the whole group, also while a worker child
    is still importing hit, long before it could install a handler: it must report its
    empty result (not die of SIGTERM, not print a KeyboardInterrupt traceback)."""
    argv = ["-z", "30s", "-c", "4", "-p", "2", "--json", srv.url("/ok")]
    cmd = [sys.executable, "-m", "hitpool.hit", *argv]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), start_new_session=True
    )
    try:
        # A worker's start (exec, then importing uvloop and hit) takes far longer than
        # this poll: the signal lands while the child cannot handle it yet.
        deadline = time.monotonic() + 15
        while _spawned_worker(proc.pid) is None:
            assert proc.poll() is None and time.monotonic() < deadline, "no worker started"
            time.sleep(0.001)
        os.killpg(proc.pid, signum)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == code, err
    doc = json.loads(out)
    assert (doc["interrupted"], doc["processes"]) == (True, 2)
    assert doc["requests"] == doc["successes"] + doc["errors"]
    assert "Traceback" not in err.decode() and "exited without its results" not in err.decode()
