"""Augmented images through the proxy: config, layers (data: and downloaded), platforms, failures."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from django.test import Client
from pytest_django.fixtures import Settings

from requests_app.models import ContainerRequest, InjectedLayer
from tests.conftest import PushedImage
from tests.requests_app.conftest import Post
from tests.support.asgi_server import AsgiServer
from tests.support.http_files import FileServer
from tests.support.images import Builder, run, skopeo_copy, skopeo_inspect
from tests.support.layers import Layer, make_layer

pytestmark = pytest.mark.slow


def wait_done(client: Client, token: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/v1alpha2/container/{token}/status").json()
        if status["status"] == "DONE":
            return status
        time.sleep(0.2)
    raise AssertionError(f"layers of {token} still pending after {timeout}s")


def augmented_request(image: PushedImage, data_layer: Layer, http_layer: Layer, http_url: str) -> dict:
    return {
        "containerImage": image.reference,
        "containerConfig": {
            "entrypoint": ["/bin/sh", "-c"],
            "cmd": ["echo $FOO"],
            "env": ["FOO=augmented", "BAR=two"],
            "workingDir": "/work",
            "layers": [data_layer.as_request(), http_layer.as_request(location=http_url)],
        },
    }


def test_augmented_image_has_new_config_and_layers(
    proxy: AsgiServer, post: Post, client: Client, anonymous_image: PushedImage, file_server: FileServer,
    builder: Builder, tmp_path: Path,
) -> None:  # fmt: skip
    data_layer = make_layer({"work/from-data.txt": b"inline layer\n"})
    http_layer = make_layer({"opt/from-http.txt": b"downloaded layer\n"})
    file_server.files["layer.tar.gz"] = http_layer.gzip_bytes
    body = augmented_request(anonymous_image, data_layer, http_layer, f"{file_server.url}/layer.tar.gz")
    created = post(body).json()
    assert wait_done(client, created["containerToken"])["succeeded"] is True
    target = created["targetImage"]

    upstream_config = skopeo_inspect(anonymous_image.reference, config=True)
    config = skopeo_inspect(target, config=True)
    assert config["config"]["Entrypoint"] == ["/bin/sh", "-c"]
    assert config["config"]["Cmd"] == ["echo $FOO"]
    assert config["config"]["WorkingDir"] == "/work"
    assert config["config"]["Env"] == [*upstream_config["config"]["Env"], "FOO=augmented", "BAR=two"]
    assert config["rootfs"]["diff_ids"] == [
        *upstream_config["rootfs"]["diff_ids"],
        data_layer.tar_digest,
        http_layer.tar_digest,
    ]
    manifest = skopeo_inspect(target, raw=True)
    assert [layer["digest"] for layer in manifest["layers"][-2:]] == [data_layer.gzip_digest, http_layer.gzip_digest]
    assert manifest["layers"][-1]["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"

    skopeo_copy(target, tmp_path / "layout")
    run(["umoci", "unpack", "--rootless", "--image", f"{tmp_path / 'layout'}:latest", str(tmp_path / "bundle")])
    rootfs = tmp_path / "bundle" / "rootfs"
    assert (rootfs / "work" / "from-data.txt").read_text() == "inline layer\n"
    assert (rootfs / "opt" / "from-http.txt").read_text() == "downloaded layer\n"
    assert (rootfs / "bin" / "busybox").is_file()

    container = builder.buildah("from", "--tls-verify=false", f"docker://{target}")
    try:
        env = builder.buildah("run", "--isolation", "chroot", container, "--", "/bin/env")
        assert "FOO=augmented" in env.splitlines()
        assert builder.buildah("run", "--isolation", "chroot", container, "--", "/bin/pwd") == "/work"
        assert builder.buildah("run", "--isolation", "chroot", container, "--", "/bin/cat", "/opt/from-http.txt") == (
            "downloaded layer"
        )
    finally:
        builder.buildah("rm", container)

    # The describe endpoint now knows both digests.
    described = client.get(f"/container-token/{created['containerToken']}").json()
    assert described["source"]["digest"] == anonymous_image.digest
    assert described["wave"]["digest"] == skopeo_inspect(target)["Digest"]


def test_the_same_layer_downloads_once(
    proxy: AsgiServer, post: Post, client: Client, anonymous_image: PushedImage, file_server: FileServer
) -> None:
    layer = make_layer({"once.txt": b"once\n"})
    file_server.files["once.tar.gz"] = layer.gzip_bytes
    body = {"containerImage": anonymous_image.reference,
            "containerConfig": {"layers": [layer.as_request(location=f"{file_server.url}/once.tar.gz")]}}  # fmt: skip
    first = post(body).json()["containerToken"]
    downloaded = InjectedLayer.objects.get(request__token=first)
    assert float(wait_done(client, first)["duration"]) > 0
    downloaded.refresh_from_db()
    assert downloaded.finished_at is not None
    assert downloaded.finished_at > downloaded.request.created_at
    second = post(body).json()["containerToken"]
    done = wait_done(client, second)
    assert done["succeeded"] is True
    assert done["duration"] == "0.000000000"  # verified before: ready when the request was made
    assert file_server.hits.count("/once.tar.gz") == 1


def test_index_only_the_requested_platform_changes(
    proxy: AsgiServer, post: Post, client: Client, multiplatform_image: PushedImage
) -> None:
    layer = make_layer({"arm.txt": b"arm only\n"})
    created = post({
        "containerImage": multiplatform_image.reference,
        "containerPlatform": "linux/arm64",
        "containerConfig": {"env": ["ARCH=arm64"], "layers": [layer.as_request()]},
    }).json()  # fmt: skip
    upstream = skopeo_inspect(multiplatform_image.reference, raw=True)
    served = skopeo_inspect(created["targetImage"], raw=True)
    by_arch = {m["platform"]["architecture"]: m for m in upstream["manifests"]}
    served_by_arch = {m["platform"]["architecture"]: m for m in served["manifests"]}
    assert served_by_arch["amd64"] == by_arch["amd64"]
    assert served_by_arch["arm64"]["digest"] != by_arch["arm64"]["digest"]
    arm = subprocess.run(
        ["skopeo", "--override-arch", "arm64", "inspect", "--config", "--tls-verify=false",
         f"docker://{created['targetImage']}"], capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "ARCH=arm64" in json.loads(arm.stdout)["config"]["Env"]
    amd = subprocess.run(
        ["skopeo", "--override-arch", "amd64", "inspect", "--config", "--tls-verify=false",
         f"docker://{created['targetImage']}"], capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "ARCH=arm64" not in json.loads(amd.stdout)["config"]["Env"]


def test_unmatched_platform_is_an_oci_error(proxy: AsgiServer, post: Post, multiplatform_image: PushedImage) -> None:
    # Refused at request time since (the index lacks it); the index may still change after a request.
    created = post({"containerImage": multiplatform_image.reference, "containerConfig": {"env": ["A=1"]}}).json()
    token = created["containerToken"]
    ContainerRequest.objects.filter(token=token).update(platform="linux/arm/v7")
    response = httpx.get(f"{proxy.url}/v2/wt/{token}/library/busybox-multi/manifests/latest")
    assert response.status_code == 400
    assert response.json()["errors"][0] == {
        "code": "UNKNOWN",
        "message": "Cannot find matching platform 'linux/arm/v7' in the image index",
        "detail": None,
    }


def test_a_platform_no_longer_supported_is_an_oci_error(
    proxy: AsgiServer, post: Post, multiplatform_image: PushedImage
) -> None:
    # An earlier version accepted linux/386; its tokens live on for a while after an upgrade.
    token = post({"containerImage": multiplatform_image.reference, "containerConfig": {"env": ["A=1"]}}).json()[
        "containerToken"
    ]
    ContainerRequest.objects.filter(token=token).update(platform="linux/386")
    response = httpx.get(f"{proxy.url}/v2/wt/{token}/library/busybox-multi/manifests/latest")
    assert response.status_code == 400
    assert response.json()["errors"][0] == {
        "code": "UNKNOWN",
        "message": "Unsupported container platform: linux/386",
        "detail": None,
    }


@pytest.mark.parametrize("problem", ["gzip digest", "size", "unreachable", "ssrf"])
def test_bad_layer_fails_the_pull_with_a_clear_error(
    problem: str, proxy: AsgiServer, post: Post, client: Client, anonymous_image: PushedImage,
    file_server: FileServer,
) -> None:  # fmt: skip
    layer = make_layer({f"{problem}.txt": b"x\n"})
    other = make_layer({"other.txt": b"other\n"})
    file_server.files["layer.tar.gz"] = layer.gzip_bytes
    request, expected = {
        "gzip digest": (layer.as_request(location=f"{file_server.url}/layer.tar.gz", gzipDigest=other.gzip_digest),
                        f"Layer gzip digest does not match: expected {other.gzip_digest}, got {layer.gzip_digest}"),
        "size": (layer.as_request(location=f"{file_server.url}/layer.tar.gz", gzipSize=len(layer.gzip_bytes) + 7),
                 f"Layer size does not match: expected {len(layer.gzip_bytes) + 7} bytes, got {len(layer.gzip_bytes)}"),
        "unreachable": (layer.as_request(location=f"{file_server.url}/missing.tar.gz"),
                        f"Download of {file_server.url}/missing.tar.gz answered HTTP 404"),
        "ssrf": (layer.as_request(location=f"{file_server.url}/redirect?to=http://169.254.169.254/layer.tar.gz"),
                 "Destination '169.254.169.254' is not allowed: it resolves to a private or local address"
                 " (set WAVE_SSRF_ALLOW=169.254.169.254 to allow it)"),
    }[problem]  # fmt: skip
    token = post({"containerImage": anonymous_image.reference, "containerConfig": {"layers": [request]}}).json()[
        "containerToken"
    ]
    status = wait_done(client, token)
    assert status["succeeded"] is False
    assert status["reason"] == f"Layer 0 ({request['gzipDigest']}) failed: {expected}"
    assert InjectedLayer.objects.get(request__token=token).finished_at is not None
    assert float(status["duration"]) > 0
    response = httpx.get(f"{proxy.url}/v2/wt/{token}/library/busybox/manifests/latest")
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"] == f"Container layer 0 ({request['gzipDigest']}) failed: {expected}"
    with pytest.raises(RuntimeError):
        skopeo_inspect(f"{proxy.host}/wt/{token}/library/busybox:latest")


def test_head_manifest_and_blob_ranges(proxy: AsgiServer, post: Post, anonymous_image: PushedImage) -> None:
    layer = make_layer({"range.txt": b"0123456789" * 100})
    token = post({"containerImage": anonymous_image.reference,
                  "containerConfig": {"layers": [layer.as_request()]}}).json()["containerToken"]  # fmt: skip
    base = f"{proxy.url}/v2/wt/{token}/library/busybox"
    get = httpx.get(f"{base}/manifests/latest")
    head = httpx.head(f"{base}/manifests/latest")
    assert head.status_code == 200
    assert head.content == b""
    for name in ("Content-Type", "Content-Length", "Docker-Content-Digest", "ETag"):
        assert head.headers[name] == get.headers[name]
    assert get.headers["Docker-Content-Digest"] == "sha256:" + __import__("hashlib").sha256(get.content).hexdigest()
    by_digest = httpx.get(f"{base}/manifests/{get.headers['Docker-Content-Digest']}")
    assert by_digest.content == get.content

    blob_url = f"{base}/blobs/{layer.gzip_digest}"
    whole = httpx.get(blob_url)
    assert whole.content == layer.gzip_bytes
    assert whole.headers["Docker-Content-Digest"] == layer.gzip_digest
    part = httpx.get(blob_url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == layer.gzip_bytes[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(layer.gzip_bytes)}"
    bad = httpx.get(blob_url, headers={"Range": f"bytes={len(layer.gzip_bytes) + 5}-"})
    assert bad.status_code == 416
    wrong_path = httpx.get(f"{proxy.url}/v2/wt/{token}/library/other/manifests/latest")
    assert wrong_path.status_code == 404
    assert wrong_path.json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_a_token_cannot_read_what_was_generated_for_another(
    proxy: AsgiServer, post: Post, anonymous_image: PushedImage
) -> None:
    secret = post({"containerImage": anonymous_image.reference,
                   "containerConfig": {"env": ["SECRET=only-for-me"]}}).json()  # fmt: skip
    other = post({"containerImage": anonymous_image.reference}).json()["containerToken"]
    mine = httpx.get(f"{proxy.url}/v2/wt/{secret['containerToken']}/library/busybox/manifests/latest")
    assert mine.status_code == 200
    manifest_digest = mine.headers["Docker-Content-Digest"]
    config_digest = mine.json()["config"]["digest"]
    base = f"{proxy.url}/v2/wt/{other}/library/busybox"
    # By digest, through another token: not served from our store (upstream does not know these digests).
    assert httpx.get(f"{base}/manifests/{manifest_digest}").status_code == 404
    config = httpx.get(f"{base}/blobs/{config_digest}")
    assert config.status_code == 404
    assert b"only-for-me" not in config.content


def _push_raw_image(registry_url: str, repository: str, tag: str, config: bytes) -> None:
    """Push a manifest whose config blob holds `config` verbatim (to test what a hostile registry may send)."""
    import hashlib

    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    start = httpx.post(f"{registry_url}/v2/{repository}/blobs/uploads/")
    location = httpx.URL(registry_url).join(start.headers["Location"])
    httpx.put(location.copy_merge_params({"digest": digest}), content=config).raise_for_status()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest,
                           "size": len(config)}, "layers": []}  # fmt: skip
    httpx.put(f"{registry_url}/v2/{repository}/manifests/{tag}", content=json.dumps(manifest),
              headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}).raise_for_status()  # fmt: skip


def test_malformed_upstream_config_is_a_clear_oci_error(
    proxy: AsgiServer, post: Post, anonymous_image: PushedImage
) -> None:
    registry = anonymous_image.registry
    _push_raw_image(registry.url, "library/broken", "v1", b"[]")
    token = post({"containerImage": f"{registry.host}/library/broken:v1",
                  "containerConfig": {"env": ["A=1"]}}).json()["containerToken"]  # fmt: skip
    response = httpx.get(f"{proxy.url}/v2/wt/{token}/library/broken/manifests/v1")
    assert response.status_code == 400
    assert response.json()["errors"][0] == {
        "code": "UNKNOWN",
        "message": "The upstream image config is malformed",
        "detail": None,
    }


def test_pull_waits_a_bounded_time_for_downloads(
    proxy: AsgiServer, post: Post, client: Client, anonymous_image: PushedImage, file_server: FileServer,
    settings: Settings,
) -> None:  # fmt: skip
    settings.WAVE_LAYER_WAIT_SECONDS = 1
    layer = make_layer({"slow.txt": b"slow\n"})
    file_server.files["slow.tar.gz"] = layer.gzip_bytes
    slow = layer.as_request(location=f"{file_server.url}/slow/slow.tar.gz")
    created = post({"containerImage": anonymous_image.reference, "containerConfig": {"layers": [slow]}})
    token = created.json()["containerToken"]
    url = f"{proxy.url}/v2/wt/{token}/library/busybox/manifests/latest"
    waiting = httpx.get(url, timeout=30)
    assert waiting.status_code == 503
    assert waiting.headers["Retry-After"] == "5"
    assert waiting.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert wait_done(client, token)["succeeded"] is True
    ready = httpx.get(url, timeout=30)
    assert ready.status_code == 200
    assert ready.json()["layers"][-1]["digest"] == layer.gzip_digest
