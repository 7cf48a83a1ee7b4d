"""`@oci_view`: one way out for every /v2 answer (methods, OCI error bodies, the API version header);
outages of the database or Redis are left to the site's middleware."""

from __future__ import annotations

import json

import pytest
import redis.exceptions
from asgiref.sync import async_to_sync
from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from registry.augment import AugmentError
from registry.client import (
    BlobUnknownError,
    ManifestUnknownError,
    RegistryError,
    RegistryRateLimitedError,
    RegistryUnauthorizedError,
    RegistryUnavailableError,
    UnsafeReferenceError,
)
from registry.errors import STATUS, OciCode
from registry.ssrf import DestinationRefusedError
from requests_app.oci.errors import (
    LayerFailed,
    LayersPending,
    RangeNotSatisfiable,
    TokenUnknown,
    error_response,
    oci_view,
)
from wave_site.errors import RateLimited


def body(response: HttpResponse) -> dict[str, object]:
    return dict(json.loads(response.content)["errors"][0])


@pytest.mark.parametrize(
    ("error", "status", "code", "headers"),
    [
        (TokenUnknown("0123456789ab"), 404, "NAME_UNKNOWN", {}),
        (LayerFailed("Container layer 0 failed"), 400, "UNKNOWN", {}),
        (LayersPending("still downloading", retry_after=5), 503, "UNAVAILABLE", {"Retry-After": "5"}),
        (RangeNotSatisfiable(10), 416, "RANGE_INVALID", {"Content-Range": "bytes */10"}),
        (ManifestUnknownError("Manifest 'r/a:b' not found"), 404, "MANIFEST_UNKNOWN", {}),
        (BlobUnknownError("Blob 'r/a@sha256:0' not found"), 404, "BLOB_UNKNOWN", {}),
        (RegistryUnauthorizedError("needs auth"), 401, "UNAUTHORIZED", {"WWW-Authenticate": 'Basic realm="wave"'}),
        (RegistryRateLimitedError("answered 429", retry_after=7), 429, "TOOMANYREQUESTS", {"Retry-After": "7"}),
        (RegistryUnavailableError("unreachable"), 503, "UNAVAILABLE", {}),
        (RegistryError("sent more than 16777216 bytes"), 502, "UNKNOWN", {}),
        (UnsafeReferenceError("not a digest"), 502, "UNKNOWN", {}),
        (AugmentError("The upstream manifest is malformed"), 400, "UNKNOWN", {}),
        (DestinationRefusedError("10.0.0.1", "it is private"), 400, "DENIED", {}),
        (RateLimited("over the limit", retry_after=3), 429, "TOOMANYREQUESTS", {"Retry-After": "3"}),
    ],
)
def test_errors_map_to_oci_answers(error: Exception, status: int, code: str, headers: dict[str, str]) -> None:
    response = error_response(error)
    assert response.status_code == status
    assert body(response) == {"code": code, "message": getattr(error, "message", str(error)), "detail": None}
    assert {name: response[name] for name in headers} == headers


def test_statuses_follow_the_distribution_spec() -> None:
    assert STATUS[OciCode.NAME_UNKNOWN] == 404
    assert STATUS[OciCode.DIGEST_INVALID] == 400
    assert STATUS[OciCode.UNSUPPORTED] == 405
    assert STATUS[OciCode.TOOMANYREQUESTS] == 429
    assert set(STATUS) == set(OciCode)


@oci_view(methods=("GET", "HEAD"))
def sync_view(request: HttpRequest) -> HttpResponse:
    if "fail" in request.GET:
        raise {"token": TokenUnknown("0123456789ab"), "db": OperationalError("down"),
               "redis": redis.exceptions.ConnectionError("down")}[request.GET["fail"]]  # fmt: skip
    return HttpResponse("{}")


@oci_view(methods=("GET",))
async def async_view(request: HttpRequest) -> HttpResponse:
    if "fail" in request.GET:
        raise {"token": TokenUnknown("0123456789ab"), "db": OperationalError("down"),
               "redis": redis.exceptions.TimeoutError("slow")}[request.GET["fail"]]  # fmt: skip
    return HttpResponse("{}")


def test_every_answer_carries_the_api_version_and_other_methods_are_unsupported() -> None:
    factory = RequestFactory()
    answers = [
        sync_view(factory.get("/v2/x")),
        sync_view(factory.get("/v2/x", {"fail": "token"})),
        async_to_sync(async_view)(factory.get("/v2/x")),
        async_to_sync(async_view)(factory.get("/v2/x", {"fail": "token"})),
    ]
    assert [answer.status_code for answer in answers] == [200, 404, 200, 404]
    refused = [sync_view(factory.put("/v2/x")), async_to_sync(async_view)(factory.head("/v2/x"))]
    for answer in [*answers, *refused]:
        assert answer["Docker-Distribution-API-Version"] == "registry/2.0"
    for answer in refused:
        assert answer.status_code == 405
        assert body(answer) == {"code": "UNSUPPORTED", "message": "This registry is read-only: pull only",
                                "detail": None}  # fmt: skip
    assert getattr(sync_view, "csrf_exempt", False) is True
    assert getattr(async_view, "csrf_exempt", False) is True


@pytest.mark.parametrize("outage", ["db", "redis"])
def test_outages_are_left_to_the_site_middleware(outage: str) -> None:
    factory = RequestFactory()
    expected = OperationalError if outage == "db" else redis.exceptions.RedisError
    with pytest.raises(expected):
        sync_view(factory.get("/v2/x", {"fail": outage}))
    with pytest.raises(expected):
        async_to_sync(async_view)(factory.get("/v2/x", {"fail": outage}))
