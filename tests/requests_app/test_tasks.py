"""Celery tasks of container requests, their bodies called directly: the download task, the reaper, scratch sweeps."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.utils import timezone
from pytest_django.fixtures import Settings

from requests_app.downloads import Reaped, layer_download_enqueue, layer_download_reap
from requests_app.models import ContainerRequest, InjectedLayer, LayerDownload
from requests_app.tasks import layer_download_reap_task, layer_download_task
from tests.support.http_files import FileServer
from tests.support.layers import make_layer
from wave_site.blobstore import blob_key, blob_read, blob_scratch_file
from wave_site.celery import sweep_scratch_files

pytestmark = pytest.mark.django_db
Capture = Callable[..., object]


def make_download(state: str, *, url: str = "https://e.org/l.tgz", **fields: object) -> LayerDownload:
    layer = {"url": url, "gzip_size": 10, "gzip_digest": "sha256:" + "1" * 64, "tar_digest": "sha256:" + "2" * 64}
    return LayerDownload.objects.create(identity=LayerDownload.identity_of(**layer), state=state, **layer, **fields)


def join_layer(download: LayerDownload, token: str = "00000000000a") -> InjectedLayer:  # noqa: S107 - a container token
    request = ContainerRequest.objects.create(
        token=token, source_image="docker.io/library/busybox:latest", target_image="x",
        expires_at=timezone.now() + dt.timedelta(hours=1),
    )  # fmt: skip
    return InjectedLayer.objects.create(
        request=request, position=0, kind="http", url=download.url, gzip_digest=download.gzip_digest,
        gzip_size=download.gzip_size, tar_digest=download.tar_digest, download=download,
    )  # fmt: skip


def sent(callbacks: list[Callable[[], object]]) -> list[int]:
    sends = [callback for callback in callbacks if getattr(callback, "func", None) is layer_download_enqueue]
    return [callback.keywords["download_pk"] for callback in sends]  # type: ignore[attr-defined]


def ago(seconds: float) -> dt.datetime:
    return timezone.now() - dt.timedelta(seconds=seconds)


def test_download_task_runs_once_however_often_it_is_delivered(file_server: FileServer) -> None:
    layer = make_layer({"task.txt": b"task\n"})
    file_server.files["task.tar.gz"] = layer.gzip_bytes
    url = f"{file_server.url}/task.tar.gz"
    fetched = {"url": url, "gzip_size": len(layer.gzip_bytes), "gzip_digest": layer.gzip_digest,
               "tar_digest": layer.tar_digest}  # fmt: skip
    download = LayerDownload.objects.create(identity=LayerDownload.identity_of(**fetched), **fetched)
    joined = join_layer(download)

    assert layer_download_task(download.pk) == "ready"
    assert layer_download_task(download.pk) == "ready"
    download.refresh_from_db()
    joined.refresh_from_db()
    assert (download.state, download.attempts, joined.state) == ("ready", 1, "ready")
    assert blob_read(blob_key(layer.gzip_digest)) == layer.gzip_bytes
    assert file_server.hits == ["/task.tar.gz"]


def test_reaper_requeues_a_running_download_whose_heartbeat_went_stale(
    django_capture_on_commit_callbacks: Capture,
) -> None:
    silent = make_download("running", claimed_by="dead:1:aa", attempts=1, heartbeat_at=ago(61))
    alive = make_download("running", url="https://e.org/alive", claimed_by="live:2:bb", attempts=1, heartbeat_at=ago(5))
    layer = join_layer(silent)

    with django_capture_on_commit_callbacks() as callbacks:
        assert layer_download_reap() == Reaped(requeued=1, failed=0, resent=0)
    silent.refresh_from_db()
    alive.refresh_from_db()
    layer.refresh_from_db()
    assert (silent.state, silent.claimed_by, silent.heartbeat_at, silent.attempts) == ("queued", "", None, 1)
    assert (alive.state, alive.claimed_by) == ("running", "live:2:bb")
    assert layer.state == "pending"  # its download goes on
    assert sent(callbacks) == [silent.pk]

    with django_capture_on_commit_callbacks() as callbacks:
        assert layer_download_reap() == Reaped(requeued=0, failed=0, resent=0)  # nothing twice
    assert sent(callbacks) == []


def test_reaper_fails_a_download_out_of_attempts_with_a_reason_for_its_layers(
    settings: Settings, django_capture_on_commit_callbacks: Capture
) -> None:
    settings.WAVE_LAYER_DOWNLOAD_MAX_ATTEMPTS = 3
    download = make_download("running", claimed_by="dead:1:cc", attempts=3, heartbeat_at=ago(61))
    first, second = join_layer(download, "00000000000a"), join_layer(download, "00000000000b")

    with django_capture_on_commit_callbacks() as callbacks:
        assert layer_download_reap() == Reaped(requeued=0, failed=1, resent=0)
    reason = "Layer download did not finish: its worker stopped 3 times"
    download.refresh_from_db()
    assert (download.state, download.failure_reason) == ("failed", reason)
    for layer in (first, second):
        layer.refresh_from_db()
        assert (layer.state, layer.failure_reason, layer.finished_at) == ("failed", reason, download.finished_at)
    assert sent(callbacks) == []


def test_reaper_sends_again_a_queued_download_no_worker_took(django_capture_on_commit_callbacks: Capture) -> None:
    lost = make_download("queued", queued_at=ago(61))
    waiting = make_download("queued", url="https://e.org/recent", queued_at=ago(5))
    make_download("ready", url="https://e.org/ready", queued_at=ago(3600))
    make_download("failed", url="https://e.org/failed", queued_at=ago(3600))

    with django_capture_on_commit_callbacks() as callbacks:
        assert layer_download_reap() == Reaped(requeued=0, failed=0, resent=1)
    assert sent(callbacks) == [lost.pk]
    lost.refresh_from_db()
    assert (lost.state, lost.resends) == ("queued", 1)
    assert lost.sent_at is not None
    assert timezone.now() - lost.sent_at < dt.timedelta(seconds=5)  # its clock restarted
    assert lost.queued_at < timezone.now() - dt.timedelta(seconds=60)  # still queued since then
    assert LayerDownload.objects.get(pk=waiting.pk).sent_at is None

    with django_capture_on_commit_callbacks() as callbacks:
        assert layer_download_reap() == Reaped(requeued=0, failed=0, resent=0)
    assert sent(callbacks) == []


def test_a_backlog_of_queued_downloads_is_sent_again_with_a_doubling_wait(
    settings: Settings, django_capture_on_commit_callbacks: Capture
) -> None:
    """12 downloads waiting behind busy workers for 10 minutes, reaped every 30 s: each is sent again after
    1, 2 and 4 stale periods (3 duplicates each), not once per stale period (9 each, 108 in all)."""
    settings.WAVE_LAYER_DOWNLOAD_STALE_AFTER = 60
    start = timezone.now()
    backlog = [make_download("queued", url=f"https://e.org/{n}", queued_at=start) for n in range(12)]
    resent_at: dict[int, list[int]] = {download.pk: [] for download in backlog}
    for tick in range(1, 21):
        with django_capture_on_commit_callbacks() as callbacks:
            layer_download_reap(now=start + dt.timedelta(seconds=30 * tick + 1))
        for pk in sent(callbacks):
            resent_at[pk].append(30 * tick)
    assert resent_at == {download.pk: [60, 180, 420] for download in backlog}

    # The wait stops doubling at 16 stale periods; a download queued again starts over at one.
    LayerDownload.objects.all().delete()
    capped = make_download("queued", url="https://e.org/capped", queued_at=start, resends=9, sent_at=start)
    with django_capture_on_commit_callbacks() as callbacks:
        layer_download_reap(now=start + dt.timedelta(seconds=16 * 60 - 1))
        layer_download_reap(now=start + dt.timedelta(seconds=16 * 60 + 1))
    assert sent(callbacks) == [capped.pk]
    running = make_download("running", url="https://e.org/dead", claimed_by="dead:1:dd", attempts=1,
                            heartbeat_at=start, resends=3, sent_at=start)  # fmt: skip
    layer_download_reap(now=start + dt.timedelta(seconds=61))
    running.refresh_from_db()
    assert (running.state, running.resends, running.sent_at) == ("queued", 0, None)


def scratch(age: float) -> Path:
    """A scratch file left behind, last written `age` seconds ago."""
    with blob_scratch_file() as name:
        kept = Path(name).with_name(Path(name).name + "-left")
        os.link(name, kept)
    os.utime(kept, (time.time() - age, time.time() - age))
    return kept


@pytest.mark.parametrize("sweep", ["reaper", "worker start"])
def test_scratch_files_of_dead_downloads_are_swept(sweep: str, settings: Settings) -> None:
    settings.WAVE_LAYER_DOWNLOAD_TIMEOUT = 60
    dead, live = scratch(age=61), scratch(age=30)
    if sweep == "reaper":
        assert layer_download_reap_task() == {"requeued": 0, "failed": 0, "resent": 0, "swept": 1}
    else:
        sweep_scratch_files()
    assert (dead.exists(), live.exists()) == (False, True)
    assert dead.parent == Path(settings.STORAGES["default"]["OPTIONS"]["location"]) / "scratch"
