from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from credentials.models import CredentialLookup, TowerAuth
from credentials.sessions import tower_session_open
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


def test_purge_takes_tower_sessions_no_request_needs_and_old_lookups() -> None:
    now = timezone.now()
    old = now - dt.timedelta(days=30)
    sessions = {}
    for name in ("kept-by-live-request", "kept-young", "gone"):
        sessions[name] = tower_session_open(endpoint="https://tower.example.org", access_token=f"token-{name}")
    TowerAuth.objects.exclude(pk=sessions["kept-young"].pk).update(created_at=old)
    live = make_request("00000000000a", now + dt.timedelta(hours=1))
    live.tower_auth = sessions["kept-by-live-request"]
    live.save()
    expired = make_request("00000000000b", now - dt.timedelta(days=8))
    expired.tower_auth = sessions["gone"]
    expired.save()
    CredentialLookup.objects.create(endpoint="e", registry="r", outcome="found", created_at=old)
    recent = CredentialLookup.objects.create(endpoint="e", registry="r", outcome="found")
    assert container_request_purge_task() == 1
    assert set(TowerAuth.objects.values_list("pk", flat=True)) == {
        sessions["kept-by-live-request"].pk, sessions["kept-young"].pk,
    }  # fmt: skip
    assert list(CredentialLookup.objects.values_list("pk", flat=True)) == [recent.pk]
