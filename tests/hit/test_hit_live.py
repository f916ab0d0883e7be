"""The live view: its frame from numbers (pure tables), its redraw and erase, and for real
under tmux: it draws, updates, and leaves a clean summary on exit; plain lines on stderr
when stdout is not a terminal, nothing with --json."""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hitpool.hit import Progress, Spec
from hitpool.hit.live import Frame, Lines, Terminal, sparkline

from .servers import Server, serve_in_thread

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def srv() -> Iterator[Server]:
    with serve_in_thread() as s:
        yield s


@pytest.mark.parametrize(
    ("values", "line"),
    [
        ([1.0, 2.0, 4.0, 8.0], "▂▃▅█"),
        ([0.5, None, 0.5], "█ █"),
        ([0.0, 0.0], "▁▁"),
        ([], ""),
    ],
)
def test_sparkline(values: list[float | None], line: str) -> None:
    assert sparkline(values) == line


def _p(elapsed: float, requests: int, **kw: float | int | None) -> Progress:
    base: dict[str, float | int | None] = {"errors": 0, "rps": 0.0, "p99_s": None}
    base |= kw
    return Progress(elapsed, requests, **base)  # type: ignore[arg-type]


def test_the_frame_shows_progress_and_the_last_seconds_numbers() -> None:
    frame = Frame(Spec("http://u:pw@h/x", duration=10.0, rps=500, concurrency=8, processes=2))
    frame.lines(_p(1.0, 490, rps=490.0, p99_s=0.004, p50_s=0.001, in_flight=3))
    lines = frame.lines(_p(2.0, 990, errors=10, rps=500.0, p99_s=0.008, p50_s=0.002))
    assert lines[0] == "hit  GET http://u:***@h/x   -c 8 -p 2 --rps 500"
    assert lines[1] == "  progress  2.0s of 10s   ████░░░░░░░░░░░░░░░░  20%"
    assert lines[2] == "  requests  990   errors 10 (1.01%)   in flight 0"
    assert lines[3] == "  rate      500/s in the last second"
    assert lines[4] == "  latency   p50 2.00ms   p99 8.00ms   in the last second"
    assert lines[5] == "  p99       ▅█  last 2s, max 8.00ms"


def test_the_frame_counts_against_n_and_fits_the_width() -> None:
    frame = Frame(Spec("http://h/" + "x" * 200, requests=1000), width=40)
    lines = frame.lines(_p(0.5, 250))
    assert all(len(line) <= 40 for line in lines)
    assert "250 of 1,000 requests" in Frame(Spec("http://h/", requests=1000)).lines(_p(0.5, 250))[1]
    assert lines[4] == "  latency   p50 -   p99 -   in the last second"[:40]


def test_the_terminal_redraws_over_the_last_frame_and_erases_it_on_close() -> None:
    out = io.StringIO()
    term = Terminal(out, Frame(Spec("http://h/", requests=10)))
    term.show(_p(1.0, 5))
    first = out.getvalue()
    assert not first.startswith("\033") and first.count("\n") == 6
    term.show(_p(2.0, 9))
    assert out.getvalue()[len(first) :].startswith("\033[6F\033[J")  # up 6 lines, clear
    term.close()
    assert out.getvalue().endswith("\033[6F\033[J")
    lines = io.StringIO()
    Lines(lines).show(_p(1.0, 5, rps=5.0, p99_s=0.002))
    assert lines.getvalue() == (
        "   1.0s  5 requests  0 errors  0 in flight  5 req/s  p99 2.00ms (last second)\n"
    )


def _until(what: Callable[[], str], ok: Callable[[str], bool], within: float = 20.0) -> str:
    """Poll an outside process's screen until ``ok`` holds (AssertionError after ``within``)."""
    deadline = time.monotonic() + within
    while True:
        seen = what()
        if ok(seen):
            return seen
        assert time.monotonic() < deadline, f"never got there; last screen:\n{seen}"
        time.sleep(0.05)


@pytest.mark.slow
def test_under_tmux_it_draws_updates_and_leaves_a_clean_summary(srv: Server) -> None:
    if shutil.which("tmux") is None:
        # scripts/system-deps.sh installs it; under CI a missing terminal fails, never skips
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("tmux is not installed (scripts/system-deps.sh installs it)")
        pytest.skip("tmux is not installed")
    session = f"hit-live-{os.getpid()}"
    hit = [sys.executable, "-m", "hitpool.hit", "-z", "3s", "--rps", "100", "-c", "4"]
    cmd = (
        f"PYTHONPATH={shlex.quote(SRC)} {shlex.join([*hit, srv.url('/ok')])}; "
        "echo hit-exit=$?; sleep 60"
    )
    tmux = ["tmux", "-L", session]  # its own server: no other session is touched
    subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "100", "-y", "50", cmd])
    try:

        def screen() -> str:
            done = subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True
            )
            return done.stdout

        first = _until(screen, lambda s: re.search(r"\b1\.\ds of 3s", s) is not None)
        assert "rate" in first and "in the last second" in first and "p99" in first
        assert first.index("hit  GET") < first.index("progress") < first.index("rate")
        second = _until(screen, lambda s: re.search(r"\b2\.\ds of 3s", s) is not None)
        assert re.search(r"\b1\.\ds of 3s", second) is None  # redrawn in place, not appended
        assert second.count("hit  GET") == 1
        end = _until(screen, lambda s: "hit-exit=" in s)
        assert "hit-exit=0" in end
        text = end.strip().splitlines()
        assert text[0] == "Summary:"  # the frame is gone; the summary starts the screen
        assert "in the last second" not in end and "progress" not in end
        assert "Requests: 300" in end
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.mark.slow
def test_without_a_terminal_plain_lines_go_to_stderr_and_none_with_json(srv: Server) -> None:
    hit = [sys.executable, "-m", "hitpool.hit", "-z", "2.2s", "--rps", "50", "-c", "2"]
    done = subprocess.run(
        [*hit, srv.url("/ok")], capture_output=True, text=True, timeout=20, env=_env()
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 2 and all("(last second)" in line for line in lines)
    assert re.match(r" *1\.\ds ", lines[0]) and re.match(r" *2\.\ds ", lines[1])
    assert "\033" not in done.stderr + done.stdout and done.stdout.startswith("Summary:")
    done = subprocess.run(
        [*hit, "--json", srv.url("/ok")], capture_output=True, text=True, timeout=20, env=_env()
    )
    assert done.returncode == 0 and done.stderr == ""
    assert json.loads(done.stdout)["requests"] == 110


def test_the_frame_fits_a_window_narrower_than_twenty_columns() -> None:
    lines = Frame(Spec("http://h/", duration=10.0), width=12).lines(_p(1.0, 5))
    assert all(len(line) <= 12 for line in lines)


def test_the_terminal_follows_the_windows_width_as_it_changes() -> None:
    # A real pseudo-terminal: hit reads its width at each frame, so a window made narrower
    # during the run gets lines that still fit (a wrapped line breaks the redraw).
    controller, terminal = os.openpty()
    try:

        def window(columns: int) -> None:
            fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))

        def drawn() -> list[str]:
            text = os.read(controller, 1 << 16).decode()
            return [re.sub(r"\x1b\[\d*[A-Za-z]", "", line) for line in text.splitlines()]

        out = os.fdopen(os.dup(terminal), "w", encoding="utf-8")
        term = Terminal(out, Frame(Spec("http://h/" + "x" * 100, duration=10.0), 100))
        window(100)
        term.show(_p(1.0, 5))
        assert max(len(line) for line in drawn()) > 40
        window(15)
        term.show(_p(2.0, 9))
        assert max(len(line) for line in drawn()) <= 15
        out.close()
    finally:
        os.close(controller)
        os.close(terminal)
