"""/service-info, the OpenAPI schema and docs, and the admin login page."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from django.test import Client

import wave_site


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
