"""Fixtures shared by the whole suite: real registries, real images, a clean cache."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.conf import settings
from pytest_django.fixtures import Settings

from tests.support.asgi_server import AsgiServer, start_asgi_server
from tests.support.http_files import FileServer
from tests.support.images import Builder
from tests.support.registry import ANONYMOUS, BASIC, TOKEN, Registry, start_registry
from tests.support.s3 import S3Bucket, new_bucket, s3_server
from tests.support.tower import TowerStandIn
from tests.support.worker import Worker, start_worker


@dataclass(frozen=True)
class PushedImage:
    """An image in a registry fixture: `reference` is what skopeo or a client names."""

    registry: Registry
    repository: str
    tag: str
    digest: str

    @property
    def reference(self) -> str:
        return f"{self.registry.host}/{self.repository}:{self.tag}"

    @property
    def by_digest(self) -> str:
        return f"{self.registry.host}/{self.repository}@{self.digest}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(settings.DATA_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    from django.core.cache import cache

    from credentials.clients import registry_client
    from credentials.provider import admin_credentials_forget

    cache.delete_pattern("*")  # cache keys only: the Celery broker shares this Redis database
    registry_client.cache_clear()
    admin_credentials_forget()  # the admin's registry logins a previous test stored (and rolled back)


@pytest.fixture(autouse=True)
def _private_blob_store(settings, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each test gets an empty blob store, so that 'nothing was written' can be asserted."""
    location = tmp_path_factory.mktemp("blobs")
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {**settings.STORAGES["default"], "OPTIONS": {"location": location}},
    }


@pytest.fixture(scope="session")
def builder() -> Iterator[Builder]:
    builder = Builder()
    yield builder
    builder.cleanup()


@pytest.fixture(scope="session")
def busybox_image_id(builder: Builder) -> str:
    return builder.busybox_image()


def _registry_with_busybox(flavour: str, builder: Builder, image_id: str) -> Iterator[PushedImage]:
    registry = start_registry(flavour)
    try:
        digest = builder.push(image_id, f"{registry.host}/library/busybox:latest", creds=registry.creds)
        yield PushedImage(registry=registry, repository="library/busybox", tag="latest", digest=digest)
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def anonymous_image(builder: Builder, busybox_image_id: str) -> Iterator[PushedImage]:
    """busybox in an anonymous registry."""
    yield from _registry_with_busybox(ANONYMOUS, builder, busybox_image_id)


@pytest.fixture(scope="session")
def basic_image(builder: Builder, busybox_image_id: str) -> Iterator[PushedImage]:
    """busybox in a registry with htpasswd Basic auth."""
    yield from _registry_with_busybox(BASIC, builder, busybox_image_id)


@pytest.fixture(scope="session")
def token_image(builder: Builder, busybox_image_id: str) -> Iterator[PushedImage]:
    """busybox in a registry with Bearer token auth (JWTs from a token server)."""
    yield from _registry_with_busybox(TOKEN, builder, busybox_image_id)


@pytest.fixture(scope="session")
def multiplatform_image(builder: Builder, anonymous_image: PushedImage) -> PushedImage:
    """A linux/amd64 + linux/arm64 index of busybox in the anonymous registry."""
    images = {arch: builder.busybox_image(arch=arch) for arch in ("amd64", "arm64")}
    registry = anonymous_image.registry
    digest = builder.push_index(images, f"{registry.host}/library/busybox-multi:latest")
    return PushedImage(registry=registry, repository="library/busybox-multi", tag="latest", digest=digest)


@pytest.fixture(scope="session")
def asgi_server(django_db_setup: None, django_db_blocker) -> Iterator[AsgiServer]:
    """uvicorn serving the service on the test database (use with `transactional_db`)."""
    from django.db import connections

    with django_db_blocker.unblock():
        server = start_asgi_server()
        yield server
        server.stop()
        # The server's threads returned their connections to the pool: close it, so that the test
        # database can be dropped.
        for connection in connections.all():
            if connection.vendor == "postgresql" and connection.settings_dict.get("OPTIONS", {}).get("pool"):
                connection.close_pool()


@pytest.fixture(scope="session")
def layer_worker(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A real worker consuming the test broker, on the test database."""
    from django.db import connection

    database = connection.settings_dict
    url = (
        f"postgres://{database['USER']}:{database['PASSWORD']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"
    )
    worker = start_worker(
        database_url=url,
        redis_url=settings.REDIS_URL,
        data_dir=tmp_path_factory.mktemp("worker-data"),
        ssrf_allow=",".join(settings.WAVE_SSRF_ALLOW),
    )
    yield worker
    worker.stop()


@pytest.fixture
def proxy(asgi_server: AsgiServer, layer_worker: Worker, settings, transactional_db: None) -> AsgiServer:
    """The live service (web on uvicorn, a Celery worker), with targetImage names pointing at it."""
    settings.WAVE_SERVER_URL = asgi_server.url
    # Web and worker share one blob store, as they would on one machine.
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {**settings.STORAGES["default"], "OPTIONS": {"location": layer_worker.blobs}},
    }
    return asgi_server


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    server = FileServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_blob_store(s3_endpoint: str, settings) -> S3Bucket:
    """The blob store on a fresh bucket of the S3 server, for this test."""
    bucket = new_bucket(s3_endpoint)
    settings.STORAGES = {**settings.STORAGES, "default": bucket.storage_settings()}
    return bucket


@pytest.fixture
def tower(settings: Settings, db: None) -> Iterator[TowerStandIn]:
    """A Tower stand-in paired with this service (its public key registered, as `POST /pairing` does)."""
    from credentials.pairing import pairing_key_register
    from credentials.sessions import tower_client

    tower_client.cache_clear()
    settings.WAVE_TOWER_RETRIES = 2
    with TowerStandIn() as stand_in:
        key = pairing_key_register(service="tower", endpoint=stand_in.url)
        stand_in.register_pairing(key.pairing_id, key.public_key)
        yield stand_in
    tower_client.cache_clear()
