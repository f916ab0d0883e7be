"""The HTML report (``--html``, ``hit report --html``): one self-contained page per run or
comparison. Pure: a `SavedRun` in, the page's text out.

The page holds everything it shows: the tables are plain HTML written here (readable with
scripts off), the charts' numbers are one JSON block, and uPlot and the page's own script and
style are inlined from the package (``hitpool/_assets``). A Content-Security-Policy of
``default-src 'none'`` forbids any fetch, so opening the file offline draws the same page.
Every number a table shows carries its exact JSON value in ``data-value`` next to a
``data-key`` naming it in the run's ``--json`` object (``latency_s.p99``, ``status_codes.200``).
"""

from __future__ import annotations

import functools
import html
import json
import shlex
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

from .charts import compare_charts, run_charts, step_chart
from .compare import COMPARED, fmt_number, ratio, values
from .report import fmt_s
from .saved import SavedRun

__all__ = ["render", "render_compare"]

# Step charts drawn at most (the busiest steps); every step is in the table.
MAX_STEP_CHARTS = 50
_LATENCY = ("min", "mean", "p50", "p90", "p95", "p99", "p999", "max")
# Only the page's own inline script and style may run; nothing may be fetched, not even an image.
_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"


@functools.cache
def _asset(*parts: str) -> str:
    return resources.files("hitpool").joinpath("_assets", *parts).read_text(encoding="utf-8")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _cell(key: str | None, value: object, shown: str | None = None) -> str:
    """A table cell; with ``key`` it carries the exact JSON value for a reader to check."""
    text = _e(shown if shown is not None else value)
    if key is None:
        return f"<td>{text}</td>"
    raw = json.dumps(value)
    return f'<td data-key="{_e(key)}" data-value="{_e(raw)}">{text}</td>'


def _table(cls: str, head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    ths = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{ths}</tr></thead><tbody>{body}</tbody></table>'


def _overview(doc: Mapping[str, Any]) -> str:
    req = doc["requests"]
    rate = 100.0 * doc["errors"] / req if req else 0.0
    rows = [
        ("requests", "Requests"),
        ("successes", "Successes"),
        ("errors", "Errors"),
        ("rps", "Requests per second"),
        ("duration_s", "Duration (s)"),
        ("bytes", "Bytes read"),
        ("target_rps", "Target rate (--rps)"),
        ("late", "Late (left > 2 ms after due)"),
        ("dropped", "Dropped (due, never sent)"),
        ("concurrency", "Connections"),
        ("processes", "Processes"),
        ("interrupted", "Interrupted"),
    ]
    out = [
        [f"<th>{_e(label)}</th>", _cell(key, doc[key], fmt_number(doc[key]))]
        for key, label in rows
        if key in doc
    ]
    out.insert(3, ["<th>Error rate</th>", _cell(None, f"{rate:.3f}%")])
    lat = doc["latency_s"]
    lat_rows = [
        [f"<th>{_e(k)}</th>", _cell(f"latency_s.{k}", lat[k], fmt_s(lat[k]))]
        for k in _LATENCY
        if k in lat
    ]
    return (
        '<div class="pair"><section><h2>Totals</h2>'
        + _table("kv", ("", ""), out)
        + "</section><section><h2>Latency</h2>"
        + _table("kv", ("", ""), lat_rows)
        + "</section></div>"
    )


def _codes_and_errors(doc: Mapping[str, Any]) -> str:
    total = sum(doc["status_codes"].values()) or 1
    codes = [
        [
            f"<th>{_e(code)}</th>",
            _cell(f"status_codes.{code}", n, fmt_number(n)),
            _cell(None, f"{100.0 * n / total:.2f}%"),
        ]
        for code, n in doc["status_codes"].items()
    ]
    kinds = [
        [f"<th>{_e(kind)}</th>", _cell(f"errors_by_kind.{kind}", n, fmt_number(n))]
        for kind, n in sorted(doc["errors_by_kind"].items(), key=lambda kv: -kv[1])
    ]
    return (
        '<div class="pair"><section><h2>Status codes</h2>'
        + (_table("kv", ("status", "responses", "share"), codes) if codes else "<p>none</p>")
        + "</section><section><h2>Errors by kind</h2>"
        + _table("kv", ("kind", "count"), kinds)
        + "</section></div>"
    )


def _asserts(run: SavedRun) -> str:
    if not run.asserts:
        why = "A merge judges no --assert." if run.sources else "No --assert was given."
        return f"<section><h2>Assertions</h2><p>{why}</p></section>"
    rows = [
        [
            f'<td class="{"pass" if v.passed else "fail"}" data-key="assert" '
            f'data-value="{"true" if v.passed else "false"}">{"✓" if v.passed else "✗"}</td>',
            _cell(None, v.expr),
            _cell(None, v.actual),
        ]
        for v in run.asserts
    ]
    return (
        "<section><h2>Assertions</h2>"
        + _table("asserts", ("", "assert", "measured"), rows)
        + ("</section>")
    )


def _scenarios(doc: Mapping[str, Any]) -> str:
    scenarios = doc.get("scenarios")
    if not isinstance(scenarios, Mapping) or not scenarios:
        return ""
    rows = []
    for name, s in scenarios.items():
        lat = s.get("latency_s", {})
        rows.append(
            [f"<th>{_e(name)}</th>"]
            + [
                _cell(f"scenarios.{name}.{k}", s[k], fmt_number(s[k])) if k in s else "<td></td>"
                for k in ("started", "completed", "failed", "dropped")
            ]
            + [
                _cell(f"scenarios.{name}.latency_s.{k}", lat[k], fmt_s(lat[k]))
                if k in lat
                else "<td></td>"
                for k in ("p50", "p99", "max")
            ]
        )
    head = ("scenario", "started", "completed", "failed", "dropped", "p50", "p99", "max")
    return (
        "<section><h2>Scenarios (iteration times)</h2>" + _table("wide", head, rows) + "</section>"
    )


def _steps(doc: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    steps = doc.get("steps")
    if not isinstance(steps, Mapping) or not steps:
        return "", []
    rows = []
    for name, s in steps.items():
        lat = s.get("latency_s", {})
        codes = ", ".join(f"{c}: {n}" for c, n in s.get("status_codes", {}).items())
        rows.append(
            [f"<th>{_e(name)}</th>"]
            + [
                _cell(f"steps.{name}.{k}", s[k], fmt_number(s[k])) if k in s else "<td></td>"
                for k in ("requests", "successes", "errors", "rps")
            ]
            + [
                _cell(f"steps.{name}.latency_s.{k}", lat[k], fmt_s(lat[k]))
                if k in lat
                else "<td></td>"
                for k in ("p50", "p90", "p99", "max")
            ]
            + [_cell(None, codes)]
        )
    head = ("step", "requests", "successes", "errors", "rps", "p50", "p90", "p99", "max", "codes")
    busiest = sorted(steps.items(), key=lambda kv: -int(kv[1].get("requests", 0)))
    charts = [
        step_chart(f"step-{k}", name, s.get("latency_s", {}))
        for k, (name, s) in enumerate(busiest[:MAX_STEP_CHARTS])
    ]
    divs = "".join(f'<div class="chart small" id="chart-{c["id"]}"></div>' for c in charts)
    more = (
        f"<p>Charts of the {MAX_STEP_CHARTS} busiest steps; every step is in the table.</p>"
        if len(steps) > MAX_STEP_CHARTS
        else ""
    )
    section = (
        "<section><h2>Steps</h2>"
        + _table("wide", head, rows)
        + more
        + f'<div class="grid">{divs}</div></section>'
    )
    return section, charts


def _about(run: SavedRun) -> str:
    parts = [
        "<section><h2>Command</h2>",
        f'<pre class="command">{_e(shlex.join(run.command))}</pre>',
        f"<p>hit {_e(run.version)}"
        + (f", {_e(run.created_utc)}" if run.created_utc else "")
        + "</p>",
    ]
    if run.sources:
        rows = [
            [
                _cell(None, s.get("name", "")),
                f"<td><code>{_e(shlex.join(s.get('command', [])))}</code></td>",
                _cell(None, s.get("created_utc", "")),
                _cell(None, s.get("hit_version", "")),
            ]
            for s in run.sources
        ]
        parts.append("<h3>Merged from</h3>")
        parts.append(_table("wide", ("run", "command", "saved (UTC)", "hit"), rows))
    if run.spec:
        rows = [
            [f"<th>{_e(k)}</th>", _cell(None, v if isinstance(v, str) else json.dumps(v))]
            for k, v in run.spec.items()
        ]
        parts.append("<h3>Spec</h3>" + _table("kv", ("", ""), rows))
    parts.append("</section>")
    return "".join(parts)


def _page(title: str, body: str, charts: list[dict[str, Any]]) -> str:
    data = json.dumps({"charts": charts}, separators=(",", ":"), allow_nan=False)
    # "<" never appears raw inside the script block, so no "</script>" can end it early.
    data = data.replace("<", "\\u003c")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title>"
        f"<style>{_asset('uplot', 'uPlot.min.css')}</style>"
        f"<style>{_asset('report', 'report.css')}</style>"
        "</head><body>"
        f"<h1>{_e(title)}</h1>"
        f"{body}"
        f'<script id="hit-data" type="application/json">{data}</script>'
        f"<script>{_asset('uplot', 'uPlot.iife.min.js')}</script>"
        f"<script>{_asset('report', 'report.js')}</script>"
        "</body></html>\n"
    )


def _chart_divs(charts: Sequence[Mapping[str, Any]]) -> str:
    return "".join(f'<div class="chart" id="chart-{_e(c["id"])}"></div>' for c in charts)


def render(run: SavedRun) -> str:
    """The page of one run (or of a merge of several)."""
    doc = run.json()
    charts = run_charts(run.summary)
    steps_html, step_charts = _steps(doc)
    flags = " (interrupted: partial results)" if doc["interrupted"] else ""
    body = (
        f'<p class="target">{_e(doc["method"])} {_e(doc["url"])}{_e(flags)}</p>'
        + _overview(doc)
        + _asserts(run)
        + "<section><h2>Over time</h2>"
        + _chart_divs(charts[:3])
        + "</section><section><h2>Distribution</h2>"
        + '<div class="pair">'
        + _chart_divs(charts[3:])
        + "</div></section>"
        + _codes_and_errors(doc)
        + _scenarios(doc)
        + steps_html
        + _about(run)
    )
    return _page(f"hit report: {doc['method']} {doc['url']}", body, charts + step_charts)


def render_compare(runs: Sequence[SavedRun]) -> str:
    """Several runs side by side: each run's numbers, and each one's ratio to the first."""
    names = [r.name for r in runs]
    head = ["", *names, *(f"{n} / {names[0]}" for n in names[1:])]
    rows = []
    for key, label, show in COMPARED:
        vs = values(runs, key)
        cells = [f"<th>{_e(label)}</th>"]
        cells += [_cell(f"runs.{k}.{key}", v, show(v)) for k, v in enumerate(vs)]
        # keyed as in --json: ratios[k] is run k + 1's ratio to the first
        for k, v in enumerate(vs[1:]):
            r = ratio(vs[0], v)
            cells.append(_cell(f"ratios.{k}.{key}", r, "—" if r is None else f"{r:.3f}x"))
        rows.append(cells)
    charts = compare_charts([(r.name, r.summary) for r in runs])
    cmds = [
        [
            _cell(None, r.name),
            f"<td><code>{_e(shlex.join(r.command))}</code></td>",
            _cell(None, r.created_utc),
            _cell(None, r.version),
        ]
        for r in runs
    ]
    body = (
        "<section><h2>Side by side</h2>"
        + _table("wide compare", head, rows)
        + "</section><section><h2>Charts</h2>"
        + _chart_divs(charts)
        + "</section><section><h2>Runs</h2>"
        + _table("wide", ("run", "command", "saved (UTC)", "hit"), cmds)
        + "</section>"
    )
    return _page(f"hit compare: {', '.join(names)}", body, charts)
