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
            "FileLimit",
            "HitError",
            "ExpectationFailed",
            "Progress",
            "RequestFailed",
            "Response",
            "Result",
            "Session",
            "Spec",
            "Summary",
            "UsageError",
            "WorkerLost",
            "feeder",
            "run",
            "run_async",
            "scenario",
            "send_n",
        ]
    )
    for name in hitpool.hit.__all__:
        assert getattr(hitpool.hit, name) is not None
    names = ("run(", "run_async(", "send_n(", "Spec(", "Result(", "@scenario", "feeder.csv(")
    for name in (*names, "CannotStart", "WorkerLost", "FileLimit", "HitError", "UsageError",
                 "ExpectationFailed", "RequestFailed", "Session", "Response"):  # fmt: skip
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


def test_hits_errors_form_one_tree_under_hitpool_error() -> None:
    from hitpool import HitpoolError, SpecError
    from hitpool.hit import (
        CannotStart,
        FileLimit,
        HitError,
        UsageError,
        WorkerLost,
        _errors,
        cli,
        client,
        processes,
    )

    assert issubclass(HitError, HitpoolError) and issubclass(UsageError, SpecError)
    assert issubclass(CannotStart, HitError) and issubclass(WorkerLost, HitError)
    assert issubclass(FileLimit, CannotStart)
    # the old homes still name the same classes
    assert client.CannotStart is CannotStart and processes.WorkerLost is WorkerLost
    assert cli.UsageError is UsageError
    tree = _errors.__doc__ or ""
    for cls in (HitError, CannotStart, FileLimit, WorkerLost, UsageError):
        assert f"── {cls.__name__} " in tree, cls
