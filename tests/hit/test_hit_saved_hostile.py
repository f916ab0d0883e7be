"""A ``.hit`` file from elsewhere is hostile input: `hit report` exits 2 naming what is wrong,
never a traceback, whatever the file holds (wrong types, NaN, deep nesting, a gzip bomb)."""

from __future__ import annotations

import copy
import gzip
import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hitpool.hit import saved, saved_check
from hitpool.hit.cli import main
from hitpool.hit.scenario_stats import Stats

from .test_hit_saved import _latencies, _summary


def _good() -> dict[str, Any]:
    run = saved.from_summary(_summary(_latencies(7, 3, 50), errors=1), command=["hit", "x"])
    doc: dict[str, Any] = json.loads(gzip.decompress(saved.dumps(run)))
    return doc


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change of the good document: the key at ``path`` (dots, [n] for a list) set."""

    def change(doc: dict[str, Any]) -> None:
        parts = path.split(".")
        cur: Any = doc
        for p in parts[:-1]:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        last = parts[-1]
        if isinstance(cur, list):
            cur[int(last)] = value
        else:
            cur[last] = value

    return change


# (change, the key the message must name)
CHANGES = [
    (_set("result.steps", {"login": 5}), "result.steps.login"),
    (_set("result.steps", {"login": {"latency_s": [1]}}), "result.steps.login.latency_s"),
    (_set("result.steps", {"login": {"requests": "9"}}), "result.steps.login.requests"),
    (
        _set("result.steps", {"login": {"requests": 1, "successes": 1, "errors": 0, "bytes": 0}}),
        "result.steps.login.histogram",
    ),
    (_set("result.scenarios", [1]), "result.scenarios"),
    (_set("result.scenarios", {"s": {"latency_s": 3}}), "result.scenarios.s.latency_s"),
    (_set("sources", [{"command": 5}]), "sources[0].command"),
    (_set("sources", ["x"]), "sources[0]"),
    (_set("command", "hit -n 5"), "command"),
    (_set("asserts", {"p99": 1}), "asserts"),
    (_set("asserts", [{"expr": "p99<1s", "passed": "yes", "actual": ""}]), "asserts[0].passed"),
    (_set("result.duration_s", "1"), "result.duration_s"),
    (_set("result.requests", -1), "result.requests"),
    (_set("result.requests", True), "result.requests"),
    (_set("result.url", 5), "result.url"),
    (_set("result.target_rps", 0), "result.target_rps"),
    (_set("result.interrupted", "no"), "result.interrupted"),
    (_set("result.errors_by_kind", {"timeout": "x"}), "result.errors_by_kind.timeout"),
    (_set("result.status_codes", {"abc": 1}), "result.status_codes.abc"),
    (_set("result.histogram.counts", [99999999, 1]), "result.histogram.counts[0]"),
    (_set("result.histogram.sum", "big"), "result.histogram.sum"),
    (_set("result.timeline.0.second", -5), "result.timeline[0].second"),
    (_set("result.timeline.0.counts", [1, 2, 3]), "result.timeline[0].counts"),
    (_set("result.timeline.0", {"second": 0}), "result.timeline[0].requests"),
    (_set("result.timeline", {"0": 1}), "result.timeline"),
]


def _report(tmp_path: Path, data: bytes, capsys: pytest.CaptureFixture[str]) -> str:
    """`hit report` of a file holding ``data``: asserts exit 2, no output, nothing written."""
    f = tmp_path / "in.hit"
    f.write_bytes(data)
    html = tmp_path / "out.html"
    assert main(["report", str(f), "--html", str(html)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err and not html.exists()
    assert err.startswith("hit report: error: ") and "in.hit" in err and "fix:" in err
    return err


@pytest.mark.parametrize(("change", "named"), CHANGES)
def test_a_wrong_type_anywhere_is_named_and_exits_2(
    tmp_path: Path,
    change: Callable[[dict[str, Any]], None],
    named: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = copy.deepcopy(_good())
    change(doc)
    err = _report(tmp_path, gzip.compress(json.dumps(doc).encode()), capsys)
    assert f"({named} must be" in err


def test_the_good_document_itself_is_read(tmp_path: Path) -> None:
    f = tmp_path / "ok.hit"
    doc = _good()
    steps = Stats([True] * 1000, 10**9)
    steps.step("login").response(200, 5_000_000, 10)
    doc["result"]["steps"] = steps.steps_wire()  # a scenario run's steps, as hit saves them
    f.write_bytes(gzip.compress(json.dumps(doc).encode()))
    assert main(["report", str(f), "--html", str(tmp_path / "ok.html")]) == 0


def test_nan_is_not_a_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = json.dumps(_good()).replace('"duration_s": 3.0', '"duration_s": NaN')
    assert "NaN" in text
    err = _report(tmp_path, gzip.compress(text.encode()), capsys)
    assert "NaN is not a JSON number" in err


def test_deep_nesting_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _report(tmp_path, gzip.compress(b"[" * 200_000 + b"]" * 200_000), capsys)
    assert "nested too deeply" in err


def test_a_gzip_bomb_is_refused_while_it_inflates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bound lowered so that the bomb stays small to build; the check is the same.
    monkeypatch.setattr(saved_check, "MAX_JSON_BYTES", 1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = c.compress(b'{"format": "hit-run/1", "x": "' + b" " * (4 << 20) + b'"}') + c.flush()
    assert len(bomb) < 10_000
    err = _report(tmp_path, bomb, capsys)
    assert "inflates past 1 MiB" in err


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (gzip.compress(b"{}")[:-6], "cut short"),
        (gzip.compress(b"{}") + gzip.compress(b"{}"), "bytes follow its end"),
        (gzip.compress(b'{"a": "\xff"}'), "not UTF-8"),
    ],
    ids=["truncated", "two-streams", "not-utf8"],
)
def test_a_broken_stream_is_named(
    tmp_path: Path, data: bytes, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert why in _report(tmp_path, data, capsys)
