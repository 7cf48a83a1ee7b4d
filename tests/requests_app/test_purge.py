from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from requests_app.models import ContainerRequest, InjectedLayer, LayerDownload
from requests_app.tasks import container_request_purge_task

pytestmark = pytest.mark.django_db


def make_request(token: str, expires_at: dt.datetime) -> ContainerRequest:
    request = ContainerRequest.objects.create(
        token=token, source_image="docker.io/library/busybox:latest", target_image="x", expires_at=expires_at
    )
    InjectedLayer.objects.create(
        request=request, position=0, kind="http", url="https://e.org/l", gzip_digest="d", gzip_size=1, tar_digest="t"
    )
    return request


def test_purge_deletes_requests_expired_past_retention_only() -> None:
    now = timezone.now()
    make_request("00000000000a", now - dt.timedelta(days=8))
    make_request("00000000000b", now - dt.timedelta(days=1))
    make_request("00000000000c", now + dt.timedelta(hours=1))
    assert container_request_purge_task() == 1
    assert sorted(ContainerRequest.objects.values_list("token", flat=True)) == ["00000000000b", "00000000000c"]
    assert InjectedLayer.objects.count() == 2
    assert container_request_purge_task() == 0  # idempotent


def test_purge_keeps_the_downloads_its_layers_joined() -> None:
    fetched = {"url": "https://e.org/l", "gzip_size": 1, "gzip_digest": "d", "tar_digest": "t"}
    download = LayerDownload.objects.create(identity=LayerDownload.identity_of(**fetched), state="ready", **fetched)
    old = make_request("00000000000a", timezone.now() - dt.timedelta(days=8))
    InjectedLayer.objects.filter(request=old).update(download=download)
    assert container_request_purge_task() == 1
    assert (ContainerRequest.objects.count(), InjectedLayer.objects.count()) == (0, 0)
    # The download stays: a later request for the same layer is ready at once.
    assert LayerDownload.objects.get().state == "ready"
