"""Accepted container requests: response shapes, tokens, storage, describe / revoke / status."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.files.storage import default_storage
from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings

from registry.reference import parse_image
from requests_app.models import ContainerRequest, InjectedLayer
from requests_app.services import new_token, target_image_for
from tests.conftest import PushedImage
from tests.requests_app.conftest import Post
from tests.support.layers import make_layer
from wave_site.blobstore import blob_key
from wave_site.cache import shared_cache

pytestmark = pytest.mark.django_db

TOKEN = re.compile(r"[0-9a-f]{12}")
INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def parse_instant(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


def test_v1_response_shape(post: Post, anonymous_image: PushedImage) -> None:
    before = timezone.now()
    response = post({"containerImage": anonymous_image.reference})
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"containerToken", "targetImage", "expiration", "containerImage"}
    token = body["containerToken"]
    assert TOKEN.fullmatch(token)
    assert body["targetImage"] == f"localhost:9090/wt/{token}/library/busybox:latest"
    assert body["containerImage"] == f"{anonymous_image.registry.host}/library/busybox:latest"
    assert INSTANT.fullmatch(body["expiration"])
    expected = before + dt.timedelta(seconds=129600)
    assert abs((parse_instant(body["expiration"]) - expected).total_seconds()) < 5

    stored = ContainerRequest.objects.get(token=token)
    assert stored.source_image == body["containerImage"]
    assert stored.target_image == body["targetImage"]
    assert stored.platform == "linux/amd64"
    assert stored.api_version == "v1"
    assert stored.client_ip == "192.0.2.10"
    assert stored.source_digest == anonymous_image.digest
    assert stored.revoked_at is None


def test_v2_response_adds_freeze_and_omits_nulls(post: Post, anonymous_image: PushedImage) -> None:
    response = post({"containerImage": anonymous_image.reference}, v2=True)
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"containerToken", "targetImage", "expiration", "containerImage", "freeze", "succeeded"}
    assert body["freeze"] is False
    assert body["succeeded"] is True
    assert ContainerRequest.objects.get(token=body["containerToken"]).api_version == "v2"


def test_v2_dry_run_checks_and_stores_nothing(post: Post, anonymous_image: PushedImage) -> None:
    response = post({"containerImage": anonymous_image.reference, "dryRun": True}, v2=True)
    assert response.status_code == 200
    assert response.json() == {
        "containerImage": f"{anonymous_image.registry.host}/library/busybox:latest",
        "freeze": False,
    }
    assert ContainerRequest.objects.count() == 0


def test_tokens_are_unique_lowercase_hex() -> None:
    tokens = {new_token() for _ in range(2000)}
    assert len(tokens) == 2000
    assert all(TOKEN.fullmatch(t) and int(t, 16) != 0 for t in tokens)


@pytest.mark.parametrize(
    ("image", "target"),
    [
        ("ubuntu", "localhost:9090/wt/0123456789ab/library/ubuntu:latest"),
        ("quay.io/a/b/c:v1.1", "localhost:9090/wt/0123456789ab/a/b/c:v1.1"),
        (f"localhost:5000/x/y@sha256:{'c' * 64}", f"localhost:9090/wt/0123456789ab/x/y@sha256:{'c' * 64}"),
    ],
)
def test_target_image(image: str, target: str) -> None:
    assert target_image_for("0123456789ab", parse_image(image)) == target


@pytest.mark.parametrize(
    ("image", "normalised", "path"),
    [
        ("ubuntu", "docker.io/library/ubuntu:latest", "library/ubuntu:latest"),
        ("quay.io/a/b/c:v1.1", "quay.io/a/b/c:v1.1", "a/b/c:v1.1"),
        (f"localhost:5000/x/y@sha256:{'c' * 64}", f"localhost:5000/x/y@sha256:{'c' * 64}", f"x/y@sha256:{'c' * 64}"),
    ],
)
def test_target_image_through_the_api(post: Post, image: str, normalised: str, path: str) -> None:
    # No registry is reachable for these names here: the upstream check's cached answer stands in for it.
    shared_cache().set(f"wave:upstream:manifest:{normalised}:anonymous", f"sha256:{'d' * 64}", 60)
    response = post({"containerImage": image})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["containerImage"] == normalised
    assert body["targetImage"] == f"localhost:9090/wt/{body['containerToken']}/{path}"


def test_target_image_uses_the_server_url_authority(
    post: Post, anonymous_image: PushedImage, settings: Settings
) -> None:
    settings.WAVE_SERVER_URL = "https://wave.example.org:8443"
    body = post({"containerImage": anonymous_image.reference}).json()
    assert body["targetImage"] == f"wave.example.org:8443/wt/{body['containerToken']}/library/busybox:latest"


def test_request_by_digest_keeps_the_digest(post: Post, anonymous_image: PushedImage) -> None:
    body = post({"containerImage": anonymous_image.by_digest}).json()
    assert body["targetImage"].endswith(f"/library/busybox@{anonymous_image.digest}")
    assert ContainerRequest.objects.get(token=body["containerToken"]).source_digest == anonymous_image.digest


def test_token_lifetime_is_configurable(post: Post, anonymous_image: PushedImage, settings: Settings) -> None:
    settings.WAVE_TOKEN_TTL = 600
    body = post({"containerImage": anonymous_image.reference}).json()
    remaining = (parse_instant(body["expiration"]) - timezone.now()).total_seconds()
    assert 590 < remaining <= 600


def test_container_config_and_layers_are_stored(post: Post, anonymous_image: PushedImage) -> None:
    inline = make_layer({"opt/hello.txt": b"hello from a data layer\n"})
    remote = make_layer({"opt/remote.txt": b"remote\n"})
    body = {
        "containerImage": anonymous_image.reference,
        "containerPlatform": "x86_64",
        "containerConfig": {
            "entrypoint": ["/bin/sh", "-c"],
            "cmd": ["echo hi"],
            "env": ["FOO=one", "BAR=two"],
            "workingDir": "/work",
            "layers": [inline.as_request(), remote.as_request(location="http://127.0.0.1:9/remote.tar.gz")],
        },
        "fingerprint": "abc123",
        "timestamp": "2026-11-27T10:00:00Z",
        "towerEndpoint": "https://api.tower.nf",
        "towerWorkspaceId": 42,
    }
    response = post(body)
    assert response.status_code == 200, response.content
    stored = ContainerRequest.objects.get(token=response.json()["containerToken"])
    assert stored.container_config == {
        "entrypoint": ["/bin/sh", "-c"],
        "cmd": ["echo hi"],
        "env": ["FOO=one", "BAR=two"],
        "workingDir": "/work",
    }
    assert stored.fingerprint == "abc123"
    assert stored.client_timestamp == "2026-11-27T10:00:00Z"
    assert stored.tower_endpoint == "https://api.cloud.seqera.io"
    assert stored.tower_workspace_id == 42
    first, second = stored.layers.all()
    assert (first.position, first.kind, first.url, first.state) == (0, "data", "", "ready")
    assert (first.gzip_digest, first.gzip_size, first.tar_digest) == (
        inline.gzip_digest,
        len(inline.gzip_bytes),
        inline.tar_digest,
    )
    assert first.blob_key == blob_key(inline.gzip_digest)
    with default_storage.open(first.blob_key) as blob:
        assert blob.read() == inline.gzip_bytes
    assert (second.position, second.kind, second.url, second.state) == (
        1,
        "http",
        "http://127.0.0.1:9/remote.tar.gz",
        "pending",
    )
    assert second.blob_key == ""
    # The data: payload and the Tower token are never stored in a row.
    rows = [*ContainerRequest.objects.values(), *InjectedLayer.objects.values()]
    dumped = json.dumps(rows, default=str)
    assert inline.data_location[5:40] not in dumped
    assert "tower-secret-token" not in dumped


def test_the_same_data_layer_is_stored_once(post: Post, anonymous_image: PushedImage) -> None:
    layer = make_layer({"same.txt": b"same\n"})
    for _ in range(2):
        body = {"containerImage": anonymous_image.reference, "containerConfig": {"layers": [layer.as_request()]}}
        assert post(body).status_code == 200
    folder = Path(default_storage.location) / Path(blob_key(layer.gzip_digest)).parent
    assert [p.name for p in folder.iterdir()] == [layer.gzip_digest.split(":")[1]]


def test_gzip_size_may_be_a_numeric_string(post: Post, anonymous_image: PushedImage) -> None:
    layer = make_layer({"a.txt": b"a"})
    request = layer.as_request(gzipSize=str(len(layer.gzip_bytes)))
    response = post({"containerImage": anonymous_image.reference, "containerConfig": {"layers": [request]}})
    assert response.status_code == 200, response.content


def test_describe_returns_request_source_and_wave(client: Client, post: Post, anonymous_image: PushedImage) -> None:
    layer = make_layer({"a.txt": b"a"})
    created = post(
        {
            "containerImage": anonymous_image.reference,
            "containerConfig": {"env": ["A=1"], "layers": [layer.as_request()]},
            "fingerprint": "fp",
        }
    ).json()
    token = created["containerToken"]
    response = client.get(f"/container-token/{token}")
    assert response.status_code == 200
    body = response.json()
    assert body["token"] == token
    assert body["expiration"] == created["expiration"]
    assert body["source"] == {"image": created["containerImage"], "digest": anonymous_image.digest}
    assert body["wave"] == {"image": created["targetImage"]}
    request = body["request"]
    assert request["containerImage"] == created["containerImage"]
    assert request["containerPlatform"] == "linux/amd64"
    assert request["fingerprint"] == "fp"
    assert request["containerConfig"] == {
        "env": ["A=1"],
        "layers": [
            {
                "location": "data:",
                "gzipDigest": layer.gzip_digest,
                "gzipSize": len(layer.gzip_bytes),
                "tarDigest": layer.tar_digest,
            }
        ],
    }
    assert "timestamp" not in request  # null fields are omitted


def test_v2_record_and_status(client: Client, post: Post, anonymous_image: PushedImage) -> None:
    created = post({"containerImage": anonymous_image.reference}, v2=True).json()
    token = created["containerToken"]
    record = client.get(f"/v1alpha2/container/{token}").json()
    assert record["requestId"] == token
    assert record["targetImage"] == created["targetImage"]
    assert record["freeze"] is False
    assert record["sourceDigest"] == anonymous_image.digest
    status = client.get(f"/v1alpha2/container/{token}/status").json()
    assert status == {
        "id": token,
        "status": "DONE",
        "succeeded": True,
        "creationTime": record["creationTime"],
        "duration": "0.000000000",  # nothing to wait for: done when created
    }


def test_status_is_pending_while_a_layer_downloads_and_names_a_failure(
    client: Client, post: Post, anonymous_image: PushedImage
) -> None:
    layer = make_layer({"a.txt": b"a"}).as_request(location="http://127.0.0.1:9/a.tar.gz")
    token = post({"containerImage": anonymous_image.reference, "containerConfig": {"layers": [layer]}}).json()[
        "containerToken"
    ]
    request = ContainerRequest.objects.get(token=token)
    pending = client.get(f"/v1alpha2/container/{token}/status").json()
    assert pending["status"] == "PENDING"
    assert "succeeded" not in pending
    assert float(pending["duration"]) >= 0  # elapsed so far
    assert re.fullmatch(r"\d+\.\d{9}", pending["duration"])
    InjectedLayer.objects.filter(request__token=token).update(
        state="failed", failure_reason="HTTP 404", finished_at=request.created_at + dt.timedelta(seconds=2.5)
    )
    status = client.get(f"/v1alpha2/container/{token}/status").json()
    assert status["status"] == "DONE"
    assert status["succeeded"] is False
    assert status["reason"] == f"Layer 0 ({layer['gzipDigest']}) failed: HTTP 404"
    assert status["duration"] == "2.500000000"


@pytest.mark.parametrize("path", ["/container-token/{t}", "/v1alpha2/container/{t}", "/v1alpha2/container/{t}/status"])
def test_unknown_expired_and_revoked_tokens_are_404(
    client: Client, post: Post, anonymous_image: PushedImage, path: str
) -> None:
    assert client.get(path.format(t="0123456789ab")).json() == {"message": "Unknown container token '0123456789ab'"}
    assert client.get(path.format(t="not-a-token")).status_code == 404
    expired = post({"containerImage": anonymous_image.reference}).json()["containerToken"]
    ContainerRequest.objects.filter(token=expired).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert client.get(path.format(t=expired)).status_code == 404
    revoked = post({"containerImage": anonymous_image.reference}).json()["containerToken"]
    ContainerRequest.objects.filter(token=revoked).update(revoked_at=timezone.now())
    assert client.get(path.format(t=revoked)).status_code == 404


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def test_delete_requires_an_operator(client: Client, post: Post, anonymous_image: PushedImage) -> None:
    token = post({"containerImage": anonymous_image.reference}).json()["containerToken"]
    get_user_model().objects.create_user("user", password="user-pass")
    get_user_model().objects.create_user("ops", password="ops-pass", is_staff=True)

    anonymous = client.delete(f"/container-token/{token}")
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"].startswith("Basic")
    assert anonymous.json() == {"message": "Authentication credentials were not provided."}
    not_staff = client.delete(f"/container-token/{token}", HTTP_AUTHORIZATION=basic("user", "user-pass"))
    assert not_staff.status_code == 403
    wrong = client.delete(f"/container-token/{token}", HTTP_AUTHORIZATION=basic("ops", "nope"))
    assert wrong.status_code == 401
    for user, password in (("ops\x00", "ops-pass"), ("ops", "ops-pass\x00")):  # PostgreSQL text cannot hold NUL
        nul = client.delete(f"/container-token/{token}", HTTP_AUTHORIZATION=basic(user, password))
        assert nul.status_code == 401
        assert nul.json() == {"message": "Invalid username/password."}
    assert ContainerRequest.objects.get(token=token).revoked_at is None

    revoked = client.delete(f"/container-token/{token}", HTTP_AUTHORIZATION=basic("ops", "ops-pass"))
    assert revoked.status_code == 200
    assert ContainerRequest.objects.get(token=token).revoked_at is not None
    assert client.get(f"/container-token/{token}").status_code == 404
    again = client.delete(f"/container-token/{token}", HTTP_AUTHORIZATION=basic("ops", "ops-pass"))
    assert again.status_code == 404


def test_delete_with_an_operator_session(client: Client, post: Post, anonymous_image: PushedImage) -> None:
    token = post({"containerImage": anonymous_image.reference}).json()["containerToken"]
    get_user_model().objects.create_user("ops", password="ops-pass", is_staff=True)
    client.login(username="ops", password="ops-pass")
    assert client.delete(f"/container-token/{token}").status_code == 200
    assert ContainerRequest.objects.get(token=token).revoked_at is not None


SECRET_LOCATION = "http://alice:s3cret@127.0.0.1:9/layer.tar.gz?X-Amz-Signature=abc123&part=1"
SHOWN_LOCATION = "http://REDACTED@127.0.0.1:9/layer.tar.gz?X-Amz-Signature=REDACTED&part=1"


def test_describe_and_record_show_layer_locations_without_secrets(
    client: Client, post: Post, anonymous_image: PushedImage
) -> None:
    layer = make_layer({"a.txt": b"a"})
    body = {
        "containerImage": anonymous_image.reference,
        "containerConfig": {"layers": [layer.as_request(SECRET_LOCATION)]},
    }
    created = post(body, v2=True)
    assert created.status_code == 200, created.content
    token = created.json()["containerToken"]
    assert InjectedLayer.objects.get().url == SECRET_LOCATION  # the worker needs it as given
    described = client.get(f"/container-token/{token}")
    record = client.get(f"/v1alpha2/container/{token}")
    expected = {
        "location": SHOWN_LOCATION,
        "gzipDigest": layer.gzip_digest,
        "gzipSize": len(layer.gzip_bytes),
        "tarDigest": layer.tar_digest,
    }
    assert described.json()["request"]["containerConfig"] == {"layers": [expected]}
    assert record.json()["containerConfig"] == {"layers": [expected]}
    for response in (created, described, record):
        assert b"s3cret" not in response.content
        assert b"abc123" not in response.content


def test_status_reason_shows_the_location_without_secrets(
    client: Client, post: Post, anonymous_image: PushedImage
) -> None:
    layer = make_layer({"a.txt": b"a"}).as_request(SECRET_LOCATION)
    token = post({"containerImage": anonymous_image.reference, "containerConfig": {"layers": [layer]}}).json()[
        "containerToken"
    ]
    InjectedLayer.objects.update(
        state="failed", failure_reason=f"Download of {SECRET_LOCATION} answered HTTP 403", finished_at=timezone.now()
    )
    status = client.get(f"/v1alpha2/container/{token}/status").json()
    assert status["reason"] == f"Layer 0 ({layer['gzipDigest']}) failed: Download of {SHOWN_LOCATION} answered HTTP 403"


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        (
            "http://127.0.0.1:9/l.tar.gz?q=1;X-Amz-Signature=SECRET",
            "http://127.0.0.1:9/l.tar.gz?q=1;X-Amz-Signature=REDACTED",
        ),
        (
            "http://127.0.0.1:9/l.tar.gz?X-Amz-Signature%3DSECRET",
            "http://127.0.0.1:9/l.tar.gz?X-Amz-Signature=REDACTED",
        ),
        ("http://127.0.0.1:9/l.tar.gz?q=X-Amz-Signature%3DSECRET", "http://127.0.0.1:9/l.tar.gz?REDACTED"),
    ],
)
def test_describe_record_and_status_hide_signatures_however_they_are_written(
    client: Client, post: Post, anonymous_image: PushedImage, location: str, shown: str
) -> None:
    layer = make_layer({"a.txt": b"a"}).as_request(location)
    created = post({"containerImage": anonymous_image.reference, "containerConfig": {"layers": [layer]}})
    assert created.status_code == 200, created.content
    token = created.json()["containerToken"]
    InjectedLayer.objects.update(
        state="failed", failure_reason=f"Download of {location} answered HTTP 403", finished_at=timezone.now()
    )
    described = client.get(f"/container-token/{token}")
    record = client.get(f"/v1alpha2/container/{token}")
    status = client.get(f"/v1alpha2/container/{token}/status")
    assert described.json()["request"]["containerConfig"]["layers"][0]["location"] == shown
    assert record.json()["containerConfig"]["layers"][0]["location"] == shown
    assert status.json()["reason"] == f"Layer 0 ({layer['gzipDigest']}) failed: Download of {shown} answered HTTP 403"
    for response in (created, described, record, status):
        assert b"SECRET" not in response.content
