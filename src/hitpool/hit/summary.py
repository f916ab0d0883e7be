"""What a run reports: `Progress`, the live line once a second, and `Summary`, the outcome
(its stable ``--json`` schema, and the wire form that merges several processes' exactly).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .scenario_stats import (
    histogram_of,
    merge_scenarios,
    merge_steps,
    scenario_json,
    step_json,
)
from .stats import Histogram, Second, Timeline
from .tally import ERROR_KINDS

__all__ = ["Progress", "Summary"]

PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9))
SCHEMA = "hit/1"


@dataclass(frozen=True, slots=True)
class Progress:
    """What the live progress line shows, once a second."""

    elapsed_s: float
    requests: int
    errors: int
    rps: float  # requests that ended in the last second, per second
    p99_s: float | None  # of the last second; None when nothing ended in it
    p50_s: float | None = None  # of the last second, as p99_s
    in_flight: int = 0  # requests sent and not ended, when the second ended


@dataclass(frozen=True, slots=True)
class Summary:
    """The outcome of a run. Latencies are held in microseconds in ``histogram``."""

    url: str
    method: str
    requests: int  # requests that ended (successes + errors)
    successes: int
    errors: int
    errors_by_kind: dict[str, int]
    status_codes: dict[int, int]
    bytes: int  # response bytes read (status lines, headers, bodies)
    duration_s: float
    target_rps: float | None
    late: int
    concurrency: int
    processes: int
    interrupted: bool
    histogram: Histogram = field(repr=False)
    timeline: tuple[Second, ...] = field(default=(), repr=False)
    # under --rps with -z: requests due before the deadline that were never sent (every
    # connection was busy until then); not in ``requests``
    dropped: int = 0
    # ``hit -f``: wire forms by name (scenario_stats), and ``hit --targets``: steps by line
    scenarios: Mapping[str, Any] = field(default_factory=dict, repr=False)
    steps: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def latency_s(self) -> dict[str, float]:
        """min, mean, p50, p90, p95, p99, p999, max in seconds (0.0 when nothing completed)."""
        return latency_s(self.histogram)

    def step_latency_s(self, name: str) -> dict[str, float]:
        return latency_s(histogram_of(self.steps[name]))

    def scenario_latency_s(self, name: str) -> dict[str, float]:
        """Iteration times of the scenario's completed iterations."""
        return latency_s(histogram_of(self.scenarios[name]))

    def to_json(self) -> dict[str, Any]:
        """The stable ``--json`` schema (docs/hit.md)."""
        return {
            "schema": SCHEMA,
            "url": self.url,
            "method": self.method,
            "requests": self.requests,
            "successes": self.successes,
            "errors": self.errors,
            "rps": round(self.rps, 3),
            "duration_s": round(self.duration_s, 6),
            "bytes": self.bytes,
            "latency_s": _rounded(self.latency_s()),
            "status_codes": {str(k): v for k, v in sorted(self.status_codes.items())},
            "errors_by_kind": dict(self.errors_by_kind),
            "target_rps": self.target_rps,
            "late": self.late,
            "concurrency": self.concurrency,
            "processes": self.processes,
            "interrupted": self.interrupted,
            "dropped": self.dropped,
            "scenarios": {
                name: scenario_json(w, _rounded(self.scenario_latency_s(name)))
                for name, w in self.scenarios.items()
            },
            "steps": {
                name: step_json(w, self.duration_s, _rounded(self.step_latency_s(name)))
                for name, w in self.steps.items()
            },
        }

    def to_wire(self) -> dict[str, Any]:
        """Everything, histogram and timeline included, for merging across processes."""
        d = self.to_json()
        d["duration_s"] = self.duration_s
        d["histogram"] = self.histogram.to_dict()
        d["scenarios"] = dict(self.scenarios)
        d["steps"] = dict(self.steps)
        d["timeline"] = [
            {
                "second": r.second,
                "requests": r.requests,
                "errors": r.errors,
                "counts": [x for pair in r.counts for x in pair],
                "sent": r.sent,
                "in_flight": r.in_flight,
            }
            for r in self.timeline
        ]
        return d

    @classmethod
    def merge(
        cls, parts: list[Mapping[str, Any]], *, processes: int, target_rps: float | None = None
    ) -> Summary:
        """Add the wire forms of several processes' summaries (exact). `target_rps`: the rate
        the run was given; the sum of the processes' shares of it is not always that float
        (1000 / 6 six times is 999.9999999999999)."""
        hist = Histogram()
        for p in parts:
            hist.merge(Histogram.from_dict(p["histogram"]))
        codes: dict[int, int] = {}
        kinds = dict.fromkeys(ERROR_KINDS, 0)
        for p in parts:
            for k, v in p["status_codes"].items():
                codes[int(k)] = codes.get(int(k), 0) + v
            for k, v in p["errors_by_kind"].items():
                kinds[k] = kinds.get(k, 0) + v
        first = parts[0]
        rates = [p["target_rps"] for p in parts if p["target_rps"] is not None]
        return cls(
            url=first["url"],
            method=first["method"],
            requests=sum(p["requests"] for p in parts),
            successes=sum(p["successes"] for p in parts),
            errors=sum(p["errors"] for p in parts),
            errors_by_kind=kinds,
            status_codes=codes,
            bytes=sum(p["bytes"] for p in parts),
            duration_s=max(p["duration_s"] for p in parts),
            target_rps=target_rps if target_rps is not None else sum(rates) if rates else None,
            late=sum(p["late"] for p in parts),
            dropped=sum(p.get("dropped", 0) for p in parts),
            scenarios=merge_scenarios(p.get("scenarios", {}) for p in parts),
            steps=merge_steps(p.get("steps", {}) for p in parts),
            concurrency=sum(p["concurrency"] for p in parts),
            processes=processes,
            interrupted=any(p["interrupted"] for p in parts),
            histogram=hist,
            timeline=tuple(Timeline.merge_lists(p["timeline"] for p in parts)),
        )


def latency_s(h: Histogram) -> dict[str, float]:
    """min, mean, p50, p90, p95, p99, p999, max of ``h`` (µs) in seconds (0.0 when empty)."""
    out = {"min": h.min / 1e6, "mean": h.mean / 1e6}
    values = h.percentiles([p for _, p in PERCENTILES])
    for (name, _), v in zip(PERCENTILES, values, strict=True):
        # a slot's upper edge can pass the exact maximum by < 0.1 %: never report that
        out[name] = min(v, h.max) / 1e6
    out["max"] = h.max / 1e6
    return out


def _rounded(lat: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in lat.items()}
