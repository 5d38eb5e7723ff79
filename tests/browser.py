"""Headless Chromium driven by selenium, for the tests that use a real browser (a plain module,
which pytest does not rewrite: see tests/appmodule.py). Debian's chromium and chromedriver; the
test is skipped without them, or fails when services are required."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .conftest import unavailable

try:
    from selenium import webdriver
except ImportError:  # pragma: no cover - the dev extra installs it
    webdriver = None  # type: ignore[assignment]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium(user_data_dir: Path, *, window: str = "1280,900") -> Iterator[Any]:
    """A headless Chromium that reaches nothing but 127.0.0.1, quit when the generator closes."""
    if webdriver is None:
        unavailable("selenium", "the package is not installed (pip install -e '.[dev]')")
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        unavailable(
            "Chromium",
            f"{CHROMIUM} or {CHROMEDRIVER} is missing: apt-get install chromium chromium-driver",
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--window-size={window}",
        f"--user-data-dir={user_data_dir}",
        # Nothing but the local server: every other host fails to resolve.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
