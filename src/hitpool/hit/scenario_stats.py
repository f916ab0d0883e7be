"""A scenario run's statistics: one tally per step, one per scenario, the run's totals;
their wire forms (merged exactly across processes) and their ``--json`` forms.

Pure: counts in, dicts out. Step names are capped at `MAX_STEPS` distinct names per
process (and again when processes merge); later names fold into `OTHER`, so a script
that names steps by URL cannot blow memory or the report up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .stats import Histogram
from .tally import ERROR_KINDS, SparseHistogram, Tally

__all__ = ["MAX_STEPS", "OTHER", "IterTally", "Stats", "merge_scenarios", "merge_steps"]

MAX_STEPS = 1000
OTHER = "other"


class IterTally:
    """Iterations of one scenario: started = completed + failed + still running."""

    __slots__ = ("completed", "dropped", "failed", "failures", "hist", "started")

    def __init__(self) -> None:
        self.started = 0
        self.completed = 0
        self.failed = 0
        self.dropped = 0  # due while --max-inflight iterations were running: never started
        self.hist = SparseHistogram()  # iteration times of completed ones (µs, from due)
        self.failures: dict[str, list[Any]] = {}  # exception type -> [count, example traceback]

    def fail(self, kind: str, example: Callable[[], str]) -> None:
        """One failed iteration; ``example()`` is asked for the first of each kind only."""
        self.failed += 1
        seen = self.failures.get(kind)
        if seen is None:
            self.failures[kind] = [1, example()]
        else:
            seen[0] += 1

    def to_wire(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "completed": self.completed,
            "failed": self.failed,
            "dropped": self.dropped,
            "histogram": self.hist.to_dict(),
            "failures": {k: {"count": c, "example": ex} for k, (c, ex) in self.failures.items()},
        }


class Stats:
    """One process's tallies: ``steps`` by name, ``scenarios`` by name. Every request is
    counted once, in its step; the totals (the hit/1 keys) are the steps added up."""

    __slots__ = ("ok", "scenarios", "steps", "timeout_ns")

    def __init__(self, ok: list[bool], timeout_ns: int) -> None:
        self.ok = ok
        self.timeout_ns = timeout_ns
        self.steps: dict[str, Tally] = {}
        self.scenarios: dict[str, IterTally] = {}

    def total(self) -> Tally:
        """Every step added up, with a dense histogram."""
        t = Tally(self.ok, self.timeout_ns)
        for step in self.steps.values():
            t.add(step)
        return t

    def counts(self) -> tuple[int, int]:
        """(requests, errors) so far, for the progress line."""
        steps = self.steps.values()
        return sum(t.finished for t in steps), sum(t.errors_total for t in steps)

    def step(self, name: str) -> Tally:
        t = self.steps.get(name)
        if t is None:
            if len(self.steps) >= MAX_STEPS:
                name = OTHER
                t = self.steps.get(name)
            if t is None:
                t = self.steps[name] = Tally(self.ok, self.timeout_ns, sparse=True)
        return t

    def scenario(self, name: str) -> IterTally:
        it = self.scenarios.get(name)
        if it is None:
            it = self.scenarios[name] = IterTally()
        return it

    def steps_wire(self) -> dict[str, Any]:
        return {name: _step_wire(t) for name, t in self.steps.items()}

    def scenarios_wire(self) -> dict[str, Any]:
        return {name: it.to_wire() for name, it in self.scenarios.items()}


def _step_wire(t: Tally) -> dict[str, Any]:
    h = t.hist
    assert isinstance(h, SparseHistogram)
    return {
        "requests": t.finished,
        "successes": t.successes,
        "errors": t.errors_total,
        "errors_by_kind": dict(t.errors),
        "status_codes": {str(k): v for k, v in t.status_codes().items()},
        "bytes": t.bytes,
        "histogram": h.to_dict(),
    }


def merge_steps(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The step wire forms of several processes added (exact), capped at MAX_STEPS names."""
    out: dict[str, dict[str, Any]] = {}
    hists: dict[str, SparseHistogram] = {}
    for part in parts:
        for name, w in part.items():
            if name not in out and len(out) >= MAX_STEPS:
                name = OTHER
            cur = out.get(name)
            if cur is None:
                cur = out[name] = {
                    "requests": 0,
                    "successes": 0,
                    "errors": 0,
                    "errors_by_kind": dict.fromkeys(ERROR_KINDS, 0),
                    "status_codes": {},
                    "bytes": 0,
                }
                hists[name] = SparseHistogram()
            for key in ("requests", "successes", "errors", "bytes"):
                cur[key] += w[key]
            for k, v in w["errors_by_kind"].items():
                cur["errors_by_kind"][k] = cur["errors_by_kind"].get(k, 0) + v
            for k, v in w["status_codes"].items():
                cur["status_codes"][k] = cur["status_codes"].get(k, 0) + v
            hists[name].merge_dict(w["histogram"])
    for name, cur in out.items():
        cur["status_codes"] = dict(sorted(cur["status_codes"].items()))
        cur["histogram"] = hists[name].to_dict()
    return out


def merge_scenarios(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    hists: dict[str, SparseHistogram] = {}
    for part in parts:
        for name, w in part.items():
            cur = out.get(name)
            if cur is None:
                cur = out[name] = {
                    "started": 0,
                    "completed": 0,
                    "failed": 0,
                    "dropped": 0,
                    "failures": {},
                }
                hists[name] = SparseHistogram()
            for key in ("started", "completed", "failed", "dropped"):
                cur[key] += w[key]
            for kind, f in w["failures"].items():
                seen = cur["failures"].get(kind)
                if seen is None:
                    cur["failures"][kind] = dict(f)
                else:
                    seen["count"] += f["count"]
            hists[name].merge_dict(w["histogram"])
    for name, cur in out.items():
        cur["histogram"] = hists[name].to_dict()
    return out


def step_json(w: Mapping[str, Any], duration_s: float, latency: dict[str, float]) -> dict[str, Any]:
    return {
        "requests": w["requests"],
        "successes": w["successes"],
        "errors": w["errors"],
        "rps": round(w["requests"] / duration_s, 3) if duration_s > 0 else 0.0,
        "latency_s": latency,
        "status_codes": dict(w["status_codes"]),
        "errors_by_kind": dict(w["errors_by_kind"]),
    }


def scenario_json(w: Mapping[str, Any], latency: dict[str, float]) -> dict[str, Any]:
    return {
        "started": w["started"],
        "completed": w["completed"],
        "failed": w["failed"],
        "dropped": w["dropped"],
        "latency_s": latency,
        "failures": {k: dict(v) for k, v in w["failures"].items()},
    }


def histogram_of(w: Mapping[str, Any]) -> Histogram:
    return Histogram.from_dict(w["histogram"])
