"""Saved runs (``--save``, format hit-run/1) and ``hit report``: lossless, mergeable exactly,
comparable side by side, and every bad command line exits 2 naming the argument."""

from __future__ import annotations

import dataclasses
import gzip
import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from hitpool.hit import saved
from hitpool.hit.cli import main
from hitpool.hit.client import ERROR_KINDS
from hitpool.hit.spec import Spec
from hitpool.hit.stats import Histogram, Timeline
from hitpool.hit.summary import Summary

from .servers import Server, serve_in_thread


def _summary(latencies_by_second: Sequence[Sequence[int]], *, errors: int = 0) -> Summary:
    """A Summary as a run of these per-second latencies (µs) would report it."""
    h = Histogram()
    tl = Timeline()
    done = 0
    for second, values in enumerate(latencies_by_second):
        for v in values:
            h.record(v)
        done += len(values)
        tl.tick(second, h, done + errors * (second + 1), errors * (second + 1), done + 3)
    n = sum(len(v) for v in latencies_by_second)
    errs = errors * len(latencies_by_second)
    kinds = dict.fromkeys(ERROR_KINDS, 0)
    kinds["status"] = errs
    return Summary(
        url="http://127.0.0.1:1/",
        method="GET",
        requests=n + errs,
        successes=n,
        errors=errs,
        errors_by_kind=kinds,
        status_codes={200: n, 503: errs} if errs else {200: n},
        bytes=100 * (n + errs),
        duration_s=float(len(latencies_by_second)),
        target_rps=None,
        late=0,
        concurrency=4,
        processes=1,
        interrupted=False,
        histogram=h,
        timeline=tuple(tl.rows),
    )


def _latencies(seed: int, seconds: int, per_second: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[int(rng.lognormvariate(7, 1.2)) for _ in range(per_second)] for _ in range(seconds)]


def test_a_saved_run_reads_back_whole() -> None:
    s = _summary(_latencies(1, 3, 500), errors=2)
    run = saved.from_summary(
        s,
        command=["hit", "-n", "1506", "http://127.0.0.1:1/"],
        verdicts=[saved.Verdict("p99<1s", True, "p99 = 12ms")],
        created_utc="2026-12-01T00:00:00Z",
    )
    data = saved.dumps(run)
    assert data == saved.dumps(run)  # the same run, the same bytes
    doc = json.loads(gzip.decompress(data))
    assert doc["format"] == "hit-run/1" and doc["result"]["histogram"]["format"] == "hitpool-hdr/1"
    back = saved.loads(data, "a.hit")
    assert back.summary.histogram == s.histogram  # lossless, slot by slot
    assert back.summary.timeline == s.timeline
    assert back.json() == s.to_json()
    assert back.command == run.command and back.asserts == run.asserts
    assert back.created_utc == "2026-12-01T00:00:00Z" and back.name == "a.hit"


def test_the_spec_is_saved_as_json() -> None:
    from hitpool.hit.spec import Spec

    spec = Spec(
        "http://127.0.0.1:1/", requests=5, method="POST", body=b"\x00{}", headers=(("A", "b"),)
    )
    d = saved.spec_dict(spec)
    assert d["url"] == "http://127.0.0.1:1/" and d["requests"] == 5 and d["method"] == "POST"
    assert d["body"] == {"base64": "AHt9"} and d["headers"] == [["A", "b"]]
    assert "target" not in d  # derived, not given
    json.dumps(d)
    assert saved._jsonable(spec.target)["host"] == "127.0.0.1"  # a value object, field by field


def test_two_saved_runs_merge_into_exactly_one_run_of_both() -> None:
    a_lat = _latencies(2, 4, 700)
    b_lat = _latencies(3, 3, 900)
    a, b = _summary(a_lat, errors=1), _summary(b_lat, errors=5)
    both = _summary([x + y for x, y in zip(a_lat, [*b_lat, []], strict=True)])
    runs = [
        saved.loads(saved.dumps(saved.from_summary(s, command=["hit"])), name)
        for s, name in ((a, "a.hit"), (b, "b.hit"))
    ]
    m = saved.merge(runs, command=["hit", "report", "a.hit", "b.hit"]).summary
    # counts: exact
    assert m.requests == a.requests + b.requests
    assert (m.successes, m.errors) == (a.successes + b.successes, a.errors + b.errors)
    assert m.status_codes == {200: a.successes + b.successes, 503: a.errors + b.errors}
    assert m.errors_by_kind["status"] == a.errors + b.errors
    assert m.bytes == a.bytes + b.bytes and m.processes == 2
    # the histogram is the one a single run of all those latencies records
    assert m.histogram == both.histogram
    values = sorted(v for sec in a_lat + b_lat for v in sec)
    for p in (50.0, 90.0, 99.0, 99.9):
        exact = values[max(0, int(p * len(values) / 100 + 0.5) - 1)]
        assert abs(m.histogram.percentile(p) - exact) <= exact / 1000 + 1  # the HDR precision
    assert (m.histogram.min, m.histogram.max) == (values[0], values[-1])
    # the timelines add second by second
    assert [r.second for r in m.timeline] == [0, 1, 2, 3]
    assert [r.counts for r in m.timeline] == [r.counts for r in both.timeline]

    def sent(s: Summary, t: int) -> int:
        return next((r.sent for r in s.timeline if r.second == t), 0)

    assert [r.sent for r in m.timeline] == [sent(a, t) + sent(b, t) for t in range(4)]
    # merged again with a third: the same as merging all three at once (order-free)
    c = saved.from_summary(_summary(_latencies(4, 2, 300)), command=["hit"])
    once = saved.merge([*runs, c], command=["x"]).summary
    twice = saved.merge([saved.merge(runs, command=["x"]), c], command=["x"]).summary
    assert once.histogram == twice.histogram and once.to_json() == twice.to_json()


@pytest.fixture
def srv() -> Iterator[Server]:
    with serve_in_thread() as s:
        yield s


def test_hit_report_of_two_real_saved_runs(
    srv: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.hit", tmp_path / "b.hit"
    assert main(["-n", "300", "-c", "3", "--json", "--save", str(a), srv.url("/ok")]) == 0
    ja = json.loads(capsys.readouterr().out)
    assert main(["-n", "200", "-c", "2", "--json", "--save", str(b), srv.url("/status/503")]) == 0
    jb = json.loads(capsys.readouterr().out)
    assert main(["report", str(a), str(b), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["schema"] == "hit/1"
    assert (m["requests"], m["successes"], m["errors"]) == (500, 300, 200)
    assert m["status_codes"] == {"200": 300, "503": 200}
    assert m["errors_by_kind"]["status"] == 200 and m["bytes"] == ja["bytes"] + jb["bytes"]
    assert m["concurrency"] == 5 and m["processes"] == 2
    assert [s["name"] for s in m["sources"]] == ["a.hit", "b.hit"]
    # a merged percentile lies between the runs' own (the HDR slot's width apart at most)
    for k in ("p50", "p99", "max"):
        lo, hi = sorted((ja["latency_s"][k], jb["latency_s"][k]))
        assert lo * 0.999 - 1e-6 <= m["latency_s"][k] <= hi * 1.001 + 1e-6
    assert m["latency_s"]["min"] == min(ja["latency_s"]["min"], jb["latency_s"]["min"])
    assert m["latency_s"]["max"] == max(ja["latency_s"]["max"], jb["latency_s"]["max"])
    # the saved timelines count every request, started and ended
    for path, n in ((a, 300), (b, 200)):
        run = saved.loads(path.read_bytes(), path.name)
        assert sum(r.sent for r in run.summary.timeline) == n
        assert sum(r.requests for r in run.summary.timeline) == n
        assert run.summary.timeline[-1].in_flight == 0
        assert run.command[0] == "hit" and run.spec["requests"] == n
    # the text form, and the merge saved again reads back the same
    merged = tmp_path / "m.hit"
    assert main(["report", str(a), str(b), "--save", str(merged)]) == 0
    out = capsys.readouterr().out
    assert "Requests: 500" in out and "Merged 2 runs: a.hit, b.hit" in out
    again = saved.loads(merged.read_bytes(), "m.hit")
    assert again.json()["requests"] == 500 and len(again.sources) == 2
    # one run alone is itself: its command and asserts are kept
    copy = tmp_path / "copy.hit"
    assert main(["report", str(a), "--save", str(copy)]) == 0
    capsys.readouterr()
    one, orig = saved.loads(copy.read_bytes(), "c"), saved.loads(a.read_bytes(), "a")
    assert (one.command, one.asserts, one.spec) == (orig.command, orig.asserts, orig.spec)
    assert one.summary.histogram == orig.summary.histogram


def test_compare_lays_runs_side_by_side_with_ratios(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = []
    for name, lat in (("before.hit", [[1000] * 100]), ("after.hit", [[500] * 300])):
        p = tmp_path / name
        p.write_bytes(saved.dumps(saved.from_summary(_summary(lat), command=["hit", name])))
        paths.append(str(p))
    assert main(["report", "--compare", *paths, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "hit-compare/1"
    assert [r["name"] for r in doc["runs"]] == ["before.hit", "after.hit"]
    assert [r["requests"] for r in doc["runs"]] == [100, 300]
    (r,) = doc["ratios"]
    assert r["requests"] == 3.0 and r["latency_s.p50"] == 0.5 and r["latency_s.max"] == 0.5
    assert r["errors"] is None  # 0 errors before: no ratio to give
    assert main(["report", "--compare", *paths]) == 0
    text = capsys.readouterr().out
    assert "after.hit/before.hit" in text and "3.000x" in text and "0.500x" in text
    # two files of the same name are told apart by their paths
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "run.hit").write_bytes(Path(paths[0]).read_bytes())
    same = [str(tmp_path / "x" / "run.hit"), str(tmp_path / "y" / "run.hit")]
    assert main(["report", "--compare", *same, "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)["runs"]] == same


def _write_bad(tmp_path: Path) -> dict[str, Path]:
    files = {
        "text": b"hello",
        "notjson": gzip.compress(b"{nope"),
        "array": gzip.compress(b"[1, 2]"),
        "format": gzip.compress(json.dumps({"format": "hit-run/9", "result": {}}).encode()),
        "lacks": gzip.compress(
            json.dumps({"format": "hit-run/1", "result": {"url": "x"}}).encode()
        ),
    }
    good = json.loads(
        gzip.decompress(saved.dumps(saved.from_summary(_summary([[5]]), command=["hit"])))
    )
    good["result"]["histogram"]["total"] = 99
    files["damaged"] = gzip.compress(json.dumps(good).encode())
    out = {}
    for name, data in files.items():
        out[name] = tmp_path / f"{name}.hit"
        out[name].write_bytes(data)
    return out


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        ([], "RUN.hit"),
        (["{missing}"], "missing.hit"),
        (["{text}"], "text.hit"),
        (["{notjson}"], "notjson.hit"),
        (["{array}"], "array.hit"),
        (["{format}"], "hit-run/9"),
        (["{lacks}"], "lacks.hit"),
        (["{damaged}"], "damaged.hit"),
        (["{good}", "--compare"], "--compare"),
        (["{good}", "{good}", "--compare", "--save", "{out}.hit"], "--save"),
        (["{good}", "--html", "{out}.txt"], "--html"),
        (["{good}", "--html", "{tmp}/no/such/dir/x.html"], "--html"),
        (["{good}", "--save", "{out}.json"], "--save"),
        (["{good}", "--bogus"], "--bogus"),
    ],
)
def test_report_usage_errors_exit_2_naming_the_argument(
    tmp_path: Path, argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _write_bad(tmp_path)
    good = tmp_path / "good.hit"
    good.write_bytes(saved.dumps(saved.from_summary(_summary([[5]]), command=["hit"])))
    names = {k: str(v) for k, v in bad.items()}
    names |= {"good": str(good), "missing": str(tmp_path / "missing.hit")}
    names |= {"out": str(tmp_path / "out"), "tmp": str(tmp_path)}
    before = sorted(tmp_path.iterdir())
    assert main(["report", *(a.format(**names) for a in argv)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert err.startswith("hit report: error: ") and named in err and "fix:" in err
    assert sorted(tmp_path.iterdir()) == before  # nothing written


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--save", "run.json"], "--save"),
        (["--html", "report.txt"], "--html"),
        (["--html", "/no/such/dir/r.html"], "--html"),
        (["--save", "/no/such/dir/r.hit"], "--save"),
    ],
)
def test_hit_checks_the_output_paths_before_sending_anything(
    srv: Server, argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-n", "5", *argv, srv.url("/ok")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("hit: error: ") and flag in err and "fix:" in err
    assert srv.total == 0


def test_the_timeline_counts_requests_started_and_in_flight() -> None:
    h = Histogram()
    tl = Timeline()
    h.record(100, 8)
    a = tl.tick(0, h, requests=8, errors=1, sent=11)  # 3 started, not ended yet
    h.record(100, 3)
    b = tl.tick(1, h, requests=11, errors=1, sent=11)
    assert (a.sent, a.in_flight, b.sent, b.in_flight) == (11, 3, 0, 0)
    rows = Timeline.merge_lists([tl.to_list(), tl.to_list()])  # two processes, same seconds
    assert [(r.sent, r.in_flight) for r in rows] == [(22, 6), (0, 0)]


def test_credentials_are_not_saved() -> None:
    from hitpool.hit.spec import Spec

    spec = Spec(
        "http://127.0.0.1:1/",
        headers=(("Authorization", "Bearer s3cret"), ("Cookie", "id=s3cret"), ("X-A", "keep")),
    )
    argv = ["hit", "-H", "authorization: Bearer s3cret", "-H", "X-A: keep"]
    argv += ["http://me:s3cret@127.0.0.1:1/x?q=1"]
    summary = dataclasses.replace(_summary([[5]]), url="http://me:s3cret@127.0.0.1:1/")
    run = saved.from_summary(summary, command=argv, spec=spec)
    data = gzip.decompress(saved.dumps(run)).decode()
    assert "s3cret" not in data
    assert run.command[2] == "authorization: ***" and run.command[4] == "X-A: keep"
    assert run.command[5] == "http://me:***@127.0.0.1:1/x?q=1"
    assert run.spec["headers"] == [["Authorization", "***"], ["Cookie", "***"], ["X-A", "keep"]]
    assert run.json()["url"] == "http://me:***@127.0.0.1:1/"
    assert saved.redact("http://127.0.0.1:1/a@b") == "http://127.0.0.1:1/a@b"


def test_a_merge_of_runs_of_different_targets_names_them_all() -> None:
    a = saved.from_summary(_summary([[5]]), command=["hit", "a"])
    b = saved.from_summary(
        dataclasses.replace(_summary([[7]]), url="http://127.0.0.1:2/", method="POST"),
        command=["hit", "b"],
    )
    merged = saved.merge([a, b, a], command=["hit", "report"])
    doc = merged.json()
    assert doc["url"] == "http://127.0.0.1:1/, http://127.0.0.1:2/"
    assert doc["method"] == "GET, POST" and doc["requests"] == 3
    back = saved.loads(saved.dumps(merged), "m.hit")  # and it reads back as saved
    assert back.json()["url"] == doc["url"]
    same = saved.merge([a, a], command=["hit", "report"]).json()
    assert (same["url"], same["method"]) == ("http://127.0.0.1:1/", "GET")


def test_a_header_joined_to_its_flag_is_redacted_too() -> None:
    # argparse takes "-HAuthorization: x" as -H with that value: the command keeps it joined.
    argv = ["hit", "-HAuthorization: Bearer s3cret", "-H", "X-Api-Key: s3cret"]
    argv += ["-Hcookie:s3cret", "-H", "x-auth-token: s3cret", "-HX-A: keep"]
    run = saved.from_summary(_summary([[5]]), command=argv)
    assert "s3cret" not in gzip.decompress(saved.dumps(run)).decode()
    assert run.command[1] == "-HAuthorization: ***" and run.command[-1] == "-HX-A: keep"
    spec = saved.spec_dict(Spec("http://127.0.0.1:1/", headers=(("X-Api-Key", "s3cret"),)))
    assert spec["headers"] == [["X-Api-Key", "***"]]


def test_a_file_that_cannot_be_written_is_reported(
    srv: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full = tmp_path / "full.hit"
    full.symlink_to("/dev/full")  # every write fails with ENOSPC
    page = tmp_path / "full.html"
    page.symlink_to("/dev/full")
    # hit: the run happened, its summary is printed; exit 1, as for a -o not written
    assert main(["-n", "5", "--save", str(full), srv.url("/ok")]) == 1
    out, err = capsys.readouterr()
    assert "Requests: 5" in out and f"hit: --save: cannot write {str(full)!r}" in err
    good = tmp_path / "good.hit"
    good.write_bytes(saved.dumps(saved.from_summary(_summary([[5]]), command=["hit"])))
    # hit report: the one thing asked could not be done
    assert main(["report", str(good), "--html", str(page)]) == 1
    assert "hit report: --html: cannot write" in capsys.readouterr().err
