"""Layer downloads as durable jobs (requests_app.downloads, requests_app.fetch): create or join at request
time, claim, heartbeat, finish; deadlines and rates per read; reasons without secrets."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, connections, transaction
from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings

from requests_app.downloads import (
    layer_download_claim,
    layer_download_create_or_join,
    layer_download_create_or_join_all,
    layer_download_enqueue,
    layer_download_finish,
    layer_download_heartbeat,
    layer_download_run,
)
from requests_app.layers import LayerSpec
from requests_app.models import ContainerRequest, InjectedLayer, LayerDownload
from tests.conftest import PushedImage
from tests.requests_app.conftest import Post
from tests.support.http_files import FileServer
from tests.support.layers import Layer, make_layer
from tests.support.servers import start_private_redis
from tests.support.service import REPO
from tests.support.worker import start_worker, worker_environment
from wave_site.blobstore import blob_key, blob_read
from wave_site.errors import RateLimited

Capture = Callable[..., object]


def request_layer(post: Post, image: str, layer: Layer, url: str) -> InjectedLayer:
    """POST a request with one http layer; its row (joined to its download)."""
    response = post({"containerImage": image, "containerConfig": {"layers": [layer.as_request(location=url)]}})
    assert response.status_code == 200, response.content
    return InjectedLayer.objects.select_related("download").get(request__token=response.json()["containerToken"])


def enqueued(callbacks: list[Callable[[], object]]) -> list[int]:
    """Download pks the captured on-commit callbacks would send."""
    return [
        callback.keywords["download_pk"]
        for callback in callbacks
        if getattr(callback, "func", None) is layer_download_enqueue
    ]


# --- Create or join at request time -------------------------------------------------------------


@pytest.mark.django_db
def test_requests_for_one_layer_share_one_download_sent_once(
    post: Post, image: str, file_server: FileServer, django_capture_on_commit_callbacks: Capture
) -> None:
    layer = make_layer({"shared.txt": b"shared\n"})
    url = f"{file_server.url}/shared.tar.gz"
    with django_capture_on_commit_callbacks() as first_callbacks:
        first = request_layer(post, image, layer, url)
    with django_capture_on_commit_callbacks() as second_callbacks:
        second = request_layer(post, image, layer, url)

    download = LayerDownload.objects.get()
    assert (first.download_id, second.download_id) == (download.pk, download.pk)
    assert (first.state, second.state) == ("pending", "pending")
    assert (download.url, download.gzip_size, download.gzip_digest, download.tar_digest) == (
        url, len(layer.gzip_bytes), layer.gzip_digest, layer.tar_digest,
    )  # fmt: skip
    assert (download.state, download.attempts, download.claimed_by) == ("queued", 0, "")
    assert enqueued(first_callbacks) == [download.pk]
    assert enqueued(second_callbacks) == []  # joined: nothing sent again


@pytest.mark.django_db
def test_same_digests_from_another_url_are_not_held_back_by_a_stalled_download(
    post: Post, image: str, file_server: FileServer
) -> None:
    layer = make_layer({"contested.txt": b"contested\n"})
    file_server.files["good.tar.gz"] = layer.gzip_bytes
    stalled = request_layer(post, image, layer, f"{file_server.url}/stalling.tar.gz")
    good = request_layer(post, image, layer, f"{file_server.url}/good.tar.gz")
    assert stalled.download_id != good.download_id
    assert layer_download_claim(download_pk=stalled.download_id) is not None  # held by a worker that went quiet

    assert layer_download_run(download_pk=good.download_id) == "ready"
    good.refresh_from_db()
    stalled.refresh_from_db()
    assert (good.state, good.blob_key) == ("ready", blob_key(layer.gzip_digest))
    assert blob_read(good.blob_key) == layer.gzip_bytes
    assert (stalled.state, stalled.download.state) == ("pending", "running")  # its own download, still its own
    assert file_server.hits == ["/good.tar.gz"]


@pytest.mark.django_db
def test_a_failed_download_is_tried_again_by_a_new_request(
    post: Post, image: str, file_server: FileServer, django_capture_on_commit_callbacks: Capture
) -> None:
    layer = make_layer({"later.txt": b"published later\n"})
    url = f"{file_server.url}/later.tar.gz"
    early = request_layer(post, image, layer, url)
    assert layer_download_run(download_pk=early.download_id) == "failed"
    early.refresh_from_db()
    reason = f"Download of {url} answered HTTP 404"
    assert (early.state, early.failure_reason, early.download.state) == ("failed", reason, "failed")

    file_server.files["later.tar.gz"] = layer.gzip_bytes
    with django_capture_on_commit_callbacks() as callbacks:
        late = request_layer(post, image, layer, url)
    download = LayerDownload.objects.get()
    assert late.download_id == download.pk
    assert (download.state, download.attempts, download.failure_reason, download.finished_at) == ("queued", 0, "", None)
    assert enqueued(callbacks) == [download.pk]
    assert late.state == "pending"

    assert layer_download_run(download_pk=download.pk) == "ready"
    late.refresh_from_db()
    early.refresh_from_db()
    assert late.state == "ready"
    assert (early.state, early.failure_reason) == ("failed", reason)  # its request was answered already


@pytest.mark.django_db
def test_a_layer_verified_before_is_ready_at_once(
    post: Post, image: str, file_server: FileServer, django_capture_on_commit_callbacks: Capture
) -> None:
    layer = make_layer({"known.txt": b"known\n"})
    file_server.files["known.tar.gz"] = layer.gzip_bytes
    url = f"{file_server.url}/known.tar.gz"
    first = request_layer(post, image, layer, url)
    assert layer_download_run(download_pk=first.download_id) == "ready"

    with django_capture_on_commit_callbacks() as callbacks:
        again = request_layer(post, image, layer, url)
    assert (again.state, again.blob_key, again.download_id) == ("ready", blob_key(layer.gzip_digest), first.download_id)
    assert again.finished_at == again.request.created_at
    assert enqueued(callbacks) == []
    assert file_server.hits == ["/known.tar.gz"]


@pytest.mark.django_db
def test_a_ready_download_whose_blob_is_gone_is_downloaded_again(
    post: Post, image: str, file_server: FileServer, django_capture_on_commit_callbacks: Capture
) -> None:
    layer = make_layer({"lost.txt": b"lost blob\n"})
    file_server.files["lost.tar.gz"] = layer.gzip_bytes
    url = f"{file_server.url}/lost.tar.gz"
    first = request_layer(post, image, layer, url)
    assert layer_download_run(download_pk=first.download_id) == "ready"
    (settings.STORAGES["default"]["OPTIONS"]["location"] / blob_key(layer.gzip_digest)).unlink()

    with django_capture_on_commit_callbacks() as callbacks:
        again = request_layer(post, image, layer, url)
    assert (again.state, again.download.state) == ("pending", "queued")
    assert enqueued(callbacks) == [first.download_id]
    assert layer_download_run(download_pk=first.download_id) == "ready"
    assert blob_read(blob_key(layer.gzip_digest)) == layer.gzip_bytes


# Tests with real commits (threads) create their rows without enqueueing them (or at an unresolvable host): a
# worker consuming the test broker (tests/conftest.py) must not take their downloads.


def in_thread(target: Callable[[], object]) -> threading.Thread:
    """Run `target` in a thread with its own database connection, closed at the end."""

    def run() -> None:
        try:
            target()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


FETCHED = {"url": "https://layers.invalid/race.tgz", "gzip_size": 10, "gzip_digest": "sha256:" + "3" * 64,
           "tar_digest": "sha256:" + "4" * 64}  # fmt: skip


def store_joined_layer(token: str, download: LayerDownload) -> None:
    request = ContainerRequest.objects.create(
        token=token, source_image="docker.io/library/busybox:latest", target_image="x",
        expires_at=timezone.now() + dt.timedelta(hours=1),
    )  # fmt: skip
    InjectedLayer.objects.create(request=request, position=0, kind="http", download=download,
                                 state="ready" if download.state == "ready" else "pending", **FETCHED)  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_for_a_new_layer_create_one_download() -> None:
    first_inside, release_first = threading.Event(), threading.Event()
    joined: list[int] = []

    def first() -> None:
        with transaction.atomic():
            download = layer_download_create_or_join(**FETCHED, is_blob_stored=False)
            store_joined_layer("00000000000a", download)
            first_inside.set()
            release_first.wait(10)
        joined.append(download.pk)

    def second() -> None:
        with transaction.atomic():  # waits on the unique index until the first commits, then joins its row
            download = layer_download_create_or_join(**FETCHED, is_blob_stored=False)
            store_joined_layer("00000000000b", download)
        joined.append(download.pk)

    threads = [in_thread(first)]
    assert first_inside.wait(10)
    threads.append(in_thread(second))
    time.sleep(0.3)
    assert joined == []  # the second waits for the first
    release_first.set()
    for thread in threads:
        thread.join(10)

    download = LayerDownload.objects.get()
    assert joined == [download.pk, download.pk]
    assert list(InjectedLayer.objects.values_list("download_id", flat=True)) == [download.pk] * 2


@pytest.mark.django_db(transaction=True)
def test_a_layer_joining_a_download_as_it_finishes_is_settled_with_it() -> None:
    download = LayerDownload.objects.create(identity=LayerDownload.identity_of(**FETCHED), **FETCHED)
    claim = layer_download_claim(download_pk=download.pk)
    assert claim is not None
    joining, release_request = threading.Event(), threading.Event()
    finished: list[bool] = []

    def request() -> None:  # a request joining the running download, its transaction still open
        with transaction.atomic():
            store_joined_layer("00000000000c", layer_download_create_or_join(**FETCHED, is_blob_stored=False))
            joining.set()
            release_request.wait(10)

    threads = [in_thread(request)]
    assert joining.wait(10)
    threads.append(in_thread(lambda: finished.append(
        layer_download_finish(download_pk=download.pk, claim=claim, state="failed", reason="HTTP 404")
    )))  # fmt: skip
    time.sleep(0.3)
    assert finished == []  # the finish waits for the joining request to commit
    release_request.set()
    for thread in threads:
        thread.join(10)

    assert finished == [True]
    layer = InjectedLayer.objects.get()
    assert (layer.state, layer.failure_reason, layer.download_id) == ("failed", "HTTP 404", download.pk)


def test_a_broker_that_is_down_loses_nothing_at_enqueue(tmp_path: Path) -> None:
    env = worker_environment(database_url=None, redis_url="redis://127.0.0.1:9/0", data_dir=tmp_path,
                             ssrf_allow="")  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c",
         "from requests_app.downloads import layer_download_enqueue\nlayer_download_enqueue(download_pk=7)"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 20  # no publishing retries
    assert "layer download 7 not sent (Error 111 connecting to 127.0.0.1:9. Connection refused.): " \
        "the reaper sends it later" in result.stderr  # fmt: skip


# --- One client's cap ----------------------------------------------------------------------------


def body_with(image: str, *layers: tuple[Layer, str]) -> dict[str, object]:
    return {"containerImage": image,
            "containerConfig": {"layers": [layer.as_request(location=url) for layer, url in layers]}}  # fmt: skip


def stored_counts() -> tuple[int, int, int]:
    return ContainerRequest.objects.count(), InjectedLayer.objects.count(), LayerDownload.objects.count()


@pytest.mark.django_db
def test_a_client_over_its_download_cap_is_refused_and_nothing_is_stored(
    post: Post, image: str, client: Client, file_server: FileServer, settings: Settings,
    django_capture_on_commit_callbacks: Capture,
) -> None:  # fmt: skip
    settings.WAVE_MAX_ACTIVE_DOWNLOADS_PER_CLIENT = 2
    layers = {name: make_layer({f"{name}.txt": name.encode()}) for name in ("a", "b", "c", "d", "e")}
    file_server.files.update({f"{name}.tar.gz": layer.gzip_bytes for name, layer in layers.items()})

    def at(name: str) -> tuple[Layer, str]:
        return layers[name], f"{file_server.url}/{name}.tar.gz"

    assert post(body_with(image, at("a"), at("b"))).status_code == 200  # two downloads queued: the cap
    before = stored_counts()
    inline = make_layer({"inline.txt": b"inline\n"})
    refused_body = body_with(image, at("c"))
    refused_body["containerConfig"]["layers"].append(inline.as_request())  # type: ignore[index]
    with django_capture_on_commit_callbacks() as callbacks:
        refused = post(refused_body)
    assert refused.status_code == 429
    assert refused.json() == {
        "message": "Too many layer downloads in progress for this client (2 queued or running, this request needs "
        "1 more, at most 2 at once) - retry in 30 seconds"
    }
    assert refused["Retry-After"] == "30"
    assert stored_counts() == before
    assert enqueued(callbacks) == []
    assert not blob_exists_for(inline.gzip_digest)  # not even the inline layer's blob

    # Joining downloads already queued starts nothing and is served; so is another client.
    assert post(body_with(image, at("b"), at("a"))).status_code == 200
    other = client.post("/container-token", data=json.dumps(body_with(image, at("c"), at("d"))),
                        content_type="application/json", REMOTE_ADDR="192.0.2.99")  # fmt: skip
    assert other.status_code == 200, other.content
    downloads = dict(LayerDownload.objects.values_list("url", "client"))
    assert downloads == {at("a")[1]: "ip:192.0.2.10", at("b")[1]: "ip:192.0.2.10",
                         at("c")[1]: "ip:192.0.2.99", at("d")[1]: "ip:192.0.2.99"}  # fmt: skip

    # Once its downloads are done the client may start more.
    for pk in LayerDownload.objects.filter(client="ip:192.0.2.10").values_list("pk", flat=True):
        assert layer_download_run(download_pk=pk) == "ready"
    assert post(body_with(image, at("e"))).status_code == 200
    assert LayerDownload.objects.get(url=at("e")[1]).client == "ip:192.0.2.10"


def blob_exists_for(digest: str) -> bool:
    return (settings.STORAGES["default"]["OPTIONS"]["location"] / blob_key(digest)).exists()


@pytest.mark.django_db
def test_a_request_needing_more_downloads_than_the_cap_is_a_bad_request(
    post: Post, image: str, file_server: FileServer, settings: Settings
) -> None:
    settings.WAVE_MAX_ACTIVE_DOWNLOADS_PER_CLIENT = 2
    layers = [make_layer({f"{n}.txt": b"x" * n}) for n in range(3)]
    response = post(body_with(image, *[(layer, f"{file_server.url}/{n}.tar.gz") for n, layer in enumerate(layers)]))
    assert response.status_code == 400
    assert response.json() == {
        "message": "This request needs 3 layer downloads; a client may have at most 2 queued or running at once"
    }
    assert stored_counts() == (0, 0, 0)

    settings.WAVE_MAX_ACTIVE_DOWNLOADS_PER_CLIENT = 0  # no cap
    assert post(body_with(image, *[(layer, f"{file_server.url}/{n}.tar.gz") for n, layer in enumerate(layers)])
                ).status_code == 200  # fmt: skip
    assert stored_counts() == (1, 3, 3)


def spec_of(number: int) -> LayerSpec:
    digit = "56789abcdef"[number]
    return LayerSpec(position=0, url=f"https://layers.invalid/{number}.tgz", gzip_digest="sha256:" + digit * 64,
                     gzip_size=10, tar_digest="sha256:" + digit * 64, data=None)  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_of_one_client_are_counted_one_after_the_other(settings: Settings) -> None:
    """The cap is exact: a second request of the same client waits for the first one's transaction, then
    counts its downloads (without the lock, each would see one download and both would pass)."""
    settings.WAVE_MAX_ACTIVE_DOWNLOADS_PER_CLIENT = 2
    LayerDownload.objects.create(identity="0" * 64, url="https://layers.invalid/held.tgz", gzip_size=1,
                                 gzip_digest="sha256:" + "0" * 64, tar_digest="sha256:" + "0" * 64,
                                 client="ip:192.0.2.7")  # fmt: skip
    first_inside, release_first = threading.Event(), threading.Event()
    outcomes: list[str] = []

    def request(number: int, *, hold: bool) -> None:
        try:
            with transaction.atomic():
                layer_download_create_or_join_all(layers=[spec_of(number)], stored=set(), client="ip:192.0.2.7")
                if hold:
                    first_inside.set()
                    release_first.wait(10)
            outcomes.append(f"{number} accepted")
        except RateLimited:
            outcomes.append(f"{number} refused")

    threads = [in_thread(lambda: request(1, hold=True))]
    assert first_inside.wait(10)
    threads.append(in_thread(lambda: request(2, hold=False)))
    time.sleep(0.5)
    assert outcomes == []  # the second waits for the first
    release_first.set()
    for thread in threads:
        thread.join(10)
    assert sorted(outcomes) == ["1 accepted", "2 refused"]
    assert sorted(LayerDownload.objects.values_list("url", flat=True)) == [
        "https://layers.invalid/1.tgz", "https://layers.invalid/held.tgz",
    ]  # fmt: skip


# Accepts requests as the API does, from the worker's own environment: `[client address, body]` pairs.
POST_AS_CLIENTS = """
import json, os
from django.test import Client
answers = []
for address, body in json.loads(os.environ["POSTS"]):
    response = Client(REMOTE_ADDR=address).post("/container-token", data=json.dumps(body),
                                                 content_type="application/json")
    answers.append([response.status_code, response.json()])
print("ANSWERS=" + json.dumps(answers))
"""
CLIENT_LAYERS = """
SELECT r.client_ip, l.position, l.state, d.client, r.created_at, l.finished_at
FROM requests_app_injectedlayer l
JOIN requests_app_containerrequest r ON r.id = l.request_id
JOIN requests_app_layerdownload d ON d.id = l.download_id
ORDER BY r.id, l.position
"""


def as_time(value: object) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["redis", "embedded"])
def test_one_clients_slow_layers_do_not_hold_back_another_clients_layer(
    mode: str, tmp_path: Path, anonymous_image: PushedImage, file_server: FileServer
) -> None:
    """`manage.py run`'s downloads worker (a thread per download; 4 here), each client capped at 2 downloads:
    client A's slow layers take two threads and its next request is refused; client B's small layer is
    downloaded at once. (Before: one process pool of 2 for everything, no cap: B waited for A's layers.)"""
    file_server.slow_seconds = 12
    layers = {name: make_layer({f"{name}.txt": name.encode()}) for name in ("a1", "a2", "a3", "a4", "b")}
    file_server.files.update({f"{name}.tar.gz": layer.gzip_bytes for name, layer in layers.items()})

    def at(name: str) -> tuple[Layer, str]:
        path = f"/{name}.tar.gz" if name == "b" else f"/slow/{name}.tar.gz"
        return layers[name], f"{file_server.url}{path}"

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = {"WAVE_MAX_ACTIVE_DOWNLOADS_PER_CLIENT": "2", "WAVE_LAYER_DOWNLOAD_RATE_WINDOW": "60"}
    with start_private_redis() as redis:
        if mode == "redis":
            database = connection.settings_dict
            database_url = (f"postgres://{database['USER']}:{database['PASSWORD']}@{database['HOST']}:"
                            f"{database['PORT']}/{database['NAME']}")  # fmt: skip
            redis_url: str | None = redis.url
        else:
            database_url = redis_url = None
        environment = worker_environment(database_url=database_url, redis_url=redis_url, data_dir=data_dir,
                                         ssrf_allow="127.0.0.1", env=env)  # fmt: skip

        def manage(*args: str, **extra: str) -> str:
            result = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env={**environment, **extra},
                                    capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
            assert result.returncode == 0, result.stdout + result.stderr
            return result.stdout

        def rows() -> list[tuple[object, ...]]:
            if mode == "redis":
                with connection.cursor() as cursor:
                    cursor.execute(CLIENT_LAYERS)
                    return list(cursor.fetchall())
            with sqlite3.connect(data_dir / "wave.sqlite3", timeout=20) as database:
                return list(database.execute(CLIENT_LAYERS).fetchall())

        if mode == "embedded":
            manage("migrate", "--no-input", "-v", "0")
        worker = start_worker(
            database_url=database_url, redis_url=redis_url, data_dir=data_dir, ssrf_allow="127.0.0.1",
            pool="threads", concurrency=4, queues="layers", env=env,
        )  # fmt: skip
        try:
            image = anonymous_image.reference
            posts = [["192.0.2.1", body_with(image, at("a1"), at("a2"))],
                     ["192.0.2.1", body_with(image, at("a3"), at("a4"))],
                     ["192.0.2.2", body_with(image, at("b"))]]  # fmt: skip
            output = manage("shell", "-c", POST_AS_CLIENTS, POSTS=json.dumps(posts))
            answers = json.loads(output.split("ANSWERS=", 1)[1])
            assert [status for status, _ in answers] == [200, 429, 200], answers
            assert answers[1][1]["message"].startswith("Too many layer downloads in progress for this client (2 ")

            def b_ready() -> list[tuple[object, ...]]:
                return [row for row in rows() if row[0] == "192.0.2.2" and row[2] == "ready"]

            deadline = time.monotonic() + 10
            while not b_ready() and time.monotonic() < deadline:
                time.sleep(0.2)
            found = rows()
            assert [row[:4] for row in found] == [
                ("192.0.2.1", 0, "pending", "ip:192.0.2.1"), ("192.0.2.1", 1, "pending", "ip:192.0.2.1"),
                ("192.0.2.2", 0, "ready", "ip:192.0.2.2"),
            ], worker.output()[-3000:]  # fmt: skip
            waited = as_time(found[2][5]) - as_time(found[2][4])
            assert waited < dt.timedelta(seconds=5), waited

            deadline = time.monotonic() + 30  # A's layers end too, in their threads
            while any(row[2] != "ready" for row in rows()) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert [row[2] for row in rows()] == ["ready", "ready", "ready"], worker.output()[-3000:]
        finally:
            worker.stop()
    assert "Traceback" not in worker.output()
    assert " ERROR" not in worker.output()


QUEUE_DOWNLOAD = """
import json, os
from django.db import transaction
from requests_app.downloads import layer_download_create_or_join
with transaction.atomic():
    layer_download_create_or_join(**json.loads(os.environ["FETCHED"]), is_blob_stored=False, client="ip:192.0.2.3")
"""


@pytest.mark.slow
def test_a_stopping_downloads_worker_gives_its_downloads_back_at_once(tmp_path: Path, drip_server: DripServer) -> None:
    """A warm shutdown does not wait for a download to end (a thread cannot be killed): the download goes back
    to the queue, its attempt not counted, and the next worker takes it up at once (embedded mode)."""
    layer = make_layer({"given-back.txt": b"given back\n" * 20})
    drip_server.serve(head=http_head(len(layer.gzip_bytes)), body=layer.gzip_bytes, interval=0.2)
    fetched = {"url": f"{drip_server.url}/given-back.tar.gz", "gzip_size": len(layer.gzip_bytes),
               "gzip_digest": layer.gzip_digest, "tar_digest": layer.tar_digest}  # fmt: skip
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = worker_environment(database_url=None, redis_url=None, data_dir=data_dir, ssrf_allow="127.0.0.1")
    for command in (["migrate", "--no-input", "-v", "0"], ["shell", "-c", QUEUE_DOWNLOAD]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=REPO, env={**env, "FETCHED": json.dumps(fetched)},
                       check=True, capture_output=True, timeout=120)  # fmt: skip

    def download() -> tuple[object, ...]:
        with sqlite3.connect(data_dir / "wave.sqlite3", timeout=20) as database:
            query = "SELECT state, claimed_by, attempts FROM requests_app_layerdownload"
            return tuple(database.execute(query).fetchone())

    worker = start_worker(database_url=None, redis_url=None, data_dir=data_dir, ssrf_allow="127.0.0.1",
                          pool="threads", concurrency=4, queues="layers")  # fmt: skip
    try:
        wait_for(lambda: download()[0] == "running", timeout=30)
        time.sleep(1)  # mid-download: the whole layer takes a minute at this rate
        started = time.monotonic()
        worker.stop()
        stopped = time.monotonic() - started
    finally:
        worker.stop()
    assert stopped < 8, worker.output()[-3000:]
    assert worker.process.returncode == 0
    assert download() == ("queued", "", 0)
    assert "layer download 1 given back to the queue: its worker is stopping" in worker.output()

    drip_server.interval = 0  # the next worker downloads it at once, from the message sent at the stop
    worker = worker.restart()
    try:
        wait_for(lambda: download()[0] == "ready", timeout=20)
    finally:
        worker.stop()
    assert download()[2] == 1
    assert "Traceback" not in worker.output()


# --- Claim, heartbeat, finish ---------------------------------------------------------------------


@pytest.mark.django_db
def test_finishing_settles_every_joined_layer_and_running_again_does_nothing(
    post: Post, image: str, file_server: FileServer
) -> None:
    layer = make_layer({"twice.txt": b"twice\n"})
    file_server.files["twice.tar.gz"] = layer.gzip_bytes
    url = f"{file_server.url}/twice.tar.gz"
    first, second = request_layer(post, image, layer, url), request_layer(post, image, layer, url)

    assert layer_download_run(download_pk=first.download_id) == "ready"
    assert layer_download_run(download_pk=first.download_id) == "ready"  # a redelivered message: claims nothing
    assert layer_download_run(download_pk=10**9) == "gone"
    download = LayerDownload.objects.get()
    assert (download.state, download.attempts, download.blob_key) == ("ready", 1, blob_key(layer.gzip_digest))
    for row in (first, second):
        row.refresh_from_db()
        assert (row.state, row.blob_key, row.failure_reason) == ("ready", download.blob_key, "")
        assert row.finished_at == download.finished_at
    assert file_server.hits == ["/twice.tar.gz"]


@pytest.mark.django_db
def test_claim_heartbeat_and_finish_are_compare_and_set(post: Post, image: str, file_server: FileServer) -> None:
    row = request_layer(post, image, make_layer({"cas.txt": b"cas\n"}), f"{file_server.url}/cas.tar.gz")
    pk = row.download_id
    claim = layer_download_claim(download_pk=pk)
    assert claim is not None
    assert layer_download_claim(download_pk=pk) is None
    assert layer_download_heartbeat(download_pk=pk, claim=claim) is True
    assert layer_download_heartbeat(download_pk=pk, claim="someone-else") is False
    assert layer_download_finish(download_pk=pk, claim="someone-else", state="failed", reason="no") is False
    row.refresh_from_db()
    assert (row.state, row.download.state, row.download.claimed_by, row.download.attempts) == (
        "pending", "running", claim, 1,
    )  # fmt: skip

    assert layer_download_finish(download_pk=pk, claim=claim, state="failed", reason="Gone") is True
    assert layer_download_finish(download_pk=pk, claim=claim, state="ready") is False  # finished once only
    assert layer_download_heartbeat(download_pk=pk, claim=claim) is False
    row.refresh_from_db()
    assert (row.state, row.failure_reason, row.download.state) == ("failed", "Gone", "failed")


@pytest.mark.django_db(transaction=True)
def test_a_worker_whose_claim_was_taken_stops_without_writing(settings: Settings, drip_server: DripServer) -> None:
    settings.WAVE_LAYER_DOWNLOAD_HEARTBEAT = 0.2
    layer = make_layer({"taken.txt": b"taken\n"})
    drip_server.serve(head=http_head(len(layer.gzip_bytes)), body=layer.gzip_bytes, interval=0.2)
    fetched = {"url": f"{drip_server.url}/taken.tar.gz", "gzip_size": len(layer.gzip_bytes),
               "gzip_digest": layer.gzip_digest, "tar_digest": layer.tar_digest}  # fmt: skip
    download = LayerDownload.objects.create(identity=LayerDownload.identity_of(**fetched), **fetched)
    outcome: list[str] = []
    worker = in_thread(lambda: outcome.append(layer_download_run(download_pk=download.pk)))
    wait_for(lambda: LayerDownload.objects.get().state == "running")
    # What the reaper does to a download it finds silent (as if its worker had died): queued again.
    assert LayerDownload.objects.filter(state="running").update(state="queued", claimed_by="", heartbeat_at=None)
    worker.join(timeout=10)

    assert outcome == ["queued"]  # stopped as soon as a heartbeat found the claim gone
    download.refresh_from_db()
    assert (download.state, download.claimed_by, download.failure_reason, download.finished_at) == (
        "queued",
        "",
        "",
        None,
    )


# --- Deadlines, rates and reasons ---------------------------------------------------------------


@dataclass
class DripServer:
    """A raw HTTP server answering `head` then `body`, each byte `interval` seconds apart where asked."""

    head: bytes = b""
    body: bytes = b""
    interval: float = 1.0
    drip_head: bool = False
    _socket: socket.socket = field(default_factory=lambda: socket.create_server(("127.0.0.1", 0)))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def serve(self, *, head: bytes, body: bytes, interval: float, drip_head: bool = False) -> None:
        self.head, self.body, self.interval, self.drip_head = head, body, interval, drip_head
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            try:
                connection.recv(65536)
                self._send(connection, self.head, drip=self.drip_head)
                self._send(connection, self.body, drip=True)
                connection.recv(1)  # then silence, until the client hangs up
            except OSError:
                return  # the client gave up

    def _send(self, connection: socket.socket, data: bytes, *, drip: bool) -> None:
        if not drip:
            connection.sendall(data)
            return
        for index in range(len(data)):
            connection.sendall(data[index : index + 1])
            time.sleep(self.interval)

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def drip_server() -> Iterator[DripServer]:
    server = DripServer()
    yield server
    server.close()


def http_head(length: int) -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nContent-Length: {length}\r\n\r\n".encode()


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def timed_run(download_pk: int) -> tuple[str, float]:
    started = time.monotonic()
    return layer_download_run(download_pk=download_pk), time.monotonic() - started


@pytest.mark.django_db
@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_server_dripping_bytes_fails_at_the_deadline(
    where: str, post: Post, image: str, settings: Settings, drip_server: DripServer
) -> None:
    settings.WAVE_LAYER_DOWNLOAD_TIMEOUT = 2
    settings.WAVE_LAYER_DOWNLOAD_MIN_RATE = 0  # the deadline alone
    layer = make_layer({"drip.txt": b"drip\n" * 50})
    head = http_head(len(layer.gzip_bytes))
    drip_server.serve(head=head, body=layer.gzip_bytes, interval=0.3, drip_head=where == "headers")
    row = request_layer(post, image, layer, f"{drip_server.url}/drip.tar.gz")

    state, elapsed = timed_run(row.download_id)
    assert state == "failed"
    assert 2 <= elapsed < 3.5
    row.refresh_from_db()
    assert (row.state, row.failure_reason) == ("failed", "Download timed out after 2 s")
    assert list((settings.STORAGES["default"]["OPTIONS"]["location"] / "scratch").iterdir()) == []


@pytest.mark.django_db
def test_a_body_below_the_minimum_rate_fails_as_too_slow(
    post: Post, image: str, settings: Settings, drip_server: DripServer
) -> None:
    settings.WAVE_LAYER_DOWNLOAD_MIN_RATE = 100
    settings.WAVE_LAYER_DOWNLOAD_RATE_WINDOW = 1
    layer = make_layer({"slow.txt": b"slow\n" * 50})
    drip_server.serve(head=http_head(len(layer.gzip_bytes)), body=layer.gzip_bytes, interval=0.2)
    url = f"{drip_server.url}/slow.tar.gz"
    row = request_layer(post, image, layer, url)

    state, elapsed = timed_run(row.download_id)
    assert state == "failed"
    assert elapsed < 2.5
    row.refresh_from_db()
    assert re.fullmatch(
        rf"Download of {re.escape(url)} too slow: [4-7] bytes in 1 s, below the minimum of 100 bytes/s",
        row.failure_reason,
    ), row.failure_reason


@pytest.mark.django_db
def test_a_server_that_goes_silent_stalls_out_after_the_rate_window(
    post: Post, image: str, settings: Settings, drip_server: DripServer
) -> None:
    settings.WAVE_LAYER_DOWNLOAD_RATE_WINDOW = 1
    layer = make_layer({"silent.txt": b"silent\n"})
    drip_server.serve(head=http_head(len(layer.gzip_bytes)), body=b"", interval=0)
    url = f"{drip_server.url}/silent.tar.gz"
    row = request_layer(post, image, layer, url)

    state, elapsed = timed_run(row.download_id)
    assert state == "failed"
    assert 1 <= elapsed < 2.5
    row.refresh_from_db()
    assert row.failure_reason == f"Download of {url} stalled: no data for 1 s"


@pytest.mark.django_db
def test_reasons_and_logs_never_show_credentials_of_a_layer_url(
    post: Post, image: str, file_server: FileServer, caplog: pytest.LogCaptureFixture
) -> None:
    host = file_server.url.removeprefix("http://")
    signed = f"http://{host}/private.tar.gz?X-Amz-Signature=deadbeef42&part=1"
    cases = {
        f"http://alice:s3cr3t@{host}/private.tar.gz?X-Amz-Signature=deadbeef42&part=1":
            f"Download of http://REDACTED@{host}/private.tar.gz?X-Amz-Signature=REDACTED&part=1 answered HTTP 404",
        f"{file_server.url}/redirect?to={signed.replace('&', '%26')}":
            f"Download of http://{host}/private.tar.gz?X-Amz-Signature=REDACTED&part=1 answered HTTP 404",
    }  # fmt: skip
    caplog.set_level("INFO")
    for number, (url, reason) in enumerate(cases.items()):
        row = request_layer(post, image, make_layer({f"{number}.txt": b"private\n"}), url)
        assert layer_download_run(download_pk=row.download_id) == "failed"
        row.refresh_from_db()
        assert (row.failure_reason, row.download.failure_reason) == (reason, reason)
        if number == 0:  # (the second URL carries the signed one in plain sight, as its `to` parameter)
            assert "s3cr3t" not in caplog.text
            assert "deadbeef42" not in caplog.text
            assert f"failed: {reason}" in caplog.text  # logged, redacted


@pytest.mark.django_db
def test_a_redirect_without_a_location_fails_with_the_reason(post: Post, image: str, drip_server: DripServer) -> None:
    layer = make_layer({"moved.txt": b"moved\n"})
    drip_server.serve(head=b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n", body=b"", interval=0)
    url = f"{drip_server.url}/moved.tar.gz"
    row = request_layer(post, image, layer, url)

    assert layer_download_run(download_pk=row.download_id) == "failed"
    row.refresh_from_db()
    reason = f"Download of {url} answered HTTP 302: a redirect without a Location"
    assert (row.state, row.failure_reason, row.download.failure_reason) == ("failed", reason, reason)


def test_a_url_httpx_cannot_send_fails_with_the_reason(settings: Settings, tmp_path: Path) -> None:
    from requests_app.fetch import LayerFetchError, fetch_verified

    settings.WAVE_SSRF_ALLOW = ["xn--"]  # allowed, so only httpx's own URL rules stand in the way
    with pytest.raises(LayerFetchError) as error:
        fetch_verified(
            "http://xn--/layer.tar.gz", gzip_size=1, gzip_digest="sha256:" + "a" * 64,
            tar_digest="sha256:" + "b" * 64, into=str(tmp_path / "layer"),
        )  # fmt: skip
    assert str(error.value) == "Download of http://xn--/layer.tar.gz failed: the URL is invalid"
