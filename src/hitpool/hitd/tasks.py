"""Tasks: the functions hitd jobs run, found by name in a `Registry`.

    import hitpool

    @hitpool.task                         # registered as "send_email"
    async def send_email(to: str, subject: str = "") -> dict: ...

    @hitpool.task(timeout=10, name="resize")
    def resize_image(path: str, width: int) -> str: ...   # plain: runs on a thread

`hitd --tasks myapp.jobs` imports the module (`load_modules`), which registers its tasks.
A job's `args` are the keyword arguments; they are checked against the signature (and simple
annotations: str, int, float, bool, list, dict) when the job is submitted, so a bad argument
is a 400 naming the field (`args.width`) and never a job that can only fail.

Built-ins: `hello` (the seed's worker: waits `delay`, logs "worker<ID>: Hello, <name>!") and
`hit` (a load test with `hitpool.hit` in child processes, only against allowed targets,
loopback by default, so that hitd is no open relay).

This module stays import-light (stdlib only): `hitpool.task` re-exports `task`.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import importlib
import inspect
import ipaddress
import logging
import math
import os
import types
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload
from urllib.parse import urlsplit

from .. import durations
from .._errors import SpecError
from .errors import TaskError, UnknownTask

__all__ = [
    "HitLimits",
    "Registry",
    "TaskDef",
    "current_worker",
    "load_modules",
    "task",
]

log = logging.getLogger("hitpool.hitd.tasks")

F = TypeVar("F", bound=Callable[..., Any])

# The worker slot (1..workers) running the current job, as the seed's "worker<ID>".
current_worker: contextvars.ContextVar[int] = contextvars.ContextVar(
    "hitpool_hitd_worker", default=0
)

# Annotations we check at submit time; anything else is passed through unchecked.
_SIMPLE: dict[Any, tuple[type, ...]] = {
    str: (str,),
    int: (int,),
    float: (int, float),
    bool: (bool,),
    list: (list,),
    dict: (dict,),
}


@dataclass(frozen=True, slots=True)
class Param:
    """One keyword argument of a task, with the types checked at submit time."""

    name: str
    required: bool
    types: tuple[type, ...] | None  # None: not checked (no annotation, or not a simple type)
    # Classes accepted on sight, without the full check: every checked class but bool (an
    # int subclass, refused where the annotation says int) and float (must be finite).
    exact: frozenset[type] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        exact = frozenset(self.types or ()) - {bool, float}
        if self.types is not None and bool in self.types:
            exact |= {bool}
        object.__setattr__(self, "exact", exact)


@dataclass(frozen=True, slots=True)
class TaskDef:
    """A registered task. `params` is computed once from the signature, so checking a job's
    arguments costs a few dict lookups (it runs for every submitted job, and for every started
    job but those a runner with `args_checked` takes straight from a checked enqueue)."""

    name: str
    fn: Callable[..., Any]
    timeout: float | None  # seconds per attempt; None: no limit
    is_async: bool
    params: tuple[Param, ...] = field(repr=False)
    takes_any: bool = field(repr=False)  # the function has **kwargs
    # An extra check of the arguments (the built-in `hit` checks its target); it may return
    # normalized arguments.
    check: Callable[[Registry, dict[str, Any]], dict[str, Any]] | None = field(
        default=None, repr=False
    )

    def bind(self, args: Mapping[str, Any], registry: Registry) -> dict[str, Any]:
        """Check `args` against the signature; SpecError("args.<name>", ...) when wrong."""
        if not self.takes_any and len(args) > len(self.params):
            self._unknown(args)
        seen = 0
        for p in self.params:
            if p.name in args:
                seen += 1
                if p.types is not None:
                    value = args[p.name]
                    if value.__class__ not in p.exact:
                        _check_type(p, value)
            elif p.required:
                raise SpecError(f"args.{p.name}", f"required by task {self.name!r}")
        if seen != len(args) and not self.takes_any:
            self._unknown(args)
        out = dict(args)
        if self.check is not None:
            out = self.check(registry, out)
        return out

    def _unknown(self, args: Mapping[str, Any]) -> None:
        known = {p.name for p in self.params}
        name = next(n for n in args if n not in known)
        raise SpecError(
            f"args.{name}",
            f"unknown argument of task {self.name!r}; it takes: {', '.join(sorted(known))}",
        )


def _check_type(p: Param, value: Any) -> None:
    assert p.types is not None
    ok = isinstance(value, p.types)
    if ok and value.__class__ is bool:
        ok = bool in p.types  # Python's True is an int; JSON's true is not a number
    if ok and value.__class__ is float:
        ok = math.isfinite(value)
    if not ok:
        names = " or ".join(sorted({"null" if t is type(None) else t.__name__ for t in p.types}))
        raise SpecError(f"args.{p.name}", f"must be {names}, got {type(value).__name__}")


def _types_of(hint: Any) -> tuple[type, ...] | None:
    """The isinstance() tuple for an annotation, or None when it is not a simple type."""
    if hint is None or hint is Any:
        return None
    origin = typing.get_origin(hint)
    options = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
    allowed: list[type] = []
    for opt in options:
        if opt is type(None):
            allowed.append(type(None))
            continue
        base = typing.get_origin(opt) or opt
        if base not in _SIMPLE:
            return None  # a type we do not check (a dataclass, a Literal...): the task does
        allowed.extend(_SIMPLE[base])
    return tuple(dict.fromkeys(allowed))


def _make(fn: Callable[..., Any], name: str | None, timeout: float | None) -> TaskDef:
    if not callable(fn):
        raise TaskError(f"@task needs a function, got {fn!r}")
    if timeout is not None and not (
        isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0
    ):
        raise TaskError(f"task timeout must be a positive number of seconds, got {timeout!r}")
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: check names only
        hints = {}
    params: list[Param] = []
    takes_any = False
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            takes_any = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            params.append(Param(p.name, p.default is p.empty, _types_of(hints.get(p.name))))
    return TaskDef(
        name=name or fn.__name__,
        fn=fn,
        timeout=None if timeout is None else float(timeout),
        is_async=inspect.iscoroutinefunction(fn),
        params=tuple(params),
        takes_any=takes_any,
    )


@dataclass(frozen=True, slots=True)
class HitLimits:
    """Server-side caps of the built-in `hit` task (hitd --hit-max-*): one job must not be
    able to hold the server's descriptors or run for days."""

    max_requests: int = 1_000_000
    max_duration_s: float = 600.0
    max_concurrency: int = 1000  # connections over all of the job's processes
    allow_self: bool = False  # may target hitd's own listener (--hit-allow-self)


class Registry:
    """Tasks by name. A registry also sees the tasks `@hitpool.task` registered globally
    (`include_global=True`, the default) and the built-ins (`builtins=True`)."""

    def __init__(
        self,
        *,
        builtins: bool = True,
        include_global: bool = True,
        allowed_targets: Iterable[str] = (),
        hit_limits: HitLimits | None = None,
    ) -> None:
        self._tasks: dict[str, TaskDef] = {}
        self._include_global = include_global
        self.hit_limits = hit_limits or HitLimits()
        # Where this hitd listens, (host, port), once bound: the `hit` task may not target
        # it (a load test of the server from inside it; with batches, an amplifier).
        self.listeners: tuple[tuple[str, int], ...] = ()
        # What --allow-target lists: (host, port), port None for any port of the host.
        self.allowed_targets = frozenset(parse_target(t) for t in allowed_targets)
        if builtins:
            for t in _BUILTINS:
                self._tasks[t.name] = t
            # The caps checked at submission bound what a job asks for; this bounds what it
            # takes: a load test whose requests are slow cannot run past its cap either.
            hit_td = self._tasks["hit"]
            self._tasks["hit"] = dataclasses.replace(
                hit_td,
                fn=_requests_bounded(self.hit_limits.max_requests),
                timeout=self.hit_limits.max_duration_s + HIT_DRAIN_S,
            )

    def add(self, td: TaskDef) -> None:
        old = self._tasks.get(td.name)
        if old is not None and _qualname(old.fn) != _qualname(td.fn):
            raise TaskError(
                f"task name {td.name!r} is taken by {_qualname(old.fn)}; "
                f"pass @task(name=...) to {_qualname(td.fn)}"
            )
        self._tasks[td.name] = td

    @overload
    def task(self, fn: F, /) -> F: ...
    @overload
    def task(
        self, /, *, timeout: float | None = None, name: str | None = None
    ) -> Callable[[F], F]: ...
    def task(
        self, fn: F | None = None, /, *, timeout: float | None = None, name: str | None = None
    ) -> F | Callable[[F], F]:
        """Register a task in this registry: ``@reg.task`` or ``@reg.task(timeout=10)``."""

        def deco(f: F) -> F:
            self.add(_make(f, name, timeout))
            return f

        return deco if fn is None else deco(fn)

    def get(self, name: str) -> TaskDef:
        td = self._tasks.get(name)
        if td is None and self._include_global:
            td = GLOBAL._tasks.get(name)
        if td is None:
            raise UnknownTask(name)
        return td

    def names(self) -> list[str]:
        names = set(self._tasks)
        if self._include_global:
            names |= set(GLOBAL._tasks)
        return sorted(names)

    def check(self, name: str, args: Mapping[str, Any]) -> None:
        """UnknownTask for an unknown name, SpecError naming the field for bad args.
        What hitd calls for every submitted job, before it is committed."""
        self.get(name).bind(args, self)

    def is_own_listener(self, host: str, port: int) -> bool:
        """Whether host:port reaches this hitd: its port, on its address, on a local address
        (loopback, or 0.0.0.0 and ::, which Linux connects to this host), or on any address
        when it listens on all of them."""
        h = host.strip("[]").lower()
        for lhost, lport in self.listeners:
            if port != lport:
                continue
            lh = lhost.strip("[]").lower()
            if h == lh or lh in ("", "0.0.0.0", "::") or is_local(h):
                return True
        return False

    def target_allowed(self, host: str, port: int) -> bool:
        """Whether the `hit` task may load-test host:port.

        Listed (--allow-target HOST or HOST:PORT) always. Unlisted local addresses only
        while every listener of this hitd is on loopback: then whoever can submit a job can
        reach those ports without hitd. A hitd that listens on another address would
        otherwise tell a remote client which local ports are open (a test of a closed port
        fails with connect_refused, of an open one it does not): there, list what may be
        tested, with its port."""
        h = host.strip("[]").lower()
        if (h, port) in self.allowed_targets or (h, None) in self.allowed_targets:
            return True
        return is_local(h) and all(
            is_local(lh.strip("[]"), wildcard=False) for lh, _ in self.listeners
        )


def is_local(host: str, wildcard: bool = True) -> bool:
    """A name or address that connects to this host: localhost, loopback (127.0.0.0/8, ::1,
    and ::ffff:127.x.y.z), or (`wildcard`) the unspecified 0.0.0.0 and ::, which a listener
    takes for every address but a client connects to this host."""
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or (wildcard and ip.is_unspecified)


def parse_target(text: str) -> tuple[str, int | None]:
    """--allow-target's HOST, HOST:PORT, [IPv6] or [IPv6]:PORT -> (host, port or None).

    SpecError("--allow-target", ...) when the port is not a number from 1 to 65535."""
    t = text.strip().lower()
    port: str | None = None
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise SpecError("--allow-target", f"{text!r}: give [IPv6] or [IPv6]:PORT")
            port = rest[1:]
    elif t.count(":") == 1:
        host, _, port = t.partition(":")
    else:
        host = t  # a name, an IPv4 address or a bare IPv6 address
    if not host:
        raise SpecError("--allow-target", f"{text!r}: give a HOST or HOST:PORT")
    if port is None:
        return host, None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SpecError("--allow-target", f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port)


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


# Where `@hitpool.task` registers: modules loaded with --tasks put their tasks here.
GLOBAL = Registry(builtins=False, include_global=False)


@overload
def task(fn: F, /) -> F: ...
@overload
def task(*, timeout: float | None = None, name: str | None = None) -> Callable[[F], F]: ...
def task(
    fn: F | None = None, /, *, timeout: float | None = None, name: str | None = None
) -> F | Callable[[F], F]:
    """Mark a function as a hitd task: ``@hitpool.task`` or ``@hitpool.task(timeout=10)``.

    Async functions run on the event loop; plain functions run on a thread. `timeout` bounds
    one attempt (a thread cannot be killed: its attempt is failed and the thread left to end).
    """
    if fn is None:
        return GLOBAL.task(timeout=timeout, name=name)
    return GLOBAL.task(fn)


def load_modules(names: Iterable[str]) -> list[str]:
    """Import task modules (`hitd --tasks myapp.jobs`). Returns the task names now known.

    SpecError("tasks", ...) when a module cannot be imported, with the reason.
    """
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise SpecError(
                "tasks", f"cannot import {name!r}: {e}; check the module path and PYTHONPATH"
            ) from e
    return GLOBAL.names()


# -- the built-ins ----------------------------------------------------------------------------

HELLO_MAX_DELAY_S = 3600.0


async def hello(name: str = "world", delay: float | str = 0) -> str:
    """The seed's work request: wait `delay`, then greet `name` as worker<ID>."""
    if delay.__class__ in (int, float) and 0 <= delay <= HELLO_MAX_DELAY_S:  # the usual case
        seconds = float(delay)
    else:
        seconds = durations.parse_seconds(delay, "args.delay", max_s=HELLO_MAX_DELAY_S)
    wid = current_worker.get()
    if log.isEnabledFor(logging.DEBUG):
        log.debug("worker%d: Received work request, delaying for %g seconds", wid, seconds)
    if seconds > 0:
        await asyncio.sleep(seconds)
    log.info("worker%d: Hello, %s!", wid, name)
    return f"Hello, {name}!"


def _check_hello(registry: Registry, args: dict[str, Any]) -> dict[str, Any]:
    if "delay" in args:
        durations.parse_seconds(args["delay"], "args.delay", max_s=HELLO_MAX_DELAY_S)
    return args


# What a `hit` job gets beyond --hit-max-duration before its attempt is timed out: the
# requests in flight when its duration ends have their `timeout`, which is capped to this.
HIT_DRAIN_S = 60.0

# The JSON type each `hit` argument must have: checked before hit's Spec sees it, so that a
# wrong type is a 400 naming the field whatever Spec does with it.
_HIT_TYPES: dict[str, tuple[type, ...]] = {
    "url": (str,),
    "requests": (int,),
    "concurrency": (int,),
    "rps": (int, float),
    "duration": (int, float, str),
    "method": (str,),
    "headers": (dict, list),
    "body": (str,),
    "content_type": (str,),
    "timeout": (int, float, str),
    "insecure": (bool,),
    "processes": (int, str),
    "ok": (str, list),
}


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", str: "string"}.get(
        type(value), "array" if isinstance(value, list) else "object"
    )


def _check_hit_types(args: Mapping[str, Any]) -> None:
    for name, value in args.items():
        allowed = _HIT_TYPES.get(name)
        if allowed is None or value is None:
            continue  # unknown names and nulls: hit's Spec words those
        if not isinstance(value, allowed) or (value.__class__ is bool and bool not in allowed):
            kinds = sorted({_json_type(t()) for t in allowed})
            what = "whole number" if allowed == (int,) else " or ".join(kinds)
            raise SpecError(f"args.{name}", f"must be a {what}, got {_json_type(value)}")
    headers = args.get("headers")
    if isinstance(headers, dict):
        for key, value in headers.items():
            if not isinstance(value, str):
                raise SpecError(f"args.headers.{key}", "a header value must be a string")
    elif isinstance(headers, list):
        for i, h in enumerate(headers):
            pair = isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h)
            if not (isinstance(h, str) or pair):
                raise SpecError(
                    f"args.headers[{i}]", 'must be "Name: value" or a pair ["Name", "value"]'
                )
    ok = args.get("ok")
    if isinstance(ok, list):
        for i, r in enumerate(ok):
            if not (
                isinstance(r, list)
                and len(r) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in r)
            ):
                raise SpecError(f"args.ok[{i}]", "must be a range [low, high] of statuses")


def _check_hit(registry: Registry, args: dict[str, Any]) -> dict[str, Any]:
    from ..hit.spec import Spec  # stdlib-only module; the client is imported when run

    _check_hit_types(args)
    try:
        spec = Spec.from_dict(args)
    except SpecError as e:
        raise SpecError(f"args.{e.field}", e.message) from None
    except (TypeError, ValueError, AttributeError) as e:  # what Spec did not word itself
        raise SpecError("args", f"not a valid load test: {e}") from None
    limits = registry.hit_limits
    if spec.requests is not None and spec.requests > limits.max_requests:
        raise SpecError(
            "args.requests",
            f"at most {limits.max_requests} (hitd --hit-max-requests), got {spec.requests}",
        )
    if spec.duration is not None and spec.duration > limits.max_duration_s:
        raise SpecError(
            "args.duration",
            f"at most {limits.max_duration_s:g} s (hitd --hit-max-duration)",
        )
    if (
        spec.duration is None
        and spec.rps
        and (spec.requests or 0) / spec.rps > (limits.max_duration_s)
    ):
        raise SpecError(
            "args.rps",
            f"{spec.requests} requests at {spec.rps:g}/s take longer than "
            f"{limits.max_duration_s:g} s (hitd --hit-max-duration): raise rps or add duration",
        )
    if (
        spec.requests is None
        and spec.rps
        and spec.duration
        and (spec.rps * spec.duration > limits.max_requests)
    ):
        raise SpecError(
            "args.rps",
            f"{spec.rps:g}/s for {spec.duration:g} s is more than {limits.max_requests} "
            "requests (hitd --hit-max-requests): lower rps or duration, or give requests",
        )
    if spec.timeout > HIT_DRAIN_S:
        raise SpecError(
            "args.timeout",
            f"at most {HIT_DRAIN_S:g} s per request from hitd (the `hit` CLI allows more)",
        )
    if spec.concurrency * spec.processes > limits.max_concurrency:
        raise SpecError(
            "args.concurrency",
            f"at most {limits.max_concurrency} connections over all processes "
            f"(hitd --hit-max-concurrency), got {spec.concurrency} x {spec.processes}",
        )
    cores = os.cpu_count() or 1
    if spec.processes > cores:
        # Each process is a child of hitd: more than one per core only competes with hitd.
        raise SpecError(
            "args.processes", f"at most {cores} (one per core): each is a child process of hitd"
        )
    parts = urlsplit(spec.url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise SpecError("args.url", "the port is not a number from 0 to 65535") from None
    if not limits.allow_self and registry.is_own_listener(host, port):
        raise SpecError(
            "args.url",
            f"{host}:{port} is this hitd's own listener: a load test of the server from "
            "inside it competes with its intake (start hitd with --hit-allow-self to allow)",
        )
    if not registry.target_allowed(host, port):
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise SpecError(
            "args.url",
            f"target {where} is not allowed: hitd targets only its own host's loopback "
            f"ports, and those only while it listens on loopback, unless started with "
            f"--allow-target {where}",
        )
    return args


async def hit(**spec: Any) -> dict[str, Any]:
    """A load test with `hitpool.hit`, in child processes; the result is hit's JSON summary."""
    # Imported here, not at the top: the client pulls in uvloop and httptools.
    from ..hit import Spec, run_async
    from ..hit.charts import run_charts
    from ..hit.report import timeline_rows

    # isolate: even one process is a child, so a heavy load test does not compete with this
    # server's intake and workers for its loop and core; the loop only waits on a pipe.
    summary = await run_async(Spec.from_dict(spec), isolate=True, timeline=True)
    # The per-second timeline (requests, errors, p50, p99), and the HTML report's charts
    # (downsampled, hit/charts.py), which the dashboard draws as the report does.
    return {**summary.to_json(), "timeline": timeline_rows(summary), "charts": run_charts(summary)}


def _requests_bounded(max_requests: int) -> Callable[..., Awaitable[dict[str, Any]]]:
    """The `hit` task as a registry runs it: a test bounded by its duration alone (no
    `requests`) sends at most `max_requests` (--hit-max-requests), ending at whichever
    comes first, as hit does with -n and -z both given."""

    async def bounded_hit(**spec: Any) -> dict[str, Any]:
        if spec.get("requests") is None and spec.get("duration") is not None:
            spec["requests"] = max_requests
        return await hit(**spec)

    return bounded_hit


def _builtin(
    fn: Callable[..., Any], check: Callable[[Registry, dict[str, Any]], dict[str, Any]]
) -> TaskDef:
    td = _make(fn, None, None)
    return TaskDef(td.name, td.fn, td.timeout, td.is_async, td.params, td.takes_any, check)


_BUILTINS: tuple[TaskDef, ...] = (_builtin(hello, _check_hello), _builtin(hit, _check_hit))
