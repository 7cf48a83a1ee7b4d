from __future__ import annotations

import datetime as dt
import hashlib
import os
import threading
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from pytest_django.fixtures import Settings

from builds.logs import log_chunk_key
from builds.models import Build
from requests_app.models import ContainerRequest, GeneratedDocument, InjectedLayer, LayerDownload
from tests.support.s3 import S3Bucket
from wave_site import blob_gc as blob_gc_module
from wave_site.blob_gc import GcCounts, StoredBlob, blob_gc
from wave_site.blobstore import (
    SCRATCH_PREFIX,
    blob_exists,
    blob_key,
    blob_read,
    blob_store_put,
    blob_store_write,
)
from wave_site.cache import shared_cache
from wave_site.tasks import blob_gc_task

pytestmark = pytest.mark.django_db
HOUR = 3600


def digest_of(content: bytes) -> str:
    return f"sha256:{hashlib.sha256(content).hexdigest()}"


def stored(content: bytes) -> str:
    """`content` in the blob store by digest, as a writer long gone left it (no reuse mark): its digest."""
    digest = digest_of(content)
    blob_store_write(blob_key(digest), content)
    return digest


def aged(key: str, seconds: float) -> None:
    """Make a filesystem blob look last written `seconds` ago."""
    when = time.time() - seconds
    os.utime(default_storage.path(key), (when, when))


def make_request(token: str, *, layers: tuple[str, ...] = (), documents: tuple[str, ...] = ()) -> ContainerRequest:
    request = ContainerRequest.objects.create(
        token=token, source_image="docker.io/library/busybox:latest", target_image=f"localhost/wt/{token}/busybox",
        expires_at=timezone.now() + dt.timedelta(hours=1), generated_digests=list(documents),
    )  # fmt: skip
    for position, digest in enumerate(layers):
        InjectedLayer.objects.create(
            request=request, position=position, kind="data", gzip_digest=digest, gzip_size=1, tar_digest="sha256:t",
            state=InjectedLayer.State.READY, blob_key=blob_key(digest),
        )  # fmt: skip
    return request


def make_download(digest: str, state: str) -> LayerDownload:
    identity = LayerDownload.identity_of(url=f"https://e.org/{digest}", gzip_size=1, gzip_digest=digest, tar_digest="t")
    return LayerDownload.objects.create(
        identity=identity, url=f"https://e.org/{digest}", gzip_digest=digest, gzip_size=1, tar_digest="t", state=state
    )


def make_build(build_id: str, *, context_digest: str = "") -> Build:
    return Build.objects.create(
        build_id=build_id, container_id=build_id[3:11], number=1, target_image=f"localhost/wave/build:{build_id}",
        repository="localhost/wave/build", container_file="FROM busybox", context_digest=context_digest,
        state=Build.State.SUCCEEDED,
    )  # fmt: skip


class Store:
    """A blob store holding one blob of each kind, referenced or not (`kept` and `doomed`: their keys)."""

    def __init__(self) -> None:
        layer, owned_document, ready_download = stored(b"layer"), stored(b"owned doc"), stored(b"ready download")
        context, orphan_document = stored(b"context"), stored(b"orphan doc")
        orphan_layer, failed_download = stored(b"orphan layer"), stored(b"failed download")
        make_request("00000000000a", layers=(layer,), documents=(owned_document,))
        for digest in (owned_document, orphan_document):
            GeneratedDocument.objects.create(
                digest=digest, media_type="application/vnd.oci.image.config.v1+json", size=1
            )
        make_download(ready_download, LayerDownload.State.READY)
        make_download(failed_download, LayerDownload.State.FAILED)
        make_build("bd-0123456789abcdef_1", context_digest=context)
        live_log, dead_log = log_chunk_key("bd-0123456789abcdef_1", 0), log_chunk_key("bd-fedcba9876543210_1", 0)
        partial = f"{blob_key(orphan_layer)}.partial-0123abcd"
        for key in (live_log, dead_log, partial, "other/unknown"):
            blob_store_write(key, b"log")
        self.orphan_layer = orphan_layer
        self.orphan_document = orphan_document
        self.kept = sorted(
            [*(blob_key(d) for d in (layer, owned_document, ready_download, context)), live_log, "other/unknown"]
        )
        self.doomed = sorted(
            [*(blob_key(d) for d in (orphan_document, orphan_layer, failed_download)), dead_log, partial]
        )
        self.young = blob_key(stored(b"young orphan"))

    def age_on_filesystem(self) -> None:
        for key in [*self.kept, *self.doomed]:
            aged(key, 2 * HOUR)
        aged(self.young, HOUR / 2)


def existing(keys: list[str]) -> list[str]:
    return sorted(key for key in keys if default_storage.exists(key))


def test_gc_deletes_exactly_the_unreferenced_old_blobs_on_the_filesystem() -> None:
    store = Store()
    store.age_on_filesystem()
    deleted: list[StoredBlob] = []

    counts = blob_gc(grace=HOUR, batch_size=3, on_blob=deleted.append)

    assert sorted(blob.key for blob in deleted) == store.doomed
    assert counts == GcCounts(blobs=5, bytes=sum(blob.size for blob in deleted), scratch_files=0)
    assert existing(store.doomed) == []
    assert existing([*store.kept, store.young]) == sorted([*store.kept, store.young])
    # The orphan document's row went with its blob; the owned one stays.
    assert not GeneratedDocument.objects.filter(digest=store.orphan_document).exists()
    assert GeneratedDocument.objects.count() == 1


def test_gc_deletes_exactly_the_unreferenced_old_blobs_on_s3(s3_blob_store: S3Bucket) -> None:
    store = Store()  # its young orphan is old too below: moto dates each write with the real time
    time.sleep(2.5)
    young = blob_key(stored(b"another young orphan"))

    counts = blob_gc(grace=1.5, batch_size=2)

    assert s3_blob_store.keys() == sorted(f"{s3_blob_store.prefix}/{key}" for key in [*store.kept, young])
    doomed = (b"orphan doc", b"orphan layer", b"failed download", b"log", b"log", b"young orphan")
    assert counts == GcCounts(blobs=6, bytes=sum(len(content) for content in doomed), scratch_files=0)
    assert not GeneratedDocument.objects.filter(digest=store.orphan_document).exists()


def test_dry_run_lists_what_would_go_and_deletes_nothing(settings: Settings) -> None:
    store = Store()
    store.age_on_filesystem()
    listed: list[StoredBlob] = []

    counts = blob_gc(grace=HOUR, dry_run=True, on_blob=listed.append)

    assert sorted(blob.key for blob in listed) == store.doomed
    assert counts.blobs == 5
    assert existing([*store.kept, *store.doomed]) == sorted([*store.kept, *store.doomed])
    assert GeneratedDocument.objects.count() == 2


def test_the_command_lists_blobs_with_their_sizes_in_a_dry_run() -> None:
    store = Store()
    store.age_on_filesystem()
    out = StringIO()

    call_command("gc_blobs", "--dry-run", "--grace", str(HOUR), stdout=out)

    lines = out.getvalue().splitlines()
    assert f"{len(b'orphan layer')}\t{blob_key(store.orphan_layer)}" in lines
    assert lines[-2] == f"blobs: 5 ({sum(int(line.split(chr(9))[0]) for line in lines[:-2])} bytes) would delete"
    assert existing(store.doomed) == store.doomed


def test_a_request_reusing_a_blob_during_the_run_keeps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store()
    store.age_on_filesystem()
    content = b"orphan layer"

    def request_arrives(keys: list[str]) -> None:
        # Between judging and deleting: a new request finds the stored layer (as container_request_create
        # does, through blob_store_put); its rows are committed only after the collector deleted its batch.
        assert blob_key(store.orphan_layer) in keys
        assert blob_store_put(store.orphan_layer, content) == blob_key(store.orphan_layer)

    monkeypatch.setattr(blob_gc_module, "_before_delete", request_arrives)

    counts = blob_gc(grace=HOUR)
    make_request("00000000000b", layers=(store.orphan_layer,))

    assert counts.blobs == 4
    assert blob_read(blob_key(store.orphan_layer)) == content
    assert existing(store.doomed) == [blob_key(store.orphan_layer)]  # the four others went


def test_a_reference_committed_during_the_run_without_a_reuse_mark_keeps_the_blob(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = Store()
    store.age_on_filesystem()
    monkeypatch.setattr(
        blob_gc_module, "_before_delete", lambda keys: make_download(store.orphan_layer, LayerDownload.State.QUEUED)
    )

    blob_gc(grace=HOUR)

    assert blob_exists(blob_key(store.orphan_layer))


def test_a_writer_arriving_while_the_blob_is_deleted_stores_it_again(monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store()
    store.age_on_filesystem()
    content, key = b"orphan layer", blob_key(store.orphan_layer)
    delete = blob_gc_module._deleted
    writer_waits = threading.Event()
    results: list[str] = []

    def write() -> None:
        writer_waits.set()
        results.append(blob_store_put(store.orphan_layer, content))

    writer = threading.Thread(target=write)

    def deleted_while_a_writer_arrives(keys: list[str]) -> None:
        # The collector holds its locks and has checked the reuse marks: a writer announcing now must wait.
        writer.start()
        writer_waits.wait(5)
        time.sleep(0.3)
        assert results == []  # still waiting on the collector's lock
        delete(keys)

    monkeypatch.setattr(blob_gc_module, "_deleted", deleted_while_a_writer_arrives)

    blob_gc(grace=HOUR)
    writer.join(10)

    assert results == [key]
    assert blob_read(key) == content  # stored again once the collector was done


def test_scratch_files_of_dead_downloads_older_than_the_grace_are_swept(settings: Settings) -> None:
    settings.WAVE_LAYER_DOWNLOAD_TIMEOUT = 60
    folder = Path(default_storage.path("scratch"))
    folder.mkdir(parents=True)
    dead, live = folder / f"{SCRATCH_PREFIX}dead", folder / f"{SCRATCH_PREFIX}live"
    for path, age in ((dead, 2 * HOUR), (live, HOUR / 2)):
        path.write_bytes(b"partial download")
        os.utime(path, (time.time() - age, time.time() - age))

    assert blob_gc(grace=HOUR, dry_run=True).scratch_files == 1
    assert dead.exists()
    assert blob_gc(grace=HOUR).scratch_files == 1

    assert (dead.exists(), live.exists()) == (False, True)


def test_the_beat_task_runs_the_collection_with_the_configured_grace(settings: Settings) -> None:
    settings.WAVE_BLOB_GC_GRACE = HOUR
    store = Store()
    store.age_on_filesystem()

    assert blob_gc_task() == {"blobs": 5, "bytes": sum(len(c) for c in (b"orphan doc", b"orphan layer",
                                                                          b"failed download", b"log", b"log")),
                              "scratch_files": 0}  # fmt: skip
    assert existing(store.doomed) == []
    assert settings.CELERY_BEAT_SCHEDULE["collect-blobs"]["task"] == "wave_site.blob_gc"


def test_blobs_announced_for_reuse_are_kept() -> None:
    store = Store()
    store.age_on_filesystem()
    assert blob_exists(blob_key(store.orphan_layer))  # a caller about to reference it

    blob_gc(grace=HOUR)

    assert blob_exists(blob_key(store.orphan_layer))
    assert shared_cache().get(f"wave:blob-reuse:{blob_key(store.orphan_layer)}") == 1


# What Store leaves once collected: the kept blobs (two of them log chunks) and a young orphan.
KEPT_CONTENTS = (b"layer", b"owned doc", b"ready download", b"context", b"log", b"log")


def scraped_blob_store(client: Client, settings: Settings) -> dict[str, float]:
    """The blob store's samples on /metrics."""
    settings.WAVE_METRICS_ENABLED = True
    settings.WAVE_METRICS_TOKEN = "scrape-token"
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token")
    assert response.status_code == 200
    families = text_string_to_metric_families(response.content.decode())
    return {
        sample.name: sample.value
        for family in families
        for sample in family.samples
        if sample.name.startswith("wave_blob_store_")
    }


def test_metrics_show_the_store_size_the_last_collection_recorded(client: Client, settings: Settings) -> None:
    store = Store()
    store.age_on_filesystem()
    assert scraped_blob_store(client, settings) == {}  # no collection yet: not measured, not zero

    started = time.time()
    blob_gc(grace=HOUR, dry_run=True)
    listed = scraped_blob_store(client, settings)
    blob_gc(grace=HOUR)
    collected = scraped_blob_store(client, settings)

    everything = (*KEPT_CONTENTS, b"orphan doc", b"orphan layer", b"failed download", b"log", b"log", b"young orphan")
    assert (listed["wave_blob_store_blobs"], listed["wave_blob_store_bytes"]) == (12, sum(map(len, everything)))
    left = (*KEPT_CONTENTS, b"young orphan")
    assert (collected["wave_blob_store_blobs"], collected["wave_blob_store_bytes"]) == (7, sum(map(len, left)))
    assert sum(os.path.getsize(default_storage.path(key)) for key in [*store.kept, store.young]) == sum(map(len, left))
    assert started <= collected["wave_blob_store_measured_timestamp_seconds"] <= time.time()


def test_metrics_show_the_store_size_on_s3(client: Client, settings: Settings, s3_blob_store: S3Bucket) -> None:
    Store()
    time.sleep(2.5)
    stored(b"another young orphan")

    blob_gc(grace=1.5)

    collected = scraped_blob_store(client, settings)
    left = (*KEPT_CONTENTS, b"another young orphan")
    assert (collected["wave_blob_store_blobs"], collected["wave_blob_store_bytes"]) == (7, sum(map(len, left)))
    listed = s3_blob_store.client.list_objects_v2(Bucket=s3_blob_store.name)["Contents"]
    assert (len(listed), sum(item["Size"] for item in listed)) == (7, sum(map(len, left)))
