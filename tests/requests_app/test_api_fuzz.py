"""Property-based requests generated from our own OpenAPI document, with every schemathesis check.

No input may cause an internal error, and every answer must be one the document describes: its status,
content type, headers and body schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings

from builds.logs import build_log_append
from credentials.logins import registry_authority
from registry.reference import InvalidReferenceError, parse_image
from tests.builds.test_api import make_build
from tests.conftest import PushedImage
from wave_site.errors import InvalidRequest

# Documented answers that are not faults: 501 (builds are not served yet) and 503 (a registry is down).
# A body the schema accepts may still break a rule the schema cannot express (the reference's image
# names, strict base64, matching digests, an image that exists upstream): that is a documented 400; and
# random operator credentials soon meet the failed-login throttle: a documented 429.
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "501", "503"]},
            "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "403", "404", "429", "501", "503"]},
        }
    }
)
schema = schemathesis.openapi.from_wsgi("/openapi/?format=json", get_wsgi_application(), config=CONFIG)


@schemathesis.check
def no_internal_error(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """4xx for bad input, 503 when an upstream registry is unreachable; never a 500 or a traceback."""
    assert response.status_code != 500, f"500 for {case.method} {case.path}: {response.text[:300]}"
    assert "Traceback" not in response.text


@pytest.fixture
def shared_test_connection(db: None) -> Iterator[None]:
    """Requests run inside the test's transaction, as with Django's test client."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.usefixtures("shared_test_connection")
@schema.include(path_regex="^/(container-token|v1alpha2/container)").parametrize()
@settings(max_examples=100, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_answers_with_an_internal_error(case: schemathesis.Case, anonymous_image: PushedImage) -> None:
    # A well-formed image name becomes one on the test registry: the request then goes all the way
    # (upstream check, layers, insert) without reaching out to the internet.
    if isinstance(case.body, dict) and isinstance(case.body.get("containerImage"), str):
        try:
            parse_image(case.body["containerImage"])
        except InvalidReferenceError:
            pass
        else:
            case.body["containerImage"] = anonymous_image.reference
    response = case.call()
    case.validate_response(response, additional_checks=[no_internal_error])  # every built-in check, and ours


@pytest.fixture
def unthrottled(settings: Any) -> None:  # pytest-django's settings (this module's `settings` is hypothesis's)
    """Every attempt would count against the one client address: without this most cases only meet the throttle."""
    settings.WAVE_VALIDATE_CREDS_PER_MINUTE = 1_000_000
    settings.WAVE_VALIDATE_CREDS_PER_ACCOUNT_PER_HOUR = 1_000_000
    settings.WAVE_PAIRING_PER_MINUTE = 1_000_000


def is_contacted(registry: object) -> bool:
    """Whether `/validate-creds` would contact this registry (absent: docker.io) rather than refuse its form."""
    if registry is not None and not isinstance(registry, str):
        return False
    try:
        registry_authority(registry)
    except InvalidRequest:
        return False
    return True


@pytest.mark.usefixtures("shared_test_connection", "unthrottled")
@schema.include(path_regex="^/((v1alpha2/)?validate-creds|pairing)$").parametrize()
@settings(max_examples=100, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_credentials_api_never_answers_with_an_internal_error(
    case: schemathesis.Case, basic_image: PushedImage
) -> None:
    # A registry that would be contacted becomes the Basic-auth test registry: the login then goes all the way
    # (probe, Basic login, refusal) without reaching out to the internet; malformed ones stay as generated.
    if isinstance(case.body, dict) and "userName" in case.body and is_contacted(case.body.get("registry")):
        case.body["registry"] = basic_image.registry.host
    response = case.call()
    case.validate_response(response, additional_checks=[no_internal_error])


@pytest.fixture
def known_builds(db: None) -> list[str]:
    """A running build with some log and a finished one: what generated build ids are turned into, in turn."""
    running = make_build("running")
    build_log_append(build=running, text="STEP 1/2: FROM busybox\n")
    finished = make_build("failed", container_file="FROM busybox\nRUN false\n")
    return [running.build_id, finished.build_id]


@pytest.mark.usefixtures("shared_test_connection")
@schema.include(path_regex="^/v1alpha1/builds/").parametrize()
@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_build_api_never_answers_with_an_internal_error(case: schemathesis.Case, known_builds: list[str]) -> None:
    # Two generated ids in three become builds that exist (deterministically, by length): their answers are
    # checked against the document too; the rest are unknown or malformed ids, a documented 404.
    build_id = case.path_parameters.get("build_id") if case.path_parameters else None
    if isinstance(build_id, str) and len(build_id) % 3:
        case.path_parameters = {**case.path_parameters, "build_id": known_builds[len(build_id) % 3 - 1]}
    response = case.call()
    case.validate_response(response, additional_checks=[no_internal_error])
