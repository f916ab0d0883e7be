"""``hit report RUN.hit ... [--compare] [--html FILE] [--json] [--save FILE]``, and the files
``hit --html`` / ``hit --save`` write after a run.

Merging (the default) adds the runs exactly, as vegeta's ``report a.bin b.bin`` does: the
distributed-load case, several machines loading one target at the same time. ``--compare``
lays the runs side by side instead (before and after a change) with each one's ratio to
the first. Every usage error exits 2 naming the argument, before any file is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import NoReturn

from .._errors import SpecError
from . import html, report, saved
from ._stdio import out, say
from .compare import compare_json, compare_text
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


def outputs_problem(*, html_path: str | None, save_path: str | None) -> str | None:
    """The first reason the ``--html`` / ``--save`` paths cannot be written, or None."""
    for flag, path, suffixes in (
        ("--html", html_path, (".html", ".htm")),
        ("--save", save_path, (".hit",)),
    ):
        problem = output_problem(flag, path, suffixes) if path is not None else None
        if problem is not None:
            return problem
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


def main(argv: Sequence[str]) -> int:
    """``hit report ...``; returns the exit code."""
    try:
        ns = build_parser().parse_args(list(argv))
        if ns.compare and len(ns.runs) < 2:
            raise _Usage("--compare: give two or more runs to compare")
        if ns.compare and ns.save is not None:
            raise _Usage("--save: saves a merged run; drop --compare or --save")
        problem = outputs_problem(html_path=ns.html, save_path=ns.save)
        if problem is not None:
            raise _Usage(problem)
        runs = [_load(path) for path in ns.runs]
        names = [r.name for r in runs]
        if len(set(names)) < len(names):  # a/run.hit and b/run.hit: call them by their paths
            runs = [
                dataclasses.replace(r, name=path) for r, path in zip(runs, ns.runs, strict=True)
            ]
    except _Usage as e:
        say(
            f"hit report: error: {e}\n  fix: see hit report --help "
            "(e.g. hit report a.hit b.hit --html merged.html)\n"
        )
        return EXIT_USAGE
    command = ("hit", "report", *argv)
    if ns.compare:
        written = out(
            json.dumps(compare_json(runs), indent=2) + "\n" if ns.json else compare_text(runs),
            "hit report",
        )
        problems = []
        if ns.html is not None:
            try:
                with open(ns.html, "w", encoding="utf-8") as f:
                    f.write(html.render_compare(runs))
            except OSError as e:
                problems.append(f"--html: cannot write {ns.html!r}: {e.strerror}")
    else:
        # one run is its own merge: keep its command, spec and asserts on the page
        merged = runs[0] if len(runs) == 1 else saved.merge(runs, command=command)
        if ns.json:
            doc = merged.json()
            doc["sources"] = [dict(s) for s in merged.sources]
            text = json.dumps(doc, indent=2) + "\n"
        else:
            text = report.text(merged.summary)
            if len(runs) > 1:
                listed = ", ".join(r.name for r in runs)
                text += f"\nMerged {len(runs)} runs: {listed}\n"
        written = out(text, "hit report")  # (hit report ... | head: the files still come)
        problems = write_outputs(merged, html_path=ns.html, save_path=ns.save)
    for p in problems:
        say(f"hit report: {p}\n")
    return EXIT_OK if written and not problems else 1
