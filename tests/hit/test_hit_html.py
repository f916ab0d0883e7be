"""The HTML report in a real headless Chromium: it opens from file:// with no other request and
no console error, its numbers are the run's --json numbers, and its charts are drawn."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _browser import browser, console_errors, requested_urls, screenshot
from hitpool.hit import html, saved
from hitpool.hit.charts import COLORS
from hitpool.hit.cli import main
from hitpool.hit.report import fmt_s

from .servers import Server, serve_in_thread

# The series' colors: pixels of them mean a series was drawn (axes and grid are grey).
SERIES = [[int(c[k : k + 2], 16) for k in (1, 3, 5)] for c in COLORS]

# Pixels of a series color on each chart's canvas, by the chart's id.
_PIXELS_JS = """
const colors = arguments[0];
const near = (d, i, [r, g, b]) =>
  Math.abs(d[i] - r) < 8 && Math.abs(d[i + 1] - g) < 8 && Math.abs(d[i + 2] - b) < 8;
const out = {};
for (const div of document.querySelectorAll('div.chart')) {
  const c = div.querySelector('canvas');
  if (!c) { out[div.id] = -1; continue; }
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4)
    if (d[i + 3] > 200 && colors.some(c => near(d, i, c))) n++;
  out[div.id] = n;
}
return out;
"""

_CELLS_JS = """
return Array.from(document.querySelectorAll('[data-key]')).map(
  e => [e.dataset.key, e.dataset.value, e.textContent]);
"""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with browser() as d:
        yield d


@pytest.fixture
def srv() -> Iterator[Server]:
    with serve_in_thread() as s:
        yield s


def _lookup(doc: Any, key: str) -> Any:
    # status codes and step names may hold dots: match the longest key first
    if key in doc:
        return doc[key]
    for k in sorted(doc, key=len, reverse=True):
        if key.startswith(f"{k}."):
            return _lookup(doc[k], key[len(k) + 1 :])
    raise KeyError(key)


def _keep_screenshot(driver: Any, name: str) -> None:
    """The whole page as a test artifact (the window grown to the page's height)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(8000, height + 40))
    screenshot(driver, name)
    driver.set_window_size(1280, 900)


def _open(driver: Any, path: Path) -> None:
    console_errors(driver)
    requested_urls(driver)  # empty both logs
    driver.get(path.as_uri())
    driver.find_element("css selector", "div.chart canvas")  # uPlot ran


def _checked_cells(driver: Any, doc: dict[str, Any]) -> set[str]:
    """Every cell that names a --json key shows that key's value; the keys checked."""
    seen = set()
    for key, raw, text in driver.execute_script(_CELLS_JS):
        if key == "assert":
            continue
        value = json.loads(raw)
        assert value == _lookup(doc, key), key
        if (key.startswith("latency_s.") or ".latency_s." in key) and isinstance(value, float):
            assert text == fmt_s(value), key
        elif isinstance(value, bool):
            assert text == ("yes" if value else "no"), key
        elif isinstance(value, int):
            assert text.replace(",", "") == str(value), key
        seen.add(key)
    return seen


def test_the_report_of_a_real_run(
    chromium: Any, srv: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "report.html"
    argv = ["-n", "900", "-c", "4", "--rps", "600", "--json", "--html", str(page)]
    argv += ["--assert", "p99<10s", "--assert", "errors>5", srv.url("/ok")]
    assert main(argv) == 3  # the second assert fails
    doc = json.loads(capsys.readouterr().out)
    _open(chromium, page)
    assert requested_urls(chromium) == [page.as_uri()]  # nothing but the file itself
    assert console_errors(chromium) == []
    seen = _checked_cells(chromium, doc)
    for key in ("requests", "successes", "errors", "rps", "duration_s", "bytes", "late"):
        assert key in seen
    assert {f"latency_s.{k}" for k in doc["latency_s"]} <= seen
    assert "status_codes.200" in seen and "errors_by_kind.timeout" in seen
    marks = chromium.execute_script(
        "return Array.from(document.querySelectorAll('table.asserts tr')).slice(1)"
        ".map(r => r.textContent)"
    )
    assert marks[0].startswith("✓p99<10s") and marks[1].startswith("✗errors>5")
    body = chromium.find_element("tag name", "body").text
    assert "hit -n 900 -c 4 --rps 600" in body and f"hit {saved.hit_version()}" in body
    pixels = chromium.execute_script(_PIXELS_JS, SERIES)
    for chart in ("latency", "rates", "inflight", "histogram", "spectrum"):
        assert pixels[f"chart-{chart}"] > 50, chart  # its first series is drawn
    _keep_screenshot(chromium, "hit_html_report")


def _scenario_run() -> saved.SavedRun:
    s = saved.loads(
        saved.dumps(saved.from_summary(_tiny_summary(), command=["hit", "-f", "shop.py"])), "x"
    ).summary
    steps = {
        "login": {
            "requests": 40,
            "successes": 39,
            "errors": 1,
            "rps": 20.0,
            "latency_s": {
                "min": 0.0005,
                "p50": 0.0012,
                "p90": 0.004,
                "p95": 0.0061,
                "p99": 0.0105,
                "p999": 0.02,
                "max": 0.0213,
                "mean": 0.002,
            },
            "status_codes": {"200": 39, "500": 1},
        },
        "item <b>&</b>": {
            "requests": 60,
            "successes": 60,
            "errors": 0,
            "rps": 30.0,
            "latency_s": {
                "min": 0.0002,
                "p50": 0.0007,
                "p90": 0.001,
                "p95": 0.0011,
                "p99": 0.0031,
                "p999": 0.004,
                "max": 0.0042,
                "mean": 0.0008,
            },
            "status_codes": {"200": 60},
        },
    }
    scenarios = {
        "shop": {
            "started": 21,
            "completed": 20,
            "failed": 1,
            "dropped": 2,
            "latency_s": {"p50": 0.0031, "p99": 0.04, "max": 0.05},
        },
    }
    return saved.SavedRun(
        summary=s,
        result={**s.to_wire(), "steps": steps, "scenarios": scenarios},
        command=("hit", "-f", "shop.py"),
        version=saved.hit_version(),
        name="shop",
    )


def _tiny_summary(scale: int = 1) -> Any:
    from hitpool.hit.client import ERROR_KINDS
    from hitpool.hit.stats import Histogram, Timeline
    from hitpool.hit.summary import Summary

    h = Histogram()
    tl = Timeline()
    for second in range(3):
        for v in (700, 1200, 4000):
            h.record(v * scale, 33)
        tl.tick(second, h, 99 * (second + 1) + second, second, 99 * (second + 1) + second + 1)
    return Summary(
        url="http://127.0.0.1:1/",
        method="GET",
        requests=300,
        successes=297,
        errors=3,
        errors_by_kind={**dict.fromkeys(ERROR_KINDS, 0), "status": 3},
        status_codes={200: 297, 500: 3},
        bytes=3000,
        duration_s=3.0,
        target_rps=100.0,
        late=0,
        concurrency=4,
        processes=1,
        interrupted=False,
        histogram=h,
        timeline=tuple(tl.rows),
    )


def test_steps_and_scenarios_have_tables_and_a_chart_each(chromium: Any, tmp_path: Path) -> None:
    run = _scenario_run()
    page = tmp_path / "steps.html"
    page.write_text(html.render(run), encoding="utf-8")
    _open(chromium, page)
    assert requested_urls(chromium) == [page.as_uri()] and console_errors(chromium) == []
    doc = run.json()
    seen = _checked_cells(chromium, doc)
    for name in doc["steps"]:
        assert {f"steps.{name}.requests", f"steps.{name}.latency_s.p99"} <= seen
    assert {"scenarios.shop.started", "scenarios.shop.dropped"} <= seen
    assert "item <b>&</b>" in chromium.find_element("tag name", "body").text  # text, not markup
    pixels = chromium.execute_script(_PIXELS_JS, SERIES)
    assert pixels["chart-step-0"] > 20 and pixels["chart-step-1"] > 20  # a chart per step
    _keep_screenshot(chromium, "hit_html_steps")


def test_the_compare_page(
    chromium: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.hit", tmp_path / "b.hit"
    a.write_bytes(saved.dumps(saved.from_summary(_tiny_summary(), command=["hit", "a"])))
    b.write_bytes(saved.dumps(saved.from_summary(_tiny_summary(3), command=["hit", "b"])))
    page = tmp_path / "compare.html"
    assert main(["report", "--compare", str(a), str(b), "--html", str(page), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    _open(chromium, page)
    assert requested_urls(chromium) == [page.as_uri()] and console_errors(chromium) == []
    cells = {k: json.loads(v) for k, v, _ in chromium.execute_script(_CELLS_JS)}
    for k, run in enumerate(doc["runs"]):
        assert cells[f"runs.{k}.requests"] == run["requests"]
        assert cells[f"runs.{k}.latency_s.p99"] == run["latency_s"]["p99"]
    for key, r in doc["ratios"][0].items():
        assert cells[f"ratios.0.{key}"] == r
    pixels = chromium.execute_script(_PIXELS_JS, SERIES)
    assert pixels["chart-cmp-spectrum"] > 50 and pixels["chart-cmp-p99"] > 20
    _keep_screenshot(chromium, "hit_html_compare")


def test_a_run_without_one_success_draws_what_it_has(chromium: Any, tmp_path: Path) -> None:
    from hitpool.hit.client import ERROR_KINDS
    from hitpool.hit.stats import Histogram, Second
    from hitpool.hit.summary import Summary

    empty = Summary(
        url="http://127.0.0.1:1/",
        method="GET",
        requests=4,
        successes=0,
        errors=4,
        errors_by_kind={**dict.fromkeys(ERROR_KINDS, 0), "timeout": 4},
        status_codes={},
        bytes=0,
        duration_s=1.2,
        target_rps=None,
        late=0,
        concurrency=2,
        processes=1,
        interrupted=False,
        histogram=Histogram(),
        timeline=(Second(0, 2, 2, (), 4, 2), Second(1, 2, 2, (), 0, 0)),
    )
    page = tmp_path / "empty.html"
    page.write_text(html.render(saved.from_summary(empty, command=["hit"])), encoding="utf-8")
    _open(chromium, page)
    assert requested_urls(chromium) == [page.as_uri()] and console_errors(chromium) == []
    empty_ids = chromium.execute_script(
        "return Array.from(document.querySelectorAll('div.chart.empty')).map(e => e.id)"
    )
    assert empty_ids == ["chart-latency", "chart-histogram", "chart-spectrum"]
    pixels = chromium.execute_script(_PIXELS_JS, SERIES)
    assert pixels["chart-rates"] > 50 and pixels["chart-inflight"] > 50
