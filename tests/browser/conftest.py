"""A headless Chromium from Debian's packages (`make test` installs chromium and chromium-driver), driven by
Selenium through the matching chromedriver: nothing is downloaded at test time. Pages are 1400x900."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

WIDTH, HEIGHT = 1400, 900


def _find(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"{names[0]} is not installed: `make test` installs it (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the pages' screenshots go: WAVE_SCREENSHOTS when set, else pytest's temporary files."""
    configured = os.environ.get("WAVE_SCREENSHOTS")
    if not configured:
        return tmp_path_factory.mktemp("screenshots")
    folder = Path(configured)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def chromium() -> Iterator[webdriver.Chrome]:
    options = Options()
    options.binary_location = _find("chromium", "chromium-browser")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars", "--force-device-scale-factor=1",
                     "--lang=en-US"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=_find("chromedriver")))
    driver.set_page_load_timeout(30)
    # The viewport itself is 1400x900 (a window of that size keeps some height for the browser's own bars).
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium: webdriver.Chrome) -> webdriver.Chrome:
    """The session's browser with no cookies left from an earlier test (each test logs in again)."""
    chromium.delete_all_cookies()
    return chromium
