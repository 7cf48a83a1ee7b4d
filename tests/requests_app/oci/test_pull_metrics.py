"""Pulls through the registry proxy move the usage counters (wave_site.metrics.usage): once per pull, on the full
path and on the hot path (the served-manifest memory), never for the digests a pull reads next."""

from __future__ import annotations

import httpx
import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from pytest_django.fixtures import Settings

from requests_app.models import ContainerRequest
from requests_app.oci.tokens import target_key
from tests.conftest import PushedImage
from tests.requests_app.conftest import Post
from tests.support.asgi_server import AsgiServer
from tests.support.images import skopeo_inspect
from wave_site.cache import shared_cache
from wave_site.metrics.usage import UsageKind, usage_get

pytestmark = pytest.mark.slow


def test_pulls_count_per_day_org_and_architecture(proxy: AsgiServer, post: Post, anonymous_image: PushedImage) -> None:
    token = post({"containerImage": anonymous_image.reference}).json()["containerToken"]
    # As a Tower caller's request stores it (credentials.callers): the e-mail names the organisation.
    ContainerRequest.objects.filter(token=token).update(user_email="alice@example.org")
    shared_cache().delete(target_key(token))
    today = timezone.now().date()
    assert usage_get(kind=UsageKind.PULLS, day=today) == 0

    target = f"{proxy.host}/wt/{token}/{anonymous_image.repository}:{anonymous_image.tag}"
    digest = skopeo_inspect(target)["Digest"]  # the full path: database, upstream
    assert usage_get(kind=UsageKind.PULLS, day=today) == 1
    skopeo_inspect(target)  # within seconds: the served-manifest memory, counted from the event loop
    assert usage_get(kind=UsageKind.PULLS, day=today) == 2
    assert usage_get(kind=UsageKind.PULLS, org="example.org") == 2
    assert usage_get(kind=UsageKind.PULLS, day=today, org="example.org", arch="amd64") == 2
    assert usage_get(kind=UsageKind.PULLS, day=today, arch="arm64") == 0

    by_digest = httpx.get(f"{proxy.url}/v2/wt/{token}/{anonymous_image.repository}/manifests/{digest}")
    assert by_digest.status_code == 200
    missing = httpx.get(f"{proxy.url}/v2/wt/{token}/{anonymous_image.repository}/manifests/no-such-tag")
    assert missing.status_code == 404
    assert usage_get(kind=UsageKind.PULLS, day=today) == 2  # neither a digest nor a failed pull counts
    assert usage_get(kind=UsageKind.BUILDS, day=today) == 0


def test_prometheus_counts_pulls_and_blob_bytes(
    proxy: AsgiServer, post: Post, anonymous_image: PushedImage, settings: Settings
) -> None:
    settings.WAVE_METRICS_ENABLED = True
    settings.WAVE_METRICS_TOKEN = "scrape-token-2"

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = httpx.get(f"{proxy.url}/metrics", headers={"Authorization": "Bearer scrape-token-2"})
        assert response.status_code == 200
        families = text_string_to_metric_families(response.text)
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}

    assert httpx.get(f"{proxy.url}/metrics").status_code == 401
    pulls = ("wave_pulls_total", (("arch", "amd64"),))
    upstream = ("wave_blob_bytes_served_total", (("source", "upstream"),))
    manifests = ("wave_http_requests_total", (("endpoint", "v2-manifest"), ("method", "GET"), ("status", "200")))
    before = scrape()
    token = post({"containerImage": anonymous_image.reference}).json()["containerToken"]
    target = f"{proxy.host}/wt/{token}/{anonymous_image.repository}:{anonymous_image.tag}"
    config_digest = skopeo_inspect(target, raw=True)["config"]["digest"]  # the manifest by tag
    skopeo_inspect(target)  # the manifest again (the hot path), and the config blob (upstream)
    after = scrape()
    assert after[pulls] - before.get(pulls, 0) == 2
    assert after[manifests] - before.get(manifests, 0) == 2
    config = httpx.get(f"{proxy.url}/v2/wt/{token}/{anonymous_image.repository}/blobs/{config_digest}")
    assert config.status_code == 200
    assert scrape()[upstream] - after[upstream] == len(config.content)  # exactly the bytes sent
    assert after[upstream] - before.get(upstream, 0) >= len(config.content)  # skopeo read the config too


def test_unknown_token_counts_nothing(proxy: AsgiServer) -> None:
    response = httpx.get(f"{proxy.url}/v2/wt/0123456789ab/library/busybox/manifests/latest")
    assert response.status_code == 404
    assert usage_get(kind=UsageKind.PULLS, day=timezone.now().date()) == 0
