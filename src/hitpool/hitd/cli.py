"""`hitd`: the command line. It parses argv (and the environment) into a `ServerConfig` and
runs the server, or, for `hitd worker`, into a `WorkerConfig` and runs workers only; nothing
else. Bad input names the flag and the fix and exits 2.

    hitd [flags]                  intake and workers (`--workers 0`: intake only)
    hitd worker --store URL ...   workers only, no HTTP listener

Environment variables (a flag wins over its variable): MAX_WORKERS (--workers), MAX_QUEUE
(--queue-size) -- the seeds' names -- HITD_STORE (--store), HITD_TOKEN (--token),
HITD_RETENTION (--retention).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

from .._errors import SpecError
from ..durations import parse_seconds
from .retention import DEFAULT_RETENTION
from .server import DEFAULT_STORE, ServerConfig, run
from .tasks import HitLimits, parse_target
from .worker import WorkerConfig, check_shared, run_worker

__all__ = ["build_parser", "build_worker_parser", "main", "parse_config", "parse_worker_config"]


def _positive_int(flag: str, example: str, minimum: int = 1) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            what = "a positive" if minimum == 1 else f"a {minimum} or more"
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {what} whole number: use e.g. {flag} {example}"
            )
        return value

    return convert


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a TCP port: use 0..65535 (0 picks a free one)"
        )
    return value


def _seconds(flag: str) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a positive number of seconds: use e.g. {flag} 30"
            )
        return value

    return convert


def _retention(text: str) -> float:
    """A Go duration ("168h", "30m") or seconds; 0 keeps finished jobs forever."""
    try:
        return parse_seconds(text, "--retention")
    except SpecError:
        # Our own fix, not the parser's short examples: "7d" is the likely mistake.
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use e.g. --retention 168h (a week; Go durations "
            "have no days), 30m, or 0 to keep finished jobs forever"
        ) from None


def _hit_duration(text: str) -> float:
    try:
        value = parse_seconds(text, "--hit-max-duration")
    except SpecError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a positive duration: use e.g. --hit-max-duration 10m (or 600)"
        )
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"hitd: error: {message}\n")


def _add_tasks(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tasks",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE for its @hitpool.task functions (repeatable)",
    )


def _add_allow_target(p: argparse.ArgumentParser, default_note: str) -> None:
    p.add_argument(
        "--allow-target",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help=f"a host, or one port of it, the `hit` task may load-test (repeatable{default_note})",
    )


def _add_grace(p: argparse.ArgumentParser, then: str) -> None:
    p.add_argument(
        "--grace",
        type=_seconds("--grace"),
        metavar="SECONDS",
        default=30.0,
        help=f"on SIGTERM, seconds running jobs get to finish{then} (default %(default)s)",
    )


def _add_lease(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--lease",
        type=_seconds("--lease"),
        metavar="SECONDS",
        default=30.0,
        help="seconds a worker holds a job between renewals; a job whose worker died runs "
        "again after it (default %(default)s)",
    )


def _add_log_level(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="log level (default %(default)s)",
    )


def _add_hit_caps(p: argparse.ArgumentParser) -> None:
    """The `hit` task's server-side caps: checked where a job is submitted and where it runs."""
    p.add_argument(
        "--hit-max-requests",
        type=_positive_int("--hit-max-requests", "1000000"),
        default=1_000_000,
        metavar="N",
        help="most requests one `hit` job may send (default %(default)s)",
    )
    p.add_argument(
        "--hit-max-duration",
        type=_hit_duration,
        default=600.0,
        metavar="DURATION",
        help="longest `hit` job: its duration, or its requests at its rps (default 10m)",
    )
    p.add_argument(
        "--hit-max-concurrency",
        type=_positive_int("--hit-max-concurrency", "1000"),
        default=1000,
        metavar="N",
        help="most connections of one `hit` job over all its processes (default %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="hitd",
        description="The durable HTTP job server: POST jobs, get a 202 once they are committed, "
        "a fixed pool of workers runs them.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument(
        "--port", type=_port, default=8080, help="port to listen on, 0 for any (default 8080)"
    )
    p.add_argument(
        "--workers",
        type=_positive_int("--workers", "16", minimum=0),
        metavar="N",
        help="jobs run at once; 0: intake only, for `hitd worker` processes on a shared "
        "PostgreSQL store (env MAX_WORKERS; default 16)",
    )
    p.add_argument(
        "--queue-size",
        type=_positive_int("--queue-size", "100000"),
        metavar="M",
        help="jobs that may wait; beyond it POST answers 429 (env MAX_QUEUE; default 100000)",
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help="where jobs live: sqlite:///relative.db or sqlite:////absolute.db (durable: WAL, "
        "synchronous=FULL; one process), postgresql://user@host:port/db (shared by intakes "
        "and workers), or memory:// (jobs die with the process) "
        f"(env HITD_STORE; default {DEFAULT_STORE})",
    )
    _add_tasks(p)
    p.add_argument(
        "--token",
        metavar="T",
        help="require 'Authorization: Bearer TOKEN' on every endpoint but /healthz "
        "(env HITD_TOKEN)",
    )
    _add_allow_target(
        p, "; by default only loopback ports, and only while hitd listens on loopback"
    )
    _add_grace(p, " before their leases are released")
    _add_lease(p)
    p.add_argument(
        "--retention",
        type=_retention,
        metavar="DURATION",
        help="delete finished jobs (succeeded, failed, dead, cancelled) this long after they "
        "finished, checked every minute; 0 keeps them forever "
        f"(env HITD_RETENTION; default {DEFAULT_RETENTION})",
    )
    p.add_argument(
        "--max-body",
        type=_positive_int("--max-body", "1048576"),
        default=1024 * 1024,
        metavar="BYTES",
        help="largest request body; larger ones answer 413 (default 1 MiB)",
    )
    # --- clients and the `hit` task: bounds on what one client or one job may hold ---------
    p.add_argument(
        "--max-connections",
        type=_positive_int("--max-connections", "10000"),
        default=10_000,
        metavar="N",
        help="connections served at once; more get 503 and are closed (logged once). Lowered "
        "to leave an eighth of the open-files limit (raised to the hard limit at start) for "
        "the rest (default %(default)s)",
    )
    p.add_argument(
        "--first-byte-timeout",
        type=_seconds("--first-byte-timeout"),
        default=10.0,
        metavar="SECONDS",
        help="a connection that sends nothing is closed after this, not after the keep-alive "
        "timeout (default %(default)s)",
    )
    _add_hit_caps(p)
    p.add_argument(
        "--hit-allow-self",
        action="store_true",
        help="let the `hit` task target this hitd's own listener (refused by default: a load "
        "test from inside the server competes with it, and batches of jobs amplify)",
    )
    p.add_argument(
        "--ui",
        choices=["on", "read-only", "off"],
        default="on",
        help="the dashboard at /ui: on; read-only (no retry, cancel or delete from the page, "
        "and the retry and delete routes refused); off (no page) (default %(default)s)",
    )
    _add_log_level(p)
    return p


def _env_int(env: Mapping[str, str], name: str, flag: str, minimum: int = 1) -> int | None:
    text = env.get(name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        what = "a positive" if minimum == 1 else f"a {minimum} or more"
        raise SpecError(name, f"{text!r} is not {what} whole number (it sets {flag})")
    return value


def _first(*values: int | None, default: int) -> int:
    """The first value given (a flag before its variable); 0 counts as given."""
    return next((v for v in values if v is not None), default)


def _env_retention(env: Mapping[str, str]) -> float:
    text = env.get("HITD_RETENTION") or DEFAULT_RETENTION
    try:
        return _retention(text)
    except argparse.ArgumentTypeError as e:
        raise SpecError("HITD_RETENTION", f"{e} (it sets --retention)") from None


def parse_config(argv: Sequence[str] | None, env: Mapping[str, str]) -> ServerConfig:
    """argv + environment -> ServerConfig. Exits 2 (argparse) or raises SpecError."""
    args = build_parser().parse_args(argv)
    workers = _first(args.workers, _env_int(env, "MAX_WORKERS", "--workers", 0), default=16)
    queue_size = args.queue_size or _env_int(env, "MAX_QUEUE", "--queue-size") or 100_000
    store = args.store or env.get("HITD_STORE") or DEFAULT_STORE
    token = args.token if args.token is not None else env.get("HITD_TOKEN") or None
    if token is not None and (not token or token != token.strip(" \t") or not token.isprintable()):
        raise SpecError(
            "--token",
            "empty, or spaces at its ends or control characters, which "
            "no client can send in a header: give a secret, or leave the flag out",
        )
    for target in args.allow_target:
        parse_target(target)  # SpecError naming --allow-target when malformed
    retention_s = args.retention if args.retention is not None else _env_retention(env)
    if workers == 0:
        check_shared(store, "--workers 0 (intake only)")
    return ServerConfig(
        host=args.host,
        port=args.port,
        workers=workers,
        queue_size=queue_size,
        store=store,
        tasks=tuple(args.tasks),
        token=token,
        allow_targets=tuple(args.allow_target),
        grace_s=args.grace,
        lease_s=args.lease,
        max_body_bytes=args.max_body,
        log_level=args.log_level,
        retention_s=retention_s,
        ui=args.ui,
        max_connections=args.max_connections,
        first_byte_timeout_s=args.first_byte_timeout,
        hit_limits=HitLimits(
            max_requests=args.hit_max_requests,
            max_duration_s=args.hit_max_duration,
            max_concurrency=args.hit_max_concurrency,
            allow_self=args.hit_allow_self,
        ),
    )


def build_worker_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="hitd worker",
        description="Workers only, no HTTP listener: run the jobs that intakes (hitd, "
        "hitd --workers 0) commit to a shared PostgreSQL store. SIGTERM drains.",
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help="the store shared with the intakes: postgresql://user@host:port/db[?schema=name] "
        "(env HITD_STORE)",
    )
    p.add_argument(
        "--workers",
        type=_positive_int("--workers", "16"),
        metavar="N",
        help="jobs run at once (env MAX_WORKERS; default 16)",
    )
    _add_tasks(p)
    _add_allow_target(p, "")
    _add_hit_caps(p)
    _add_grace(p, "")
    _add_lease(p)
    _add_log_level(p)
    return p


def parse_worker_config(argv: Sequence[str], env: Mapping[str, str]) -> WorkerConfig:
    """`hitd worker` argv + environment -> WorkerConfig. Exits 2 (argparse) or raises
    SpecError."""
    args = build_worker_parser().parse_args(argv)
    store = args.store or env.get("HITD_STORE")
    if not store:
        raise SpecError(
            "--store", "hitd worker needs the store the intakes use: --store postgresql://..."
        )
    check_shared(store, "hitd worker")
    for target in args.allow_target:
        parse_target(target)  # SpecError naming --allow-target when malformed
    return WorkerConfig(
        store=store,
        workers=_first(args.workers, _env_int(env, "MAX_WORKERS", "--workers"), default=16),
        tasks=tuple(args.tasks),
        allow_targets=tuple(args.allow_target),
        grace_s=args.grace,
        lease_s=args.lease,
        log_level=args.log_level,
        hit_limits=HitLimits(
            max_requests=args.hit_max_requests,
            max_duration_s=args.hit_max_duration,
            max_concurrency=args.hit_max_concurrency,
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    worker = bool(argv) and argv[0] == "worker"
    try:
        config = (
            parse_worker_config(argv[1:], os.environ) if worker else parse_config(argv, os.environ)
        )
    except SpecError as e:
        field = e.field if e.field.startswith("--") or e.field.isupper() else f"--{e.field}"
        print(f"hitd: error: {field}: {e.message}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if isinstance(config, WorkerConfig):
        return run_worker(config)
    return run(config)


if __name__ == "__main__":
    raise SystemExit(main())
