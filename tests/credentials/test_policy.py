"""This service's SSRF policy: its allow list and its own registries (the built-in one under each loopback name)."""

from __future__ import annotations

import pytest
from pytest_django.fixtures import Settings

from credentials.policy import connect_check, destination_check, own_registries, url_destination_check
from registry.ssrf import DestinationRefusedError


@pytest.fixture
def local_registry(settings: Settings) -> None:
    """As `make run` configures the service: its own registry on localhost:5000, nothing allowed."""
    settings.WAVE_BUILD_REPO = "localhost:5000/wave/build"
    settings.WAVE_CACHE_REPO = "localhost:5000/wave/cache"
    settings.WAVE_SSRF_ALLOW = []


def test_loopback_own_registry_is_trusted_under_every_loopback_name(local_registry: None) -> None:
    assert own_registries() == ["localhost:5000", "127.0.0.1:5000", "[::1]:5000"]
    for authority in ("localhost:5000", "127.0.0.1:5000", "[::1]:5000"):
        destination_check(authority)
    connect_check("127.0.0.1", 5000, "127.0.0.1")
    connect_check("localhost", 5000, "::1")


@pytest.mark.parametrize(("authority", "host"), [("127.0.0.1:5999", "127.0.0.1"), ("localhost:5001", "localhost")])
def test_other_local_registries_are_still_refused_with_the_way_out(
    local_registry: None, authority: str, host: str
) -> None:
    with pytest.raises(DestinationRefusedError) as error:
        destination_check(authority)
    assert error.value.message == (
        f"Destination '{host}' is not allowed: it resolves to a private or local address"
        f" (set WAVE_SSRF_ALLOW={host} to allow it)"
    )
    with pytest.raises(DestinationRefusedError):
        connect_check(host, int(authority.rsplit(":", 1)[1]), "127.0.0.1")


def test_allow_list_opens_a_local_registry(local_registry: None, settings: Settings) -> None:
    settings.WAVE_SSRF_ALLOW = ["127.0.0.1"]
    destination_check("127.0.0.1:5999")
    connect_check("127.0.0.1", 5999, "127.0.0.1")


def test_remote_own_registry_is_trusted_as_written_only(settings: Settings) -> None:
    settings.WAVE_BUILD_REPO = "registry.internal:5000/wave/build"
    settings.WAVE_CACHE_REPO = None
    settings.WAVE_SSRF_ALLOW = []
    assert own_registries() == ["registry.internal:5000"]
    with pytest.raises(DestinationRefusedError):
        destination_check("127.0.0.1:5000")


def test_malformed_layer_urls_are_refused_without_a_hint(local_registry: None) -> None:
    with pytest.raises(DestinationRefusedError) as error:
        url_destination_check("http://example.org:port/layer.tar.gz")
    assert error.value.message == "Destination 'example.org:port' is not allowed: the port is invalid"
    with pytest.raises(DestinationRefusedError) as error:
        url_destination_check("http:///layer.tar.gz")
    assert error.value.message == "Destination 'http:///layer.tar.gz' is not allowed: the URL names no host"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://[::1/x", "Destination '[::1' is not allowed: the host is invalid"),
        ("http://alice:pw@[::1/x?sig=1", "Destination '[::1' is not allowed: the host is invalid"),
        ("http://[zz]/x", "Destination '[zz]' is not allowed: the host is invalid"),
        ("http://h:99999/x", "Destination 'h:99999' is not allowed: the port is invalid"),
    ],
)
def test_layer_urls_that_do_not_parse_are_refused_not_raised(local_registry: None, url: str, message: str) -> None:
    with pytest.raises(DestinationRefusedError) as error:
        url_destination_check(url)
    assert error.value.message == message
