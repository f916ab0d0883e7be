"""``hit report RUN.hit ... [--compare] [--html FILE] [--json] [--save FILE]``, and the files
``hit --html`` / ``hit --save`` write after a run.

Merging (the default) adds the runs exactly, as vegeta's ``report a.bin b.bin`` does: the
distributed-load case, several machines loading one target at the same time. ``--compare``
lays the runs side by side instead (before and after a change) with each one's ratio to
the first. Every usage error exits 2 naming the argument, before any file is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .._errors import SpecError
from . import html, report, saved
from .saved import SavedRun

EXIT_OK, EXIT_USAGE = 0, 2


class _Usage(Exception):
    """A bad ``hit report`` command line; the message names the argument."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Usage(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="hit report",
        description="Merge saved runs (hit --save) exactly into one summary, or lay them "
        "side by side with --compare.",
    )
    p.add_argument("runs", metavar="RUN.hit", nargs="+", help="runs saved by hit --save")
    p.add_argument(
        "--compare",
        action="store_true",
        help="side by side (percentiles, rates and their ratios to the first run) "
        "instead of merged",
    )
    p.add_argument("--html", metavar="FILE.html", help="also write the self-contained HTML page")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--save", metavar="FILE.hit", help="also save the merged run (not --compare)")
    return p


def output_problem(flag: str, path: str, suffixes: tuple[str, ...]) -> str | None:
    """Why ``path`` cannot be written by ``flag`` (checked before the run), or None."""
    if not path.endswith(suffixes):
        return f"{flag}: {path!r} must end in {' or '.join(suffixes)}"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"{flag}: the folder {folder!r} does not exist; create it or give another path"
    if os.path.isdir(path):
        return f"{flag}: {path!r} is a folder; give a file name"
    return None


def write_outputs(run: SavedRun, *, html_path: str | None, save_path: str | None) -> list[str]:
    """Write the page and/or the saved run; the problems met (each names its flag)."""
    problems = []
    outputs: list[tuple[str, str | None, Callable[[], bytes]]] = [
        ("--html", html_path, lambda: html.render(run).encode("utf-8")),
        ("--save", save_path, lambda: saved.dumps(run)),
    ]
    for flag, path, make in outputs:
        if path is None:
            continue
        try:
            with open(path, "wb") as f:
                f.write(make())
        except OSError as e:
            problems.append(f"{flag}: cannot write {path!r}: {e.strerror}")
    return problems


def _load(path: str) -> SavedRun:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise _Usage(f"{path}: cannot read it ({e.strerror}); give a file written by hit --save")
    try:
        return saved.loads(data, os.path.basename(path) or path)
    except SpecError as e:
        raise _Usage(f"{path}: {e.message}")


def compare_json(runs: Sequence[SavedRun]) -> dict[str, Any]:
    """``hit-compare/1``: each run's --json object, and each one's ratios to the first."""
    docs = [r.json() for r in runs]
    ratios = [
        {
            key: html.ratio(html.lookup(docs[0], key), html.lookup(d, key))
            for key, _, _ in html.COMPARED
        }
        for d in docs[1:]
    ]
    return {
        "schema": "hit-compare/1",
        "runs": [
            {"name": r.name, "command": list(r.command), **d}
            for r, d in zip(runs, docs, strict=True)
        ],
        "ratios": ratios,
    }


def compare_text(runs: Sequence[SavedRun]) -> str:
    docs = [r.json() for r in runs]
    names = [r.name for r in runs]
    head = ["", *names, *(f"{n}/{names[0]}" for n in names[1:])]
    rows = [head]
    for key, label, show in html.COMPARED:
        values = [html.lookup(d, key) for d in docs]
        ratios = [html.ratio(values[0], v) for v in values[1:]]
        rows.append(
            [
                label,
                *(show(v) for v in values),
                *("—" if r is None else f"{r:.3f}x" for r in ratios),
            ]
        )
    widths = [max(len(str(r[k])) for r in rows) for k in range(len(head))]
    lines = [
        "  ".join(
            str(c).ljust(w) if k == 0 else str(c).rjust(w)
            for k, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def main(argv: Sequence[str]) -> int:
    """``hit report ...``; returns the exit code."""
    try:
        ns = build_parser().parse_args(list(argv))
        if ns.compare and len(ns.runs) < 2:
            raise _Usage("--compare: give two or more runs to compare")
        if ns.compare and ns.save is not None:
            raise _Usage("--save: saves a merged run; drop --compare or --save")
        for flag, path, suffixes in (
            ("--html", ns.html, (".html", ".htm")),
            ("--save", ns.save, (".hit",)),
        ):
            problem = output_problem(flag, path, suffixes) if path is not None else None
            if problem:
                raise _Usage(problem)
        runs = [_load(path) for path in ns.runs]
    except _Usage as e:
        sys.stderr.write(
            f"hit report: error: {e}\n  fix: see hit report --help "
            "(e.g. hit report a.hit b.hit --html merged.html)\n"
        )
        return EXIT_USAGE
    command = ("hit", "report", *argv)
    if ns.compare:
        sys.stdout.write(
            json.dumps(compare_json(runs), indent=2) + "\n" if ns.json else compare_text(runs)
        )
        problems = []
        if ns.html is not None:
            try:
                with open(ns.html, "w", encoding="utf-8") as f:
                    f.write(html.render_compare(runs))
            except OSError as e:
                problems.append(f"--html: cannot write {ns.html!r}: {e.strerror}")
    else:
        merged = saved.merge(runs, command=command)
        if ns.json:
            doc = merged.json()
            doc["sources"] = [dict(s) for s in merged.sources]
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        else:
            sys.stdout.write(report.text(merged.summary))
            sys.stdout.write(f"\nMerged {len(runs)} runs: {', '.join(r.name for r in runs)}\n")
        problems = write_outputs(merged, html_path=ns.html, save_path=ns.save)
    for p in problems:
        sys.stderr.write(f"hit report: {p}\n")
    return EXIT_OK if not problems else 1
