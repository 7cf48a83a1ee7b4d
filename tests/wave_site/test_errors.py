from __future__ import annotations

import base64
import datetime as dt
import logging
import re

import pytest
import redis
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from django_redis.exceptions import ConnectionInterrupted  # type: ignore[import-untyped]
from pytest_django.fixtures import Settings
from redis.exceptions import MasterDownError, OutOfMemoryError, ReadOnlyError

from requests_app.models import ContainerRequest
from tests.support.servers import start_private_redis
from wave_site.errors import outage_of

pytestmark = pytest.mark.urls("tests.wave_site.urls_errors")

ERROR_ID = re.compile(r"^Unexpected error - Error ID: ([0-9a-f]{12})$")


def test_malformed_json_is_400_without_internals(client: Client) -> None:
    response = client.post("/echo", data='{"name": <b>', content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"message": "Malformed JSON request body"}


def test_wrong_type_is_400_naming_the_field(client: Client) -> None:
    response = client.post("/echo", data={"name": "x", "count": "many"}, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"message": "count: A valid integer is required."}


def test_application_error_message_is_returned_as_is(client: Client) -> None:
    response = client.get("/fail?kind=bad")
    assert response.status_code == 400
    assert response.json() == {"message": "Specify either 'containerImage' or 'containerFile' attribute"}


def test_rate_limit_error_carries_retry_after(client: Client) -> None:
    response = client.get("/fail?kind=limit")
    assert response.status_code == 429
    assert response["Retry-After"] == "42"
    assert response.json() == {"message": "Request exceeded build rate limit"}


@pytest.mark.parametrize("path", ["/fail", "/plain-fail"])
def test_unexpected_error_is_500_with_an_error_id_that_is_logged(
    client: Client, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    client.raise_request_exception = False
    with caplog.at_level(logging.ERROR, logger="wave.errors"):
        response = client.get(path)
    assert response.status_code == 500
    message = response.json()["message"]
    match = ERROR_ID.match(message)
    assert match, message
    assert "secret-path" not in message
    assert "Traceback" not in response.content.decode()
    logged = [r for r in caplog.records if r.name == "wave.errors"]
    assert len(logged) == 1
    assert match.group(1) in logged[0].getMessage()
    assert logged[0].exc_info is not None


OUTAGES = [
    ("database", "database", "couldn't get a connection after 2.00 sec"),
    ("cache", "redis", "Redis ConnectionError: Error 111 connecting to 127.0.0.1:6379. Connection refused."),
    ("broker", "broker", "Error 111 connecting to 127.0.0.1:6379. Connection refused."),
    ("timeout", "redis", "Timeout reading from socket"),
]


@pytest.mark.parametrize(("kind", "store", "cause"), OUTAGES)
@pytest.mark.parametrize("path", ["/outage", "/plain-outage"])
def test_outage_is_503_with_retry_after_and_one_line_without_traceback(
    client: Client, caplog: pytest.LogCaptureFixture, path: str, kind: str, store: str, cause: str
) -> None:
    client.raise_request_exception = False
    with caplog.at_level(logging.INFO):
        response = client.get(f"{path}?kind={kind}")
    assert response.status_code == 503
    assert response["Retry-After"] == "10"
    assert response.json() == {"message": f"Service temporarily unavailable ({store} unreachable), retry in 10 seconds"}
    assert [(r.name, r.levelname, r.getMessage(), r.exc_info) for r in caplog.records] == [
        ("wave.errors", "WARNING", f"{store} unreachable: GET {path} answered 503 ({cause})", None)
    ]


def test_outage_under_v2_is_an_oci_error(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    client.raise_request_exception = False
    with caplog.at_level(logging.INFO):
        response = client.get("/v2/wt/0123456789ab/library/busybox/manifests/latest?kind=database")
    assert response.status_code == 503
    assert response["Retry-After"] == "10"
    assert response["Docker-Distribution-API-Version"] == "registry/2.0"
    message = "Service temporarily unavailable (database unreachable), retry in 10 seconds"
    assert response.json() == {"errors": [{"code": "UNAVAILABLE", "message": message, "detail": None}]}
    assert len(caplog.records) == 1


@pytest.mark.parametrize("path", ["/outage", "/plain-outage"])
def test_request_data_too_big_is_413(client: Client, settings, path: str) -> None:
    client.raise_request_exception = False
    response = client.get(f"{path}?kind=too-big")
    assert response.status_code == 413
    assert response.json() == {
        "message": f"Request body exceeds the maximum allowed size of {settings.WAVE_MAX_REQUEST_BYTES} bytes"
    }


@pytest.mark.parametrize(
    ("error", "store"),
    [
        (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "redis"),
        (ReadOnlyError("You can't write against a read only replica."), "redis"),
        (MasterDownError("Link with MASTER is down and replica-serve-stale-data is set to 'no'."), "redis"),
        # an older server's script error nests the code
        (redis.ResponseError("Error running script (call to f_1): @user_script:1: -OOM command not allowed"), "redis"),
        (redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), None),
        (redis.ResponseError("value is not an integer or out of range"), None),
    ],
)
def test_redis_refusing_writes_is_an_outage(error: redis.ResponseError, store: str | None) -> None:
    assert outage_of(error) == store
    wrapped = ConnectionInterrupted(connection=None)  # as django-redis wraps it
    wrapped.__cause__ = error
    assert outage_of(wrapped) == store


@pytest.mark.urls("wave_site.urls")
@pytest.mark.django_db
@pytest.mark.parametrize("refusal", ["oom", "read-only"])
def test_revoking_while_redis_refuses_writes_is_503_and_changes_nothing(
    client: Client, settings: Settings, caplog: pytest.LogCaptureFixture, refusal: str
) -> None:
    from tests.requests_app.test_services import accept_writes, make_request, refuse_writes

    request = make_request("00000000000f", expires_at=timezone.now() + dt.timedelta(hours=1))
    get_user_model().objects.create_user("ops", password="ops-pass", is_staff=True)
    operator = "Basic " + base64.b64encode(b"ops:ops-pass").decode()
    with start_private_redis() as server:
        settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": server.url}}
        refuse_writes(server, refusal)
        with caplog.at_level(logging.WARNING, logger="wave.errors"):
            refused = client.delete("/container-token/00000000000f", HTTP_AUTHORIZATION=operator)
        assert refused.status_code == 503
        assert refused["Retry-After"] == "10"
        assert refused.json() == {"message": "Service temporarily unavailable (redis unreachable), retry in 10 seconds"}
        assert [(r.levelname, r.exc_info) for r in caplog.records] == [("WARNING", None)]
        assert ContainerRequest.objects.get(pk=request.pk).revoked_at is None

        accept_writes(server, refusal)
        assert client.delete("/container-token/00000000000f", HTTP_AUTHORIZATION=operator).status_code == 200
        assert ContainerRequest.objects.get(pk=request.pk).revoked_at is not None
