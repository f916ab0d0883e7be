"""The public surface of hitpool.hit is what docs/hit.md documents."""

from __future__ import annotations

from pathlib import Path

import hitpool.hit

DOC = (Path(__file__).resolve().parents[2] / "docs" / "hit.md").read_text()


def test_exports_are_documented_and_importable() -> None:
    assert sorted(hitpool.hit.__all__) == sorted(
        [
            "ERROR_KINDS",
            "CannotStart",
            "Progress",
            "Result",
            "Spec",
            "Summary",
            "WorkerLost",
            "run",
            "run_async",
            "send_n",
        ]
    )
    for name in hitpool.hit.__all__:
        assert getattr(hitpool.hit, name) is not None
    for name in ("run(", "run_async(", "send_n(", "Spec(", "CannotStart", "WorkerLost", "Result("):
        assert name in DOC, name


def test_every_error_kind_is_documented() -> None:
    for kind in hitpool.hit.ERROR_KINDS:
        assert f"| `{kind}` |" in DOC, kind


def test_every_json_key_is_documented() -> None:
    from hitpool.hit.stats import Histogram
    from hitpool.hit.summary import Summary

    s = Summary("u", "GET", 0, 0, 0, {}, {}, 0, 0.0, None, 0, 1, 1, False, Histogram())
    for key in s.to_json():
        assert f"`{key}`" in DOC, key
