"""hit's output streams can fail under it: stdout a pipe whose reader left (``hit | head``)
or a full disk, stderr (where the live lines go) a closed pipe. The run, its files and its
exit code still come out; no traceback. Real processes and real pipes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvloop

from hitpool.hit import Progress, Spec, run_async
from hitpool.hit.cli import main
from hitpool.hit.live import Frame, Lines, Terminal
from hitpool.hit.summary import Summary

from .servers import Server, serve_in_thread

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def srv() -> Iterator[Server]:
    with serve_in_thread() as s:
        yield s


def _hit(*argv: str) -> list[str]:
    return [sys.executable, "-m", "hitpool.hit", *argv]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


class _Gone(io.StringIO):
    """A stream whose reader has left: every write fails as a closed pipe's does."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        raise BrokenPipeError(32, "Broken pipe")


_P = Progress(elapsed_s=1.0, requests=10, errors=0, rps=10.0, p99_s=0.001, p50_s=0.0005)


@pytest.mark.parametrize("view", ["lines", "terminal"])
def test_a_view_whose_stream_fails_goes_quiet(view: str) -> None:
    out = _Gone()
    shown = Lines(out) if view == "lines" else Terminal(out, Frame(Spec("http://h/"), 80))
    shown.show(_P)  # raised BrokenPipeError into the run's tick
    shown.show(_P)
    shown.close()
    assert out.writes == 1


def test_a_progress_callback_that_raises_leaves_the_timeline_whole(srv: Server) -> None:
    # The callback ran before the next tick was armed: one exception from it ended the
    # ticks, and the rest of the run fell into the last, partial second's row.
    spec = Spec(srv.url("/ok"), duration=2.5, rps=20, concurrency=2)

    def fails(p: Progress) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    async def once() -> Summary:
        return await run_async(spec, timeline=True, progress=fails)

    s = uvloop.run(once())
    assert [r.second for r in s.timeline] == [0, 1, 2]
    assert sum(r.requests for r in s.timeline) == s.requests == 50


@pytest.mark.slow
def test_stderr_a_closed_pipe_under_p_still_gives_the_summary_and_timeline(
    srv: Server, tmp_path: Path
) -> None:
    # The live lines go to stderr when stdout is not a terminal. Under -p the error from
    # writing them ended the run: exit 1 and no summary at all.
    timeline = tmp_path / "t.csv"
    argv = _hit("-z", "2.5s", "--rps", "20", "-c", "2", "-p", "2", "-o", str(timeline))
    proc = subprocess.Popen(
        [*argv, srv.url("/ok")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env()
    )
    assert proc.stderr is not None
    proc.stderr.close()  # the reader of stderr is gone before the first live line
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "Requests: 50" in out.decode()
    rows = timeline.read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["0", "1", "2"]


@pytest.mark.slow
def test_stdout_whose_reader_left_is_no_error(srv: Server) -> None:
    proc = subprocess.Popen(
        _hit("-n", "20", "-c", "2", srv.url("/ok")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    assert proc.stdout is not None
    proc.stdout.close()  # as `hit ... | head -1` once head has its line
    _, err = proc.communicate(timeout=20)
    assert (proc.returncode, err.decode()) == (0, "")
    assert srv.seen["/ok"] == 20


@pytest.mark.slow
def test_stdout_on_a_full_disk_says_so_and_exits_1(srv: Server) -> None:
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            _hit("-n", "20", "-c", "2", srv.url("/ok")),
            stdout=full,
            stderr=subprocess.PIPE,
            env=_env(),
            timeout=20,
        )
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert err == "hit: cannot write to stdout: No space left on device\n"


def _closing(fd: int) -> Callable[[], None]:
    return lambda: os.close(fd)


@pytest.mark.slow
@pytest.mark.parametrize("fd", [0, 1, 2], ids=["stdin", "stdout", "stderr"])
def test_a_closed_standard_descriptor_is_no_crash(srv: Server, fd: int) -> None:
    # `hit ... 2>&-`: libuv's epoll descriptor took number 2 and libuv aborted (SIGABRT,
    # exit 134); `>&-`: sys.stdout is None and the view's isatty() raised.
    done = subprocess.run(
        _hit("-z", "1.5s", "--rps", "10", "-c", "2", "-p", "2", srv.url("/ok")),
        stdin=subprocess.DEVNULL if fd else None,
        stdout=subprocess.PIPE if fd != 1 else None,
        stderr=subprocess.PIPE if fd != 2 else None,
        env=_env(),
        preexec_fn=_closing(fd),
        timeout=20,
    )
    assert done.returncode == 0, done.stderr
    assert srv.seen["/ok"] == 15
    if fd != 1:
        assert b"Requests: 15" in done.stdout


@pytest.mark.slow
def test_hit_report_whose_reader_left_still_writes_its_files(
    srv: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `hit report a.hit b.hit --save both.hit | head -1`: the summary's BrokenPipeError
    # came before the files were written, with a traceback and exit 1.
    one, both = tmp_path / "one.hit", tmp_path / "both.hit"
    assert main(["-n", "5", "-c", "1", "--save", str(one), srv.url("/ok")]) == 0
    capsys.readouterr()
    proc = subprocess.Popen(
        _hit("report", str(one), str(one), "--save", str(both)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=20)
    assert (proc.returncode, err.decode()) == (0, "")
    assert both.stat().st_size > 0
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            _hit("report", str(one)), stdout=full, stderr=subprocess.PIPE, env=_env(), timeout=20
        )
    assert done.returncode == 1
    assert done.stderr.decode() == "hit report: cannot write to stdout: No space left on device\n"
