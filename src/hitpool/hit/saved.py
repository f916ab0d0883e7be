"""A run kept whole: the ``.hit`` file of ``--save``, read back, merged exactly, or compared.

Format ``hit-run/1`` (docs/hit.md): gzip-compressed UTF-8 JSON holding one object::

    {"format": "hit-run/1", "hit_version": "0.1.0", "created_utc": "2026-12-01T21:50:00Z",
     "command": ["hit", "-n", "1000", "http://127.0.0.1:8080/"],
     "spec": {...the Spec's fields...},
     "asserts": [{"expr": "p99<250ms", "passed": true, "actual": "p99 = 4.61ms"}],
     "result": {...the hit/1 --json keys, plus "histogram" (hitpool-hdr/1, lossless) and
                "timeline" (one row per second, each with its own sparse histogram)...}}

``result`` is exactly the form in which worker processes ship their summaries to the parent,
so `merge` is the very addition a ``-p`` run does: counts add exactly, histograms add slot by
slot, timelines add second by second. Within ``hit-run/1`` keys are only ever added; a reader
ignores keys it does not know. Pure: bytes in, bytes out; the CLI reads and writes the files.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .._errors import SpecError
from .saved_check import check_doc, parse
from .spec import Spec
from .summary import Summary

__all__ = ["FORMAT", "SavedRun", "Verdict", "dumps", "from_summary", "loads", "merge"]

FORMAT = "hit-run/1"
# The keys a result must hold for `Summary.merge` to add it to others.
_RESULT_KEYS = (
    "url",
    "method",
    "requests",
    "successes",
    "errors",
    "errors_by_kind",
    "status_codes",
    "bytes",
    "duration_s",
    "target_rps",
    "late",
    "concurrency",
    "interrupted",
    "histogram",
    "timeline",
)


def hit_version() -> str:
    try:
        return metadata.version("hitpool")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a bare source tree
        return "unknown"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One ``--assert`` as it was judged: its text, whether it held, what was measured."""

    expr: str
    passed: bool
    actual: str


@dataclass(frozen=True, slots=True)
class SavedRun:
    """A run with everything needed to draw, merge or compare it.

    ``result`` is the wire form of ``summary`` (what merges); ``sources`` lists, for a merge,
    each input's path, command and time (empty for a single run).
    """

    summary: Summary
    result: Mapping[str, Any] = field(repr=False)
    command: tuple[str, ...]
    spec: Mapping[str, Any] = field(default_factory=dict)
    asserts: tuple[Verdict, ...] = ()
    version: str = ""
    created_utc: str = ""
    sources: tuple[Mapping[str, Any], ...] = ()
    name: str = ""  # how to call this run on a page: its file name, or "this run"

    def json(self) -> dict[str, Any]:
        """The run's ``--json`` object (hit/1), with the result's ``scenarios`` and ``steps``
        when it holds them (a scenario run's)."""
        doc = self.summary.to_json()
        for key in ("scenarios", "steps"):
            if not doc.get(key) and self.result.get(key):
                doc[key] = self.result[key]
        return doc


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return str(value)


# Header values that are credentials: a saved run or a page is shared, its secrets are not.
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "x-auth-token"}
)
# A header argument as given: "Name: value" after -H, or joined to it ("-HName: value").
_SECRET_ARG = re.compile(rf"^(-H)?\s*({'|'.join(sorted(SECRET_HEADERS))})\s*:", re.IGNORECASE)
HIDDEN = "***"


def redact(arg: str) -> str:
    """``arg`` without a credential: a URL's password, a secret header's value."""
    m = _SECRET_ARG.match(arg)
    if m:
        return f"{arg[: m.end()]} {HIDDEN}"
    if "://" in arg and "@" in arg:
        try:
            parts = urlsplit(arg)
            password = parts.password
        except ValueError:
            return arg
        if password is not None:
            host = parts.netloc.rpartition("@")[2]
            user = parts.username or ""
            return urlunsplit(parts._replace(netloc=f"{user}:{HIDDEN}@{host}"))
    return arg


def spec_dict(spec: Spec) -> dict[str, Any]:
    """The Spec's init fields as JSON: bytes as ``{"base64": ...}``, tuples as lists; a URL's
    password and the values of `SECRET_HEADERS` replaced by ``***``."""
    out = {f.name: _jsonable(getattr(spec, f.name)) for f in dataclasses.fields(spec) if f.init}
    if isinstance(out.get("url"), str):
        out["url"] = redact(out["url"])
    if isinstance(out.get("headers"), list):
        out["headers"] = [
            [n, HIDDEN] if str(n).lower() in SECRET_HEADERS else [n, v] for n, v in out["headers"]
        ]
    return out


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def from_summary(
    summary: Summary,
    *,
    command: Sequence[str],
    spec: Spec | None = None,
    verdicts: Sequence[Verdict] = (),
    created_utc: str | None = None,
) -> SavedRun:
    """The run just made, ready for `dumps` or for the HTML page (credentials redacted)."""
    if redact(summary.url) != summary.url:
        summary = dataclasses.replace(summary, url=redact(summary.url))
    return SavedRun(
        summary=summary,
        result=summary.to_wire(),
        command=tuple(redact(a) for a in command),
        spec=spec_dict(spec) if spec is not None else {},
        asserts=tuple(verdicts),
        version=hit_version(),
        created_utc=created_utc if created_utc is not None else _utc_now(),
        name="this run",
    )


def dumps(run: SavedRun) -> bytes:
    """The ``.hit`` bytes of ``run`` (gzip with a zero mtime: the same run, the same bytes)."""
    doc = {
        "format": FORMAT,
        "hit_version": run.version,
        "created_utc": run.created_utc,
        "command": list(run.command),
        "spec": dict(run.spec),
        "asserts": [dataclasses.asdict(v) for v in run.asserts],
        "result": dict(run.result),
    }
    if run.sources:
        doc["sources"] = [dict(s) for s in run.sources]
    text = json.dumps(doc, separators=(",", ":"), allow_nan=False)
    return gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)


def loads(data: bytes, name: str) -> SavedRun:
    """A `SavedRun` from ``.hit`` bytes. ``name`` (the file) names it in every SpecError."""

    def bad(why: str) -> SpecError:
        return SpecError(name, f"not a saved hit run ({why}); give a file written by hit --save")

    try:
        doc = parse(data, name)
    except SpecError as e:
        raise bad(e.message)
    if not isinstance(doc, dict):
        raise bad("not a JSON object")
    if doc.get("format") != FORMAT:
        raise SpecError(
            name,
            f"format {doc.get('format')!r} is not {FORMAT!r}; "
            "this hit reads runs saved by hit --save in format hit-run/1",
        )
    result = doc.get("result")
    if not isinstance(result, dict):
        raise bad("no result object")
    missing = [k for k in _RESULT_KEYS if k not in result]
    if missing:
        raise bad(f"result lacks {', '.join(missing)}")
    try:
        check_doc(doc)  # every key read below, by merge and by the pages has its type
    except SpecError as e:
        raise bad(f"{e.field} {e.message}")
    try:
        summary = Summary.merge(
            [result], processes=int(result.get("processes", 1)), target_rps=result["target_rps"]
        )
        asserts = tuple(
            Verdict(str(a["expr"]), bool(a["passed"]), str(a["actual"]))
            for a in doc.get("asserts", [])
        )
        command = tuple(str(c) for c in doc.get("command", []))
        sources = tuple(dict(s) for s in doc.get("sources", []))
    except SpecError as e:
        raise bad(f"{e.field}: {e.message}")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise bad(f"damaged result: {type(e).__name__} {e}")
    spec = doc.get("spec", {})
    return SavedRun(
        summary=summary,
        result=result,
        command=command,
        spec=spec if isinstance(spec, dict) else {},
        asserts=asserts,
        version=str(doc.get("hit_version", "")),
        created_utc=str(doc.get("created_utc", "")),
        sources=sources,
        name=name,
    )


def merge(runs: Sequence[SavedRun], *, command: Sequence[str]) -> SavedRun:
    """One run holding all of ``runs`` (as if their processes had been one ``-p`` run).

    The runs are taken to have run at the same time (several machines, one target): the
    timelines add by second since each run's start, the duration is the longest, and the
    rate is all requests over it. Asserts are not carried over: none was judged on the sum.
    Runs of different targets still merge, and the merge names each (``url`` and
    ``method`` list the distinct ones, ", " between them) rather than the first one's only.
    """
    if not runs:
        raise SpecError("runs", "give at least one saved run")
    summary = Summary.merge(
        [r.result for r in runs], processes=sum(r.summary.processes for r in runs)
    )
    urls = list(dict.fromkeys(r.summary.url for r in runs))
    methods = list(dict.fromkeys(r.summary.method for r in runs))
    if len(urls) > 1 or len(methods) > 1:
        summary = dataclasses.replace(summary, url=", ".join(urls), method=", ".join(methods))
    return SavedRun(
        summary=summary,
        result=summary.to_wire(),
        command=tuple(command),
        version=hit_version(),
        created_utc=_utc_now(),
        sources=tuple(
            {
                "name": r.name,
                "command": list(r.command),
                "created_utc": r.created_utc,
                "hit_version": r.version,
            }
            for r in runs
        ),
        name="merged",
    )
