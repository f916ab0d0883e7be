"""scenarios.sh's helpers: one JSON record per run, and the table of medians and ratios.

python3 _scenarios.py record PARSER FILE key=value...   # hit | locust | k6
python3 _scenarios.py table RESULTS.jsonl
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stats import parse  # the shared parsers of hit's and locust's output


def parse_k6(path: str) -> dict[str, Any]:
    """k6 --summary-export: http_reqs' count and rate, http_req_failed's rate."""
    m = json.loads(Path(path).read_text())["metrics"]
    reqs = m["http_reqs"]
    failed = m.get("http_req_failed", {}).get("value", 0.0)
    count = int(reqs["count"])
    errors = round(count * failed)
    p99 = m.get("http_req_duration", {}).get("p(99)")
    return {
        "requests": count,
        "successes": count - errors,
        "errors": errors,
        "rps": float(reqs["rate"]),
        "duration_s": count / reqs["rate"] if reqs["rate"] else 0.0,
        "p99_s": p99 / 1000 if p99 is not None else None,
    }


def record(parser: str, path: str, pairs: list[str]) -> dict[str, Any]:
    rec = parse_k6(path) if parser == "k6" else parse(parser, path)
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            rec[key] = json.loads(value)
        except ValueError:
            rec[key] = value
    return rec


def table(path: str) -> str:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["tool"], []).append(r)
    med = {t: statistics.median(r["rps"] for r in rs) for t, rs in by.items()}

    def ratio(a: str, b: str) -> str:
        return f"{med[a] / med[b]:.2f}x" if a in med and b in med and med[b] else "-"

    out = [
        "| generator | req/s (median) | errors | server counted / reported | CPU cores |",
        "|---|---:|---:|---:|---:|",
    ]
    for tool, rs in by.items():
        counted = sum(r.get("server_count", 0) for r in rs)
        reported = sum(r["requests"] for r in rs)
        cores = statistics.median(r.get("cpu_cores") or 0 for r in rs)
        errors = sum(r.get("errors", 0) for r in rs)
        out.append(
            f"| {tool} | {med[tool]:,.0f} | {errors} | {counted} / {reported} | {cores:.2f} |"
        )
    out += [
        "",
        f"hit -f / locust FastHttpUser: {ratio('hit-f', 'locust-fast')}; "
        f"hit -f / locust HttpUser: {ratio('hit-f', 'locust')}; "
        f"hit -f / k6: {ratio('hit-f', 'k6')}; "
        f"hit -f / hit single-URL: {ratio('hit-f', 'hit-url')}",
    ]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "record":
        print(json.dumps(record(argv[1], argv[2], argv[3:])))
        return 0
    if len(argv) == 2 and argv[0] == "table":
        print(table(argv[1]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
