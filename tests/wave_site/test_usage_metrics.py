"""Wave's usage metrics API (`/v1alpha2/metrics/...`): off by default, Basic auth, filters, and builds counted as
they are created (pulls: tests/requests_app/oci/test_pull_metrics.py)."""

from __future__ import annotations

import base64

import pytest
from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings

from builds.services import BuildRequest, build_create_or_join
from credentials.callers import Caller
from tests.conftest import PushedImage
from wave_site.metrics.usage import UsageKind, arch_of, org_of, usage_count, usage_get

ALICE = Caller(ip="192.0.2.7", user_id=5, user_name="alice", email="alice@Example.org")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def metrics_on(settings: Settings) -> str:
    settings.WAVE_METRICS_USER = "ops"
    settings.WAVE_METRICS_PASSWORD = "s3cret"
    return basic("ops", "s3cret")


def test_off_when_no_credentials_are_set(client: Client) -> None:
    usage_count(kind=UsageKind.PULLS, email="a@example.org", platform="linux/amd64")
    response = client.get("/v1alpha2/metrics/pulls?org=example.org", HTTP_AUTHORIZATION=basic("", ""))
    assert response.status_code == 404
    assert "count" not in response.json()


@pytest.mark.parametrize(
    "authorization",
    [None, basic("ops", "wrong"), basic("other", "s3cret"), "Basic !!!", "Bearer s3cret", basic("ops", "")],
)
def test_refused_without_the_operator_credentials(client: Client, metrics_on: str, authorization: str | None) -> None:
    usage_count(kind=UsageKind.PULLS, email="a@example.org", platform="linux/amd64")
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = client.get("/v1alpha2/metrics/pulls?org=example.org", **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Basic realm="wave"'
    assert "count" not in response.json()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "Give a date (YYYY-MM-DD), an org (an e-mail domain), or both"),
        ("?arch=amd64", "Give a date (YYYY-MM-DD), an org (an e-mail domain), or both"),
        ("?date=2024-13-01", "date: Invalid date '2024-13-01': expected YYYY-MM-DD"),
        ("?date=01/02/2024&org=example.org", "date: Invalid date '01/02/2024': expected YYYY-MM-DD"),
        ("?date=", "Give a date (YYYY-MM-DD), an org (an e-mail domain), or both"),
    ],
)
def test_bad_queries_are_400_with_a_clear_message(client: Client, metrics_on: str, query: str, message: str) -> None:
    for kind in ("builds", "pulls", "mirrors"):
        response = client.get(f"/v1alpha2/metrics/{kind}{query}", HTTP_AUTHORIZATION=metrics_on)
        assert response.status_code == 400
        assert response.json() == {"message": message}


def test_counts_by_day_org_and_architecture(client: Client, metrics_on: str) -> None:
    for email, platform in [("a@example.org", "linux/amd64"), ("b@EXAMPLE.org", "linux/arm64/v8"), ("", "linux/amd64")]:
        usage_count(kind=UsageKind.PULLS, email=email, platform=platform)
    today = timezone.now().date().isoformat()

    def count(query: str, kind: str = "pulls") -> int:
        response = client.get(f"/v1alpha2/metrics/{kind}?{query}", HTTP_AUTHORIZATION=metrics_on)
        assert response.status_code == 200, response.content
        return response.json()["count"]

    assert count(f"date={today}") == 3
    assert count("org=example.org") == 2
    assert count("org=Example.ORG") == 2
    assert count(f"date={today}&org=example.org") == 2
    assert count(f"date={today}&arch=arm64") == 1
    assert count("org=example.org&arch=amd64") == 1
    assert count("date=2001-01-01") == 0
    assert count("org=other.org") == 0
    assert count(f"date={today}", kind="builds") == 0
    assert count(f"date={today}", kind="mirrors") == 0


def test_org_and_arch_of() -> None:
    assert org_of("Alice@Example.ORG") == "example.org"
    assert [org_of(email) for email in ("", "alice", "@example.org", "alice@")] == ["", "", "", ""]
    assert [arch_of(p) for p in ("linux/amd64", "linux/arm64/v8", "")] == ["amd64", "arm64", ""]


@pytest.mark.django_db
def test_a_created_build_counts_once_a_joined_one_does_not(
    client: Client, metrics_on: str, anonymous_image: PushedImage
) -> None:
    request = BuildRequest(
        container_file="FROM busybox\nRUN echo metrics\n",
        platform="linux/arm64",
        repository=f"{anonymous_image.registry.host}/wave/build",
    )
    first = build_create_or_join(request=request, caller=ALICE, tower=None, before_start=lambda: None)
    joined = build_create_or_join(request=request, caller=ALICE, tower=None, before_start=lambda: None)
    assert (first.started, joined.started) == (True, False)

    today = timezone.now().date()
    assert usage_get(kind=UsageKind.BUILDS, day=today) == 1
    assert usage_get(kind=UsageKind.BUILDS, org="example.org") == 1
    assert usage_get(kind=UsageKind.BUILDS, day=today, org="example.org", arch="arm64") == 1
    assert usage_get(kind=UsageKind.BUILDS, day=today, arch="amd64") == 0
    assert usage_get(kind=UsageKind.MIRRORS, day=today) == 0
    assert usage_get(kind=UsageKind.PULLS, day=today) == 0
    response = client.get(f"/v1alpha2/metrics/builds?date={today}&org=example.org", HTTP_AUTHORIZATION=metrics_on)
    assert response.json() == {"count": 1}


def test_per_day_counters_expire_totals_do_not(settings: Settings) -> None:
    from django_redis import get_redis_connection  # type: ignore[import-untyped]

    from wave_site.cache import shared_cache
    from wave_site.metrics.usage import usage_key

    settings.WAVE_METRICS_RETENTION_DAYS = 30
    usage_count(kind=UsageKind.MIRRORS, email="a@example.org", platform="linux/amd64")
    redis = get_redis_connection("default")
    make_key = shared_cache().make_key
    today = timezone.now().date()
    assert 29 * 86400 < redis.ttl(make_key(usage_key(UsageKind.MIRRORS, day=today))) <= 30 * 86400
    assert 29 * 86400 < redis.ttl(make_key(usage_key(UsageKind.MIRRORS, day=today, org="example.org"))) <= 30 * 86400
    assert redis.ttl(make_key(usage_key(UsageKind.MIRRORS, org="example.org"))) == -1
    assert redis.ttl(make_key(usage_key(UsageKind.MIRRORS, arch="amd64"))) == -1
