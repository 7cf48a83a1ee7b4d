"""Pulls that wait for a build, and blobs that stream for long, hold no database connection meanwhile.

A pipeline that starts a hundred tasks on an image still building sends a hundred pulls at once; each waits
(bounded by the build timeout) on the event loop. Were each to hold a pooled database connection, the pool
(`WAVE_DB_POOL_SIZE`, 20) would be empty for the length of the build and every other request would answer 503.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import os
import time

import httpx
import pytest
from django.conf import settings as django_settings
from pytest_django.fixtures import Settings

from builds.models import Build
from tests.conftest import PushedImage
from tests.support.asgi_server import AsgiServer
from tests.support.http_files import FileServer
from tests.support.layers import make_layer
from tests.support.network import wait_until

pytestmark = pytest.mark.slow

WAITING = django_settings.DATABASES["default"].get("OPTIONS", {}).get("pool", {}).get("max_size", 20) + 10


def test_pulls_waiting_for_a_build_leave_the_service_answering_then_get_its_failure(
    proxy: AsgiServer, anonymous_image: PushedImage, settings: Settings
) -> None:
    settings.WAVE_BUILD_REPO = f"{anonymous_image.registry.host}/wave/build"  # no worker takes the builds queue
    body = {"containerFile": base64.b64encode(f"FROM {anonymous_image.reference}\nRUN true\n".encode()).decode()}
    created = httpx.post(f"{proxy.url}/v1alpha2/container", json=body, timeout=30).json()
    build = Build.objects.get(build_id=created["buildId"])
    assert build.state == Build.State.PENDING
    manifest_url = f"{proxy.url}/v2/wt/{created['containerToken']}/wave/build/manifests/{build.container_id}"
    headers = {"Accept": "application/vnd.oci.image.manifest.v1+json"}

    with concurrent.futures.ThreadPoolExecutor(WAITING) as pool:
        pulls = [pool.submit(httpx.get, manifest_url, headers=headers, timeout=120) for _ in range(WAITING)]
        time.sleep(3)  # every pull is in and waiting (the pool's timeout is 2 s)
        assert not any(pull.done() for pull in pulls), [pull.result().text for pull in pulls if pull.done()]

        # The service answers meanwhile, database included.
        for _ in range(5):
            described = httpx.get(f"{proxy.url}/v1alpha2/container/{created['containerToken']}", timeout=30)
            assert described.status_code == 200, described.text
        status = httpx.get(f"{proxy.url}/v1alpha1/builds/{build.build_id}/status", timeout=30)
        assert status.status_code == 200, status.text

        Build.objects.filter(pk=build.pk).update(state=Build.State.FAILED, failure_reason="boom in the test")
        answers = [pull.result() for pull in pulls]

    for answer in answers:
        assert answer.status_code == 400, answer.text
        assert "boom in the test" in answer.text
        assert f"/view/builds/{build.build_id}" in answer.text


def test_slow_blob_downloads_leave_the_service_answering(
    proxy: AsgiServer, anonymous_image: PushedImage, file_server: FileServer
) -> None:
    """A layer streams for as long as the client takes to read it: the stream holds no database connection
    (Django gives the request's connection back once the response starts; this keeps it so)."""
    layer = make_layer({"big.bin": os.urandom(24 * 1024 * 1024)})  # incompressible: past any socket buffer
    file_server.files["big.tar.gz"] = layer.gzip_bytes
    body = {"containerImage": anonymous_image.reference,
            "containerConfig": {"layers": [layer.as_request(location=f"{file_server.url}/big.tar.gz")]}}  # fmt: skip
    created = httpx.post(f"{proxy.url}/v1alpha2/container", json=body, timeout=30).json()
    token = created["containerToken"]
    status_url = f"{proxy.url}/v1alpha2/container/{token}/status"
    wait_until(lambda: httpx.get(status_url, timeout=30).json()["status"] == "DONE", timeout=60, what="the layer")
    blob_url = f"{proxy.url}/v2/wt/{token}/library/busybox/blobs/{layer.gzip_digest}"

    with contextlib.ExitStack() as streams:
        clients = [streams.enter_context(httpx.Client(timeout=60)) for _ in range(WAITING)]
        for client in clients:  # each reads one chunk, then stalls: the server blocks on sending the rest
            response = streams.enter_context(client.stream("GET", blob_url))
            assert response.status_code == 200
            next(response.iter_raw(65536))
        for _ in range(5):
            described = httpx.get(f"{proxy.url}/v1alpha2/container/{token}", timeout=30)
            assert described.status_code == 200, described.text
