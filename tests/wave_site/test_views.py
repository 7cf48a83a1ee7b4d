"""The home page, favicon, /service-info, the OpenAPI schema and docs, the admin login page, request logging."""

from __future__ import annotations

import json
import logging
import re

import pytest
import yaml
from django.contrib.auth import get_user_model
from django.test import Client
from pytest_django.fixtures import Settings

import wave_site
from wave_site.log_filters import ExpectedRefusalFilter


def test_service_info_reports_version_and_commit(client: Client) -> None:
    response = client.get("/service-info")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"serviceInfo": {"version": wave_site.__version__, "commitId": "testcommit"}}


def test_service_info_version_is_semver() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", wave_site.__version__)


def test_openapi_schema_served_as_yaml_and_json(client: Client) -> None:
    as_yaml = client.get("/openapi/")
    assert as_yaml.status_code == 200
    assert as_yaml["Content-Type"].startswith("application/vnd.oai.openapi")
    schema = yaml.safe_load(as_yaml.content)
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["version"] == wave_site.__version__
    assert {"/service-info", "/health"} <= set(schema["paths"])

    as_json = client.get("/openapi/?format=json")
    assert as_json.status_code == 200
    assert json.loads(as_json.content)["paths"].keys() == schema["paths"].keys()


@pytest.mark.parametrize("path", ["/docs/", "/redoc/"])
def test_docs_pages_use_local_assets_only(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/" in html
    assert "cdn." not in html
    assert "unpkg" not in html


def test_admin_login_is_branded(client: Client) -> None:
    response = client.get("/admin/login/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Wave operations" in html
    assert f"Wave {wave_site.__version__}" in html


def test_unknown_path_is_json_404(client: Client) -> None:
    response = client.get("/no-such-thing")
    assert response.status_code == 404
    assert response.json() == {"message": "Not found"}


def test_home_page_says_what_the_service_is_and_links_everywhere(client: Client, settings: Settings) -> None:
    settings.WAVE_SERVER_URL = "http://localhost:9390"
    settings.WAVE_LOCAL_REGISTRY = True
    settings.WAVE_BUILD_REPO = "localhost:5000/wave/build"
    response = client.get("/")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    html = response.content.decode()
    assert "<title>Wave container provisioning</title>" in html
    for link in ("/docs/", "/redoc/", "/admin/", "/service-info", "/health", "/openapi/"):
        assert f'href="{link}"' in html, link
    assert "<code>localhost:9390/wt/&lt;token&gt;/&lt;image&gt;</code>" in html
    assert "<code>localhost:5000</code> (push test images here" in html
    assert "curl -s -X POST http://localhost:9390/container-token" in html
    assert f"Wave {wave_site.__version__} &middot; commit testcommit" in html
    assert 'rel="icon" href="/favicon.ico"' in html


def test_home_page_without_local_registry_does_not_name_one(client: Client, settings: Settings) -> None:
    settings.WAVE_LOCAL_REGISTRY = False
    html = client.get("/").content.decode()
    assert "Local registry" not in html


def test_home_page_refuses_writes(client: Client) -> None:
    assert client.post("/").status_code == 405


@pytest.mark.django_db
def test_admin_view_site_link_goes_to_the_home_page(client: Client) -> None:
    get_user_model().objects.create_superuser("ops", password="ops-pass")
    client.login(username="ops", password="ops-pass")
    html = client.get("/admin/").content.decode()
    assert re.search(r'<a href="/">View site</a>', html)


def test_favicon_is_served(client: Client) -> None:
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon["Content-Type"] == "image/vnd.microsoft.icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # ICO header: reserved, type 1 (icon)
    assert icon["Cache-Control"] == "public, max-age=86400"
    svg = client.get("/static/wave_site/favicon.svg")
    assert svg.status_code == 200
    assert svg["Content-Type"] == "image/svg+xml"


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/docs", "/docs/"),
        ("/redoc", "/redoc/"),
        ("/admin", "/admin/"),
        ("/openapi?format=json", "/openapi/?format=json"),
    ],
)
def test_pages_without_trailing_slash_redirect(client: Client, path: str, location: str) -> None:
    response = client.get(path)
    assert response.status_code == 301
    assert response["Location"] == location


def test_expected_refusal_filter_keeps_real_server_errors_at_error() -> None:
    def record(level: int, status: int) -> logging.LogRecord:
        entry = logging.LogRecord("django.request", level, __file__, 1, "answer", None, None)
        entry.status_code = status
        return entry

    refused, failed = record(logging.ERROR, 501), record(logging.ERROR, 500)
    assert ExpectedRefusalFilter().filter(refused) is True
    assert (refused.levelno, refused.levelname) == (logging.WARNING, "WARNING")
    assert ExpectedRefusalFilter().filter(failed) is True
    assert (failed.levelno, failed.levelname) == (logging.ERROR, "ERROR")


@pytest.mark.parametrize(("path", "statuses"), [("/service-info", ["200", "500"]), ("/health", ["200", "500", "503"])])
def test_service_endpoints_document_every_answer(client: Client, path: str, statuses: list[str]) -> None:
    responses = client.get("/openapi/?format=json").json()["paths"][path]["get"]["responses"]
    assert sorted(responses) == statuses
    assert responses["500"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorMessage"}
    if path == "/health":
        down = responses["503"]["content"]["application/json"]
        assert down["schema"] == {"$ref": "#/components/schemas/Health"}
        assert down["examples"]["Down"]["value"]["status"] == "DOWN"
