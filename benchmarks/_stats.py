"""Shared helpers for the benchmark scripts: parse each tool's output, take medians, print tables.

Standard library only, so any Python 3.11 runs it. The shell scripts call it as

    _stats.py freeport
    _stats.py wait-http URL SECONDS           -> exit 0 once URL answers 200
    _stats.py get-json URL                    -> the JSON document at URL
    _stats.py parse TOOL OUTPUT_FILE [k=v]... -> one JSON object on stdout (k=v added to it)
    _stats.py loadgen-table RESULTS.jsonl     -> markdown table of generators
    _stats.py intake-table RESULTS.jsonl      -> markdown table of job servers

Every tool's output is normalised to {"requests", "errors", "rps", "duration_s", "p99_s"}, where
`requests` counts completed responses as the tool itself reports them: the scripts compare that
count with the server's own, so a tool that over- or under-counts shows up in the table.
"""

from __future__ import annotations

import json
import re
import socket
import statistics
import sys
import time
import urllib.request
from collections.abc import Iterable
from typing import Any

Record = dict[str, Any]


def wait_http(url: str, timeout_s: float) -> bool:
    """Poll `url` until it answers 200 or `timeout_s` passes (a server starting up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return True
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return False


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---------------------------------------------------------------------------------------------
# Parsers: one per tool. Each takes the text the tool printed and returns the normalised record.


def _last_json_object(text: str) -> Record:
    """The last line that parses as a JSON object (tools may log before it)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    # hit --json may pretty-print over several lines: try the whole text from the first brace.
    start = text.find("{")
    if start >= 0:
        obj = json.loads(text[start:])
        if isinstance(obj, dict):
            return obj
    raise ValueError("no JSON object in the output")


def parse_wrk(text: str) -> Record:
    """wrk with benchmarks' Lua `done()` hook, which prints one JSON line (times in us)."""
    o = _last_json_object(text)
    duration_s = o["duration_us"] / 1e6
    errors = sum(int(v) for v in o["errors"].values())
    return {
        "requests": int(o["requests"]),
        # wrk counts a non-2xx/3xx response as a "status" error; the other kinds got no response.
        "successes": int(o["requests"]) - int(o["errors"]["status"]),
        "errors": errors,
        "rps": o["requests"] / duration_s if duration_s else 0.0,
        "duration_s": duration_s,
        "p99_s": o["p99_us"] / 1e6,
    }


_HEY_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
_HEY_TOTAL = re.compile(r"Total:\s+([0-9.]+) secs")
_HEY_STATUS = re.compile(r"\[(\d{3})\]\s+(\d+) responses")
_HEY_ERR = re.compile(r"^\s+\[(\d+)\]\s+\S", re.M)
_HEY_P99 = re.compile(r"99% in ([0-9.]+) secs")


def parse_hey(text: str) -> Record:
    rps = float(_HEY_RPS.search(text).group(1))  # type: ignore[union-attr]
    total = float(_HEY_TOTAL.search(text).group(1))  # type: ignore[union-attr]
    statuses = {int(c): int(n) for c, n in _HEY_STATUS.findall(text)}
    err_part = text.split("Error distribution:", 1)[1] if "Error distribution:" in text else ""
    errors = sum(int(n) for n in _HEY_ERR.findall(err_part))
    p99 = _HEY_P99.search(text)
    ok = sum(n for c, n in statuses.items() if 200 <= c < 300)
    return {
        "requests": sum(statuses.values()),
        "successes": ok,
        "errors": errors + sum(statuses.values()) - ok,
        "rps": rps,
        "duration_s": total,
        "p99_s": float(p99.group(1)) if p99 else None,
    }


def parse_hit(text: str) -> Record:
    """`hit --json`: the stable schema of issue 3."""
    o = _last_json_object(text)
    lat = o.get("latency_s") or {}
    return {
        "requests": int(o["requests"]),
        "successes": int(o["successes"]),
        "errors": int(o.get("errors", 0)),
        "status_codes": o.get("status_codes"),
        "errors_by_kind": o.get("errors_by_kind"),
        "rps": float(o["rps"]),
        "duration_s": float(o["duration_s"]),
        "p99_s": lat.get("p99"),
    }


_UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_HIT_FIELD = re.compile(r"^\s*(Requests|Errors|Duration|RPS):\s+(\S+)", re.M)
_HIT_P99 = re.compile(r"^\s*99%\s+([0-9.]+)(ns|µs|us|ms|s|m)\s*$", re.M)


def _seconds(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(ns|µs|us|ms|s|m)", text)
    if m is None:
        raise ValueError(f"not a duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_hit_text(text: str) -> Record:
    """hit's text summary (no --json), as printed to a pipe or a terminal: the live view's
    cost is measured with it (loadgen.sh --mode view). A terminal's output has \\r\\n line ends
    and the redrawn frames before the summary; only the summary's fields are read."""
    text = text.replace("\r", "")
    summary = text.rsplit("Summary:", 1)[-1]
    fields = dict(_HIT_FIELD.findall(summary))
    if "Requests" not in fields or "Duration" not in fields:
        raise ValueError("no Summary section with Requests and Duration in hit's output")
    requests, errors = int(fields["Requests"]), int(fields.get("Errors", "0"))
    statuses = {int(c): int(n) for c, n in _HEY_STATUS.findall(summary)}
    ok = sum(n for c, n in statuses.items() if 200 <= c < 300)
    duration_s = _seconds(fields["Duration"])
    p99 = _HIT_P99.search(summary)
    return {
        "requests": requests,
        "successes": ok,
        "errors": errors,
        "rps": requests / duration_s if duration_s else 0.0,
        "duration_s": duration_s,
        "p99_s": float(p99.group(1)) * _UNITS[p99.group(2)] if p99 else None,
    }


def parse_own(text: str) -> Record:
    """bare_client.py and aiohttp_client.py print the normalised record themselves."""
    o = _last_json_object(text)
    return {k: o.get(k) for k in ("requests", "successes", "errors", "rps", "duration_s", "p99_s")}


def parse_locust(text: str) -> Record:
    """locust --headless --only-summary: the final tables it prints on exit.

    Its --csv files are written by a timer and may miss the last second (seen here: 7,577 in
    the CSV against 10,142 in the printed summary and in nginx's count), so parse the summary.
    """
    stats = re.search(r"^\s+Aggregated\s+(\d+)\s+(\d+)\([^)]*\)\s+\|.*\|\s+([0-9.]+)\s", text, re.M)
    if stats is None:
        raise ValueError("no Aggregated row in locust's summary")
    requests, failures, rps = int(stats.group(1)), int(stats.group(2)), float(stats.group(3))
    p99 = None
    pct = text.split("Response time percentiles", 1)
    if len(pct) == 2:
        header = next(line for line in pct[1].splitlines() if "99%" in line).split()
        row = re.search(r"^\s+Aggregated\s+(.*)$", pct[1], re.M)
        if row is not None:
            values = row.group(1).split()
            # Columns right-aligned under the header; the row's tail lines up with "50% ... # reqs".
            names = header[header.index("50%") :]
            cols = dict(zip(names[-len(values) :], values, strict=False))
            if cols.get("99%", "N/A") != "N/A":
                p99 = float(cols["99%"]) / 1000
    return {
        "requests": requests,
        "successes": requests - failures,
        "errors": failures,
        "rps": rps,
        "duration_s": requests / rps if rps else 0.0,
        "p99_s": p99,
    }


def parse(tool: str, path: str) -> Record:
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    parsers = {
        "wrk": parse_wrk,
        "hey": parse_hey,
        "hit": parse_hit,
        "hit-json": parse_hit,
        "hit-pipe": parse_hit_text,
        "hit-tty": parse_hit_text,
        "locust": parse_locust,
    }
    return parsers.get(tool, parse_own)(text)


# ---------------------------------------------------------------------------------------------
# Tables


def load(path: str) -> list[Record]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _median(values: Iterable[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return statistics.median(vs) if vs else None


def _fmt_int(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def _fmt_ms(v: float | None) -> str:
    return "—" if v is None else f"{v * 1000:.2f}"


def _diff(a: int | None, b: int | None) -> str:
    return "?" if a is None or b is None else f"{a - b:+d}"


def _max_busy(g: list[Record]) -> float | None:
    """The most CPU the rest of the machine used just before one of these runs (shared box)."""
    vs = [float(r["busy_before"]) for r in g if r.get("busy_before") not in (None, "")]
    return max(vs) if vs else None


def _fmt_cores(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def _fmt_ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}x"


def _group(records: list[Record], *keys: str) -> dict[tuple[Any, ...], list[Record]]:
    groups: dict[tuple[Any, ...], list[Record]] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups


def _per_cpu_s(r: Record) -> float | None:
    """Requests per CPU-second of the generator: req/s over the cores it used."""
    cores = r.get("cpu_cores")
    return r["rps"] / cores if r.get("rps") is not None and cores else None


def loadgen_table(records: list[Record]) -> str:
    """One row per generator: median req/s over its runs, and the count check against nginx."""
    order = ["wrk", "hey", "hit", "bare", "aiohttp", "locust", "hit-json", "hit-pipe", "hit-tty"]
    groups = _group(records, "tool")
    med = {k[0]: _median(r["rps"] for r in g) for k, g in groups.items()}
    lines = [
        "| generator | CPU budget | runs | req/s (median) | min-max req/s | CPU used (cores) "
        "| req per generator CPU-s | p99 ms | tool count - nginx count (per run) | errors "
        "| others' CPU before (max) | vs wrk | vs hey |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    tools = sorted(groups, key=lambda k: order.index(k[0]) if k[0] in order else 99)
    for key in tools:
        tool = key[0]
        g = groups[key]
        rps = [r["rps"] for r in g if r["rps"] is not None]
        diffs = ", ".join(_diff(r["requests"], r.get("server_count")) for r in g)
        lines.append(
            f"| {tool} | {g[0].get('budget', '?')} | {len(g)} | {_fmt_int(med[tool])} "
            f"| {_fmt_int(min(rps) if rps else None)}-{_fmt_int(max(rps) if rps else None)} "
            f"| {_fmt_cores(_median(r.get('cpu_cores') for r in g))} "
            f"| {_fmt_int(_median(_per_cpu_s(r) for r in g))} "
            f"| {_fmt_ms(_median(r.get('p99_s') for r in g))} | {diffs} "
            f"| {sum(int(r.get('errors') or 0) for r in g)} | {_fmt_cores(_max_busy(g))} "
            f"| {_fmt_ratio(med[tool], med.get('wrk'))} | {_fmt_ratio(med[tool], med.get('hey'))} |"
        )
    hit = med.get("hit")
    lines.append("")
    if "hit-json" in med:  # --mode view: the live view's cost against no view at all
        for tool in ("hit-pipe", "hit-tty"):
            if tool in med:
                lines.append(f"{tool} / hit-json = {_fmt_ratio(med[tool], med['hit-json'])}.")
        return "\n".join(lines)
    if hit is None:
        lines.append("hit: no run parsed (not installed, or every run failed: see raw outputs).")
    else:
        line = f"hit / wrk = {_fmt_ratio(hit, med.get('wrk'))} (goal >= 1.0x)"
        if "hey" in med:
            line += f", hit / hey = {_fmt_ratio(hit, med.get('hey'))} (goal >= 2.5x)"
        lines.append(line + ".")
    return "\n".join(lines)


def intake_table(records: list[Record]) -> str:
    """One row per (server, body shape): accepted jobs/s, p99, jobs/min, ratio to Go (and to
    the durable Go collector, a column shown only when `go-durable` ran)."""
    groups = _group(records, "server", "shape")
    med = {k: _median(r["jobs_per_s"] for r in g) for k, g in groups.items()}
    durable = any(k[0] == "go-durable" for k in groups)
    lines = [
        "| server | store | body | runs | accepted jobs/s (median) | min-max jobs/s | jobs/min "
        "| p99 ms | server CPU (cores) | generator CPU | client errors / server 429s "
        "| server accepted - client accepted (per run) | others' CPU before (max) | vs Go |"
        + (" vs Go durable |" if durable else ""),
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
        + ("---:|" if durable else ""),
    ]
    order = {"go": 0, "go-durable": 1, "hitd": 2, "hitd-pg": 3, "bare": 4}
    for key in sorted(groups, key=lambda k: (k[1], order.get(k[0], 9))):
        server, shape = key
        g = groups[key]
        jps = [r["jobs_per_s"] for r in g]
        m = med[key]
        checks = ", ".join(_diff(r.get("server_accepted"), r["accepted"]) for r in g)
        lines.append(
            f"| {server} | {g[0].get('store', '?')} | {shape} | {len(g)} | {_fmt_int(m)} "
            f"| {_fmt_int(min(jps))}-{_fmt_int(max(jps))} "
            f"| {_fmt_int(m * 60 if m is not None else None)} "
            f"| {_fmt_ms(_median(r.get('p99_s') for r in g))} "
            f"| {_fmt_cores(_median(r.get('server_cpu') for r in g))} "
            f"| {_fmt_cores(_median(r.get('cpu_cores') for r in g))} "
            f"| {sum(int(r.get('errors') or 0) for r in g)} "
            f"/ {sum(int(r.get('server_rejected') or 0) for r in g)} | {checks} "
            f"| {_fmt_cores(_max_busy(g))} | {_fmt_ratio(m, med.get(('go', shape)))} |"
            + (f" {_fmt_ratio(m, med.get(('go-durable', shape)))} |" if durable else "")
        )
    lines.append("")
    for shape in sorted({k[1] for k in groups}):
        h, go = med.get(("hitd", shape)), med.get(("go", shape))
        if h is not None:
            floor = "meets" if h * 60 >= 1_000_000 else "misses"
            vs_durable = ""
            if durable:
                gd = med.get(("go-durable", shape))
                vs_durable = f"hitd / Go durable = {_fmt_ratio(h, gd)} (goal >= 1.0x); "
            lines.append(
                f"{shape}: hitd / Go = {_fmt_ratio(h, go)} (goal >= 1.0x); {vs_durable}"
                f"hitd {_fmt_int(h * 60)} jobs/min ({floor} the 1,000,000 floor)."
            )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, *rest = argv
    if cmd == "freeport":
        print(free_port())
    elif cmd == "parse" and len(rest) >= 2:
        record = parse(rest[0], rest[1])
        for kv in rest[2:]:
            k, _, v = kv.partition("=")
            try:
                record[k] = json.loads(v)
            except ValueError:
                record[k] = v
        if "batch" in record:  # a job-server run: each 2xx answer accepted `batch` jobs
            record["accepted"] = int(record["successes"]) * int(record["batch"])
            d = float(record["duration_s"] or 0)
            record["jobs_per_s"] = record["accepted"] / d if d else 0.0
        print(json.dumps(record))
    elif cmd == "wait-http" and len(rest) == 2:
        return 0 if wait_http(rest[0], float(rest[1])) else 1
    elif cmd == "get-json" and len(rest) == 1:
        print(json.dumps(get_json(rest[0])))
    elif cmd == "summary" and len(rest) == 1:
        r = json.loads(rest[0])
        line = f"{r['rps']:,.0f} req/s, {r['requests']} done"
        if "jobs_per_s" in r:
            line = (
                f"{r['jobs_per_s']:,.0f} jobs/s accepted ({r['rps']:,.0f} req/s), client "
                f"{r['accepted']} vs server {r.get('server_accepted')}, errors {r['errors']}, "
                f"server cpu {r.get('server_cpu')}"
            )
        if "server_count" in r:
            line += f" (server saw {r['server_count']})"
        if r.get("cpu_cores") is not None:
            line += f", {r['cpu_cores']} cores"
        if r.get("cfs_periods") is not None:
            line += f", throttled {r['cfs_throttled']}/{r['cfs_periods']} periods"
        print(line)
    elif cmd == "loadgen-table" and len(rest) == 1:
        print(loadgen_table(load(rest[0])))
    elif cmd == "intake-table" and len(rest) == 1:
        print(intake_table(load(rest[0])))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
