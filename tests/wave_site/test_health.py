from __future__ import annotations

import pytest
from django.test import Client
from pytest_django.fixtures import Settings as SettingsWrapper

from tests.conftest import PushedImage
from tests.support.network import free_port
from tests.support.s3 import S3Bucket

pytestmark = pytest.mark.django_db


@pytest.fixture
def build_registry(settings: SettingsWrapper, anonymous_image: PushedImage) -> str:
    settings.WAVE_BUILD_REPO = f"{anonymous_image.registry.host}/wave/build"
    return anonymous_image.registry.host


def test_health_is_up_when_every_part_answers(client: Client, build_registry: str) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "UP",
        "checks": {
            "database": {"status": "UP", "detail": "postgresql"},
            "cache": {"status": "UP", "detail": "RedisCache"},
            "broker": {"status": "UP", "detail": "redis"},
            "registry": {"status": "UP", "detail": build_registry},
            "blobs": {"status": "UP", "detail": "filesystem"},
        },
    }


def test_health_checks_the_s3_bucket(client: Client, build_registry: str, s3_blob_store: S3Bucket) -> None:
    assert client.get("/health").json()["checks"]["blobs"] == {"status": "UP", "detail": f"s3://{s3_blob_store.name}"}
    s3_blob_store.client.delete_bucket(Bucket=s3_blob_store.name)
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["checks"]["blobs"]["status"] == "DOWN"
    assert response.json()["message"].startswith("Unhealthy: blobs: ")


def test_health_counts_an_auth_challenge_as_a_live_registry(
    client: Client, settings: SettingsWrapper, basic_image: PushedImage
) -> None:
    settings.WAVE_BUILD_REPO = f"{basic_image.registry.host}/wave/build"
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["checks"]["registry"] == {"status": "UP", "detail": basic_image.registry.host}


def test_health_names_an_unreachable_registry(client: Client, settings: SettingsWrapper) -> None:
    settings.WAVE_BUILD_REPO = f"127.0.0.1:{free_port()}/wave/build"
    response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "DOWN"
    assert body["message"] == "Unhealthy: registry: connection refused or unreachable"
    assert body["checks"]["database"]["status"] == "UP"
    assert body["checks"]["registry"]["status"] == "DOWN"


def test_health_names_an_unreachable_broker_and_cache(
    client: Client, settings: SettingsWrapper, build_registry: str
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings.CELERY_BROKER_URL = dead
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": dead,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        }
    }
    response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["message"].startswith("Unhealthy: cache: ")
    assert "; broker: " in body["message"]
    assert "registry" not in body["message"]
    assert body["checks"]["cache"]["status"] == "DOWN"
    assert body["checks"]["broker"]["status"] == "DOWN"
    assert body["checks"]["registry"]["status"] == "UP"
