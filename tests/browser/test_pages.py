"""The pages people look at, in a real browser at 1400x900: the home page, the admin's request list, a request
page and the layer pages. Key columns are inside the viewport, wide content scrolls inside its box, read-only
records have no Save buttons, a token is revoked with the request page's button. Screenshots: `screenshots`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.utils import timezone
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from requests_app.models import ContainerRequest, InjectedLayer
from tests.browser.conftest import HEIGHT, WIDTH
from tests.support.asgi_server import AsgiServer

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LONG_IMAGE = "quay.io/biocontainers/" + "very-long-tool-name-" * 5 + "bioconductor:3.18--r43hdfd78af_0"
LONG_URL = "https://objects.example.org/layers/" + "a-long-path-segment/" * 10 + "layer.tar.gz?X-Signature=" + "f" * 80


@pytest.fixture
def site(asgi_server: AsgiServer, browser: WebDriver) -> str:
    """The live service with an operator logged in through the login form; its base URL."""
    get_user_model().objects.create_superuser("ops", password="ops-pass-1")
    browser.get(f"{asgi_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("ops")
    browser.find_element(By.NAME, "password").send_keys("ops-pass-1")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_to_be(f"{asgi_server.url}/admin/"))
    return asgi_server.url


def make_requests() -> ContainerRequest:
    """A page's worth of requests in every state; the one with layers."""
    now = timezone.now()
    for index in range(8):
        ContainerRequest.objects.create(
            token=f"{index:012x}",
            source_image=f"{LONG_IMAGE}-{index}",
            target_image=f"localhost:9090/wt/{index:012x}/biocontainers/tool:1",
            user_name="Jane Operator-Longname" if index % 2 else "",
            client_ip="203.0.113.7",
            expires_at=now + dt.timedelta(hours=-1 if index == 3 else 36),
            revoked_at=now if index == 5 else None,
        )
    request = ContainerRequest.objects.create(
        token="abcdefabcdef",
        source_image=LONG_IMAGE,
        target_image=f"localhost:9090/wt/abcdefabcdef/{LONG_IMAGE.split('/', 1)[1]}",
        container_config={"env": [f"VARIABLE_{i}=" + "x" * 60 for i in range(4)], "entrypoint": ["/bin/sh"]},
        source_digest="sha256:" + "5" * 64,
        wave_digest="sha256:" + "6" * 64,
        expires_at=now + dt.timedelta(hours=36),
    )
    for position in range(3):
        InjectedLayer.objects.create(
            request=request, position=position, kind="http", url=LONG_URL, gzip_digest="sha256:" + f"{position}" * 64,
            gzip_size=123456789, tar_digest="sha256:" + "e" * 64, state="failed" if position == 2 else "ready",
            failure_reason="Layer size does not match: expected 123456789 bytes, got 1234" if position == 2 else "",
        )  # fmt: skip
    return request


def viewport_width(browser: WebDriver) -> int:
    return int(browser.execute_script("return window.innerWidth"))


def assert_inside_viewport(browser: WebDriver, element: WebElement, what: str) -> None:
    left, right = browser.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.left, r.right];", element
    )
    assert element.is_displayed(), what
    assert 0 <= left < right <= viewport_width(browser), f"{what} spans {left}..{right} px"


def assert_page_fits(browser: WebDriver) -> None:
    """Nothing makes the page itself wider than the window (wide tables scroll inside their box)."""
    page_width = browser.execute_script("return document.documentElement.scrollWidth")
    assert page_width <= viewport_width(browser), f"page is {page_width} px wide"


def shoot(browser: WebDriver, screenshots: Path, name: str) -> Path:
    path = screenshots / f"{name}.png"
    assert browser.save_screenshot(str(path))
    return path


def test_window_is_1400_by_900(browser: WebDriver, asgi_server: AsgiServer) -> None:
    browser.get(f"{asgi_server.url}/")
    assert browser.execute_script("return [window.innerWidth, window.innerHeight]") == [WIDTH, HEIGHT]


def test_home_page(browser: WebDriver, asgi_server: AsgiServer, screenshots: Path) -> None:
    browser.get(f"{asgi_server.url}/")
    shoot(browser, screenshots, "home")
    assert browser.title == "Wave container provisioning"
    for text, href in (("API documentation", "/docs/"), ("Operations", "/admin/"), ("Health", "/health")):
        link = browser.find_element(By.PARTIAL_LINK_TEXT, text)
        assert link.get_attribute("href") == f"{asgi_server.url}{href}"
        assert_inside_viewport(browser, link, text)
    assert_page_fits(browser)
    example = browser.find_element(By.TAG_NAME, "pre")
    assert browser.execute_script("return arguments[0].scrollWidth <= arguments[0].clientWidth", example)
    favicon_loaded = browser.execute_script(
        "return fetch('/favicon.ico').then(r => [r.status, r.headers.get('content-type')])"
    )
    assert favicon_loaded == [200, "image/vnd.microsoft.icon"]


def test_request_list_fits_with_token_image_and_state_visible(browser: WebDriver, site: str, screenshots: Path) -> None:
    make_requests()
    browser.get(f"{site}/admin/requests_app/containerrequest/")
    shoot(browser, screenshots, "request-list")
    assert_page_fits(browser)
    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert len(rows) == 9
    for row in rows[:3]:
        for column in ("token", "image", "state"):
            assert_inside_viewport(browser, row.find_element(By.CSS_SELECTOR, f".field-{column}"), column)
    states = {cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#result_list .field-state")}
    assert states == {"active", "expired", "revoked"}
    filters = browser.find_element(By.ID, "changelist-filter")
    assert_inside_viewport(browser, filters, "the filters")


def test_request_page_is_read_only_and_revokes_with_its_button(
    browser: WebDriver, site: str, screenshots: Path
) -> None:
    request = make_requests()
    browser.get(f"{site}/admin/requests_app/containerrequest/{request.pk}/change/")
    shoot(browser, screenshots, "request-page")
    assert_page_fits(browser)
    assert browser.find_elements(By.CSS_SELECTOR, "input[name=_save], input[name=_continue]") == []
    layers = browser.find_element(By.CSS_SELECTOR, ".inline-group .tabular")
    browser.execute_script("arguments[0].scrollIntoView()", layers)
    shoot(browser, screenshots, "request-page-layers")
    assert_inside_viewport(browser, layers, "the layers table's box")
    browser.execute_script("window.scrollTo(0, 0)")
    button = browser.find_element(By.CSS_SELECTOR, "button.wave-revoke")
    assert button.text == "REVOKE TOKEN"
    assert_inside_viewport(browser, button, "the revoke button")

    button.click()
    message = WebDriverWait(browser, 10).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist li.success"))
    )
    assert message.text == "Token abcdefabcdef revoked: pulls with it are refused."
    shoot(browser, screenshots, "request-page-revoked")
    assert browser.find_elements(By.CSS_SELECTOR, "button.wave-revoke") == []
    assert browser.find_element(By.CSS_SELECTOR, ".field-state .readonly").text == "revoked"
    request.refresh_from_db()
    assert request.revoked_at is not None


def test_layer_pages(browser: WebDriver, site: str, screenshots: Path) -> None:
    request = make_requests()
    browser.get(f"{site}/admin/requests_app/injectedlayer/")
    shoot(browser, screenshots, "layer-list")
    assert_page_fits(browser)
    first_row = browser.find_element(By.CSS_SELECTOR, "#result_list tbody tr")
    for column in ("digest", "request_token", "state", "reason"):
        assert_inside_viewport(browser, first_row.find_element(By.CSS_SELECTOR, f".field-{column}"), column)

    layer = request.layers.get(position=2)
    browser.get(f"{site}/admin/requests_app/injectedlayer/{layer.pk}/change/")
    shoot(browser, screenshots, "layer-page")
    assert_page_fits(browser)
    assert browser.find_elements(By.CSS_SELECTOR, "input[type=submit]") == []
    reason = browser.find_element(By.CSS_SELECTOR, ".field-failure_reason .readonly")
    assert reason.text == "Layer size does not match: expected 123456789 bytes, got 1234"


def test_every_admin_list_fits_the_window(browser: WebDriver, site: str) -> None:
    make_requests()
    for model in admin.site._registry:
        browser.get(f"{site}/admin/{model._meta.app_label}/{model._meta.model_name}/")
        assert browser.find_elements(By.ID, "changelist"), model._meta.label
        assert_page_fits(browser)
