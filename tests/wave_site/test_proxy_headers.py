"""X-Forwarded-For is believed only from WAVE_TRUSTED_PROXIES: a client cannot pick the address it is counted by."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.network import free_port
from tests.support.service import RunningService, start_service

pytestmark = pytest.mark.slow


def _service(tmp_path: Path, **env: str) -> Iterator[RunningService]:
    service = start_service(tmp_path / "data", WAVE_REGISTRY_PORT=str(free_port()), WAVE_LOGIN_MAX_FAILURES="2", **env)
    try:
        service.wait_ready(timeout=60)
        yield service
    finally:
        service.terminate()


@pytest.fixture
def untrusting(tmp_path: Path) -> Iterator[RunningService]:
    yield from _service(tmp_path)


@pytest.fixture
def trusting_loopback(tmp_path: Path) -> Iterator[RunningService]:
    yield from _service(tmp_path, WAVE_TRUSTED_PROXIES="127.0.0.1")


def _failed_revokes(service: RunningService, forwarded_for: list[str]) -> list[int]:
    """Wrong-password DELETEs, each claiming another client address."""
    return [
        httpx.delete(
            f"{service.url}/container-token/0123456789ab",
            auth=("admin", "wrong"),
            headers={"X-Forwarded-For": address},
            timeout=10,
        ).status_code
        for address in forwarded_for
    ]


def test_forwarded_for_from_an_untrusted_peer_does_not_escape_the_login_throttle(untrusting: RunningService) -> None:
    statuses = _failed_revokes(untrusting, ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"])
    assert statuses == [401, 401, 429, 429]


def test_forwarded_for_from_a_trusted_proxy_names_the_client(trusting_loopback: RunningService) -> None:
    statuses = _failed_revokes(trusting_loopback, ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.1", "10.0.0.1"])
    assert statuses == [401, 401, 401, 401, 429]
