"""Runs side by side (``hit report --compare``): the numbers compared, each run's ratio to the
first, as JSON (``hit-compare/1``) and as text. Pure: `SavedRun`s in, values and strings out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .report import fmt_s
from .saved import SavedRun

__all__ = ["COMPARED", "SCHEMA", "compare_json", "compare_text", "fmt_number", "ratio"]

SCHEMA = "hit-compare/1"


def fmt_number(v: Any) -> str:
    """A count or rate for people: 12,345 or 1,500.463; yes/no; — for none."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".") if v != int(v) else f"{int(v):,}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


# (key in the --json object, label, how to show it), in the order compared.
COMPARED: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("requests", "requests", fmt_number),
    ("errors", "errors", fmt_number),
    ("rps", "requests per second", fmt_number),
    ("duration_s", "duration (s)", fmt_number),
    *(
        (f"latency_s.{k}", k, fmt_s)
        for k in ("min", "mean", "p50", "p90", "p95", "p99", "p999", "max")
    ),
)


def lookup(doc: Mapping[str, Any], key: str) -> Any:
    """``doc["latency_s"]["p99"]`` for ``"latency_s.p99"``."""
    value: Any = doc
    for part in key.split("."):
        value = value[part]
    return value


def ratio(base: float, value: float) -> float | None:
    """``value / base``, None when the base is 0 (no ratio to give)."""
    return value / base if base else None


def values(runs: Sequence[SavedRun], key: str) -> list[Any]:
    """``key``'s value in each run's --json object."""
    return [lookup(r.json(), key) for r in runs]


def compare_json(runs: Sequence[SavedRun]) -> dict[str, Any]:
    """Each run's --json object, and for each run after the first its ratios to the first."""
    docs = [r.json() for r in runs]
    return {
        "schema": SCHEMA,
        "runs": [
            {"name": r.name, "command": list(r.command), **d}
            for r, d in zip(runs, docs, strict=True)
        ],
        "ratios": [
            {key: ratio(lookup(docs[0], key), lookup(d, key)) for key, _, _ in COMPARED}
            for d in docs[1:]
        ],
    }


def compare_text(runs: Sequence[SavedRun]) -> str:
    """A table: one row per number compared, one column per run, then the ratios."""
    names = [r.name for r in runs]
    rows = [["", *names, *(f"{n}/{names[0]}" for n in names[1:])]]
    for key, label, show in COMPARED:
        vs = values(runs, key)
        ratios = [ratio(vs[0], v) for v in vs[1:]]
        shown = ["—" if r is None else f"{r:.3f}x" for r in ratios]
        rows.append([label, *(show(v) for v in vs), *shown])
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = zip(row, widths, strict=True)
        lines.append("  ".join(c.rjust(w) if k else c.ljust(w) for k, (c, w) in enumerate(cells)))
    return "\n".join(line.rstrip() for line in lines) + "\n"
