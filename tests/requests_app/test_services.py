"""The container request services, called directly: a typed spec in, rows (and enqueued downloads) out."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import pytest
import redis
from django.utils import timezone
from pytest_django.fixtures import Settings

from builds.models import Build
from credentials.callers import Caller
from registry.platform import Platform, parse_platform
from registry.reference import parse_image
from requests_app.models import ContainerRequest, InjectedLayer, LayerDownload
from requests_app.oci.tokens import revoked_key
from requests_app.services import (
    container_request_create,
    container_request_purge,
    container_request_revoke,
)
from requests_app.specs import BuildSpec, ContainerConfigSpec, ContainerRequestSpec, RequestedLayer, TowerSpec
from tests.conftest import PushedImage
from tests.support.layers import make_layer
from tests.support.servers import PrivateRedis, start_private_redis
from wave_site.cache import shared_cache
from wave_site.errors import InvalidRequest, UnknownResource, outage_of

pytestmark = pytest.mark.django_db

CALLER = Caller(ip="192.0.2.20")
Capture = Callable[..., object]


def spec_for(
    name: str, *, config: ContainerConfigSpec | None = None, platform: Platform | None = None, **changes: object
) -> ContainerRequestSpec:
    spec = ContainerRequestSpec(
        api_version=ContainerRequest.ApiVersion.V1,
        image=parse_image(name),
        image_name=name,
        platform=platform or parse_platform(None),
        is_platform_named=platform is not None,
        config=config or ContainerConfigSpec(),
        tower=TowerSpec(endpoint="https://api.cloud.seqera.io"),
    )
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


def remote_layer(name: str) -> RequestedLayer:
    layer = make_layer({name: name.encode()})
    return RequestedLayer(
        location=f"http://127.0.0.1:9/{name}.tar.gz",
        gzip_digest=layer.gzip_digest,
        gzip_size=len(layer.gzip_bytes),
        tar_digest=layer.tar_digest,
    )


def inline_layer(name: str) -> RequestedLayer:
    layer = make_layer({name: name.encode()})
    return RequestedLayer(
        location=layer.data_location,
        gzip_digest=layer.gzip_digest,
        gzip_size=len(layer.gzip_bytes),
        tar_digest=layer.tar_digest,
    )


def test_create_stores_the_spec_and_enqueues_one_download_per_remote_layer(
    anonymous_image: PushedImage, django_capture_on_commit_callbacks: Capture
) -> None:
    remote, inline = remote_layer("remote"), inline_layer("inline")
    config = ContainerConfigSpec(cmd=("echo", "hi"), env=("A=1",), working_dir="/work", layers=(inline, remote))
    spec = spec_for(
        anonymous_image.reference,
        config=config,
        platform=parse_platform("x86_64"),
        fingerprint="fp",
        timestamp="2026-11-27T10:00:00Z",
        tower=TowerSpec(endpoint="https://tower.example.org", workspace_id=7),
    )
    with django_capture_on_commit_callbacks() as callbacks:
        accepted = container_request_create(spec=spec, caller=CALLER)

    request = accepted.request
    assert request is not None
    assert accepted.source == parse_image(anonymous_image.reference)
    assert accepted.succeeded is True
    assert accepted.is_frozen is False
    stored = ContainerRequest.objects.get(pk=request.pk)
    assert (stored.api_version, stored.source_image, stored.platform) == (
        "v1",
        f"{anonymous_image.registry.host}/library/busybox:latest",
        "linux/amd64",
    )
    assert stored.container_config == {"cmd": ["echo", "hi"], "env": ["A=1"], "workingDir": "/work"}
    assert (stored.fingerprint, stored.client_timestamp, stored.client_ip) == (
        "fp",
        "2026-11-27T10:00:00Z",
        "192.0.2.20",
    )
    assert (stored.tower_endpoint, stored.tower_workspace_id) == ("https://tower.example.org", 7)
    assert stored.source_digest == anonymous_image.digest
    assert list(stored.layers.values_list("position", "kind", "state")) == [
        (0, "data", "ready"),
        (1, "http", "pending"),
    ]
    download = LayerDownload.objects.get()
    assert (download.url, download.gzip_digest, download.state) == (remote.location, remote.gzip_digest, "queued")
    assert stored.layers.get(position=1).download_id == download.pk
    # Enqueued only once the transaction committed: one download, for the remote layer only.
    assert len(callbacks) == 1


def test_a_second_request_for_the_same_layer_joins_its_download(
    anonymous_image: PushedImage, django_capture_on_commit_callbacks: Capture
) -> None:
    config = ContainerConfigSpec(layers=(remote_layer("shared"),))
    container_request_create(spec=spec_for(anonymous_image.reference, config=config), caller=CALLER)
    with django_capture_on_commit_callbacks() as callbacks:
        second = container_request_create(spec=spec_for(anonymous_image.reference, config=config), caller=CALLER)
    assert second.request is not None
    download = LayerDownload.objects.get()
    assert InjectedLayer.objects.filter(download=download).count() == 2
    assert second.request.layers.get().state == "pending"
    assert callbacks == []  # the first request's download is still queued: nothing more to send


def test_dry_run_checks_upstream_and_stores_nothing(
    anonymous_image: PushedImage, django_capture_on_commit_callbacks: Capture
) -> None:
    config = ContainerConfigSpec(layers=(remote_layer("dry"),))
    spec = spec_for(anonymous_image.reference, config=config, dry_run=True, api_version="v2")
    with django_capture_on_commit_callbacks() as callbacks:
        accepted = container_request_create(spec=spec, caller=CALLER)
    assert accepted.request is None
    assert accepted.succeeded is None
    assert str(accepted.source) == f"{anonymous_image.registry.host}/library/busybox:latest"
    assert (ContainerRequest.objects.count(), InjectedLayer.objects.count(), callbacks) == (0, 0, [])
    assert not LayerDownload.objects.exists()


def test_dry_run_of_a_missing_image_is_refused(anonymous_image: PushedImage) -> None:
    missing = f"{anonymous_image.registry.host}/library/nothing-here:1"
    with pytest.raises(InvalidRequest) as error:
        container_request_create(spec=spec_for(missing, dry_run=True), caller=CALLER)
    assert error.value.message == f"Container image '{missing}' does not exist or access is not authorized"


def test_a_frozen_recipe_build_is_the_recipe_build_pushed_by_its_name(
    anonymous_image: PushedImage, settings: Settings, django_capture_on_commit_callbacks: Capture
) -> None:
    """Freeze of a Conda recipe: the generated Containerfile (no config to apply), the recipe kept with the build,
    the target named as any Conda build's; the answer names that image, no token, no request row."""
    settings.WAVE_CONDA_MAMBA_IMAGE = anonymous_image.reference  # a stand-in: only checked here, never pulled
    repository = f"{anonymous_image.registry.host}/frozen/conda"
    settings.WAVE_BUILD_REPO = repository  # the service's own repository: pushed with its login
    build = BuildSpec(conda_file="dependencies: [samtools=1.17]", build_repository=repository, freeze=True)
    spec = spec_for("docker.io/library/busybox:1", image=None, build=build)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        accepted = container_request_create(spec=spec, caller=CALLER)
    row = Build.objects.get()
    assert accepted.is_frozen
    assert accepted.request is not None
    assert accepted.request.token == ""
    assert accepted.request.target_image == row.target_image == f"{repository}:samtools-1.17--{row.container_id}"
    assert row.conda_file == "dependencies: [samtools=1.17]"
    assert f"FROM {anonymous_image.reference}" in row.container_file
    assert "micromamba install" in row.container_file
    assert (ContainerRequest.objects.count(), len(callbacks)) == (0, 1)  # its task, once committed


def test_a_refused_layer_host_stores_nothing(
    anonymous_image: PushedImage, settings: Settings, django_capture_on_commit_callbacks: Capture
) -> None:
    settings.WAVE_SSRF_ALLOW = [anonymous_image.registry.host.split(":")[0]]
    refused = dataclasses.replace(remote_layer("meta"), location="http://169.254.169.254/latest")
    config = ContainerConfigSpec(layers=(inline_layer("ok"), refused))
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(InvalidRequest) as error:
        container_request_create(spec=spec_for(anonymous_image.reference, config=config), caller=CALLER)
    assert error.value.message.startswith("Destination '169.254.169.254' is not allowed")
    assert (ContainerRequest.objects.count(), InjectedLayer.objects.count(), callbacks) == (0, 0, [])
    assert not LayerDownload.objects.exists()


def test_a_platform_the_image_lacks_stores_nothing(
    anonymous_image: PushedImage, django_capture_on_commit_callbacks: Capture
) -> None:
    spec = spec_for(anonymous_image.reference, platform=parse_platform("linux/arm64"))
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(InvalidRequest) as error:
        container_request_create(spec=spec, caller=CALLER)
    assert error.value.message == (
        f"Container image '{anonymous_image.reference}' is not available for platform 'linux/arm64'"
        " - available platforms: linux/amd64"
    )
    assert (ContainerRequest.objects.count(), callbacks) == (0, [])


def make_request(token: str, *, expires_at: dt.datetime, revoked_at: dt.datetime | None = None) -> ContainerRequest:
    return ContainerRequest.objects.create(
        token=token,
        source_image="docker.io/library/busybox:latest",
        target_image=f"localhost:9090/wt/{token}/library/busybox:latest",
        expires_at=expires_at,
        revoked_at=revoked_at,
    )


def test_revoke_marks_the_request_and_the_cache() -> None:
    request = make_request("00000000000a", expires_at=timezone.now() + dt.timedelta(hours=1))
    revoked = container_request_revoke(token=request.token)
    assert revoked.pk == request.pk
    assert revoked.revoked_at is not None
    assert ContainerRequest.objects.get(pk=request.pk).revoked_at == revoked.revoked_at
    assert shared_cache().get(revoked_key(request.token)) is not None


@pytest.mark.parametrize("state", ["unknown", "expired", "revoked"])
def test_revoke_of_an_inactive_token_is_not_found_and_changes_nothing(state: str) -> None:
    now = timezone.now()
    if state == "expired":
        make_request("00000000000b", expires_at=now - dt.timedelta(seconds=1))
    elif state == "revoked":
        make_request("00000000000b", expires_at=now + dt.timedelta(hours=1), revoked_at=now - dt.timedelta(hours=1))
    before = list(ContainerRequest.objects.values("token", "revoked_at"))
    with pytest.raises(UnknownResource) as error:
        container_request_revoke(token="00000000000b")
    assert error.value.message == "Unknown container token '00000000000b'"
    assert list(ContainerRequest.objects.values("token", "revoked_at")) == before
    assert shared_cache().get(revoked_key("00000000000b")) is None  # no mark written either


@pytest.mark.parametrize("refusal", ["oom", "read-only"])
def test_revoke_when_redis_refuses_writes_changes_nothing_and_a_retry_completes_it(
    refusal: str, settings: Settings
) -> None:
    request = make_request("00000000000e", expires_at=timezone.now() + dt.timedelta(hours=1))
    with start_private_redis() as server:
        settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": server.url}}
        refuse_writes(server, refusal)
        with pytest.raises(redis.ResponseError) as refused:  # OutOfMemoryError, ReadOnlyError
            container_request_revoke(token=request.token)
        assert outage_of(refused.value) == "redis"  # a 503 with Retry-After (tests/wave_site/test_errors.py)
        assert ContainerRequest.objects.get(pk=request.pk).revoked_at is None
        assert shared_cache().get(revoked_key(request.token)) is None

        accept_writes(server, refusal)
        revoked = container_request_revoke(token=request.token)
        assert ContainerRequest.objects.get(pk=request.pk).revoked_at == revoked.revoked_at is not None
        assert shared_cache().get(revoked_key(request.token)) == 1


def refuse_writes(server: PrivateRedis, refusal: str) -> None:
    """Redis up but refusing writes: full (`noeviction`, maxmemory 1 byte) or a read-only replica."""
    admin = redis.Redis.from_url(server.url)
    if refusal == "oom":
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
    else:
        admin.replicaof("127.0.0.1", 9)  # a master that is not there: nothing is replicated, writes are refused


def accept_writes(server: PrivateRedis, refusal: str) -> None:
    admin = redis.Redis.from_url(server.url)
    if refusal == "oom":
        admin.config_set("maxmemory", 0)
    else:
        admin.replicaof("no", "one")


def test_purge_deletes_only_requests_expired_before_the_retention(settings: Settings) -> None:
    settings.WAVE_REQUEST_RETENTION_DAYS = 2
    now = timezone.now()
    make_request("00000000000c", expires_at=now - dt.timedelta(days=3))
    make_request("00000000000d", expires_at=now - dt.timedelta(days=1))
    make_request("00000000000e", expires_at=now + dt.timedelta(days=1))
    assert container_request_purge() == 1
    assert sorted(ContainerRequest.objects.values_list("token", flat=True)) == ["00000000000d", "00000000000e"]
    assert container_request_purge(older_than=dt.timedelta(0)) == 1
    assert sorted(ContainerRequest.objects.values_list("token", flat=True)) == ["00000000000e"]
    assert container_request_purge(older_than=dt.timedelta(0)) == 0
