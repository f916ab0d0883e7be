"""``hit [flags] URL``: parse argv into a Spec, run it, print the report.

Exit codes: 0 done, 1 the run could not start (bad host, every connect refused, too few
file descriptors) or a worker process died, 2 usage error (the message names the flag and
its fix; always before the first request), 3 an --assert failed, 130 interrupted by
Ctrl-C and 143 by SIGTERM (both after printing the partial summary).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import re
import shutil
import signal
import stat
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import IO, TYPE_CHECKING, NoReturn

import uvloop

from .._build import build
from ..durations import parse_seconds
from . import report, reportcmd, saved
from ._errors import CannotStart, HitError, SpecError, UsageError
from ._fds import ensure_room
from ._stdio import open_stdio, out, say
from .live import Frame, Lines, Terminal
from .processes import split
from .run import run_async
from .spec import (
    DEFAULT_CONCURRENCY,
    DEFAULT_REQUESTS,
    FLAGS,
    Spec,
    parse_header,
    parse_ok,
    parse_processes,
    parse_stage,
)
from .summary import Summary

if TYPE_CHECKING:
    from .targets import Line

EXIT_OK, EXIT_CANNOT_START, EXIT_USAGE, EXIT_ASSERT = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM, as shells report

__all__ = ["UsageError", "build_parser", "main", "parse_args"]

# The fix a usage error prints for its flag. A flag without an entry (one added later)
# gets its own --help text, which says what it takes.
FIXES = {
    "URL": "give one http:// or https:// URL to load, e.g. hit -n 100 http://127.0.0.1:8080/",
    "-n": "give the number of requests, a whole number from 1, e.g. -n 1000",
    "-c": "give the number of connections, a whole number from 1, e.g. -c 50",
    "--rps": "give the total rate in requests per second, above 0, e.g. --rps 500",
    "-z": "give a positive duration, e.g. -z 30s, -z 2m or -z 500ms",
    "-t": "give a positive timeout of at most 24h, e.g. -t 5s or -t 250ms",
    "-m": "give an HTTP method, one word, e.g. -m POST",
    "-H": "write the header as one 'Name: value' argument, e.g. -H 'Accept: text/html' "
    "(Content-Length and Transfer-Encoding are hit's: it frames the body itself)",
    "-d": "give the body itself, or @ and a readable file, e.g. -d @body.json",
    "-T": "give one media type, e.g. -T application/json",
    "-p": "give -p from 1 up to -c (each process needs a connection), or auto, e.g. -p 2",
    "--ok": "give status ranges within 100-999, e.g. --ok 200-399 or --ok 200,204",
    "--assert": "write NAME OP VALUE, e.g. --assert 'p99<250ms' --assert 'errors<1%'",
    "-o": "give a FILE.json or FILE.csv in a directory you can write, e.g. -o timeline.csv",
    "--html": "give a FILE.html in a directory you can write, e.g. --html report.html",
    "--save": "give a FILE.hit in a directory you can write, e.g. --save run.hit",
    "--stage": "write DURATION:RATE or DURATION:FROM-TO, e.g. --stage 30s:0-200 --stage 2m:200",
    "-f": "give a Python script with @scenario functions, e.g. -f shop.py (docs/hit.md)",
    "--max-inflight": "give a whole number from 1 with -f, e.g. --max-inflight 1000",
    "--targets": "give a file of 'METHOD URL [@body-file]' lines, e.g. --targets urls.txt",
}
_ALIASES = {"-rps": "--rps", "--insecure": "-k"}


def _usage(flag: str, message: str, parser: argparse.ArgumentParser | None = None) -> UsageError:
    """A UsageError for ``flag`` with that flag's fix."""
    flag = _ALIASES.get(flag, flag)
    fix = FIXES.get(flag)
    if fix is None:
        action = _action(parser or build_parser(), flag)
        if action is not None and action.help and action.nargs == 0:
            fix = f"write {flag} alone, without a value ({flag}: {action.help})"
        elif action is not None and action.help:
            fix = f"{flag} {action.metavar or 'VALUE'}: {action.help}"
        else:
            fix = f"remove {flag}: hit --help lists the flags hit takes"
    return UsageError(flag, message, fix)


def _action(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    for action in parser._actions:
        if flag in action.option_strings:
            return action
    return None


_ARGUMENT = re.compile(r"^argument (\S+?)(?:/\S+)?: (.*)$", re.S)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        m = _ARGUMENT.match(message)
        if m:
            flag, why = m.groups()
            flag = "URL" if flag == "url" else flag
            if why == "expected one argument":
                why = "needs a value"
            elif why.startswith("ignored explicit argument "):
                why = "takes no value, got " + why.removeprefix("ignored explicit argument ")
            raise _usage(flag, why, self)
        if message.startswith("the following arguments are required"):
            raise _usage("URL", "no URL given", self)
        if message.startswith("unrecognized arguments: "):
            extra = message.removeprefix("unrecognized arguments: ").split()
            first = extra[0]
            if first.startswith("-"):
                raise _usage(first, f"{first} is not a hit flag", self)
            raise _usage("URL", f"one URL only, and {first!r} came after it", self)
        raise UsageError("hit", message, "hit --help lists the flags hit takes")


def _arg_type(parse: Callable[[str], object], flag: str) -> Callable[[str], object]:
    """Wrap a spec parser so argparse reports its SpecError text under ``flag``."""

    def convert(text: str) -> object:
        try:
            return parse(text)
        except SpecError as e:
            raise argparse.ArgumentTypeError(e.message)

    convert.__name__ = flag
    return convert


def _processes(text: str) -> int | str:
    """-p: "auto" stays "auto" until -c is known (one per core, at most one per connection)."""
    if text == "auto":
        return text
    value = parse_processes(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _hit_version() -> str:
    try:
        return version("hitpool")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


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
        "130 interrupted (Ctrl-C), 143 terminated (SIGTERM).",
    )
    shown = f"hit (hitpool) {_hit_version()} ({build()} build)"  # pure, or compiled by mypyc
    p.add_argument("--version", action="version", version=shown)
    p.add_argument(
        "url",
        metavar="URL",
        nargs="?",  # required unless --targets gives the URLs: parse_args checks
        help="http:// or https:// URL (IPv6 as http://[::1]:80/; user:password@ sends Basic "
        "auth); with -f the base URL",
    )
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
        type=_arg_type(_processes, "-p"),
        default=1,
        help="worker processes, their results merged exactly; each gets its share of -c and "
        "the same share of the requests and of --rps (default 1; auto = one per core)",
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
    # -- hitscen's flags: --stage, scenarios, targets --------------------------------------
    p.add_argument(
        "--stage",
        dest="stages",
        metavar="D:RATE",
        action="append",
        default=[],
        type=_arg_type(parse_stage, "--stage"),
        help="open model, the rate shaped over time (repeatable, in order): D:RATE holds "
        "RATE/s for D, D:A-B ramps linearly from A/s to B/s (k6's stages); without -z the "
        "run lasts the stages",
    )
    p.add_argument(
        "-f",
        dest="script",
        metavar="SCRIPT.py",
        help="run the @scenario functions of a Python script against URL (the base URL): "
        "-n counts iterations, --rps is iterations per second (open model), -c the virtual "
        "users of the closed model",
    )
    p.add_argument(
        "--max-inflight",
        dest="max_inflight",
        metavar="M",
        type=_positive_int,
        help="-f under --rps/--stage: at most M iterations in flight over all processes; one "
        "due when M run is counted as dropped (default 10000)",
    )
    p.add_argument(
        "--targets",
        dest="targets",
        metavar="FILE",
        help="instead of URL: one 'METHOD URL' per line, optionally '@body-file' (relative "
        "to FILE's directory); each line is a step of the summary",
    )
    p.add_argument(
        "--targets-order",
        dest="targets_order",
        choices=("sequential", "random"),
        default="sequential",
        help="--targets: each request to the next line (default) or to a random one",
    )
    return p


# Flags that take a value: a value that starts with "-" (-z -1s) is still their value, not
# a flag argparse cannot find, unless it is a flag hit knows (then the value is missing).
_VALUED = frozenset({"-n", "-c", "--rps", "-rps", "-z", "-m", "-H", "-d", "-T", "-t", "-p",
                     "--stage", "-f", "--max-inflight", "--targets"})  # fmt: skip
_VALUED |= {"--ok", "-o", "--assert"}


def _glue_dash_values(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    known = {o for a in parser._actions for o in a.option_strings}
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if arg in _VALUED and nxt is not None and nxt.startswith("-") and nxt not in known:
            out.append(f"{arg}={nxt}")
            i += 2
            continue
        if arg == "--":
            out += argv[i:]
            break
        out.append(arg)
        i += 1
    return out


def parse_args(argv: Sequence[str]) -> tuple[Spec, argparse.Namespace]:
    """argv -> (Spec, the namespace for output options); UsageError on bad input, and
    only there: what can be checked before the first request is checked here."""
    parser = build_parser()
    ns = parser.parse_args(_glue_dash_values(list(argv), parser))
    targets: tuple[Line, ...] = ()
    if ns.targets is not None:
        from .targets import read_targets

        if ns.url is not None:
            raise _usage("--targets", "the file gives the URLs; drop the URL argument", parser)
        try:
            targets = read_targets(ns.targets)
        except SpecError as e:
            raise _usage("--targets", e.message, parser) from None
        ns.url = targets[0].url
    elif ns.url is None:
        raise _usage("URL", "no URL given", parser)
    body = b""
    if ns.body is not None:
        if ns.body.startswith("@"):
            try:
                with open(ns.body[1:], "rb") as f:
                    body = f.read()
            except OSError as e:
                raise _usage("-d", f"cannot read {ns.body[1:]!r}: {e.strerror}")
        else:
            # The bytes as given: argv that is not UTF-8 comes as surrogate escapes.
            body = os.fsencode(ns.body)
    if ns.output is not None and not ns.output.endswith((".json", ".csv")):
        raise _usage("-o", f"{ns.output!r} must end in .json or .csv")
    problem = reportcmd.outputs_problem(html_path=ns.html, save_path=ns.save)
    if problem is not None:
        flag, _, message = problem.partition(": ")
        raise _usage(flag, message)
    processes = ns.processes
    if processes == "auto":
        processes = max(1, min(os.cpu_count() or 1, ns.concurrency))
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
            processes=processes,
            ok=ns.ok,
            stages=tuple(ns.stages),
            script=ns.script,
            max_inflight=ns.max_inflight,
            targets=targets,
            targets_order=ns.targets_order,
        )
    except SpecError as e:
        raise _usage(FLAGS.get(e.field, e.field), e.message) from None
    if spec.script is not None:  # load it now: a broken script is a usage error, exit 2
        from .script import load_script

        try:
            load_script(spec.script)
        except SpecError as e:
            raise _usage("-f", e.message) from None
    return spec, ns


def _open_output(flag: str, path: str) -> IO[str]:
    """Open an output file now, so a path that cannot be written is a usage error before
    the run. In append mode: a run that cannot start leaves an existing file as it was."""
    try:
        return open(path, "a", encoding="utf-8")
    except OSError as e:
        raise _usage(flag, f"cannot write {path!r}: {e.strerror}") from None


async def _run(
    spec: Spec, ns: argparse.Namespace, view: Terminal | Lines | None, signals: list[int]
) -> Summary:
    """The run, with SIGINT and SIGTERM as a stop: the partial summary comes back, and
    ``signals`` says which one came first."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        signals.append(signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await run_async(
            spec,
            stop=stop,
            timeline=ns.output is not None or ns.html is not None or ns.save is not None,
            progress=view.show if view is not None else None,
        )
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if view is not None:
            view.close()


def _view(spec: Spec, ns: argparse.Namespace) -> Terminal | Lines | None:
    """The live view: a frame redrawn in place on a terminal, plain lines on stderr for a
    log (stdout keeps only the summary), nothing with --json."""
    if ns.json:
        return None
    if sys.stdout.isatty():
        return Terminal(sys.stdout, Frame(spec, shutil.get_terminal_size().columns))
    return Lines(sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``hit`` command. Returns the exit code."""
    open_stdio()
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 0 and args[0] == "report":  # the subcommand: a URL always starts with its scheme
        return reportcmd.main(args[1:])
    output: IO[str] | None = None
    # The files this run creates (each flag's path), opened before the first request:
    # found unwritable after the run they would waste it. One still empty at the end was
    # never written (the run could not start) and is removed.
    created: list[str] = []
    try:
        spec, ns = parse_args(args)
        for flag, path in (("-o", ns.output), ("--html", ns.html), ("--save", ns.save)):
            if path is None:
                continue
            new = not os.path.exists(path)
            f = _open_output(flag, path)
            if new:
                created.append(path)
            if flag == "-o":
                output = f
            else:
                f.close()
    except UsageError as e:
        _close(output)
        _remove_empty(created)
        say(f"hit: error: {e}\n  fix: {e.fix}\n")
        return EXIT_USAGE
    try:
        return _main(spec, ns, output, args)
    finally:
        _close(output)
        _remove_empty(created)


def _close(output: IO[str] | None) -> None:
    # A write that failed (a full disk) was said and counted; closing flushes it again.
    if output is not None:
        with contextlib.suppress(OSError):
            output.close()


def _remove_empty(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            if os.path.getsize(path) == 0:
                os.unlink(path)


def _main(spec: Spec, ns: argparse.Namespace, output: IO[str] | None, args: Sequence[str]) -> int:
    view = _view(spec, ns)
    signals: list[int] = []
    try:
        ensure_room(max(lanes for lanes, *_ in split(spec)), processes=spec.processes)
        # Everything imported so far lives for the whole run: keep the cyclic GC from
        # re-scanning it (the hot path allocates no cycles; this is ~1 % of a busy run).
        gc.freeze()
        try:
            summary = uvloop.run(_run(spec, ns, view, signals))
        finally:
            gc.unfreeze()
    except CannotStart as e:
        say(f"hit: cannot start: {e}\n")
        return EXIT_CANNOT_START
    except HitError as e:  # a worker process died: there is no summary to print
        say(f"hit: error: {e}\n")
        return EXIT_CANNOT_START
    unwritten = not out(report.json_text(summary) if ns.json else report.text(summary))
    if output is not None:
        try:
            if stat.S_ISREG(os.fstat(output.fileno()).st_mode):
                output.truncate(0)  # opened to append (`_open_output`): the run replaces it
            output.write(report.timeline_text(summary, ns.output))
            output.flush()
        except OSError as e:  # the disk filled up during the run
            say(f"hit: -o: cannot write {ns.output!r}: {e.strerror}\n")
            unwritten = True
    failed = False
    checked = report.check_all(ns.asserts, summary)
    for a, ok, actual in checked:
        if not ok:
            failed = True
            say(f"hit: assertion failed: {a.text} ({actual})\n")
    if ns.html is not None or ns.save is not None:
        verdicts = [saved.Verdict(a.text, ok, actual) for a, ok, actual in checked]
        run = saved.from_summary(summary, command=("hit", *args), spec=spec, verdicts=verdicts)
        for problem in reportcmd.write_outputs(run, html_path=ns.html, save_path=ns.save):
            say(f"hit: {problem}\n")  # the disk filled up during the run
            unwritten = True
    if summary.interrupted:
        return EXIT_TERMINATED if signals and signals[0] == signal.SIGTERM else EXIT_INTERRUPTED
    if unwritten:
        return EXIT_CANNOT_START
    return EXIT_ASSERT if failed else EXIT_OK
