"""The blob store on an S3-compatible server: requests, downloads and pulls with no layer bytes on local disk."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from django.conf import settings

from requests_app.downloads import layer_download_run
from requests_app.models import InjectedLayer
from tests.conftest import PushedImage
from tests.requests_app.conftest import Post
from tests.support.asgi_server import AsgiServer
from tests.support.http_files import FileServer
from tests.support.images import run, skopeo_copy, skopeo_inspect
from tests.support.layers import make_layer
from tests.support.s3 import S3Bucket
from wave_site.blobstore import blob_key


def local_blobs() -> list[Path]:
    return [path for path in (settings.DATA_DIR / "blobs").rglob("*") if path.is_file()]


@pytest.mark.django_db
def test_data_layer_is_stored_in_the_bucket(post: Post, anonymous_image: PushedImage, s3_blob_store: S3Bucket) -> None:
    before = local_blobs()
    layer = make_layer({"a.txt": b"to s3\n"})
    response = post({"containerImage": anonymous_image.reference, "containerConfig": {"layers": [layer.as_request()]}})
    assert response.status_code == 200, response.content
    key = blob_key(layer.gzip_digest)
    assert s3_blob_store.keys() == [f"wave/{key}"]
    assert s3_blob_store.read(key) == layer.gzip_bytes
    assert InjectedLayer.objects.get().state == InjectedLayer.State.READY
    assert local_blobs() == before


@pytest.mark.django_db
def test_downloaded_layer_is_verified_then_uploaded(
    post: Post, anonymous_image: PushedImage, s3_blob_store: S3Bucket, file_server: FileServer
) -> None:
    good = make_layer({"good.txt": b"downloaded to s3\n"})
    file_server.files["good.tar.gz"] = good.gzip_bytes
    file_server.files["bad.tar.gz"] = good.gzip_bytes  # declared below with another digest
    layers = [
        good.as_request(location=f"{file_server.url}/good.tar.gz"),
        good.as_request(location=f"{file_server.url}/bad.tar.gz", gzipDigest="sha256:" + "e" * 64),
    ]
    response = post({"containerImage": anonymous_image.reference, "containerConfig": {"layers": layers}})
    assert response.status_code == 200, response.content
    first, second = InjectedLayer.objects.order_by("position")

    assert layer_download_run(download_pk=first.download_id) == InjectedLayer.State.READY  # the task's body
    assert s3_blob_store.read(blob_key(good.gzip_digest)) == good.gzip_bytes
    assert layer_download_run(download_pk=second.download_id) == InjectedLayer.State.FAILED
    second.refresh_from_db()
    wrong = "sha256:" + "e" * 64
    assert second.failure_reason == f"Layer gzip digest does not match: expected {wrong}, got {good.gzip_digest}"
    assert s3_blob_store.keys() == [f"wave/{blob_key(good.gzip_digest)}"]  # nothing of the failed one
    assert list((settings.DATA_DIR / "tmp").glob(".download-*")) == []  # scratch files removed


@pytest.fixture
def s3_proxy(asgi_server: AsgiServer, s3_blob_store: S3Bucket, settings, transactional_db: None) -> AsgiServer:
    settings.WAVE_SERVER_URL = asgi_server.url
    return asgi_server


@pytest.mark.slow
def test_pulls_fetch_stored_blobs_from_the_bucket(
    s3_proxy: AsgiServer, post: Post, anonymous_image: PushedImage, s3_blob_store: S3Bucket, tmp_path: Path
) -> None:
    layer = make_layer({"work/from-s3.txt": b"served by the bucket\n"})
    created = post({"containerImage": anonymous_image.reference, "containerConfig": {"layers": [layer.as_request()],
                    "env": ["FROM=s3"]}}).json()  # fmt: skip
    token = created["containerToken"]
    base = f"{s3_proxy.url}/v2/wt/{token}/library/busybox"

    blob = httpx.get(f"{base}/blobs/{layer.gzip_digest}")
    assert blob.status_code == 307
    assert blob.headers["Location"].startswith(f"{s3_blob_store.endpoint}/{s3_blob_store.name}/wave/")
    assert "X-Amz-Signature=" in blob.headers["Location"]
    assert blob.headers["Docker-Content-Digest"] == layer.gzip_digest
    assert httpx.get(blob.headers["Location"]).content == layer.gzip_bytes
    head = httpx.head(f"{base}/blobs/{layer.gzip_digest}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(layer.gzip_bytes))

    # Real clients follow the redirects, for the layer and for the generated config.
    config = skopeo_inspect(created["targetImage"], config=True)
    assert "FROM=s3" in config["config"]["Env"]
    skopeo_copy(created["targetImage"], tmp_path / "layout")
    run(["umoci", "unpack", "--rootless", "--image", f"{tmp_path / 'layout'}:latest", str(tmp_path / "bundle")])
    assert (tmp_path / "bundle" / "rootfs" / "work" / "from-s3.txt").read_text() == "served by the bucket\n"
    stored = s3_blob_store.keys()
    assert f"wave/{blob_key(layer.gzip_digest)}" in stored
    assert len(stored) == 3  # the layer, the generated config and the generated manifest


@pytest.mark.django_db
def test_store_unavailable_is_503_and_stores_nothing(
    post: Post, anonymous_image: PushedImage, s3_blob_store: S3Bucket
) -> None:
    s3_blob_store.client.delete_bucket(Bucket=s3_blob_store.name)
    layer = make_layer({"a.txt": b"nowhere to go\n"})
    response = post({"containerImage": anonymous_image.reference, "containerConfig": {"layers": [layer.as_request()]}})
    assert response.status_code == 503
    assert response.json() == {"message": "The blob store is unavailable: NoSuchBucket"}
    assert not InjectedLayer.objects.exists()


@pytest.mark.slow
def test_a_blob_lost_by_the_store_is_blob_unknown(
    s3_proxy: AsgiServer, post: Post, anonymous_image: PushedImage, s3_blob_store: S3Bucket
) -> None:
    layer = make_layer({"gone.txt": b"removed by a lifecycle rule\n"})
    token = post(
        {"containerImage": anonymous_image.reference, "containerConfig": {"layers": [layer.as_request()]}}
    ).json()["containerToken"]
    s3_blob_store.client.delete_object(Bucket=s3_blob_store.name, Key=f"wave/{blob_key(layer.gzip_digest)}")
    head = httpx.head(f"{s3_proxy.url}/v2/wt/{token}/library/busybox/blobs/{layer.gzip_digest}")
    assert head.status_code == 404
    assert head.headers["Docker-Distribution-API-Version"] == "registry/2.0"
