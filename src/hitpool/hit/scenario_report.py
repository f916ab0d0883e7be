"""The scenario and step tables of the text summary, and ``--assert`` with a selector:
``p99{step=login}<200ms``, ``errors{scenario=checkout}<1%``. Pure, as report.py is."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .._errors import SpecError
from .summary import Summary

_LATENCY = ("min", "mean", "p50", "p90", "p95", "p99", "p999", "max")
# what each name measures of a step, and of a scenario (its iterations)
_STEP_COUNTS = ("requests", "successes", "errors")
_SCENARIO_COUNTS = {"requests": "started", "started": "started", "successes": "completed",
                    "completed": "completed", "errors": "failed", "failed": "failed",
                    "dropped": "dropped"}  # fmt: skip
_SELECTED = re.compile(
    r"^\s*([a-z0-9_]+)\{\s*(step|scenario)\s*=\s*([^}]*)\}\s*(<=|>=|==|!=|<|>)\s*(.+?)\s*$"
)
SELECTOR_HELP = (
    "write NAME{step=S} OP VALUE or NAME{scenario=S} OP VALUE, e.g. 'p99{step=login}<200ms', "
    "'errors{scenario=checkout}<1%'; NAME is a latency (" + ", ".join(_LATENCY) + "), rps "
    "(steps), requests/successes/errors, or for a scenario started/completed/failed/dropped "
    "(errors = failed iterations, a % of those started)"
)


def _ms(seconds: float) -> str:
    from .report import fmt_s

    return fmt_s(seconds)


def _cut(name: str, width: int) -> str:
    """A name that fits ``width``, its end kept (where URLs and paths differ)."""
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def tables(s: Summary) -> list[str]:
    """The lines of the per-scenario and per-step tables (none when there are none)."""
    out: list[str] = []
    if s.scenarios:
        out += ["", "Scenarios:"]
        width = min(40, max(len(n) for n in s.scenarios)) + 2
        out.append(
            f"    {'name':<{width}}{'started':>9}{'done':>9}{'failed':>8}{'dropped':>9}"
            f"{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}"
        )
        for name, w in s.scenarios.items():
            lat = s.scenario_latency_s(name)
            out.append(
                f"    {_cut(name, width - 2):<{width}}"
                f"{w['started']:>9}{w['completed']:>9}{w['failed']:>8}"
                f"{w['dropped']:>9}{_ms(lat['p50']):>10}{_ms(lat['p90']):>10}"
                f"{_ms(lat['p99']):>10}{_ms(lat['max']):>10}"
            )
        failures = [(n, k, f) for n, w in s.scenarios.items() for k, f in w["failures"].items()]
        if failures:
            out += ["", "Failed iterations (one example of each):"]
            for name, kind, f in failures:
                out.append(f"    {name}: {kind} x{f['count']}")
                out += ["        " + line for line in f["example"].rstrip().splitlines()[-6:]]
    if s.steps:
        out += ["", "Steps:"]
        width = min(60, max(len(n) for n in s.steps)) + 2
        out.append(
            f"    {'name':<{width}}{'requests':>9}{'ok':>9}{'errors':>8}{'rps':>9}"
            f"{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}  codes"
        )
        for name, w in s.steps.items():
            lat = s.step_latency_s(name)
            rps = w["requests"] / s.duration_s if s.duration_s > 0 else 0.0
            codes = " ".join(f"{c}:{n}" for c, n in w["status_codes"].items())
            out.append(
                f"    {_cut(name, width - 2):<{width}}"
                f"{w['requests']:>9}{w['successes']:>9}{w['errors']:>8}"
                f"{rps:>9.1f}{_ms(lat['p50']):>10}{_ms(lat['p90']):>10}{_ms(lat['p99']):>10}"
                f"{_ms(lat['max']):>10}  {codes}"
            )
    return out


@dataclass(frozen=True, slots=True)
class Selected:
    """``name{kind=target} op value``: one step's or one scenario's number."""

    text: str
    name: str
    kind: str  # "step" or "scenario"
    target: str
    op: str
    value: float
    percent: bool = False

    def measure(self, s: Summary) -> float | None:
        """The number, or None when the run has no such step or scenario."""
        table = s.steps if self.kind == "step" else s.scenarios
        w = table.get(self.target)
        if w is None:
            return None
        if self.name in _LATENCY:
            lat = s.step_latency_s if self.kind == "step" else s.scenario_latency_s
            return lat(self.target)[self.name]
        if self.name == "rps":
            return w["requests"] / s.duration_s if s.duration_s > 0 else 0.0
        if self.kind == "step":
            count, whole = float(w[self.name]), w["requests"]
        else:
            count, whole = float(w[_SCENARIO_COUNTS[self.name]]), w["started"]
        if self.percent:
            return 100.0 * count / whole if whole else 0.0
        return count

    def check(self, s: Summary) -> tuple[bool, str]:
        from .report import _OPS

        actual = self.measure(s)
        label = f"{self.name}{{{self.kind}={self.target}}}"
        if actual is None:
            return False, f"{label}: the run has no {self.kind} named {self.target!r}"
        if self.name in _LATENCY:
            shown = _ms(actual)
        elif self.percent:
            shown = f"{actual:.3f}%"
        else:
            shown = f"{actual:g}"
        return _OPS[self.op](actual, self.value), f"{label} = {shown}"


def parse_selected(text: str) -> Selected:
    from ..durations import parse_seconds

    m = _SELECTED.match(text)
    if not m:
        raise SpecError("assert", f"{text!r} is not an assertion; {SELECTOR_HELP}")
    name, kind, target, op, raw = m.groups()
    target = target.strip()
    if not target:
        raise SpecError("assert", f"{text!r}: name the {kind}; {SELECTOR_HELP}")
    if name in _LATENCY:
        try:
            return Selected(text, name, kind, target, op, parse_seconds(raw, "assert"))
        except SpecError:
            raise SpecError("assert", f"{text!r}: {raw!r} is not a duration; {SELECTOR_HELP}")
    counts = _STEP_COUNTS if kind == "step" else tuple(_SCENARIO_COUNTS)
    if name in counts or (name == "rps" and kind == "step"):
        percent = raw.endswith("%") and name != "rps"
        try:
            value = float(raw[:-1] if percent else raw)
        except ValueError:
            raise SpecError("assert", f"{text!r}: {raw!r} is not a number; {SELECTOR_HELP}")
        return Selected(text, name, kind, target, op, value, percent)
    raise SpecError("assert", f"{text!r}: {name!r} is not measured for a {kind}; {SELECTOR_HELP}")
