from __future__ import annotations

import pytest

from registry.endpoints import is_insecure, registry_base_url, split_host_port

DEFAULT_INSECURE = ["localhost", "127.0.0.1"]


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        ("quay.io", ("quay.io", None)),
        ("LOCALHOST:5000", ("localhost", 5000)),
        ("[::1]:5000", ("::1", 5000)),
        ("[::1]", ("::1", None)),
    ],
)
def test_split_host_port(authority: str, expected: tuple[str, int | None]) -> None:
    assert split_host_port(authority) == expected


@pytest.mark.parametrize("authority", ["localhost", "localhost:5000", "127.0.0.1:41234", "127.0.0.1"])
def test_localhost_and_loopback_are_insecure_on_any_port_by_default(authority: str) -> None:
    assert is_insecure(authority, DEFAULT_INSECURE)


def test_entry_with_port_matches_only_that_port() -> None:
    assert is_insecure("reg.local:5000", ["reg.local:5000"])
    assert not is_insecure("reg.local:5001", ["reg.local:5000"])
    assert not is_insecure("quay.io", DEFAULT_INSECURE)


@pytest.mark.parametrize(
    ("authority", "url"),
    [
        ("docker.io", "https://registry-1.docker.io"),
        ("index.docker.io", "https://registry-1.docker.io"),
        ("quay.io", "https://quay.io"),
        ("localhost:5000", "http://localhost:5000"),
        ("127.0.0.1:8443", "http://127.0.0.1:8443"),
    ],
)
def test_registry_base_url(authority: str, url: str) -> None:
    assert registry_base_url(authority, DEFAULT_INSECURE) == url
