"""Health checks of the parts the service cannot work without: database, cache, broker, build registry."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
from django.conf import settings
from django.core.cache import cache
from django.core.files.storage import storages
from django.db import connection

from registry.endpoints import registry_base_url

CHECK_TIMEOUT = 3.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    is_up: bool
    detail: str


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def check_cache() -> str:
    key = "wave:health"
    cache.set(key, "ok", timeout=30)
    if cache.get(key) != "ok":
        raise RuntimeError("value written was not read back")
    backend = str(settings.CACHES["default"]["BACKEND"])
    return backend.rsplit(".", 1)[-1]


def check_broker() -> str:
    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://")):
        client = redis.Redis.from_url(url, socket_connect_timeout=CHECK_TIMEOUT, socket_timeout=CHECK_TIMEOUT)
        try:
            client.ping()
        finally:
            client.close()
        return "redis"
    folder = str(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
    if not os.access(folder, os.W_OK):
        raise RuntimeError(f"queue folder {folder} is not writable")
    return "filesystem"


def check_build_registry() -> str:
    host = settings.WAVE_BUILD_REPO.split("/", 1)[0]
    url = registry_base_url(host, settings.WAVE_INSECURE_REGISTRIES) + "/v2/"
    response = httpx.get(url, timeout=CHECK_TIMEOUT)
    # 401 is a healthy registry asking for credentials; anything else but 200 is not.
    if response.status_code not in {200, 401}:
        raise RuntimeError(f"GET {url} answered {response.status_code}")
    return host


def check_blob_store() -> str:
    storage: Any = storages["default"]
    bucket = getattr(storage, "bucket_name", None)
    if bucket is not None:  # S3: the bucket exists and the credentials may use it, answered quickly
        from botocore.config import Config  # only where S3 is configured: botocore is heavy

        quick = Config(connect_timeout=CHECK_TIMEOUT, read_timeout=CHECK_TIMEOUT, retries={"max_attempts": 1})
        client = storage._create_session().client(
            "s3", endpoint_url=storage.endpoint_url, region_name=storage.region_name,
            config=storage.client_config.merge(quick),
        )  # fmt: skip
        client.head_bucket(Bucket=bucket)
        return f"s3://{bucket}"
    location = Path(storage.location)
    location.mkdir(parents=True, exist_ok=True)
    if not os.access(location, os.W_OK):
        raise RuntimeError(f"blob folder {location} is not writable")
    return "filesystem"


CHECKS: dict[str, Callable[[], str]] = {
    "database": check_database,
    "cache": check_cache,
    "broker": check_broker,
    "registry": check_build_registry,
    "blobs": check_blob_store,
}


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or unreachable"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def run_checks() -> list[CheckResult]:
    results = []
    for name, check in CHECKS.items():
        try:
            results.append(CheckResult(name=name, is_up=True, detail=check()))
        except Exception as exc:  # noqa: BLE001 - any failure of a dependency is a failed check, reported
            results.append(CheckResult(name=name, is_up=False, detail=_describe(exc)))
    return results
