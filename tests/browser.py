"""Headless Debian Chromium driven by Selenium, for tests of the pages the relay serves.

The test run lives in a loopback-only network namespace (see conftest.py), so
Chromium's ICE can only use 127.0.0.1 -- which it gathers only with
``--allow-loopback-in-peer-connection``.  Local addresses are not hidden
behind mDNS names (aiortc could not resolve them here).
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


def chromium(extra_args: tuple[str, ...] = ()):
    """A headless Chromium WebDriver (the test is skipped where Chromium is not installed)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # we run as root in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--autoplay-policy=no-user-gesture-required",
        *extra_args,
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_for_script(driver: Any, script: str, timeout: float, *, context: str, interval: float = 0.2) -> Any:
    """Poll ``script`` until it returns something truthy (returned); on timeout fail with the page's ``context`` script's value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for: {script} (page: {driver.execute_script(context)})")
