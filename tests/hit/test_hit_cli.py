"""The hit command: every usage error names its flag and exits 2 without a traceback;
runs print the book's block or JSON; --assert gates with exit 3; -o writes a timeline."""

from __future__ import annotations

import base64
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import hitpool
from hitpool.hit.cli import main, parse_args

from .servers import Server, serve_in_thread


@pytest.fixture
def srv() -> Iterator[Server]:
    with serve_in_thread() as s:
        yield s


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        ([], "URL"),
        (["-n", "0", "http://x/"], "-n"),
        (["-n", "ten", "http://x/"], "-n"),
        (["-c", "0", "http://x/"], "-c"),
        (["--rps", "0", "http://x/"], "--rps"),
        (["-rps", "fast", "http://x/"], "--rps"),
        (["-z", "10 parsecs", "http://x/"], "-z"),
        (["-t", "soon", "http://x/"], "-t"),
        (["-H", "no colon", "http://x/"], "-H"),
        (["-p", "many", "http://x/"], "-p"),
        (["-p", "0", "http://x/"], "-p"),
        (["--ok", "fine", "http://x/"], "--ok"),
        (["--ok", "99-100", "http://x/"], "--ok"),
        (["--assert", "p99<<1", "http://x/"], "--assert"),
        (["--assert", "speed>1", "http://x/"], "--assert"),
        (["--assert", "p99<fast", "http://x/"], "--assert"),
        (["--assert", "errors<lots", "http://x/"], "--assert"),
        (["-o", "out.txt", "http://x/"], "-o"),
        (["-d", "@/no/such/file", "http://x/"], "-d"),
        (["-m", "GET ME", "http://x/"], "-m"),
        (["-T", "a\nb", "http://x/"], "-T"),
        (["ftp://x/"], "URL"),
        (["http://"], "URL"),
        (["http://x:99999/"], "URL"),
        (["--bogus", "http://x/"], "--bogus"),
        (["http://x/", "extra"], "extra"),
        (["-z", "-1s", "http://x/"], "-z"),
        (["-t", "-5", "http://x/"], "-t"),
        (["-n", "-3", "http://x/"], "-n"),
        (["-z", "http://x/"], "-z"),
        (["-c", "1", "-p", "2", "http://x/"], "-p"),
        (["-o", "/nonexistent/dir/x.csv", "http://x/"], "-o"),
        (["-o", "/", "http://x/"], "-o"),
        (["--html", "/nonexistent/dir/r.html", "http://x/"], "--html"),
        (["--save", "run.txt", "http://x/"], "--save"),
    ],
)
def test_usage_errors_name_the_flag_and_exit_2(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("hit: error: ") and flag in err and "fix:" in err
    assert "Traceback" not in err
    assert "expected one argument" not in err and "invalid" not in err
    # the fix is that flag's own, not a pointer to the help
    fix = err.split("\n  fix: ")[1]
    assert "see hit --help" not in fix
    if flag.startswith("-"):
        assert flag in fix, fix


@pytest.mark.parametrize(
    ("argv", "fix"),
    [
        (["-z", "-1s", "http://x/"], "give a positive duration, e.g. -z 30s"),
        (["-z", "0", "http://x/"], "give a positive duration, e.g. -z 30s"),
        (["-n", "0", "http://x/"], "give the number of requests"),
        (["-c", "2", "-p", "3", "http://x/"], "give -p from 1 up to -c"),
        (["-H", "nope", "http://x/"], "'Name: value'"),
        (["--assert", "p99", "http://x/"], "--assert 'p99<250ms'"),
        (["-k", "--json", "--nope", "http://x/"], "remove --nope"),
        ([], "give one http:// or https:// URL"),
        # a flag without a fix of its own gets its --help text
        (["--json=3", "http://x/"], "write --json alone, without a value (--json: print one"),
    ],
)
def test_each_usage_error_gives_the_fix_for_its_flag(
    argv: list[str], fix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert fix in capsys.readouterr().err.split("fix: ")[1]


def test_minus_z_with_a_negative_value_says_what_is_wrong(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["-z", "-1s", "http://x/"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hit: error: -z: '-1s' is not a duration")


@pytest.mark.parametrize(
    "extra",
    [
        ["-o", "/nonexistent/dir/x.csv"],
        ["-d", "@/no/such/file"],
        ["-c", "2", "-p", "3"],
        # a folder that exists and takes no new file, whoever runs hit (root included):
        # only creating the file tells
        ["--save", "/proc/run.hit"],
        ["--html", "/proc/report.html"],
    ],
)
def test_usage_errors_come_before_the_first_request(
    srv: Server, extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-n", "5", *extra, srv.url("/ok")]) == 2
    assert srv.total == 0 and srv.connections == 0
    assert capsys.readouterr().out == ""


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    from hitpool._build import build

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"hit (hitpool) {version('hitpool')} ({build()} build)\n"


def test_credentials_in_the_url_send_basic_auth_and_are_not_reported(
    srv: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    url = srv.url("/ok").replace("://", "://al%40ice:s3cr%3At@")
    assert main(["-n", "3", "-c", "1", "--json", url]) == 0
    doc = json.loads(capsys.readouterr().out)
    # RFC 7617: base64 of user ":" password, percent-decoded first (as curl does)
    assert srv.authorizations == {b"Basic " + base64.b64encode(b"al@ice:s3cr:t"): 3}
    assert doc["url"] == url.replace("s3cr%3At", "***") and "s3cr" not in doc["url"]


def test_an_authorization_header_wins_over_the_urls_credentials(
    srv: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    url = srv.url("/ok").replace("://", "://u:p@")
    assert main(["-n", "2", "-c", "1", "-H", "Authorization: Bearer T", url]) == 0
    capsys.readouterr()
    assert srv.authorizations == {b"Bearer T": 2}


def test_help_says_rps_is_the_total(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "TOTAL rate" in capsys.readouterr().out


def test_text_summary_keeps_the_books_block(
    srv: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-n", "50", "-c", "7", srv.url("/ok")]) == 0
    out = capsys.readouterr().out
    for line in ("Success:", "RPS:", "Requests: 50", "Errors:   0", "Bytes:", "Duration:"):
        assert line in out
    for line in ("Fastest:", "Slowest:", "99%", "Histogram:", "[200] 50 responses"):
        assert line in out
    assert "\r" not in out  # no progress line when stdout is not a terminal
    assert srv.seen["/ok"] == 50


def test_json_schema(srv: Server, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-n", "20", "-c", "3", "-rps", "500", "--json", srv.url("/status/503")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "hit/1"
    assert (doc["requests"], doc["successes"], doc["errors"]) == (20, 0, 20)
    assert doc["status_codes"] == {"503": 20} and doc["errors_by_kind"]["status"] == 20
    assert doc["target_rps"] == 500 and isinstance(doc["late"], int)
    assert set(doc["latency_s"]) == {"min", "mean", "p50", "p90", "p95", "p99", "p999", "max"}
    for key in ("rps", "duration_s", "bytes", "concurrency", "processes", "interrupted"):
        assert key in doc


def test_asserts_gate_the_exit_code(srv: Server, capsys: pytest.CaptureFixture[str]) -> None:
    url = srv.url("/ok")
    assert main(["-n", "10", "--assert", "errors<1%", "--assert", "p99<30s", url]) == 0
    assert main(["-n", "10", "--assert", "rps>1e12", url]) == 3
    err = capsys.readouterr().err
    assert "assertion failed: rps>1e12 (rps = " in err
    assert main(["-n", "10", "--assert", "errors==0", srv.url("/status/500")]) == 3


@pytest.mark.parametrize("ext", ["csv", "json"])
def test_timeline_file(
    srv: Server, tmp_path: Path, ext: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / f"t.{ext}"
    assert main(["-n", "40", "-c", "4", "-o", str(out), srv.url("/ok")]) == 0
    capsys.readouterr()
    if ext == "csv":
        rows = list(csv.DictReader(out.read_text().splitlines()))
        assert list(rows[0]) == ["second", "requests", "errors", "p50_s", "p99_s"]
    else:
        doc = json.loads(out.read_text())
        rows = doc["timeline"]
        assert doc["summary"]["requests"] == 40
    assert sum(int(r["requests"]) for r in rows) == 40
    assert all(float(r["p50_s"]) <= float(r["p99_s"]) for r in rows)


def test_cannot_start_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert main(["-n", "5", f"http://127.0.0.1:{port}/"]) == 1
    err = capsys.readouterr().err
    assert "cannot start" in err and "connect_refused" in err and "Traceback" not in err


def test_body_from_file(srv: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = tmp_path / "jobs.json"
    body.write_bytes(b'[{"n": 1}, {"n": 2}]')
    argv = ["-n", "3", "-c", "1", "-m", "post", "-d", f"@{body}", "-T", "application/json"]
    assert main([*argv, srv.url("/echo")]) == 0
    assert srv.bodies == [body.read_bytes()] * 3
    capsys.readouterr()


def test_two_processes_merge_exactly(srv: Server, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-n", "301", "-c", "5", "-p", "2", "--json", srv.url("/ok")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["requests"], doc["successes"], doc["processes"]) == (301, 301, 2)
    assert doc["concurrency"] == 5 and doc["status_codes"] == {"200": 301}
    assert srv.seen["/ok"] == 301


def test_processes_report_the_rate_they_were_given(
    srv: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    # 100.2 / 3, added three times, is not 100.2: the merge reports the rate given.
    argv = ["-n", "30", "-c", "3", "-p", "3", "--rps", "100.2", "--json", srv.url("/ok")]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["requests"], doc["target_rps"]) == (30, 100.2)


def _env() -> dict[str, str]:
    # The child imports the hitpool this test imported (the source tree, or the installed
    # compiled build), not whichever one its own sys.path would find first.
    src = str(Path(hitpool.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_python_dash_m_runs_for_real(srv: Server) -> None:
    cmd = [sys.executable, "-m", "hitpool.hit", "-n", "25", "-c", "5", "--json", srv.url("/ok")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, env=_env())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["successes"] == 25 == srv.seen["/ok"]


def test_the_live_view_only_on_a_terminal(srv: Server) -> None:
    import pty

    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "hitpool.hit", "-z", "1.2s", "--rps", "50", srv.url("/ok")]
    proc = subprocess.Popen(cmd, stdout=slave, stderr=subprocess.PIPE, env=_env())
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        assert proc.wait(timeout=15) == 0
        assert proc.stderr is not None
        proc.stderr.close()
    out = b"".join(chunks).decode()
    assert "in the last second" in out and "\033[J" in out  # the live view, erased at the end
    assert "Requests: 60" in out


def test_ctrl_c_prints_the_partial_summary_and_exits_130(srv: Server) -> None:
    reached = threading.Event()
    srv.notify_at = 9
    srv.reached = _ThreadEvent(reached)  # type: ignore[assignment]
    cmd = [sys.executable, "-m", "hitpool.hit", "-n", "1000", "-c", "3", srv.url("/stall/6")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    try:
        assert reached.wait(15), "hit never reached the server"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    text = out.decode()
    assert "interrupted" in text and "Requests: 9" in text and "cancelled" in text
    assert b"Traceback" not in err


class _ThreadEvent:
    """Stands in for the server's asyncio.Event so a test thread can wait on it."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def set(self) -> None:
        self.event.set()


def test_a_run_that_cannot_start_leaves_no_empty_timeline_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "t.csv"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert main(["-n", "5", "-o", str(out), f"http://127.0.0.1:{port}/"]) == 1
    capsys.readouterr()
    assert not out.exists()


def test_p_auto_is_one_process_per_core_and_never_more_than_the_connections() -> None:
    spec, _ = parse_args(["-p", "auto", "-c", "1", "http://x/"])
    assert spec.processes == 1
    spec, _ = parse_args(["-p", "auto", "-c", "500", "http://x/"])
    assert spec.processes == (os.cpu_count() or 1)


@pytest.mark.parametrize(
    ("flag", "name"), [("-o", "t.csv"), ("--html", "r.html"), ("--save", "s.hit")]
)
def test_a_run_that_cannot_start_leaves_an_existing_output_file_as_it_was(
    tmp_path: Path, flag: str, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / name
    out.write_text("the last run's")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert main(["-n", "5", flag, str(out), f"http://127.0.0.1:{port}/"]) == 1
    capsys.readouterr()
    assert out.read_text() == "the last run's"


@pytest.mark.parametrize(
    ("flag", "name"), [("-o", "t.csv"), ("--html", "r.html"), ("--save", "s.hit")]
)
def test_an_output_the_disk_cannot_take_after_the_run_exits_1(
    srv: Server, tmp_path: Path, flag: str, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / name
    out.symlink_to("/dev/full")  # opens for writing, as a file on a disk that then fills
    assert main(["-n", "5", flag, str(out), srv.url("/ok")]) == 1
    err = capsys.readouterr().err
    assert f"hit: {flag}: cannot write" in err and "No space left on device" in err
    assert srv.total == 5
