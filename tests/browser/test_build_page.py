"""The build page in a real browser: while the page stays open, the log grows and the page shows the new text
(as text: a `<script>` in the log stays text), keeps to the bottom unless the reader scrolled up, then shows the
final state, all without a reload. Also on a phone-sized screen: nothing wider than the screen."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from builds.logs import build_log_append
from builds.models import Build
from tests.browser.conftest import HEIGHT, WIDTH
from tests.builds.test_api import DIGEST, make_build
from tests.support.asgi_server import AsgiServer

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HOSTILE = "<script>window.pwned = true</script><img src=x onerror='window.pwned = true'>"


def text_of(browser: WebDriver, element_id: str) -> str:
    return str(browser.execute_script("return document.getElementById(arguments[0]).textContent", element_id))


def wait_for_text(browser: WebDriver, element_id: str, expected: str, timeout: float = 15) -> None:
    WebDriverWait(browser, timeout).until(
        lambda _: expected in text_of(browser, element_id), f"{expected!r} never appeared in #{element_id}"
    )


def log_scroll(browser: WebDriver) -> dict[str, int]:
    return dict(
        browser.execute_script(
            "const log = document.getElementById('log');"
            "return {top: log.scrollTop, height: log.scrollHeight, client: log.clientHeight};"
        )
    )


def at_bottom(browser: WebDriver) -> bool:
    scroll = log_scroll(browser)
    return scroll["height"] - scroll["top"] - scroll["client"] < 24


def shoot(browser: WebDriver, screenshots: Path, name: str) -> None:
    assert browser.save_screenshot(str(screenshots / f"{name}.png"))


def test_the_page_follows_a_running_build_then_shows_its_result_without_a_reload(
    browser: WebDriver, asgi_server: AsgiServer, screenshots: Path
) -> None:
    build = make_build("pending")
    build_log_append(build=build, text="".join(f"queued line {number}\n" for number in range(80)))
    browser.get(f"{asgi_server.url}/view/builds/{build.build_id}")
    assert browser.title == f"Build {build.build_id} · Wave"
    assert text_of(browser, "state") == "pending"
    wait_for_text(browser, "poll-note", "following live")
    browser.execute_script("window.sameDocument = true")
    assert at_bottom(browser)
    assert log_scroll(browser)["height"] > log_scroll(browser)["client"]  # the log scrolls in its box

    # It starts and writes more, a tag among it: the page shows it as text, and follows it to the bottom.
    Build.objects.filter(pk=build.pk).update(state="running", started_at=timezone.now())
    build_log_append(build=build, text=f"STEP 1/2: FROM busybox\n{HOSTILE}\n")
    wait_for_text(browser, "log", f"STEP 1/2: FROM busybox\n{HOSTILE}\n")
    wait_for_text(browser, "state", "running")
    assert at_bottom(browser)
    assert browser.execute_script("return window.pwned") is None
    assert browser.find_elements(By.CSS_SELECTOR, "#log *") == []  # text only, no element from the log
    shoot(browser, screenshots, "build-running")

    # The reader scrolls up: new text arrives, the view stays where the reader put it.
    browser.execute_script("document.getElementById('log').scrollTop = 0")
    build_log_append(build=build, text="STEP 2/2: RUN echo hello\n")
    wait_for_text(browser, "log", "STEP 2/2: RUN echo hello\n")
    assert log_scroll(browser)["top"] == 0

    # It ends: the last output, the final state, digest, timings, with no reload of the page.
    build_log_append(build=build, text="pushed the image\n")
    Build.objects.filter(pk=build.pk).update(
        state="succeeded", finished_at=timezone.now(), exit_status=0, digest=DIGEST
    )
    wait_for_text(browser, "state", "succeeded")
    assert text_of(browser, "log").endswith("STEP 2/2: RUN echo hello\npushed the image\n")
    assert text_of(browser, "digest") == DIGEST
    assert text_of(browser, "exit-status") == "0"
    assert text_of(browser, "finished").endswith(" UTC")
    assert text_of(browser, "duration").endswith(" s")
    assert browser.find_element(By.ID, "digest").is_displayed()
    assert not browser.find_element(By.ID, "reason").is_displayed()
    assert browser.find_element(By.ID, "state").get_attribute("class") == "state state-succeeded"
    assert not browser.find_element(By.ID, "poll-note").is_displayed()
    assert browser.execute_script("return window.sameDocument") is True
    assert browser.execute_script("return window.pwned") is None
    shoot(browser, screenshots, "build-succeeded")

    # Polling stopped: more log written now is not fetched.
    build_log_append(build=build, text="written after the end\n")
    browser.implicitly_wait(0)
    WebDriverWait(browser, 5).until_not(lambda _: "written after the end" in text_of(browser, "log"), None)


def test_a_failed_build_shows_its_reason_when_it_ends(browser: WebDriver, asgi_server: AsgiServer) -> None:
    build = make_build("running")
    browser.get(f"{asgi_server.url}/view/builds/{build.build_id}")
    wait_for_text(browser, "poll-note", "following live")
    build_log_append(build=build, text="/bin/sh: nosuchcommand: not found\n")
    Build.objects.filter(pk=build.pk).update(
        state="failed", finished_at=timezone.now(), exit_status=127, failure_reason=f"Build failed: {HOSTILE}"
    )
    wait_for_text(browser, "state", "failed")
    assert text_of(browser, "reason") == f"Build failed: {HOSTILE}"
    assert browser.find_element(By.ID, "reason").is_displayed()
    assert not browser.find_element(By.ID, "digest").is_displayed()
    assert text_of(browser, "exit-status") == "127"
    assert text_of(browser, "log") == "/bin/sh: nosuchcommand: not found\n"
    assert browser.execute_script("return window.pwned") is None


@pytest.fixture
def phone(browser: WebDriver) -> Iterator[WebDriver]:
    """The same browser as a 390x844 phone, back to 1400x900 afterwards."""
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}
    )
    try:
        yield browser
    finally:
        browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )


def test_the_page_fits_a_phone(phone: WebDriver, asgi_server: AsgiServer, screenshots: Path) -> None:
    long_line = "a-very-long-unbroken-path/" * 20
    build = make_build("failed", container_file=f"FROM busybox\nRUN ls {long_line}\n", failure_reason=long_line)
    build_log_append(build=build, text=f"ls: {long_line}: No such file or directory\n")
    phone.get(f"{asgi_server.url}/view/builds/{build.build_id}")
    shoot(phone, screenshots, "build-phone")
    assert phone.execute_script("return window.innerWidth") == 390
    page_width = phone.execute_script("return document.documentElement.scrollWidth")
    assert page_width <= 390, f"page is {page_width} px wide"
    log = phone.find_element(By.ID, "log")
    assert phone.execute_script("return arguments[0].scrollWidth <= arguments[0].clientWidth", log)  # wrapped
    assert phone.find_element(By.ID, "state").is_displayed()


def test_an_unknown_build_is_a_404_page(browser: WebDriver, asgi_server: AsgiServer) -> None:
    browser.get(f"{asgi_server.url}/view/builds/bd-0000000000000000_1")
    assert browser.title == "Unknown build · Wave"
    assert "There is no build bd-0000000000000000_1 on this service." in browser.find_element(By.TAG_NAME, "main").text


def test_the_admin_build_page_shows_the_end_of_the_log_and_a_rebuild_button(
    browser: WebDriver, asgi_server: AsgiServer, screenshots: Path
) -> None:
    get_user_model().objects.create_superuser("ops", password="ops-pass-1")
    browser.get(f"{asgi_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("ops")
    browser.find_element(By.NAME, "password").send_keys("ops-pass-1")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 10).until(lambda _: browser.current_url == f"{asgi_server.url}/admin/")
    build = make_build("failed")
    build_log_append(build=build, text="".join(f"line {number} <b>bold?</b>\n" for number in range(300)))

    browser.get(f"{asgi_server.url}/admin/builds/build/{build.pk}/change/")
    log = browser.find_element(By.CSS_SELECTOR, "pre.wave-build-log")
    browser.execute_script("arguments[0].scrollIntoView()", log)
    shoot(browser, screenshots, "admin-build-page")
    assert log.find_elements(By.CSS_SELECTOR, "*") == []  # the log's tags are text
    top, height, client = browser.execute_script(
        "const log = arguments[0]; return [log.scrollTop, log.scrollHeight, log.clientHeight];", log
    )
    assert height > client
    assert height - top - client < 24  # opened at its end
    assert log.size["width"] > WIDTH / 2  # the width of the page, not of its first line
    assert browser.find_element(By.CSS_SELECTOR, "button.wave-build-action").text == "REBUILD"
    assert browser.find_elements(By.NAME, "_save") == []

    browser.find_element(By.CSS_SELECTOR, "button.wave-build-action").click()
    rebuilt = f"{build.build_id[:-1]}2"
    # The old page's heading goes stale as the new page loads: looked for again until the new one shows.
    WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda _: rebuilt in browser.find_element(By.TAG_NAME, "h2").text
    )
    message = browser.find_element(By.CLASS_NAME, "messagelist").text
    assert f"Rebuilding {build.build_id} as {rebuilt} (queued)." in message
    assert browser.find_element(By.CSS_SELECTOR, "button.wave-build-action").text == "CANCEL BUILD"
