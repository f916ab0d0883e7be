"""Turning a Summary into text, JSON, a timeline file, and --assert verdicts. Pure:
the functions return strings and values; the CLI writes them."""

from __future__ import annotations

import csv
import io
import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._errors import SpecError
from ..durations import parse_seconds
from .client import LATE_NS
from .scenario_report import Selected, parse_selected, tables
from .summary import Progress, Summary

BAR = "■"


def fmt_s(seconds: float) -> str:
    """A latency for people: 87µs, 1.24ms, 2.501s."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f}ms"
    return f"{seconds:.3f}s"


def text(summary: Summary, *, width: int = 40, bins: int = 10) -> str:
    """The book's block (Success ... Slowest), then percentiles, a histogram, status codes,
    errors by kind and, under --rps, the target and achieved rates."""
    s = summary
    lat = s.latency_s()
    success = 100.0 * s.successes / s.requests if s.requests else 0.0
    out = [
        "Summary:" + ("  (interrupted: partial results)" if s.interrupted else ""),
        f"    Success:  {success:.2f}%",
        f"    RPS:      {s.rps:.1f}",
        f"    Requests: {s.requests}",
        f"    Errors:   {s.errors}",
        f"    Bytes:    {s.bytes}",
        f"    Duration: {s.duration_s:.3f}s",
        f"    Fastest:  {fmt_s(lat['min'])}",
        f"    Slowest:  {fmt_s(lat['max'])}",
        "",
        "Latency:",
        f"    mean  {fmt_s(lat['mean'])}",
    ]
    for name, label in (("p50", "50%"), ("p90", "90%"), ("p95", "95%"), ("p99", "99%")):
        out.append(f"    {label:<6}{fmt_s(lat[name])}")
    out.append(f"    99.9% {fmt_s(lat['p999'])}")
    rows = s.histogram.buckets(bins)
    if rows:
        out += ["", "Histogram:"]
        top = max(c for _, _, c in rows) or 1
        for low, _, count in rows:
            bar = BAR * (count * width // top)
            out.append(f"    {fmt_s(low / 1e6):>9} [{count:>8}] {bar}")
    if s.status_codes:
        out += ["", "Status codes:"]
        out += [f"    [{code}] {n} responses" for code, n in sorted(s.status_codes.items())]
    kinds = {k: v for k, v in s.errors_by_kind.items() if v}
    if kinds:
        out += ["", "Errors:"]
        out += [f"    {k:<16}{v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])]
    out += tables(s)  # hit -f, --targets: per scenario and per step
    if s.target_rps is not None and s.scenarios:  # hit -f: the rate is of iterations
        started = sum(w["started"] + w["dropped"] for w in s.scenarios.values())
        achieved = started / s.duration_s if s.duration_s > 0 else 0.0
        out += [
            "",
            f"Rate: target {s.target_rps:g} iterations/s, {achieved:.1f}/s due, {s.late} late "
            f"(started > {LATE_NS // 1_000_000}ms after due), {s.dropped} dropped "
            "(due at --max-inflight)",
        ]
    elif s.target_rps is not None:
        out += [
            "",
            f"Rate: target {s.target_rps:g}/s, achieved {s.rps:.1f}/s, "
            f"{s.late} late (left > {LATE_NS // 1_000_000}ms after due; latency counts from due)"
            + (f", {s.dropped} dropped (due, never sent)" if s.dropped else ""),
        ]
    return "\n".join(out) + "\n"


def json_text(summary: Summary) -> str:
    return json.dumps(summary.to_json(), indent=2) + "\n"


def progress_line(p: Progress) -> str:
    """One line a second: totals so far, then the rate and p99 of the last second."""
    p99 = f"  p99 {fmt_s(p.p99_s)}" if p.p99_s is not None else ""
    return (
        f"{p.elapsed_s:6.1f}s  {p.requests} requests  {p.errors} errors  "
        f"{p.in_flight} in flight  {p.rps:.0f} req/s{p99} (last second)"
    )


def timeline_rows(summary: Summary) -> list[dict[str, Any]]:
    return [
        {
            "second": r.second,
            "requests": r.requests,
            "errors": r.errors,
            "p50_s": r.percentile(50) / 1e6,
            "p99_s": r.percentile(99) / 1e6,
        }
        for r in summary.timeline
    ]


def timeline_text(summary: Summary, path: str) -> str:
    """The -o file: JSON (summary + timeline) for ``.json``, CSV for ``.csv``."""
    rows = timeline_rows(summary)
    if path.endswith(".json"):
        return json.dumps({"summary": summary.to_json(), "timeline": rows}, indent=2) + "\n"
    buf = io.StringIO()
    w = csv.DictWriter(buf, ["second", "requests", "errors", "p50_s", "p99_s"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


# -- --assert ------------------------------------------------------------------------

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_LATENCY = ("min", "mean", "p50", "p90", "p95", "p99", "p999", "max")
_COUNTS = ("errors", "successes", "requests", "late")
_ASSERT = re.compile(r"^\s*([a-z0-9_]+)\s*(<=|>=|==|!=|<|>)\s*(.+?)\s*$")
ASSERT_HELP = (
    "write NAME OP VALUE, e.g. 'p99<250ms', 'errors<1%', 'rps>1000'; NAME is one of "
    + ", ".join((*_LATENCY, *_COUNTS, "rps", "duration"))
)


@dataclass(frozen=True, slots=True)
class Assertion:
    """One --assert: ``name op value``. Latencies and duration compare in seconds; a count
    with ``%`` compares as a percentage of the requests."""

    text: str
    name: str
    op: str
    value: float
    percent: bool = False

    def measure(self, s: Summary) -> float:
        if self.name in _LATENCY:
            return s.latency_s()[self.name]
        if self.name == "rps":
            return s.rps
        if self.name == "duration":
            return s.duration_s
        count = float(getattr(s, self.name))
        if self.percent:
            return 100.0 * count / s.requests if s.requests else 0.0
        return count

    def check(self, s: Summary) -> tuple[bool, str]:
        """``(passed, 'p99 = 12.3ms')``."""
        actual = self.measure(s)
        if self.name in _LATENCY or self.name == "duration":
            shown = fmt_s(actual)
        elif self.percent:
            shown = f"{actual:.3f}%"
        else:
            shown = f"{actual:g}"
        return _OPS[self.op](actual, self.value), f"{self.name} = {shown}"


def parse_assert(text: str) -> Assertion | Selected:
    if "{" in text:  # a step's or a scenario's number: 'p99{step=login}<200ms'
        return parse_selected(text)
    m = _ASSERT.match(text)
    if not m:
        raise SpecError("assert", f"{text!r} is not an assertion; {ASSERT_HELP}")
    name, op, raw = m.groups()
    if name in _LATENCY or name == "duration":
        try:
            return Assertion(text, name, op, parse_seconds(raw, "assert"))
        except SpecError:
            raise SpecError("assert", f"{text!r}: {raw!r} is not a duration; {ASSERT_HELP}")
    if name in _COUNTS or name == "rps":
        percent = raw.endswith("%") and name in _COUNTS
        try:
            value = float(raw[:-1] if percent else raw)
        except ValueError:
            raise SpecError("assert", f"{text!r}: {raw!r} is not a number; {ASSERT_HELP}")
        return Assertion(text, name, op, value, percent)
    raise SpecError("assert", f"{text!r}: unknown name {name!r}; {ASSERT_HELP}")


def check_all(
    asserts: list[Assertion | Selected], s: Summary
) -> list[tuple[Assertion | Selected, bool, str]]:
    return [(a, *a.check(s)) for a in asserts]
