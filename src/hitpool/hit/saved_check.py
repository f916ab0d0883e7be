"""The checks a ``.hit`` file passes before anything reads it: its size, its JSON, its shape.

A saved run comes from someone else's machine (the distributed-load case), so its reader
treats it as hostile input: everything that `saved.loads`, `Summary.merge`, the text report
and the HTML page will read is checked here for its type and range, and any other problem
is one `SpecError` naming the key (``result.timeline[3].second``) and what it must be.
Nothing that passes can raise while a run is merged, printed or drawn. Pure: bytes in.

Bounds, each with its reason:

* `MAX_JSON_BYTES`, the decompressed size: a gzip bomb (a few KiB that inflate to
  gigabytes) is refused while it inflates, never held whole. The bound is several times the
  JSON of a one-hour run (its size is in docs/hit.md), so no run hit can save is refused.
* nesting: the format is a few levels deep; a file nested past Python's recursion limit
  stops the JSON parser (a RecursionError, which leaves the interpreter sound) and is refused.
* numbers: JSON has no NaN or Infinity; Python's json reads them anyway, so they are refused,
  and every count is a whole number >= 0 (a bool is not a number here).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from .._errors import SpecError
from .stats import COUNTS_LEN

__all__ = ["MAX_JSON_BYTES", "check_doc", "parse"]

MAX_JSON_BYTES = 256 * 1024 * 1024


def _inflate(data: bytes, name: str) -> bytes:
    """The gzip stream's bytes, refused once they pass MAX_JSON_BYTES."""
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing, as gzip.compress writes
    try:
        out = d.decompress(data, MAX_JSON_BYTES + 1)
    except zlib.error as e:
        raise SpecError(name, f"not gzip data: {e}") from None
    if len(out) > MAX_JSON_BYTES or d.unconsumed_tail:
        raise SpecError(name, f"it inflates past {MAX_JSON_BYTES // 2**20} MiB of JSON")
    if not d.eof:
        raise SpecError(name, "not gzip data: the stream is cut short")
    if d.unused_data:
        raise SpecError(name, "not one gzip stream: bytes follow its end")
    return out


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON number")


def parse(data: bytes, name: str) -> Any:
    """The JSON value of ``.hit`` bytes; SpecError(name, why) when it is not one."""
    text = _inflate(data, name)
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise SpecError(name, "nested too deeply to be a saved run") from None
    except UnicodeDecodeError as e:
        raise SpecError(name, f"not UTF-8 JSON: {e}") from None
    except ValueError as e:  # JSONDecodeError, and NaN / Infinity
        raise SpecError(name, f"not JSON: {e}") from None


# -- shapes ------------------------------------------------------------------------------


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _need(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise SpecError(where, f"must be {what}")


def _obj(v: Any, where: str) -> Mapping[str, Any]:
    _need(isinstance(v, dict), where, "an object")
    return v  # type: ignore[no-any-return]  # checked just above


def _list(v: Any, where: str) -> list[Any]:
    _need(isinstance(v, list), where, "a list")
    return v  # type: ignore[no-any-return]  # checked just above


def _map_of(v: Any, where: str, ok: Callable[[Any], bool], what: str) -> None:
    for k, x in _obj(v, where).items():
        _need(ok(x), f"{where}.{k}", what)


def _fields(
    doc: Mapping[str, Any], where: str, checks: Mapping[str, tuple[Callable[[Any], bool], str]]
) -> None:
    """Each key of ``checks`` that ``doc`` holds passes its check."""
    for key, (ok, what) in checks.items():
        if key in doc:
            _need(ok(doc[key]), f"{where}.{key}", what)


_COUNT = (_count, "a whole number >= 0")
_NUMBER = (_number, "a finite number")
_STR = (_str, "a string")


def _strings(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(s, str) for s in v)


def _histogram(v: Any, where: str) -> None:
    h = _obj(v, where)
    _fields(h, where, {"total": _COUNT, "sum": _COUNT, "min": _COUNT, "max": _COUNT})
    for key in ("total", "sum", "min", "max"):
        _need(key in h, f"{where}.{key}", "present")
    _pairs(h.get("counts"), f"{where}.counts")


def _pairs(v: Any, where: str) -> None:
    """A flat list of (latency slot, count) pairs, as histograms and timeline rows hold."""
    flat = _list(v, where)
    _need(len(flat) % 2 == 0, where, "a flat list of slot, count pairs")
    for k in range(0, len(flat), 2):
        i, c = flat[k], flat[k + 1]
        ok = _count(i) and i < COUNTS_LEN and _count(c) and c > 0
        _need(ok, f"{where}[{k}]", f"a slot from 0 to {COUNTS_LEN - 1} and a count > 0")


def _timeline(v: Any, where: str) -> None:
    for n, row in enumerate(_list(v, where)):
        at = f"{where}[{n}]"
        r = _obj(row, at)
        for key in ("second", "requests", "errors", "counts"):
            _need(key in r, f"{at}.{key}", "present")
        _fields(
            r,
            at,
            {"second": _COUNT, "requests": _COUNT, "errors": _COUNT, "sent": _COUNT},
        )
        _fields(r, at, {"in_flight": _COUNT})
        _pairs(r["counts"], f"{at}.counts")


def _table(v: Any, where: str, numbers: tuple[str, ...], codes: bool) -> None:
    """``scenarios`` or ``steps``: name -> numbers, a latency object, (steps) status codes."""
    for name, row in _obj(v, where).items():
        at = f"{where}.{name}"
        r = _obj(row, at)
        _fields(r, at, dict.fromkeys(numbers, _NUMBER))
        if "latency_s" in r:
            _map_of(r["latency_s"], f"{at}.latency_s", _number, "a finite number")
        if codes and "status_codes" in r:
            _map_of(r["status_codes"], f"{at}.status_codes", _count, "a whole number >= 0")
        # what Summary.merge reads of a row (scenario_stats' wire form), each present
        for key in (*_WIRE_COUNTS[codes], "histogram"):
            _need(key in r, f"{at}.{key}", "present")
        _fields(r, at, dict.fromkeys(_WIRE_COUNTS[codes], _COUNT))
        _histogram(r["histogram"], f"{at}.histogram")
        if codes:
            _need("status_codes" in r, f"{at}.status_codes", "present")
            _map_of(r.get("errors_by_kind"), f"{at}.errors_by_kind", _count, "a whole number >= 0")
        else:
            for kind, f in _obj(r.get("failures"), f"{at}.failures").items():
                fa = f"{at}.failures.{kind}"
                _fields(_obj(f, fa), fa, {"count": _COUNT, "example": _STR})
                _need("count" in f and "example" in f, fa, "a count and an example")


# steps (True) and scenarios (False): the counts their wire rows hold
_WIRE_COUNTS = {
    True: ("requests", "successes", "errors", "bytes"),
    False: ("started", "completed", "failed", "dropped"),
}


_RESULT: dict[str, tuple[Callable[[Any], bool], str]] = {
    "url": _STR,
    "method": _STR,
    "requests": _COUNT,
    "successes": _COUNT,
    "errors": _COUNT,
    "bytes": _COUNT,
    "late": _COUNT,
    "dropped": _COUNT,
    "concurrency": _COUNT,
    "duration_s": (lambda v: _number(v) and v >= 0, "a finite number >= 0"),
    "target_rps": (lambda v: v is None or (_number(v) and v > 0), "null or a number > 0"),
    "processes": (lambda v: _count(v) and v >= 1, "a whole number >= 1"),
    "interrupted": (lambda v: isinstance(v, bool), "true or false"),
}


def _result(v: Any, where: str) -> None:
    r = _obj(v, where)
    _fields(r, where, _RESULT)
    if "status_codes" in r:
        for code, n in _obj(r["status_codes"], f"{where}.status_codes").items():
            at = f"{where}.status_codes.{code}"
            _need(code.isdigit() and len(code) <= 3, at, "keyed by a status code (digits)")
            _need(_count(n), at, "a whole number >= 0")
    if "errors_by_kind" in r:
        _map_of(r["errors_by_kind"], f"{where}.errors_by_kind", _count, "a whole number >= 0")
    if "histogram" in r:
        _histogram(r["histogram"], f"{where}.histogram")
    if "timeline" in r:
        _timeline(r["timeline"], f"{where}.timeline")
    if "scenarios" in r:
        _table(
            r["scenarios"],
            f"{where}.scenarios",
            ("started", "completed", "failed", "dropped"),
            False,
        )
    if "steps" in r:
        _table(r["steps"], f"{where}.steps", ("requests", "successes", "errors", "rps"), True)


def check_doc(doc: Any) -> None:
    """SpecError(key, what it must be) unless every key a reader reads has its type."""
    d = _obj(doc, "file")
    _fields(d, "file", {"hit_version": _STR, "created_utc": _STR})
    if "command" in d:
        _need(_strings(d["command"]), "command", "a list of strings")
    if "spec" in d:
        _obj(d["spec"], "spec")
    for n, a in enumerate(_list(d.get("asserts", []), "asserts")):
        at = f"asserts[{n}]"
        v = _obj(a, at)
        for key in ("expr", "actual"):
            _need(_str(v.get(key)), f"{at}.{key}", "a string")
        _need(isinstance(v.get("passed"), bool), f"{at}.passed", "true or false")
    for n, s in enumerate(_list(d.get("sources", []), "sources")):
        at = f"sources[{n}]"
        src = _obj(s, at)
        _fields(src, at, {"name": _STR, "created_utc": _STR, "hit_version": _STR})
        if "command" in src:
            _need(_strings(src["command"]), f"{at}.command", "a list of strings")
    _result(d.get("result"), "result")
