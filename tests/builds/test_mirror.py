"""Mirror (v2 `mirror: true`): an image copied registry to registry into the caller's repository, without a build.

Real registries: the two-platform index in the anonymous fixture, copied into the Basic-auth fixture with the
credentials of a Tower caller (the stand-in); the copy pulled directly with skopeo. The task body runs here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import Client
from django.utils import timezone

from builds.mirrors.services import MirrorRequest, mirror_create_or_join
from builds.models import Build
from builds.services import build_claim, build_reap
from builds.tasks import build_run_task
from credentials.callers import Caller
from requests_app.models import ContainerRequest
from tests.builds.test_build_pulls import build_worker, share_blob_store
from tests.conftest import PushedImage
from tests.support.asgi_server import AsgiServer
from tests.support.images import run, skopeo_copy, skopeo_inspect
from tests.support.network import wait_until
from tests.support.tower import TowerStandIn, TowerUser
from tests.support.worker import Worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def tower_caller(tower: TowerStandIn, registry_image: PushedImage | None, user_id: int = 61) -> tuple[TowerUser, str]:
    user = tower.add_user(user_id, f"user{user_id}", f"user{user_id}@example.org")
    if registry_image is not None:
        registry = registry_image.registry
        tower.add_credentials(user, name="mirror", registry=registry.host, user_name=registry.username or "",
                              password=registry.password or "")  # fmt: skip
    access, _ = tower.issue_tokens(user)
    return user, access


def mirror(image: str, repository: str, tower: TowerStandIn, access: str | None, **extra: Any) -> Any:
    body: dict[str, Any] = {"containerImage": image, "mirror": True, "buildRepository": repository, **extra}
    if access is not None:
        body |= {"towerAccessToken": access, "towerEndpoint": tower.url}
    return Client().post("/v1alpha2/container", body, content_type="application/json", REMOTE_ADDR="192.0.2.5")


def test_a_two_platform_index_is_mirrored_with_the_same_digests_and_pulls_directly(
    multiplatform_image: PushedImage, basic_image: PushedImage, tower: TowerStandIn, tmp_path: Path
) -> None:
    _, access = tower_caller(tower, basic_image)
    repository = f"{basic_image.registry.host}/mirror"
    target = f"{repository}/library/busybox-multi:latest"
    creds = basic_image.registry.creds

    answer = mirror(multiplatform_image.reference, repository, tower, access)

    assert answer.status_code == 200, answer.content
    body = answer.json()
    mirror_id = body["buildId"]
    assert mirror_id.startswith("mr-")
    assert body.pop("detailsUri").endswith(f"/view/mirrors/{mirror_id}")
    assert body == {
        "buildId": mirror_id, "targetImage": target, "containerImage": multiplatform_image.reference,
        "mirror": True, "freeze": False, "cached": False,
    }  # fmt: skip
    assert not ContainerRequest.objects.exists()  # no token: nothing is served through the proxy
    row = Build.objects.get(build_id=mirror_id)
    assert (row.kind, row.state, row.source_image, row.target_image, row.platform) == (
        "mirror", "pending", multiplatform_image.reference, target, "",
    )  # fmt: skip

    assert build_run_task(row.pk) == "succeeded"
    assert build_run_task(row.pk) == "succeeded"  # a redelivered task does nothing

    # Same digests: the index and both children, read directly from the second registry.
    source_index = skopeo_inspect(multiplatform_image.reference, raw=True)
    assert skopeo_inspect(target, creds=creds, raw=True) == source_index
    assert skopeo_inspect(target, creds=creds)["Digest"] == multiplatform_image.digest
    for entry in source_index["manifests"]:
        arch = entry["platform"]["architecture"]
        child = skopeo_inspect(f"{repository}/library/busybox-multi@{entry['digest']}", creds=creds)
        assert (child["Digest"], child["Architecture"]) == (entry["digest"], arch)
        pulled = tmp_path / arch
        skopeo_copy(target, pulled, creds=creds, platform_arch=arch, transport="dir")
        assert (pulled / "manifest.json").read_bytes() == (
            skopeo_inspect_raw_bytes(f"{multiplatform_image.registry.host}/library/busybox-multi@{entry['digest']}")
        )

    record = Client().get(f"/v1alpha1/mirrors/{mirror_id}").json()
    expected = {
        "mirrorId": mirror_id, "sourceImage": multiplatform_image.reference, "targetImage": target,
        "digest": multiplatform_image.digest, "status": "COMPLETED", "state": "succeeded", "succeeded": True,
    }  # fmt: skip
    assert {key: record[key] for key in expected} == expected
    assert set(record) == {*expected, "creationTime", "startTime", "finishTime", "duration", "pageUri"}
    assert record["pageUri"].endswith(f"/view/mirrors/{mirror_id}")
    log = Client().get(f"/v1alpha1/mirrors/{mirror_id}/logs")
    assert log.status_code == 200
    assert log.content.decode().endswith(f"Tagged latest: {multiplatform_image.digest}\n")
    page = Client().get(f"/view/mirrors/{mirror_id}")
    assert page.status_code == 200
    html = page.content.decode()
    for text in (f"Mirror <code>{mirror_id}</code>", target, multiplatform_image.digest, "Source image",
                 f"Pushed manifest {multiplatform_image.digest}"):  # fmt: skip
        assert text in html
    assert "Containerfile" not in html
    assert Client().get(f"/view/builds/{mirror_id}").status_code == 404  # a mirror is not a build's page

    # Asked again: the copy is there with the same digest, nothing to do.
    again = mirror(multiplatform_image.reference, repository, tower, access)
    assert again.status_code == 200, again.content
    assert (again.json()["buildId"], again.json()["cached"], again.json()["succeeded"]) == (mirror_id, True, True)
    assert Build.objects.count() == 1


def skopeo_inspect_raw_bytes(reference: str) -> bytes:
    return run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{reference}"]).encode()


def test_one_named_platform_is_mirrored_alone(
    multiplatform_image: PushedImage, basic_image: PushedImage, tower: TowerStandIn
) -> None:
    _, access = tower_caller(tower, basic_image, user_id=62)
    repository = f"{basic_image.registry.host}/mirror-arm"
    arm = next(
        entry for entry in skopeo_inspect(multiplatform_image.reference, raw=True)["manifests"]
        if entry["platform"]["architecture"] == "arm64"
    )  # fmt: skip

    answer = mirror(multiplatform_image.reference, repository, tower, access, containerPlatform="linux/arm64")

    assert answer.status_code == 200, answer.content
    row = Build.objects.get(build_id=answer.json()["buildId"])
    assert row.platform == "linux/arm64"
    assert build_run_task(row.pk) == "succeeded"
    copied = skopeo_inspect(answer.json()["targetImage"], creds=basic_image.registry.creds)
    assert (copied["Digest"], copied["Architecture"]) == (arm["digest"], "arm64")
    assert Client().get(f"/v1alpha1/mirrors/{row.build_id}").json()["digest"] == arm["digest"]


def test_a_foreign_repository_needs_a_tower_caller_with_a_login_for_it(
    multiplatform_image: PushedImage, basic_image: PushedImage, tower: TowerStandIn
) -> None:
    repository = f"{basic_image.registry.host}/mirror-refused"
    _, without_login = tower_caller(tower, None, user_id=63)

    anonymous = mirror(multiplatform_image.reference, repository, tower, None)
    no_login = mirror(multiplatform_image.reference, repository, tower, without_login)

    assert anonymous.status_code == 400
    assert anonymous.json()["message"].startswith(f"Container build repository '{repository}' is not allowed")
    assert no_login.status_code == 400
    assert no_login.json() == {
        "message": f"Container build repository '{repository}': no credentials for registry "
        f"'{basic_image.registry.host}' in your Tower account - add them to mirror an image there"
    }
    assert not Build.objects.exists()
    assert not ContainerRequest.objects.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"buildRepository": None}, "Attribute `buildRepository` must be specified when using mirror mode"),
        ({"containerConfig": {"env": ["A=1"]}}, "Attribute `containerConfig` cannot be used when using mirror mode"),
        ({"containerPlatform": "linux/arm/v7"}, "is not available for platform 'linux/arm/v7'"),
    ],
)
def test_bad_mirror_requests_are_refused_and_store_nothing(
    multiplatform_image: PushedImage, basic_image: PushedImage, tower: TowerStandIn, extra: dict[str, Any],
    message: str,
) -> None:  # fmt: skip
    _, access = tower_caller(tower, basic_image, user_id=64)

    answer = mirror(multiplatform_image.reference, f"{basic_image.registry.host}/mirror-bad", tower, access, **extra)

    assert answer.status_code == 400, answer.content
    assert message in answer.json()["message"]
    assert not Build.objects.exists()


def test_a_repository_the_ssrf_rules_refuse_is_a_400(multiplatform_image: PushedImage, tower: TowerStandIn) -> None:
    _, access = tower_caller(tower, None, user_id=65)

    answer = mirror(multiplatform_image.reference, "169.254.169.254/mirror", tower, access)

    assert answer.status_code == 400
    assert answer.json()["message"].startswith("Container build repository refused: Destination '169.254.169.254'")
    assert not Build.objects.exists()


def test_a_mirror_is_a_durable_job_the_reaper_fails_when_its_worker_goes_silent(settings: Any) -> None:
    request = MirrorRequest(
        source_image="127.0.0.1:9/library/busybox:1", source_digest="sha256:" + "1" * 64,
        target_image="127.0.0.1:9/mirror/library/busybox:1", repository="127.0.0.1:9/mirror",
    )  # fmt: skip
    answer = mirror_create_or_join(request=request, caller=Caller(ip="192.0.2.5"), tower=None, target_digest=None,
                                   before_start=lambda: None)  # fmt: skip
    joined = mirror_create_or_join(request=request, caller=Caller(ip="192.0.2.6"), tower=None, target_digest=None,
                                   before_start=lambda: None)  # fmt: skip
    assert (answer.started, joined.started, joined.build_id) == (True, False, answer.build_id)
    assert answer.build is not None
    assert build_claim(build_pk=answer.build.pk) is not None

    reaped = build_reap(now=timezone.now() + dt.timedelta(seconds=settings.WAVE_BUILD_STALE_AFTER + 1))

    assert reaped.failed == 1
    row = Build.objects.get(build_id=answer.build_id)
    assert (row.kind, row.state, row.failure_reason) == ("mirror", "failed", "build worker lost")
    assert build_run_task(row.pk) == "failed"  # a late task does nothing


@pytest.fixture
def mirror_worker(proxy: AsgiServer, layer_worker: Worker, settings: Any) -> Iterator[Worker]:
    """A worker of the `builds` queue beside the live service, as `manage.py run` starts one."""
    # One service, one secret: the worker unseals the Tower lookups the web process cached.
    worker = build_worker(layer_worker.data_dir, settings.WAVE_BUILD_REPO, WAVE_SECRET_KEY=settings.SECRET_KEY)
    share_blob_store(settings, worker)
    yield worker
    worker.stop()


def test_a_worker_runs_the_mirror_sent_through_the_broker(
    multiplatform_image: PushedImage, basic_image: PushedImage, tower: TowerStandIn, proxy: AsgiServer,
    mirror_worker: Worker,
) -> None:  # fmt: skip
    _, access = tower_caller(tower, basic_image, user_id=66)
    repository = f"{basic_image.registry.host}/mirror-live"
    body = {"containerImage": multiplatform_image.reference, "mirror": True, "buildRepository": repository,
            "towerAccessToken": access, "towerEndpoint": tower.url}  # fmt: skip

    answer = httpx.post(f"{proxy.url}/v1alpha2/container", json=body, timeout=60)

    assert answer.status_code == 200, answer.text
    mirror_id = answer.json()["buildId"]
    record_url = f"{proxy.url}/v1alpha1/mirrors/{mirror_id}"
    wait_until(
        lambda: httpx.get(record_url, timeout=10).json()["status"] == "COMPLETED", timeout=120, what="the mirror"
    )
    record = httpx.get(record_url, timeout=10).json()
    assert (record["state"], record.get("digest")) == ("succeeded", multiplatform_image.digest), record
    target = answer.json()["targetImage"]
    assert skopeo_inspect(target, creds=basic_image.registry.creds)["Digest"] == multiplatform_image.digest
    assert f"Tagged latest: {multiplatform_image.digest}" in httpx.get(f"{record_url}/logs", timeout=10).text
