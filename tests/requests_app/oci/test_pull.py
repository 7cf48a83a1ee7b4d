"""Pulling targetImages through the registry proxy with real tools (skopeo, umoci)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from pytest_django.fixtures import Settings

from tests.conftest import PushedImage
from tests.requests_app.conftest import Post
from tests.support.asgi_server import AsgiServer
from tests.support.images import Builder, skopeo_copy, skopeo_inspect

pytestmark = pytest.mark.slow


def credentials_file(tmp_path: Path, image: PushedImage) -> str:
    path = tmp_path / "registry-credentials.json"
    entry = {"username": image.registry.username, "password": image.registry.password}
    path.write_text(json.dumps({image.registry.host: entry}))
    return str(path)


@pytest.mark.parametrize("fixture_name", ["anonymous_image", "basic_image", "token_image"])
def test_pull_without_config_is_the_upstream_image_unchanged(
    fixture_name: str, request: pytest.FixtureRequest, proxy: AsgiServer, post: Post, settings: Settings, tmp_path: Path
) -> None:
    image: PushedImage = request.getfixturevalue(fixture_name)
    if image.registry.username:
        settings.WAVE_REGISTRY_CREDENTIALS = credentials_file(tmp_path, image)
    target = post({"containerImage": image.reference}).json()["targetImage"]
    assert target.startswith(f"{proxy.host}/wt/")

    info = skopeo_inspect(target)
    assert info["Digest"] == image.digest
    assert info["Architecture"] == "amd64"
    upstream_manifest = skopeo_inspect(image.reference, creds=image.registry.creds, raw=True)
    assert skopeo_inspect(target, raw=True) == upstream_manifest
    skopeo_copy(target, tmp_path / "copy", transport="dir")
    copied = json.loads((tmp_path / "copy" / "manifest.json").read_text())
    assert copied == upstream_manifest
    for layer in copied["layers"]:
        blob = tmp_path / "copy" / layer["digest"].split(":")[1]
        assert blob.stat().st_size == layer["size"]


def test_v2_root_and_unknown_token(proxy: AsgiServer) -> None:
    root = httpx.get(f"{proxy.url}/v2/")
    assert root.status_code == 200
    assert root.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    unknown = httpx.get(f"{proxy.url}/v2/wt/0123456789ab/library/busybox/manifests/latest")
    assert unknown.status_code == 404
    assert unknown.json() == {
        "errors": [
            {"code": "NAME_UNKNOWN", "message": "Unknown Wave container for token '0123456789ab'", "detail": None}
        ]
    }
    head = httpx.head(f"{proxy.url}/v2/wt/0123456789ab/library/busybox/manifests/latest")
    assert head.status_code == 404
    assert head.content == b""


def test_tags_list_and_upstream_errors_are_oci_errors(
    proxy: AsgiServer, post: Post, anonymous_image: PushedImage, basic_image: PushedImage, settings: Settings,
    tmp_path: Path,
) -> None:  # fmt: skip
    token = post({"containerImage": anonymous_image.reference}).json()["containerToken"]
    base = f"{proxy.url}/v2/wt/{token}/library/busybox"
    tags = httpx.get(f"{base}/tags/list")
    assert tags.status_code == 200
    assert tags.json() == {"name": "library/busybox", "tags": ["latest"]}
    missing = httpx.get(f"{base}/manifests/no-such-tag")
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    missing_blob = httpx.get(f"{base}/blobs/sha256:{'0' * 64}")
    assert missing_blob.status_code == 404
    assert missing_blob.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert httpx.put(f"{base}/manifests/latest", content=b"{}").status_code == 405

    # The service's credentials for a private registry are withdrawn after the request was accepted.
    settings.WAVE_REGISTRY_CREDENTIALS = credentials_file(tmp_path, basic_image)
    private = post({"containerImage": basic_image.reference}).json()["containerToken"]
    settings.WAVE_REGISTRY_CREDENTIALS = None
    refused = httpx.get(f"{proxy.url}/v2/wt/{private}/library/busybox/manifests/latest")
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_revoked_token_stops_pulls_at_once(proxy: AsgiServer, post: Post, anonymous_image: PushedImage) -> None:
    from requests_app.services import container_request_revoke

    target = post({"containerImage": anonymous_image.reference}).json()
    assert skopeo_inspect(target["targetImage"])["Digest"] == anonymous_image.digest  # token now cached
    container_request_revoke(token=target["containerToken"])
    response = httpx.get(f"{proxy.url}/v2/wt/{target['containerToken']}/library/busybox/manifests/latest")
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_upstream_blob_redirects_are_passed_on(
    proxy: AsgiServer,
    post: Post,
    builder: Builder,
    busybox_image_id: str,
    tmp_path: Path,
    settings: Settings,
) -> None:
    """A private registry that redirects blob GETs (as S3 or CDN-backed ones do): clients follow the
    redirect, and the registry's credentials never reach the other host."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from tests.support.network import free_port
    from tests.support.registry import BASIC, start_registry

    cdn_port = free_port()
    registry = start_registry(BASIC, redirect_blobs_to=f"http://127.0.0.1:{cdn_port}/")
    served: list[tuple[str, str | None]] = []

    class Cdn(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            served.append((self.path, self.headers.get("Authorization")))

    cdn = ThreadingHTTPServer(("127.0.0.1", cdn_port), functools.partial(Cdn, directory=str(registry.root / "data")))
    threading.Thread(target=cdn.serve_forever, daemon=True).start()
    try:
        reference = f"{registry.host}/library/busybox:cdn"
        builder.push(busybox_image_id, reference, creds=registry.creds)
        credentials = tmp_path / "credentials.json"
        credentials.write_text(
            json.dumps({registry.host: {"username": registry.username, "password": registry.password}})
        )
        settings.WAVE_REGISTRY_CREDENTIALS = str(credentials)
        created = post({"containerImage": reference, "containerConfig": {"env": ["VIA=cdn"]}}).json()
        token = created["containerToken"]
        manifest = httpx.get(f"{proxy.url}/v2/wt/{token}/library/busybox/manifests/cdn").json()
        layer = manifest["layers"][0]["digest"]
        redirect = httpx.get(f"{proxy.url}/v2/wt/{token}/library/busybox/blobs/{layer}")
        assert redirect.status_code == 307
        assert redirect.headers["Location"].startswith(f"http://127.0.0.1:{cdn_port}/docker/registry/v2/blobs/")
        # The proxy fetched the config through the redirect itself; skopeo follows the layer's redirect.
        assert "VIA=cdn" in skopeo_inspect(created["targetImage"], config=True)["config"]["Env"]
        skopeo_copy(created["targetImage"], tmp_path / "copy", transport="dir")
        assert (tmp_path / "copy" / layer.split(":")[1]).stat().st_size == manifest["layers"][0]["size"]
        assert any(layer.split(":")[1] in path for path, _ in served)
        assert all(authorization is None for _, authorization in served)
    finally:
        cdn.shutdown()
        cdn.server_close()
        registry.stop()


def test_expired_token_stops_pulls(
    proxy: AsgiServer, post: Post, anonymous_image: PushedImage, settings: Settings
) -> None:
    settings.WAVE_TOKEN_TTL = 2
    target = post({"containerImage": anonymous_image.reference}).json()
    assert skopeo_inspect(target["targetImage"])["Digest"] == anonymous_image.digest  # token now cached
    time.sleep(2.5)
    response = httpx.get(f"{proxy.url}/v2/wt/{target['containerToken']}/library/busybox/manifests/latest")
    assert response.status_code == 404
    assert response.json()["errors"][0] == {
        "code": "NAME_UNKNOWN",
        "message": f"Unknown Wave container for token '{target['containerToken']}'",
        "detail": None,
    }


def test_manifest_pulls_over_the_limit_get_toomanyrequests(
    proxy: AsgiServer, post: Post, anonymous_image: PushedImage, settings: Settings
) -> None:
    settings.WAVE_RATE_LIMIT_PULLS_PER_MINUTE = 2
    if time.time() % 60 > 30:  # the budget is per clock minute: do not straddle two (a loaded machine is slow)
        time.sleep(61 - time.time() % 60)
    token = post({"containerImage": anonymous_image.reference}).json()["containerToken"]
    base = f"{proxy.url}/v2/wt/{token}/library/busybox"
    manifest = httpx.get(f"{base}/manifests/latest")
    config = json.loads(manifest.content)["config"]["digest"]
    for _ in range(3):  # tags and blobs are not pulls
        assert httpx.get(f"{base}/tags/list").status_code == 200
        assert httpx.get(f"{base}/blobs/{config}").status_code == 200
    assert httpx.get(f"{base}/manifests/latest").status_code == 200
    refused = httpx.get(f"{base}/manifests/latest")
    assert refused.status_code == 429
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert refused.json() == {
        "errors": [
            {
                "code": "TOOMANYREQUESTS",
                "message": f"Request exceeded pull rate limit of 2 per minute - retry in {retry_after} seconds",
                "detail": None,
            }
        ]
    }
