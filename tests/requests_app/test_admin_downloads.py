"""The admin's view of layer downloads: read-only, locations redacted, state and heartbeat shown."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from requests_app.models import ContainerRequest, InjectedLayer, LayerDownload

pytestmark = pytest.mark.django_db

SECRET_URL = "https://alice:s3cr3t@e.org/l.tgz?X-Amz-Signature=deadbeef42"
SHOWN_URL = "https://REDACTED@e.org/l.tgz?X-Amz-Signature=REDACTED"


@pytest.fixture
def operator(client: Client) -> Client:
    get_user_model().objects.create_superuser("ops", password="ops-pass")
    client.login(username="ops", password="ops-pass")
    return client


@pytest.fixture
def joined() -> InjectedLayer:
    fetched = {"url": SECRET_URL, "gzip_size": 10, "gzip_digest": "sha256:" + "5" * 64,
               "tar_digest": "sha256:" + "6" * 64}  # fmt: skip
    download = LayerDownload.objects.create(
        identity=LayerDownload.identity_of(**fetched), state="running", attempts=2, claimed_by="host:42:ab",
        heartbeat_at=timezone.now(), **fetched,
    )  # fmt: skip
    request = ContainerRequest.objects.create(
        token="aaaaaaaaaaaa", source_image="a/b:1", target_image="x", expires_at=timezone.now() + dt.timedelta(hours=1)
    )
    return InjectedLayer.objects.create(request=request, position=0, kind="http", download=download, **fetched)


def test_downloads_list_and_page_show_state_attempts_and_no_secret(operator: Client, joined: InjectedLayer) -> None:
    listing = operator.get("/admin/requests_app/layerdownload/?state=running").content.decode()
    page = operator.get(f"/admin/requests_app/layerdownload/{joined.download_id}/change/").content.decode()
    for html in (listing, page):
        assert SHOWN_URL.replace("&", "&amp;") in html
        assert "s3cr3t" not in html
        assert "deadbeef42" not in html
        assert "running" in html
    assert "host:42:ab" in page
    assert 'name="url"' not in page  # read-only: no inputs
    assert 'class="field-attempts">2<' in listing
    assert 'class="field-joined">1<' in listing
    assert "0 layer downloads" in operator.get("/admin/requests_app/layerdownload/?state=failed").content.decode()


def test_request_page_shows_each_layer_download_state_and_no_secret(operator: Client, joined: InjectedLayer) -> None:
    page = operator.get(f"/admin/requests_app/containerrequest/{joined.request_id}/change/").content.decode()
    assert f'href="/admin/requests_app/layerdownload/{joined.download_id}/change/">running (attempts: 2)</a>' in page
    assert SHOWN_URL in page
    assert "s3cr3t" not in page
    assert "deadbeef42" not in page
    layer_page = operator.get(f"/admin/requests_app/injectedlayer/{joined.pk}/change/").content.decode()
    assert SHOWN_URL in layer_page
    assert "s3cr3t" not in layer_page
