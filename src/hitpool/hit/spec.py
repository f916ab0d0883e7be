"""What a load test is: a frozen, validated `Spec`, and the parsers for its flag values.

Every check raises `SpecError(field, message)` where ``field`` is the Spec field name
(``requests``, ``concurrency``...); the CLI maps it to the flag (``-n``, ``-c``...) in
`FLAGS`, and hitd answers 4xx naming the field.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from .._errors import SpecError
from ..durations import parse_seconds
from ..schedule import Stage, StagedSchedule

if TYPE_CHECKING:
    from .targets import Line

# The flag each Spec field comes from, for CLI messages.
FLAGS = {
    "url": "URL",
    "requests": "-n",
    "concurrency": "-c",
    "rps": "--rps",
    "duration": "-z",
    "method": "-m",
    "headers": "-H",
    "body": "-d",
    "content_type": "-T",
    "timeout": "-t",
    "insecure": "-k",
    "processes": "-p",
    "ok": "--ok",
    "stages": "--stage",
    "script": "-f",
    "max_inflight": "--max-inflight",
    "targets": "--targets",
    "targets_order": "--targets-order",
}
# Fields hitd's JSON input may not set: a script runs Python and a targets file reads
# body files, both from the server's disk.
LOCAL_ONLY = frozenset({"script", "max_inflight", "targets", "targets_order"})

DEFAULT_REQUESTS = 200  # hey's default, used when neither -n nor -z is given
DEFAULT_CONCURRENCY = 50
DEFAULT_TIMEOUT = 30.0

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 token


def parse_header(text: str) -> tuple[str, str]:
    """``'Name: value'`` -> ``('Name', 'value')``."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _TOKEN.match(name):
        raise SpecError("headers", f"{text!r} is not a header; write 'Name: value'")
    if "\r" in value or "\n" in value:
        raise SpecError("headers", f"{name}: a header value cannot hold a line break")
    if not _latin1(value):
        raise SpecError(
            "headers",
            f"{name}: {value!r} is not ISO-8859-1 text, all HTTP/1.1 carries in a header; "
            "percent-encode it",
        )
    return name, value


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def parse_ok(text: str) -> tuple[tuple[int, int], ...]:
    """``'200-399'``, ``'200,204,300-302'`` -> inclusive status ranges."""
    out: list[tuple[int, int]] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise SpecError("ok", f"{text!r} is not a status list; write e.g. 200-399 or 200,204")
        out.append((a, b))
    return tuple(out)


def parse_processes(text: str) -> int:
    """``'auto'`` (one per core) or a positive integer."""
    if text == "auto":
        return os.cpu_count() or 1
    try:
        return int(text)
    except ValueError:
        raise SpecError("processes", f"{text!r} is not a number; write e.g. 2 or auto")


@dataclass(frozen=True, slots=True)
class Target:
    """The parts of the URL the client needs."""

    scheme: str
    host: str  # without brackets: '::1', 'example.com'
    port: int
    path: str  # path and query, at least '/'
    host_header: str  # 'example.com', 'example.com:8080', '[::1]:8080'
    authorization: str | None = None  # 'Basic ...' from user:password@ in the URL
    shown: str = ""  # the URL as reports print it: its password replaced by ***

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


def parse_url(url: str) -> Target:
    if not isinstance(url, str):
        raise SpecError("url", f"must be a string like http://127.0.0.1:8080/, got {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise SpecError("url", f"{url!r} is not a URL ({e}); write e.g. http://127.0.0.1:8080/")
    if parts.scheme not in ("http", "https"):
        raise SpecError("url", f"{url!r} must start with http:// or https://")
    host = parts.hostname
    if not host:
        raise SpecError("url", f"{url!r} has no host; write e.g. http://127.0.0.1:8080/")
    default = 443 if parts.scheme == "https" else 80
    if port == 0:
        raise SpecError("url", f"{url!r}: port 0 cannot be connected to; give the server's port")
    port = default if port is None else port
    if not host.isascii():  # an internationalized name: its ASCII (IDNA) form on the wire
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as e:
            raise SpecError("url", f"{url!r}: the host is not a valid name ({e})")
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default else f"{shown}:{port}"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if any(c in path for c in " \r\n"):
        raise SpecError("url", "the path cannot hold spaces or line breaks; percent-encode them")
    if not path.isascii():  # as a browser does: UTF-8, percent-encoded
        path = quote(path, safe="".join(map(chr, range(33, 127))))
    authorization, shown = None, url
    if parts.username is not None:
        # RFC 3986 userinfo is percent-encoded; Basic auth carries it decoded, as curl sends it
        # (RFC 7617: user-id ":" password, UTF-8, base64).
        userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(userinfo.encode()).decode("ascii")
        if parts.password is not None:
            netloc = parts.netloc.rpartition("@")[2]
            shown = parts._replace(netloc=f"{parts.username}:***@{netloc}").geturl()
    return Target(parts.scheme, host, port, path, host_header, authorization, shown)


@dataclass(frozen=True, slots=True)
class Spec:
    """A load test. ``requests`` and/or ``duration`` bound it (whichever ends first)."""

    url: str
    requests: int | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    rps: float | None = None  # the TOTAL rate across connections and processes
    duration: float | None = None
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    content_type: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    insecure: bool = False
    processes: int = 1
    ok: tuple[tuple[int, int], ...] = ((200, 299),)
    # --stage: the rate's shape over time (open model); without -z the run lasts the stages
    stages: tuple[Stage, ...] = ()
    # -f: a scenario script; then -n counts iterations, --rps is iterations per second
    # and -c the virtual users of the closed model
    script: str | None = None
    max_inflight: int | None = None  # -f under --rps: iterations in flight at most
    # --targets: many URLs (targets.Line), each request to the next line or a random one
    targets: tuple[Line, ...] = ()
    targets_order: str = "sequential"
    target: Target = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Every check raises SpecError naming the field, whatever the type of the value:
        # a Spec is also built from JSON (hitd's `hit` task), where anything can come.
        object.__setattr__(self, "target", parse_url(self.url))
        if self.stages:
            if self.rps is not None:
                raise SpecError(
                    "stages", "--stage sets the rate over time: give --stage or --rps, not both"
                )
            if not all(isinstance(st, Stage) for st in self.stages):
                raise SpecError("stages", "each stage is a Stage, e.g. parse_stage('30s:100')")
            if self.duration is None:
                object.__setattr__(self, "duration", StagedSchedule(self.stages).seconds)
        if self.requests is None and self.duration is None:
            object.__setattr__(self, "requests", DEFAULT_REQUESTS)
        _positive_int("requests", self.requests, "the number of requests, e.g. -n 1000")
        _positive_int("concurrency", self.concurrency, "connections in flight, e.g. -c 50")
        _positive_int("processes", self.processes, "worker processes, e.g. -p 2 or -p auto")
        if self.processes > self.concurrency:
            raise SpecError(
                "processes",
                f"{self.processes} processes need at least one connection each, and "
                f"concurrency (-c) is {self.concurrency}: each process's share of the rate and "
                "the requests is its share of the connections",
            )
        _positive_int("max_inflight", self.max_inflight, "iterations in flight, e.g. 1000")
        if self.max_inflight is not None and self.script is None and not self.targets:
            raise SpecError(
                "max_inflight", "caps the iterations of -f (or the requests of --targets)"
            )
        if self.script is not None and (self.body or self.content_type or self.method != "GET"):
            raise SpecError(
                "script", "a scenario's requests carry their own method and body: drop -m/-d/-T"
            )
        if self.targets:
            if self.script is not None:
                raise SpecError("targets", "give a script (-f) or a targets file, not both")
            if self.body or self.content_type or self.method != "GET":
                raise SpecError("targets", "each line gives its own method and body: drop -m/-d/-T")
        if self.targets_order not in ("sequential", "random"):
            raise SpecError("targets_order", f"{self.targets_order!r}: write sequential or random")
        for name, value in (("rps", self.rps), ("duration", self.duration)):
            if value is not None and not (_number(value) and 0 < value < 1e12):
                raise SpecError(name, f"must be a positive number, got {value!r}")
        if not (_number(self.timeout) and 0 < self.timeout <= 86400):
            raise SpecError("timeout", f"must be a positive duration, got {self.timeout!r}")
        if not isinstance(self.method, str) or not _TOKEN.match(self.method):
            raise SpecError("method", f"{self.method!r} is not an HTTP method, e.g. GET or POST")
        if not isinstance(self.headers, tuple):
            raise SpecError("headers", f"must be (name, value) pairs, got {self.headers!r}")
        for pair in self.headers:
            if not (isinstance(pair, tuple) and len(pair) == 2 and all(_text(x) for x in pair)):
                raise SpecError("headers", f"{pair!r} is not a (name, value) pair of strings")
            parse_header(f"{pair[0]}: {pair[1]}")
        if not isinstance(self.body, bytes):
            raise SpecError("body", f"must be bytes (a string from JSON), got {self.body!r}")
        _check_framing(self.headers, len(self.body))
        if not isinstance(self.insecure, bool):
            raise SpecError("insecure", f"must be true or false, got {self.insecure!r}")
        if not isinstance(self.ok, tuple) or not self.ok:
            raise SpecError("ok", f"must be status ranges like 200-399, got {self.ok!r}")
        for status_range in self.ok:
            if not (
                isinstance(status_range, tuple)
                and len(status_range) == 2
                and all(_integer(x) for x in status_range)
            ):
                raise SpecError("ok", f"{status_range!r} is not a status range like (200, 399)")
            lo, hi = status_range
            if not 100 <= lo <= hi <= 999:
                raise SpecError("ok", f"{lo}-{hi} is not a status range within 100-999")
        ctype = self.content_type
        if ctype is not None and (
            not isinstance(ctype, str) or any(c in ctype for c in "\r\n") or not _latin1(ctype)
        ):
            raise SpecError("content_type", f"{ctype!r}: a media type like application/json")

    @property
    def lanes(self) -> int:
        """Connections actually used: never more than the requests to send."""
        return min(self.concurrency, self.requests) if self.requests else self.concurrency

    @property
    def target_rps(self) -> float | None:
        """The rate asked for: --rps, or the mean rate of the stages."""
        if self.stages:
            return StagedSchedule(self.stages).mean_rate
        return self.rps

    def is_ok(self, status: int) -> bool:
        return any(lo <= status <= hi for lo, hi in self.ok)

    def request_bytes(self) -> bytes:
        """The request, built once and written as is for every request."""
        t = self.target
        names = {n.lower() for n, _ in self.headers}
        host = next((v for n, v in self.headers if n.lower() == "host"), t.host_header)
        lines = [f"{self.method} {t.path} HTTP/1.1", f"Host: {host}"]  # -H Host: overrides
        if t.authorization is not None and "authorization" not in names:  # -H wins
            lines.append(f"Authorization: {t.authorization}")
        if "user-agent" not in names:
            lines.append("User-Agent: hit/0.1")
        if "accept" not in names:
            lines.append("Accept: */*")
        lines += [f"{n}: {v}" for n, v in self.headers if n.lower() != "host"]
        if self.content_type and "content-type" not in names:
            lines.append(f"Content-Type: {self.content_type}")
        if (self.body or self.method in ("POST", "PUT", "PATCH")) and "content-length" not in names:
            lines.append(f"Content-Length: {len(self.body)}")  # -H gave the same (_check_framing)
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("latin-1") + self.body

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Spec:
        """A Spec from JSON-ish input (hitd's ``hit`` task): durations may be '10s' strings,
        ``headers`` a mapping or a list of 'Name: value', ``body`` a string, ``ok`` '200-399'."""
        known = set(FLAGS) - LOCAL_ONLY
        unknown = set(data) - known
        if unknown:
            raise SpecError(sorted(unknown)[0], f"unknown field; known: {', '.join(sorted(known))}")
        if "url" not in data:
            raise SpecError("url", "is required")
        kw: dict[str, Any] = dict(data)
        for name in ("duration", "timeout"):
            if isinstance(kw.get(name), str):
                kw[name] = parse_seconds(kw[name], name)
        if "headers" in kw:
            kw["headers"] = _headers_from(kw["headers"])
        if isinstance(kw.get("body"), str):
            kw["body"] = kw["body"].encode()
        if "ok" in kw:
            kw["ok"] = _ok_from(kw["ok"])
        if isinstance(kw.get("stages"), list | tuple):
            kw["stages"] = tuple(
                parse_stage(st) if isinstance(st, str) else st for st in kw["stages"]
            )
        if isinstance(kw.get("processes"), str):
            kw["processes"] = parse_processes(kw["processes"])
        return cls(**kw)


def _check_framing(headers: tuple[tuple[str, str], ...], body_length: int) -> None:
    """hit frames each request's body with its Content-Length (RFC 9112 6.2, 6.3): a -H
    that says otherwise would send a second, conflicting length (a server answers 400, or
    closes), or, on a keep-alive connection, let the server read the next request's first
    bytes as this body. One equal to the body's length is sent in place of hit's own."""
    for name, value in headers:
        low = name.lower()
        if low == "transfer-encoding":
            raise SpecError(
                "headers",
                f"{name}: {value}: hit sends the body with the Content-Length it sets itself; "
                "remove this header",
            )
        if low == "content-length" and value.strip() != str(body_length):
            raise SpecError(
                "headers",
                f"{name}: {value} is not the body's length ({body_length} bytes): a wrong "
                "length breaks the connection for the next request; remove it, hit sets "
                "Content-Length from -d",
            )


def _headers_from(value: object) -> tuple[tuple[str, str], ...]:
    """``{"Name": "value"}``, ``["Name: value", ...]`` or ``[["Name", "value"], ...]``."""
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, list | tuple):
        items = []
        for h in value:
            if isinstance(h, str):
                items.append(parse_header(h))
            elif isinstance(h, list | tuple) and len(h) == 2:
                items.append((h[0], h[1]))
            else:
                raise SpecError(
                    "headers", f"{h!r} is not a header; write 'Name: value' or [name, value]"
                )
    else:
        raise SpecError("headers", f"must be an object of names to values or a list, got {value!r}")
    out = []
    for name, v in items:
        if not isinstance(name, str) or not (isinstance(v, str) or _integer(v)):
            raise SpecError("headers", f"{name!r}: {v!r} is not a header name and text value")
        out.append((name, str(v)))
    return tuple(out)


def _ok_from(value: object) -> tuple[tuple[int, int], ...]:
    """``"200-399"``, ``[200, 204]`` or ``[[200, 299], 304]``: inclusive status ranges."""
    if isinstance(value, str):
        return parse_ok(value)
    if not isinstance(value, list | tuple):
        raise SpecError("ok", f"must be a status list like '200-399', got {value!r}")
    out = []
    for item in value:
        if _integer(item):
            out.append((item, item))
        elif isinstance(item, list | tuple) and len(item) == 2 and all(map(_integer, item)):
            out.append((item[0], item[1]))
        else:
            raise SpecError("ok", f"{item!r} is not a status or a [low, high] range")
    return tuple(out)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(value: object) -> bool:
    return isinstance(value, str)


def _positive_int(name: str, value: object, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(name, f"must be a positive integer ({what}), got {value!r}")


def parse_stage(text: str) -> Stage:
    """``'30s:0-200'`` (a ramp from 0 to 200 per second) or ``'2m:200'`` (200 per second
    held), k6's stages written on one line."""
    when, sep, rates = text.partition(":")
    if not sep:
        raise SpecError("stages", f"{text!r} is not a stage; write DURATION:RATE or D:FROM-TO")
    seconds = parse_seconds(when.strip(), "stages")
    lo, dash, hi = rates.strip().partition("-")
    try:
        start = float(lo)
        end = float(hi) if dash else start
    except ValueError:
        raise SpecError(
            "stages", f"{text!r}: {rates!r} is not a rate; write e.g. 30s:100 or 30s:0-200"
        )
    return Stage(seconds, start, end)
