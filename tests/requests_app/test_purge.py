from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from builds.models import Build
from credentials.models import CredentialLookup, TowerAuth
from credentials.sessions import tower_session_open
from requests_app.models import ContainerRequest, InjectedLayer, LayerDownload
from requests_app.purge import PurgeCounts, expired_purge
from requests_app.tasks import container_request_purge_task
from tests.support.service import REPO
from tests.support.worker import worker_environment

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


def old_download(url: str, *, state: str = "ready", days: int = 30) -> LayerDownload:
    fetched = {"url": url, "gzip_size": 1, "gzip_digest": "d", "tar_digest": "t"}
    finished = timezone.now() - dt.timedelta(days=days) if state in ("ready", "failed") else None
    return LayerDownload.objects.create(
        identity=LayerDownload.identity_of(**fetched), state=state, finished_at=finished, **fetched
    )


def layered_request(token: str, expires_at: dt.datetime, *, layers: int, download: LayerDownload | None = None):
    request = ContainerRequest.objects.create(
        token=token, source_image="docker.io/library/busybox:latest", target_image="x", expires_at=expires_at
    )
    for position in range(layers):
        InjectedLayer.objects.create(
            request=request, position=position, kind="http", url="https://e.org/l", gzip_digest="d", gzip_size=1,
            tar_digest="t", download=download,
        )  # fmt: skip
    return request


def orphan_layers() -> int:
    return InjectedLayer.objects.exclude(request_id__in=ContainerRequest.objects.values("pk")).count()


def test_batch_purge_leaves_no_orphan_layers_and_keeps_live_requests_whole() -> None:
    now = timezone.now()
    expired = [layered_request(f"e{n:011x}", now - dt.timedelta(days=9), layers=n % 3) for n in range(23)]
    live = [layered_request(f"l{n:011x}", now + dt.timedelta(hours=n), layers=2) for n in range(4)]
    young = layered_request("y00000000000", now - dt.timedelta(days=1), layers=1)  # expired, within retention
    live_layers = set(InjectedLayer.objects.filter(request__in=[*live, young]).values_list("pk", flat=True))
    batches: list[tuple[str, int]] = []

    counts = expired_purge(batch_size=5, on_batch=lambda kind, rows: batches.append((kind, rows)))

    assert (counts.requests, counts.layers) == (23, sum(n % 3 for n in range(23)))
    assert batches == [("requests", 5)] * 4 + [("requests", 3)]
    assert set(ContainerRequest.objects.values_list("pk", flat=True)) == {r.pk for r in [*live, young]}
    assert set(InjectedLayer.objects.values_list("pk", flat=True)) == live_layers
    assert orphan_layers() == 0
    assert not ContainerRequest.objects.filter(pk__in=[r.pk for r in expired]).exists()
    assert expired_purge(batch_size=5) == PurgeCounts()  # nothing left


def test_purge_takes_finished_downloads_no_remaining_request_uses() -> None:
    now = timezone.now()
    used_by_live = old_download("https://e.org/live")
    used_by_expired = old_download("https://e.org/expired")
    unused_failed = old_download("https://e.org/failed", state="failed")
    unused_recent = old_download("https://e.org/recent", days=1)
    unused_queued = old_download("https://e.org/queued", state="queued")
    layered_request("l00000000000", now + dt.timedelta(hours=1), layers=1, download=used_by_live)
    layered_request("e00000000000", now - dt.timedelta(days=9), layers=2, download=used_by_expired)

    assert expired_purge(batch_size=1, dry_run=True) == PurgeCounts(requests=1, layers=2, downloads=2)
    assert LayerDownload.objects.count() == 5  # the dry run deleted nothing
    counts = expired_purge(batch_size=1)

    assert (counts.requests, counts.layers, counts.downloads) == (1, 2, 2)
    assert set(LayerDownload.objects.values_list("pk", flat=True)) == {
        used_by_live.pk, unused_recent.pk, unused_queued.pk,
    }  # fmt: skip
    assert not LayerDownload.objects.filter(pk__in=[used_by_expired.pk, unused_failed.pk]).exists()


def test_requests_created_during_the_purge_survive_with_the_downloads_they_join() -> None:
    now = timezone.now()
    for n in range(6):
        layered_request(f"e{n:011x}", now - dt.timedelta(days=9), layers=1)
    joined = old_download("https://e.org/joined")  # unused when the purge starts: a candidate
    created: list[ContainerRequest] = []

    def between_batches(kind: str, rows: int) -> None:
        if not created:  # after the first batch of requests: a client asks for the same layer again
            created.append(layered_request("n00000000000", now + dt.timedelta(hours=1), layers=2, download=joined))

    counts = expired_purge(batch_size=2, on_batch=between_batches)

    assert (counts.requests, counts.layers, counts.downloads) == (6, 6, 0)
    assert list(ContainerRequest.objects.values_list("token", flat=True)) == ["n00000000000"]
    assert list(InjectedLayer.objects.values_list("request_id", "download_id")) == [(created[0].pk, joined.pk)] * 2
    assert LayerDownload.objects.get().pk == joined.pk


def make_build(container_id: str, number: int, *, target: str, state: str = "succeeded", days: int = 60) -> Build:
    finished = timezone.now() - dt.timedelta(days=days) if state in Build.FINISHED else None
    return Build.objects.create(
        build_id=f"bd-{container_id}_{number}", container_id=container_id, number=number, target_image=target,
        repository="r.example.org/wave/build", container_file="FROM busybox", state=state, finished_at=finished,
    )  # fmt: skip


def test_purge_takes_old_finished_builds_but_the_newest_of_each_container_id_and_target() -> None:
    old = [make_build("aaaa", n, target="r/b:aaaa", state="failed" if n == 1 else "succeeded") for n in (1, 2)]
    newest = make_build("aaaa", 3, target="r/b:aaaa")
    alone = make_build("bbbb", 1, target="r/b:bbbb")  # the only build of its target: kept however old
    recent = make_build("cccc", 1, target="r/b:cccc", days=2)
    make_build("cccc", 2, target="r/b:cccc", days=1)
    running = make_build("dddd", 1, target="r/b:dddd", state="running")
    make_build("dddd", 2, target="r/b:dddd", state="cancelled", days=1)
    # A newer build of the same inputs pushed elsewhere (a recipe's name strategy) does not make it deletable.
    renamed = make_build("eeee", 1, target="r/b:eeee")
    make_build("eeee", 2, target="r/tools:eeee")

    counts = expired_purge(batch_size=1)

    assert counts.builds == 2
    assert not Build.objects.filter(pk__in=[build.pk for build in old]).exists()
    assert Build.objects.filter(pk__in=[newest.pk, alone.pk, recent.pk, running.pk, renamed.pk]).count() == 5
    assert Build.objects.count() == 8


def test_purge_command_dry_run_prints_counts_and_deletes_nothing() -> None:
    now = timezone.now()
    for n in range(3):
        layered_request(f"e{n:011x}", now - dt.timedelta(days=9), layers=2)
    layered_request("l00000000000", now + dt.timedelta(hours=1), layers=1)
    old_download("https://e.org/unused")
    output = StringIO()

    call_command("purge", "--dry-run", "--batch-size", "2", stdout=output)

    assert output.getvalue().splitlines() == [
        "requests: 3 would delete", "layers: 6 would delete", "downloads: 1 would delete", "builds: 0 would delete",
    ]  # fmt: skip
    assert (ContainerRequest.objects.count(), InjectedLayer.objects.count(), LayerDownload.objects.count()) == (4, 7, 1)

    output = StringIO()
    call_command("purge", "--batch-size", "2", stdout=output)
    assert output.getvalue().splitlines()[:4] == [
        "requests: 3 deleted", "layers: 6 deleted", "downloads: 1 deleted", "builds: 0 deleted",
    ]  # fmt: skip
    assert (ContainerRequest.objects.count(), InjectedLayer.objects.count(), LayerDownload.objects.count()) == (1, 1, 0)


def test_purge_command_refuses_a_batch_size_below_one() -> None:
    layered_request("e00000000000", timezone.now() - dt.timedelta(days=9), layers=1)
    with pytest.raises(CommandError, match="--batch-size must be at least 1"):
        call_command("purge", "--batch-size", "0")
    assert ContainerRequest.objects.count() == 1


SQLITE_ROWS = """
import datetime as dt
from django.utils import timezone
from requests_app.models import ContainerRequest, InjectedLayer, LayerDownload
now = timezone.now()
download = LayerDownload.objects.create(identity="i", url="u", gzip_digest="d", gzip_size=1, tar_digest="t",
                                        state="ready", finished_at=now - dt.timedelta(days=30))
for n in range(7):
    live = n < 2
    expires_at = now + dt.timedelta(hours=1) if live else now - dt.timedelta(days=9)
    request = ContainerRequest.objects.create(token=f"{n:012x}", source_image="s", target_image="t",
                                              expires_at=expires_at)
    for position in range(2):
        InjectedLayer.objects.create(request=request, position=position, kind="http", gzip_digest="d", gzip_size=1,
                                     tar_digest="t", download=None if live else download)
"""


@pytest.mark.slow
def test_purge_command_on_embedded_sqlite(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    environment = worker_environment(database_url=None, redis_url=None, data_dir=data_dir, ssrf_allow="127.0.0.1")

    def manage(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=REPO, env=environment, capture_output=True, text=True,
            timeout=180, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def rows() -> tuple[object, ...]:
        with sqlite3.connect(data_dir / "wave.sqlite3") as database:
            return database.execute(
                "SELECT (SELECT COUNT(*) FROM requests_app_containerrequest),"
                " (SELECT COUNT(*) FROM requests_app_injectedlayer), (SELECT COUNT(*) FROM requests_app_layerdownload)"
            ).fetchone()

    manage("migrate", "--no-input", "-v", "0")
    manage("shell", "-c", SQLITE_ROWS)
    assert manage("purge", "--dry-run").splitlines()[:3] == [
        "requests: 5 would delete", "layers: 10 would delete", "downloads: 1 would delete",
    ]  # fmt: skip
    assert rows() == (7, 14, 1)
    assert manage("purge", "--batch-size", "2").splitlines()[:3] == [
        "requests: 5 deleted", "layers: 10 deleted", "downloads: 1 deleted",
    ]  # fmt: skip
    assert rows() == (2, 4, 0)
    with sqlite3.connect(data_dir / "wave.sqlite3") as database:
        assert database.execute(
            "SELECT COUNT(*) FROM requests_app_injectedlayer WHERE request_id NOT IN"
            " (SELECT id FROM requests_app_containerrequest)"
        ).fetchone() == (0,)
