"""Hostile headers and parameters outside the API's own validation: clear 4xx answers, never a 500."""

from __future__ import annotations

import logging

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/admin/login/", "/docs/", "/redoc/"])
@pytest.mark.parametrize("host", ["a b", "bad_host!", "[::1"])
def test_malformed_host_header_is_400(client: Client, caplog: pytest.LogCaptureFixture, path: str, host: str) -> None:
    client.raise_request_exception = False
    with caplog.at_level(logging.INFO):
        response = client.get(path, headers={"host": host})
    assert response.status_code == 400
    assert response.json() == {"message": "Invalid Host header"}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_malformed_host_header_on_a_post_to_the_admin_is_400(client: Client) -> None:
    client.raise_request_exception = False
    response = client.post("/admin/login/", {"username": "x", "password": "y"}, headers={"host": "a b"})
    assert response.status_code == 400


@pytest.mark.parametrize(
    "query",
    [
        "created_at__year=99999999999999999999",
        "created_at__year=2024&created_at__month=99999999999999999999",
        "created_at__year=2024&created_at__month=1&created_at__day=99999999999999999999",
        "created_at__year=99999",
        "created_at__year=abc",
    ],
)
@pytest.mark.parametrize("model", ["containerrequest", "layerdownload"])
def test_admin_date_hierarchy_out_of_range_redirects_with_an_error_flag(
    admin_client: Client, query: str, model: str
) -> None:
    admin_client.raise_request_exception = False
    response = admin_client.get(f"/admin/requests_app/{model}/?{query}")
    assert response.status_code == 302
    assert response["Location"] == f"/admin/requests_app/{model}/?e=1"
    assert admin_client.get(response["Location"]).status_code == 200
