"""--targets FILE: parsing with tables, usage errors, and runs whose server counts each
line's requests and sees each body."""

from __future__ import annotations

from pathlib import Path

import pytest

from hitpool._errors import SpecError
from hitpool.hit import Spec, run_async
from hitpool.hit.cli import main, parse_args
from hitpool.hit.targets import Line, parse_targets

from .servers import Server, serve_in_thread


def test_lines_parse(tmp_path: Path) -> None:
    (tmp_path / "job.json").write_bytes(b'{"task": "x"}')
    text = "# a comment\n\nget http://h:1/a\n  POST  http://h:1/jobs  @job.json \nHEAD https://h/\n"
    assert parse_targets(text, tmp_path) == (
        Line("GET", "http://h:1/a"),
        Line("POST", "http://h:1/jobs", b'{"task": "x"}'),
        Line("HEAD", "https://h/"),
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("GET", "line 1: 'GET': write METHOD URL"),
        ("GET http://h/ body.txt", "@body-file"),
        ("G:T http://h/", "not an HTTP method"),
        ("\nGET ftp://h/", "line 2: 'ftp://h/' must start with http://"),
        ("POST http://h/ @missing.json", "cannot read the body file"),
        ("# nothing\n", "holds no target"),
    ],
)
def test_bad_lines_say_which_and_how(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_targets(text, tmp_path)
    assert e.value.field == "targets" and needle in e.value.message


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = tmp_path / "t.txt"
    t.write_text("GET http://127.0.0.1:9/\n")
    assert main(["--targets", str(t), "http://127.0.0.1:9/"]) == 2
    assert "drop the URL argument" in capsys.readouterr().err
    assert main(["--targets", str(tmp_path / "none.txt")]) == 2
    assert "--targets: cannot read" in capsys.readouterr().err
    assert main(["--targets", str(t), "-d", "x"]) == 2
    assert "drop -m/-d/-T" in capsys.readouterr().err
    assert main(["--targets", str(t), "--targets-order", "shuffled"]) == 2
    spec, _ = parse_args(["--targets", str(t), "--targets-order", "random"])
    assert spec.targets_order == "random" and spec.url == "http://127.0.0.1:9/"


def _lines(server: Server) -> tuple[Line, ...]:
    return (
        Line("GET", server.url("/ok")),
        Line("POST", server.url("/echo"), b"the body"),
        Line("GET", server.url("/status/503")),
    )


async def test_each_line_is_a_step_the_server_counts(server: Server) -> None:
    lines = _lines(server)
    s = await run_async(Spec(lines[0].url, targets=lines, requests=30, concurrency=3))
    assert server.seen == {"/ok": 10, "/echo": 10, "/status/503": 10}
    assert [w["requests"] for w in s.steps.values()] == [10, 10, 10]
    assert s.steps[lines[1].name]["successes"] == 10
    assert s.steps[lines[2].name]["errors_by_kind"]["status"] == 10
    assert server.bodies.count(b"the body") == 10
    assert s.requests == 30 and s.errors == 10 and s.scenarios == {}


async def test_random_order_uses_every_line_under_rps(server: Server) -> None:
    lines = _lines(server)
    spec = Spec(lines[0].url, targets=lines, targets_order="random", rps=1000, requests=90)
    s = await run_async(spec)
    assert sum(server.seen.values()) == 90 == s.requests
    assert all(10 < n < 50 for n in server.seen.values())  # seeded: the same every run
    again = Server()
    await again.start()
    try:
        await run_async(
            Spec(
                again.url("/ok"),
                targets=_lines(again),
                targets_order="random",
                rps=1000,
                requests=90,
            )
        )
        assert again.seen == server.seen
    finally:
        await again.stop()


def test_targets_over_two_processes(tmp_path: Path) -> None:
    with serve_in_thread() as srv:
        path = tmp_path / "t.txt"
        path.write_text("".join(f"GET {srv.url(p)}\n" for p in ("/ok", "/chunked")))
        assert main(["--targets", str(path), "-n", "40", "-c", "4", "-p", "2"]) == 0
        assert srv.seen == {"/ok": 20, "/chunked": 20}
