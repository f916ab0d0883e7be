"""The dashboard (/ui) in a real headless Chromium against hitd in this process.

hitd runs on this test's event loop, so every call into the browser (which waits for hitd
to answer) goes through a thread. The page polls once a second; a test waits for what it
expects with the browser's own explicit wait on the DOM, never with a sleep.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from _browser import browser, console_errors, requested_urls, screenshot
from hitpool.hitd.tasks import task

JSON = {"Content-Type": "application/json"}
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'

_fail = {"on": True}
_gates: dict[str, asyncio.Event] = {}


@task(name="test_ui_flaky")
def flaky(word: str) -> str:
    if _fail["on"]:
        raise RuntimeError(f"failed on {word}")
    return word


@task(name="test_ui_gate")
async def gate(name: str) -> str:
    await _gates[name].wait()
    return name


@pytest.fixture(autouse=True)
def failing() -> None:
    _fail["on"] = True


@pytest.fixture
def chromium() -> Any:
    with browser() as driver:
        yield driver


async def run(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def wait_js(driver: Any, condition: str, timeout: float = 10.0) -> Any:
    """Wait until the JS expression `condition` is truthy in the page; returns its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    def until() -> Any:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(
            lambda d: d.execute_script(f"return ({condition})")
        )

    return await run(until)


async def js(driver: Any, script: str) -> Any:
    return await run(driver.execute_script, script)


async def dead_job(hitd: Any, c: Any, word: str) -> int:
    body = {"task": "test_ui_flaky", "args": {"word": word}, "max_attempts": 1}
    r = await c.request("POST", "/jobs", body, JSON)
    await hitd.runner.until_idle()
    return int(r.json()["id"])


def page_counts(driver: Any) -> dict[str, int]:
    cards = driver.execute_script(
        "return [...document.querySelectorAll('#counts .card')]"
        ".map(c => [c.dataset.status, c.querySelector('.n').textContent])"
    )
    return {s: int(n) for s, n in cards}


def only_hitd(driver: Any, port: int) -> None:
    for url in requested_urls(driver):
        parts = urlsplit(url)
        assert parts.scheme == "data" or (parts.hostname, parts.port) == ("127.0.0.1", port), url


async def test_counts_equal_stats_and_update_when_a_job_finishes(
    start_hitd, connect, chromium
) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    for name in ("a", "b"):
        await c.request("POST", "/jobs", {"task": "hello", "args": {"name": name}}, JSON)
    await hitd.runner.until_idle()
    await dead_job(hitd, c, "x")
    _gates["held"] = asyncio.Event()
    await c.request("POST", "/jobs", {"task": "test_ui_gate", "args": {"name": "held"}}, JSON)
    await c.request("POST", "/jobs", {"task": "hello", "delay": "1h"}, JSON)  # stays queued
    await wait_busy(c, 1)
    stats = (await c.request("GET", "/stats")).json()
    await run(chromium.get, f"http://127.0.0.1:{hitd.port}/ui")
    await wait_js(chromium, "Number(document.body.dataset.polls) >= 1")
    assert await run(page_counts, chromium) == stats["jobs"]
    assert stats["jobs"]["running"] == 1 and stats["jobs"]["dead"] == 1
    busy = await js(chromium, "return document.querySelector('#busy').textContent")
    assert busy == "1 / 2"
    # The held job finishes: the next poll shows it.
    _gates["held"].set()
    await hitd.runner.until_idle()
    succeeded = stats["jobs"]["succeeded"] + 1
    await wait_js(
        chromium,
        f"document.querySelector('#counts [data-status=succeeded] .n')"
        f".textContent === '{succeeded}'",
    )
    assert (await run(page_counts, chromium)) == (await c.request("GET", "/stats")).json()["jobs"]
    assert await js(chromium, "return document.querySelectorAll('#rates-chart canvas').length")
    await run(screenshot, chromium, "hitd-ui-overview")
    assert await run(console_errors, chromium) == []
    await run(only_hitd, chromium, hitd.port)


async def wait_busy(c: Any, n: int) -> None:
    async with asyncio.timeout(5):
        while (await c.request("GET", "/stats")).json()["workers"]["busy"] != n:
            await asyncio.sleep(0)  # another request: hitd moves on between them


async def test_retry_and_cancel_from_the_page(start_hitd, connect, chromium) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    dead = await dead_job(hitd, c, "retry-me")
    r = await c.request(
        "POST", "/jobs", {"task": "hello", "args": {"name": "z"}, "delay": "1h"}, JSON
    )
    scheduled = r.json()["id"]
    _fail["on"] = False
    await run(chromium.get, f"http://127.0.0.1:{hitd.port}/ui")
    row = f"#failures tr[data-id='{dead}']"
    await wait_js(chromium, f'document.querySelector("{row}")')
    await js(chromium, f'document.querySelector("{row} [data-action=retry]").click()')
    await wait_js(chromium, f'!document.querySelector("{row}")')  # no longer dead
    await hitd.runner.until_idle()
    job = (await c.request("GET", f"/jobs/{dead}")).json()
    assert (job["status"], job["result"]) == ("succeeded", "retry-me")
    # Cancel, from the job's page.
    await run(chromium.get, f"http://127.0.0.1:{hitd.port}/ui#job/{scheduled}")
    await wait_js(chromium, "document.querySelector('#job-actions [data-action=cancel]')")
    await js(chromium, "document.querySelector('#job-actions [data-action=cancel]').click()")
    await wait_js(
        chromium, "document.querySelector('#job-title').textContent.endsWith('cancelled')"
    )
    assert (await c.request("GET", f"/jobs/{scheduled}")).json()["status"] == "cancelled"
    # Delete, from the same page: the job is finished now (and not the newest).
    await c.request("POST", "/jobs", {"task": "hello", "delay": "1h"}, JSON)
    await run(chromium.refresh)
    await wait_js(chromium, "document.querySelector('#job-actions [data-action=delete]')")
    await js(chromium, "document.querySelector('#job-actions [data-action=delete]').click()")
    await wait_js(
        chromium, f"document.querySelector('#flash').textContent === 'job {scheduled} deleted'"
    )
    assert await js(
        chromium, "return document.querySelector('#job').hidden"
    )  # back to the overview
    assert (await c.request("GET", f"/jobs/{scheduled}")).status == 404
    await run(screenshot, chromium, "hitd-ui-actions")
    assert await run(console_errors, chromium) == []
    await run(only_hitd, chromium, hitd.port)


async def test_bulk_retry_of_dead_jobs_from_the_page(start_hitd, connect, chromium) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    ids = [await dead_job(hitd, c, f"w{i}") for i in range(3)]
    _fail["on"] = False
    await run(chromium.get, f"http://127.0.0.1:{hitd.port}/ui")
    await wait_js(chromium, "document.querySelectorAll('#failures tr[data-id]').length === 3")
    await js(chromium, "document.querySelector('#retry-dead').click()")
    await wait_js(chromium, "document.querySelector('#flash').textContent.startsWith('3 dead')")
    await hitd.runner.until_idle()
    for id in ids:
        assert (await c.request("GET", f"/jobs/{id}")).json()["status"] == "succeeded"


async def test_strings_from_jobs_are_text_never_markup(start_hitd, connect, chromium) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    id = await dead_job(hitd, c, XSS)
    await run(chromium.get, f"http://127.0.0.1:{hitd.port}/ui")
    row = f"#failures tr[data-id='{id}']"
    await wait_js(chromium, f'document.querySelector("{row}")')
    error = await js(chromium, f'return document.querySelector("{row} td.error").textContent')
    assert error.endswith("failed on " + XSS)
    await run(chromium.get, f"http://127.0.0.1:{hitd.port}/ui#job/{id}")
    await wait_js(chromium, "document.querySelector('#job-args').textContent.length > 2")
    shown = await js(chromium, "return document.querySelector('#job-args').textContent")
    assert json.loads(shown) == {"word": XSS}
    # Search for it: the args cell shows the text too.
    await run(chromium.get, f"http://127.0.0.1:{hitd.port}/ui")
    await wait_js(chromium, "Number(document.body.dataset.polls) >= 1")
    await js(
        chromium,
        "const f = document.querySelector('#search'); f.q.value = 'onerror';f.requestSubmit();",
    )
    await wait_js(chromium, "document.querySelector('#results tr[data-id]')")
    assert await js(chromium, "return document.querySelectorAll('img, main script').length") == 0
    assert await js(chromium, "return window.__xss") is None
    assert await run(console_errors, chromium) == []


async def test_read_only_hides_the_actions(start_hitd, connect, chromium) -> None:
    hitd = await start_hitd(ui="read-only")
    c = await connect(hitd.port)
    id = await dead_job(hitd, c, "x")
    await run(chromium.get, f"http://127.0.0.1:{hitd.port}/ui")
    await wait_js(chromium, f"document.querySelector(\"#failures tr[data-id='{id}']\")")
    assert await js(chromium, "return document.querySelectorAll('[data-action]').length") == 0
    assert await js(chromium, "return document.querySelector('#retry-dead').hidden")
    assert await js(chromium, "return document.querySelector('#mode').textContent") == "read-only"
    await run(chromium.get, f"http://127.0.0.1:{hitd.port}/ui#job/{id}")
    await wait_js(chromium, "document.querySelector('#job-title').textContent.includes('dead')")
    assert await js(chromium, "return document.querySelectorAll('[data-action]').length") == 0


async def test_with_a_token_the_page_logs_in_and_works(start_hitd, connect, chromium) -> None:
    hitd = await start_hitd(token="s3cret")
    c = await connect(hitd.port)
    auth = {"Authorization": "Bearer s3cret"}
    await c.request(
        "POST",
        "/jobs",
        {"task": "test_ui_flaky", "args": {"word": "t"}, "max_attempts": 1},
        {**JSON, **auth},
    )
    await hitd.runner.until_idle()
    _fail["on"] = False
    await run(chromium.get, f"http://127.0.0.1:{hitd.port}/ui")
    await wait_js(chromium, "document.querySelector('input[name=token]')")
    await js(
        chromium,
        "const f = document.querySelector('form'); f.token.value = 's3cret'; f.submit();",
    )
    await wait_js(chromium, "Number(document.body.dataset.polls) >= 1")
    stats = (await c.request("GET", "/stats", headers=auth)).json()
    assert await run(page_counts, chromium) == stats["jobs"]
    await js(chromium, "document.querySelector('#failures [data-action=retry]').click()")
    await wait_js(chromium, "!document.querySelector('#failures tr[data-id]')")
    await hitd.runner.until_idle()
    assert (await c.request("GET", "/jobs?status=succeeded", headers=auth)).json()["jobs"]
    assert await run(console_errors, chromium) == []


async def test_a_hit_run_is_drawn_with_uplot(start_hitd, connect, chromium) -> None:
    from hitpool.hitd.tasks import HitLimits

    # The run targets hitd's own /healthz, which the hit task refuses unless allowed.
    hitd = await start_hitd(hit_limits=HitLimits(allow_self=True))
    c = await connect(hitd.port)
    args = {"url": f"http://127.0.0.1:{hitd.port}/healthz", "requests": 200, "concurrency": 2}
    r = await c.request("POST", "/jobs", {"task": "hit", "args": args, "max_attempts": 1}, JSON)
    id = r.json()["id"]
    await hitd.runner.until_idle()
    job = (await c.request("GET", f"/jobs/{id}")).json()
    assert job["status"] == "succeeded", job
    assert sum(row["requests"] for row in job["result"]["timeline"]) == 200
    await run(chromium.get, f"http://127.0.0.1:{hitd.port}/ui")
    await wait_js(chromium, f"document.querySelector('#hit-runs a[href=\"#job/{id}\"]')")
    await js(chromium, f"document.querySelector('#hit-runs a[href=\"#job/{id}\"]').click()")
    # The HTML report's five charts, drawn by its own script from the result's `charts`.
    assert [c["id"] for c in job["result"]["charts"]] == [
        "latency",
        "rates",
        "inflight",
        "histogram",
        "spectrum",
    ]
    await wait_js(chromium, "document.querySelectorAll('#hit-report canvas').length === 5")
    shown = await js(chromium, "return document.querySelector('#hit-latency').textContent")
    assert "requests200" in shown.replace(" ", "")
    rates = await js(chromium, "return document.querySelector('#hit-chart-rates').uplot.data")
    assert sum(rates[2]) == 200  # completed per second, as the timeline counts them
    await js(chromium, "document.querySelector('#hit-report').scrollIntoView()")
    await run(screenshot, chromium, "hitd-ui-hit-run")
    assert await run(console_errors, chromium) == []
    await run(only_hitd, chromium, hitd.port)


async def test_a_second_without_a_response_draws_no_latency(start_hitd, connect, chromium) -> None:
    # A server that accepts and closes at once: hit connects, then every request ends
    # "closed", with no response and so no latency.
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hitd = await start_hitd()
    c = await connect(hitd.port)
    try:
        args = {"url": f"http://127.0.0.1:{port}/", "requests": 20, "concurrency": 1}
        r = await c.request("POST", "/jobs", {"task": "hit", "args": args, "max_attempts": 1}, JSON)
        id = r.json()["id"]
        await hitd.runner.until_idle()
    finally:
        server.close()
    job = (await c.request("GET", f"/jobs/{id}")).json()
    rows = job["result"]["timeline"]
    assert rows and all(row["requests"] == row["errors"] for row in rows), job
    assert all(row["p50_s"] == 0 for row in rows)
    await run(chromium.get, f"http://127.0.0.1:{hitd.port}/ui#job/{id}")
    await wait_js(chromium, "document.querySelector('#hit-chart-spectrum')")
    # No latency to draw: the chart says so instead of a line at 0 ms; the rates are drawn.
    latency = await js(chromium, "return document.querySelector('#hit-chart-latency').textContent")
    assert latency.endswith("no data")
    assert await js(chromium, "return document.querySelector('#hit-chart-latency canvas')") is None
    rates = await js(chromium, "return document.querySelector('#hit-chart-rates').uplot.data")
    assert sum(v or 0 for v in rates[3]) == 20  # errors per second
    assert await run(console_errors, chromium) == []


async def test_a_job_page_follows_the_job_until_it_finishes(start_hitd, connect, chromium) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    _gates["page"] = asyncio.Event()
    r = await c.request("POST", "/jobs", {"task": "test_ui_gate", "args": {"name": "page"}}, JSON)
    id = r.json()["id"]
    await wait_busy(c, 1)
    await run(chromium.get, f"http://127.0.0.1:{hitd.port}/ui#job/{id}")
    await wait_js(chromium, "document.querySelector('#job-title').textContent.endsWith('running')")
    _gates["page"].set()
    await hitd.runner.until_idle()
    await wait_js(
        chromium, "document.querySelector('#job-title').textContent.endsWith('succeeded')"
    )
    assert (
        await js(chromium, "return document.querySelector('#job-result').textContent") == '"page"'
    )
    assert await run(console_errors, chromium) == []
