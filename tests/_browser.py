"""A real headless Chromium for the tests of pages (hit's HTML report, hitd's /ui).

`browser()` starts Debian's chromium through its chromedriver with selenium. The performance log
records every network request the page makes and the browser log its console errors, so a test
can assert that a report opened from file:// fetched nothing and logged nothing. Under CI=true a
missing browser is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _need(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is missing (scripts/system-deps.sh installs it)")
    pytest.skip(f"{what} is missing (scripts/system-deps.sh installs it)")


@contextlib.contextmanager
def browser(width: int = 1280, height: int = 900) -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _need("selenium")
    chromium = shutil.which("chromium")
    driver_bin = shutil.which("chromedriver")
    if chromium is None or driver_bin is None:
        _need("chromium or chromedriver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        f"--window-size={width},{height}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(driver_bin))
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[str]:
    """The page's console messages of level SEVERE since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def requested_urls(driver: Any) -> list[str]:
    """Every URL the page asked the network for since the last call (file:// and data: too)."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def screenshot(driver: Any, name: str) -> Path:
    """Keep a screenshot as a test artifact under tests/artifacts/ (ignored by git)."""
    out = Path(__file__).parent / "artifacts"
    out.mkdir(exist_ok=True)
    path = out / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
