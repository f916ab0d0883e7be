"""``hit [flags] URL``: parse argv into a Spec, run it, print the report.

Exit codes: 0 done, 1 the run could not start (bad host, every connect refused),
2 usage error (the message names the flag and the fix), 3 an --assert failed,
130 interrupted by Ctrl-C (after printing the partial summary).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, TextIO

import uvloop

from .._errors import HitpoolError, SpecError
from ..durations import parse_seconds
from . import report, reportcmd, saved
from .client import CannotStart
from .run import run_async
from .spec import (
    DEFAULT_CONCURRENCY,
    DEFAULT_REQUESTS,
    FLAGS,
    Spec,
    parse_header,
    parse_ok,
    parse_processes,
)
from .summary import Progress, Summary

EXIT_OK, EXIT_CANNOT_START, EXIT_USAGE, EXIT_ASSERT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UsageError(Exception):
    """A bad command line: the message names the flag and says how to fix it."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _arg_type(parse: Callable[[str], object], flag: str) -> Callable[[str], object]:
    """Wrap a spec parser so argparse reports its SpecError text under ``flag``."""

    def convert(text: str) -> object:
        try:
            return parse(text)
        except SpecError as e:
            raise argparse.ArgumentTypeError(e.message)

    convert.__name__ = flag
    return convert


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number, e.g. 100 or 2.5")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="hit",
        description="HTTP load generator: exact counts, honest latency (HDR histograms, "
        "coordinated-omission corrected under --rps).",
        epilog="Exit codes: 0 done, 1 could not start, 2 usage error, 3 an --assert failed, "
        "130 interrupted.",
    )
    p.add_argument("url", metavar="URL", help="http:// or https:// URL (IPv6 as http://[::1]:80/)")
    p.add_argument(
        "-n",
        dest="requests",
        metavar="N",
        type=_positive_int,
        help=f"total requests; exactly N are sent whatever -c is (default {DEFAULT_REQUESTS}, "
        "or unbounded with -z)",
    )
    p.add_argument(
        "-c",
        dest="concurrency",
        metavar="C",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        help=f"requests in flight, one keep-alive connection each (default {DEFAULT_CONCURRENCY})",
    )
    p.add_argument(
        "--rps",
        "-rps",
        dest="rps",
        metavar="R",
        type=_positive_float,
        help="TOTAL rate over all connections and processes (open model: request i is due at "
        "i/R and its latency counts from then)",
    )
    p.add_argument(
        "-z",
        dest="duration",
        metavar="D",
        type=_arg_type(lambda text: parse_seconds(text, "-z"), "-z"),
        help="send for this long (10s, 2m, 250ms), then wait for what is in flight",
    )
    p.add_argument(
        "-m", dest="method", metavar="METHOD", default="GET", help="HTTP method (default GET)"
    )
    p.add_argument(
        "-H",
        dest="headers",
        metavar="'NAME: VALUE'",
        action="append",
        default=[],
        type=_arg_type(parse_header, "-H"),
        help="a request header 'Name: value' (repeatable)",
    )
    p.add_argument(
        "-d", dest="body", metavar="BODY", help="request body, or @file to read it from a file"
    )
    p.add_argument("-T", dest="content_type", metavar="TYPE", help="Content-Type of the body")
    p.add_argument(
        "-t",
        dest="timeout",
        metavar="D",
        type=_arg_type(lambda text: parse_seconds(text, "-t"), "-t"),
        default=30.0,
        help="per-request timeout, connect included (default 30s)",
    )
    p.add_argument(
        "-k", "--insecure", action="store_true", help="skip TLS certificate and host checks"
    )
    p.add_argument(
        "-p",
        dest="processes",
        metavar="P",
        type=_arg_type(parse_processes, "-p"),
        default=1,
        help="worker processes, their results merged exactly (default 1; auto = one per core)",
    )
    p.add_argument(
        "--ok",
        metavar="RANGES",
        type=_arg_type(parse_ok, "--ok"),
        default=((200, 299),),
        help="statuses that count as success, e.g. 200-399 or 200,204 (default 200-299)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (schema hit/1)")
    p.add_argument(
        "-o", dest="output", metavar="FILE", help="write a per-second timeline to FILE.json/.csv"
    )
    p.add_argument(
        "--assert",
        dest="asserts",
        action="append",
        default=[],
        type=_arg_type(report.parse_assert, "--assert"),
        metavar="EXPR",
        help="fail with exit 3 unless EXPR holds: 'p99<250ms', 'errors<1%%', 'rps>1000'",
    )
    # -- pictures and saved runs (docs/hit.md, "The HTML report" and "Saved runs") --
    p.add_argument(
        "--html",
        metavar="FILE.html",
        help="also write a self-contained HTML report (charts, tables; opens offline)",
    )
    p.add_argument(
        "--save",
        metavar="FILE.hit",
        help="also save the whole run (HDR histograms, timeline, spec) for hit report",
    )
    return p


def _fix_for(message: str) -> str:
    if "required" in message and "URL" in message:
        return "give the URL to load, e.g. hit -n 100 http://127.0.0.1:8080/"
    return "see hit --help"


def parse_args(argv: Sequence[str]) -> tuple[Spec, argparse.Namespace]:
    """argv -> (Spec, the namespace for output options); UsageError on bad input."""
    ns = build_parser().parse_args(list(argv))
    body = b""
    if ns.body is not None:
        if ns.body.startswith("@"):
            try:
                with open(ns.body[1:], "rb") as f:
                    body = f.read()
            except OSError as e:
                raise UsageError(f"-d: cannot read {ns.body[1:]!r} ({e.strerror}); give a file")
        else:
            # The bytes as given: argv that is not UTF-8 comes as surrogate escapes.
            body = os.fsencode(ns.body)
    if ns.output is not None and not ns.output.endswith((".json", ".csv")):
        raise UsageError(f"-o: {ns.output!r} must end in .json or .csv")
    problem = reportcmd.outputs_problem(html_path=ns.html, save_path=ns.save)
    if problem is not None:
        raise UsageError(problem)
    try:
        spec = Spec(
            url=ns.url,
            requests=ns.requests,
            concurrency=ns.concurrency,
            rps=ns.rps,
            duration=ns.duration,
            method=ns.method.upper(),
            headers=tuple(ns.headers),
            body=body,
            content_type=ns.content_type,
            timeout=ns.timeout,
            insecure=ns.insecure,
            processes=ns.processes,
            ok=ns.ok,
        )
    except SpecError as e:
        raise UsageError(f"{FLAGS.get(e.field, e.field)}: {e.message}")
    return spec, ns


async def _run(spec: Spec, ns: argparse.Namespace, live: TextIO | None) -> Summary:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)

    def show(p: Progress) -> None:
        assert live is not None
        live.write("\r\033[K" + report.progress_line(p))
        live.flush()

    try:
        return await run_async(
            spec,
            stop=stop,
            timeline=ns.output is not None or ns.html is not None or ns.save is not None,
            progress=show if live is not None else None,
        )
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if live is not None:
            live.write("\r\033[K")
            live.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """The ``hit`` command. Returns the exit code."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 0 and args[0] == "report":  # the subcommand: a URL always starts with its scheme
        return reportcmd.main(args[1:])
    try:
        spec, ns = parse_args(args)
    except UsageError as e:
        sys.stderr.write(f"hit: error: {e}\n  fix: {_fix_for(str(e))}\n")
        return EXIT_USAGE
    live = sys.stdout if sys.stdout.isatty() and not ns.json else None
    # Everything imported so far lives for the whole run: keep the cyclic GC from
    # re-scanning it (the hot path allocates no cycles; this is ~1 % of a busy run).
    gc.freeze()
    try:
        summary = uvloop.run(_run(spec, ns, live))
    except CannotStart as e:
        sys.stderr.write(f"hit: cannot start: {e}\n")
        return EXIT_CANNOT_START
    except HitpoolError as e:  # a worker process died: there is no summary to print
        sys.stderr.write(f"hit: error: {e}\n")
        return EXIT_CANNOT_START
    finally:
        gc.unfreeze()
    sys.stdout.write(report.json_text(summary) if ns.json else report.text(summary))
    if ns.output is not None:
        try:
            with open(ns.output, "w", encoding="utf-8") as f:
                f.write(report.timeline_text(summary, ns.output))
        except OSError as e:
            sys.stderr.write(f"hit: -o: cannot write {ns.output!r}: {e.strerror}\n")
    failed = False
    checked = report.check_all(ns.asserts, summary)
    for a, ok, actual in checked:
        if not ok:
            failed = True
            sys.stderr.write(f"hit: assertion failed: {a.text} ({actual})\n")
    if ns.html is not None or ns.save is not None:
        verdicts = [saved.Verdict(a.text, ok, actual) for a, ok, actual in checked]
        run = saved.from_summary(summary, command=("hit", *args), spec=spec, verdicts=verdicts)
        for problem in reportcmd.write_outputs(run, html_path=ns.html, save_path=ns.save):
            sys.stderr.write(f"hit: {problem}\n")
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_ASSERT if failed else EXIT_OK
