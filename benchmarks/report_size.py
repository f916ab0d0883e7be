"""The size of hit's --html report and --save file for long runs, from synthetic timelines.

    python benchmarks/report_size.py [--rps 2000] [--minutes 10 60]

No load is generated: each second of the timeline gets ``--rps`` log-normal latencies (median
about 1 ms, a long tail), which spreads them over about 1400 histogram slots a second, as a
busy real run does. Prints a markdown table of the sizes.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter

from hitpool.hit import html, saved
from hitpool.hit.client import ERROR_KINDS
from hitpool.hit.stats import Histogram, Second, index_of
from hitpool.hit.summary import Summary


def synthetic(seconds: int, rps: int, seed: int = 1) -> Summary:
    rng = random.Random(seed)
    h = Histogram()
    rows = []
    for s in range(seconds):
        slots: Counter[int] = Counter()
        for _ in range(rps):
            v = int(rng.lognormvariate(7, 0.8))
            h.record(v)
            slots[index_of(v)] += 1
        rows.append(Second(s, rps, 0, tuple(sorted(slots.items())), rps, 10))
    n = seconds * rps
    return Summary(
        url="http://127.0.0.1:8080/",
        method="GET",
        requests=n,
        successes=n,
        errors=0,
        errors_by_kind=dict.fromkeys(ERROR_KINDS, 0),
        status_codes={200: n},
        bytes=n * 100,
        duration_s=float(seconds),
        target_rps=None,
        late=0,
        concurrency=50,
        processes=1,
        interrupted=False,
        histogram=h,
        timeline=tuple(rows),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rps", type=int, default=2000)
    ap.add_argument("--minutes", type=int, nargs="+", default=[10, 60])
    ns = ap.parse_args()
    print(f"| run ({ns.rps} requests/s) | --html | --save |")
    print("|---|---|---|")
    for minutes in ns.minutes:
        summary = synthetic(minutes * 60, ns.rps)
        run = saved.from_summary(summary, command=["hit", "-z", f"{minutes}m", summary.url])
        page = len(html.render(run).encode("utf-8"))
        blob = len(saved.dumps(run))
        print(f"| {minutes} minutes | {page / 1024:.0f} KiB | {blob / 1024 / 1024:.1f} MiB |")


if __name__ == "__main__":
    main()
