"""The build API: record, status and log of builds in each state, the log growing between reads, 404s."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from builds.logs import build_log_append
from builds.models import Build
from builds.naming import container_id
from builds.selectors import build_get, build_page_url

pytestmark = pytest.mark.django_db

CONTAINER_FILE = "FROM busybox\nRUN echo hello > /hello.txt\n"
REPOSITORY = "registry.example.org/wave/build"
CREATED = dt.datetime(2026, 11, 27, 10, 0, 0, 125000, tzinfo=dt.UTC)
STARTED = CREATED + dt.timedelta(seconds=2)
FINISHED = STARTED + dt.timedelta(seconds=42, milliseconds=318)
DIGEST = "sha256:" + "3" * 64


def make_build(
    state: str = "pending", *, container_file: str = CONTAINER_FILE, number: int = 1, **fields: Any
) -> Build:
    """A build row as the services leave it in `state` (started once running, finished once settled), named from
    its inputs as the services name it (so that a rebuild of it is its next build)."""
    cid = container_id(container_file=container_file, conda_file=None, platform="linux/amd64", repository=REPOSITORY)
    values: dict[str, Any] = {
        "build_id": f"bd-{cid}_{number}",
        "container_id": cid,
        "number": number,
        "target_image": f"{REPOSITORY}:{cid}",
        "repository": REPOSITORY,
        "platform": "linux/amd64",
        "container_file": container_file,
        "state": state,
        "created_at": CREATED,
        "queued_at": CREATED,
    }
    if state != "pending":
        values.update(started_at=STARTED, heartbeat_at=STARTED, attempts=1, claimed_by="host:1:abc")
    if state in Build.FINISHED:
        values.update(finished_at=FINISHED)
    if state == "succeeded":
        values.update(exit_status=0, digest=DIGEST)
    if state == "failed":
        values.update(exit_status=1, failure_reason="Build failed: RUN exited with status 1")
    if state == "cancelled":
        values.update(failure_reason="Build cancelled by an operator")
    values.update(fields)
    return Build.objects.create(**values)


CONTAINER_ID = container_id(
    container_file=CONTAINER_FILE, conda_file=None, platform="linux/amd64", repository=REPOSITORY
)


def record(client: Client, build_id: str) -> dict[str, Any]:
    response = client.get(f"/v1alpha1/builds/{build_id}")
    assert response.status_code == 200, response.content
    return response.json()


def status(client: Client, build_id: str) -> dict[str, Any]:
    response = client.get(f"/v1alpha1/builds/{build_id}/status")
    assert response.status_code == 200, response.content
    return response.json()


BUILD_ID = f"bd-{CONTAINER_ID}_1"
COMMON = {
    "buildId": BUILD_ID,
    "dockerFile": CONTAINER_FILE,
    "targetImage": f"{REPOSITORY}:{CONTAINER_ID}",
    "platform": "linux/amd64",
    "creationTime": "2026-11-27T10:00:00.125Z",
    "pageUri": f"http://wave.test/view/builds/{BUILD_ID}",
}


@pytest.fixture(autouse=True)
def _server_url(settings: Any) -> None:
    settings.WAVE_SERVER_URL = "http://wave.test"


def test_a_queued_build_is_pending_without_start_duration_or_result(client: Client) -> None:
    make_build("pending")
    assert record(client, BUILD_ID) == {**COMMON, "status": "PENDING", "state": "pending"}
    assert status(client, BUILD_ID) == {"id": BUILD_ID, "status": "PENDING"}


def test_a_running_build_is_pending_with_its_start_and_the_time_so_far(client: Client) -> None:
    started = timezone.now() - dt.timedelta(seconds=5)
    make_build("running", started_at=started)
    answer = record(client, BUILD_ID)
    duration = answer.pop("duration")
    assert answer == {**COMMON, "status": "PENDING", "state": "running", "startTime": instant(started)}
    assert re.fullmatch(r"[0-9]+\.[0-9]{9}", duration)
    assert 5.0 <= float(duration) < 60.0
    answer = status(client, BUILD_ID)
    assert 5.0 <= float(answer.pop("duration")) < 60.0
    assert answer == {"id": BUILD_ID, "status": "PENDING", "startTime": instant(started)}


def test_a_succeeded_build_is_completed_with_its_digest(client: Client) -> None:
    make_build("succeeded")
    assert record(client, BUILD_ID) == {
        **COMMON,
        "startTime": "2026-11-27T10:00:02.125Z",
        "duration": "42.318000000",
        "exitStatus": 0,
        "digest": DIGEST,
        "status": "COMPLETED",
        "succeeded": True,
        "state": "succeeded",
        "finishTime": "2026-11-27T10:00:44.443Z",
    }
    assert status(client, BUILD_ID) == {
        "id": BUILD_ID,
        "status": "COMPLETED",
        "startTime": "2026-11-27T10:00:02.125Z",
        "duration": "42.318000000",
        "succeeded": True,
    }


def test_a_failed_build_is_completed_with_its_reason_and_exit_status(client: Client) -> None:
    make_build("failed", conda_file="dependencies: [samtools]\n")
    assert record(client, BUILD_ID) == {
        **COMMON,
        "condaFile": "dependencies: [samtools]\n",
        "startTime": "2026-11-27T10:00:02.125Z",
        "duration": "42.318000000",
        "exitStatus": 1,
        "status": "COMPLETED",
        "succeeded": False,
        "state": "failed",
        "reason": "Build failed: RUN exited with status 1",
        "finishTime": "2026-11-27T10:00:44.443Z",
    }
    assert status(client, BUILD_ID) == {
        "id": BUILD_ID,
        "status": "COMPLETED",
        "startTime": "2026-11-27T10:00:02.125Z",
        "duration": "42.318000000",
        "succeeded": False,
    }


def test_a_build_cancelled_before_it_started_is_completed_and_not_succeeded(client: Client) -> None:
    make_build("cancelled", started_at=None, heartbeat_at=None, attempts=0, claimed_by="")
    assert record(client, BUILD_ID) == {
        **COMMON,
        "status": "COMPLETED",
        "succeeded": False,
        "state": "cancelled",
        "reason": "Build cancelled by an operator",
        "finishTime": "2026-11-27T10:00:44.443Z",
    }
    assert status(client, BUILD_ID) == {"id": BUILD_ID, "status": "COMPLETED", "succeeded": False}


def test_the_log_grows_between_two_reads(client: Client) -> None:
    build = make_build("running")
    empty = client.get(f"/v1alpha1/builds/{BUILD_ID}/logs")
    assert empty.status_code == 200
    assert empty["Content-Type"] == "text/plain; charset=utf-8"
    assert empty.content == b""

    build_log_append(build=build, text="STEP 1/2: FROM busybox\n")
    first = client.get(f"/v1alpha1/builds/{BUILD_ID}/logs")
    assert first.content.decode() == "STEP 1/2: FROM busybox\n"

    build_log_append(build=build, text="STEP 2/2: RUN echo héllo ✓\n")
    second = client.get(f"/v1alpha1/builds/{BUILD_ID}/logs")
    assert second.content.decode() == "STEP 1/2: FROM busybox\nSTEP 2/2: RUN echo héllo ✓\n"
    assert len({empty["ETag"], first["ETag"], second["ETag"]}) == 3  # each read names what it holds
    assert empty["ETag"] == f'"{BUILD_ID}-0"'
    assert second["Cache-Control"] == "no-cache"


def test_a_log_read_with_the_current_etag_is_not_modified_until_more_is_written(client: Client) -> None:
    build = make_build("running")
    build_log_append(build=build, text="one\n")
    etag = client.get(f"/v1alpha1/builds/{BUILD_ID}/logs")["ETag"]

    unchanged = client.get(f"/v1alpha1/builds/{BUILD_ID}/logs", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert unchanged["ETag"] == etag

    build_log_append(build=build, text="two\n")
    changed = client.get(f"/v1alpha1/builds/{BUILD_ID}/logs", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.content == b"one\ntwo\n"


def test_the_log_is_plain_text_never_html(client: Client) -> None:
    build = make_build("running")
    build_log_append(build=build, text="<script>alert(1)</script>\n")
    response = client.get(f"/v1alpha1/builds/{BUILD_ID}/logs", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response.content == b"<script>alert(1)</script>\n"


def test_a_client_accepting_only_text_gets_the_log(client: Client) -> None:
    build = make_build("succeeded")
    build_log_append(build=build, text="done\n")
    response = client.get(f"/v1alpha1/builds/{BUILD_ID}/logs", headers={"Accept": "text/plain"})
    assert response.status_code == 200
    assert response.content == b"done\n"


@pytest.mark.parametrize("suffix", ["", "/status", "/logs"])
def test_an_unknown_build_is_404_with_a_message(client: Client, suffix: str) -> None:
    make_build("succeeded")
    unknown = f"bd-{CONTAINER_ID}_2"
    response = client.get(f"/v1alpha1/builds/{unknown}{suffix}")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"message": f"Unknown build id '{unknown}'"}


@pytest.mark.parametrize("build_id", ["bd-7EFAA2ED59C58A16_1", "bd-7efaa2ed59c58a1_1", "7efaa2ed59c58a16_1",
                                      "bd-7efaa2ed59c58a16", "bd-7efaa2ed59c58a16_", "bd-7efaa2ed59c58a16_1 ",
                                      "bd-7efaa2ed59c58a16_1\x00", "x" * 5000])  # fmt: skip
@pytest.mark.parametrize("suffix", ["", "/status", "/logs"])
def test_a_malformed_build_id_is_404_without_a_query(
    client: Client, django_assert_num_queries: Any, build_id: str, suffix: str
) -> None:
    make_build("succeeded")
    with django_assert_num_queries(0):
        response = client.get(f"/v1alpha1/builds/{build_id}{suffix}")
    assert response.status_code == 404
    assert response.json() == {"message": f"Unknown build id '{build_id}'"}


def test_log_errors_are_json_even_for_clients_accepting_only_text(client: Client) -> None:
    response = client.get(f"/v1alpha1/builds/bd-{CONTAINER_ID}_9/logs", headers={"Accept": "text/plain"})
    assert response.status_code == 404
    assert response.json() == {"message": f"Unknown build id 'bd-{CONTAINER_ID}_9'"}


def test_build_get_finds_by_id_and_refuses_other_shapes() -> None:
    build = make_build("pending")
    assert build_get(build_id=BUILD_ID) == build
    assert build_get(build_id=f"bd-{CONTAINER_ID}_2") is None
    assert build_get(build_id=BUILD_ID + "\n") is None


def test_the_page_url_is_under_the_public_server_url() -> None:
    assert build_page_url(BUILD_ID) == f"http://wave.test/view/builds/{BUILD_ID}"


def instant(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
