"""What a manifest pull serves: references checked first, the hot path's memory (on the event loop, without a
thread hop), only manifests and indexes, upstream entries keyed by the credentials they were fetched with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from pytest_django.fixtures import Settings

from credentials.clients import registry_client
from registry.augment import Document
from registry.client import RegistryUnauthorizedError
from requests_app.oci.errors import DigestInvalid, ManifestNotFound, ReferenceInvalid, TokenUnknown
from requests_app.oci.manifests import (
    cached_manifest,
    check_reference,
    manifest_for,
    manifest_key,
    manifest_to_serve,
    owned_digests,
    owned_key,
    served_key,
    tag_key,
)
from requests_app.oci.tokens import resolve_token, token_mark_revoked
from tests.conftest import PushedImage
from tests.requests_app.oci.test_tokens import TOKEN, stored_request
from tests.support.fake_registry import FakeRegistry
from wave_site.cache import shared_cache

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("reference", ["latest", "v1.2_3-rc", "_x", "a" * 128, "sha256:" + "0" * 64,
                                       "sha512:" + "ab" * 64])  # fmt: skip
def test_tags_and_digests_are_references(reference: str) -> None:
    check_reference(reference)


@pytest.mark.parametrize("reference", ["\x00", "-x", ".x", "a" * 129, "a b", "..", "%2e%2e"])
def test_other_references_are_invalid(reference: str) -> None:
    with pytest.raises(ReferenceInvalid, match="Invalid manifest reference"):
        check_reference(reference)


@pytest.mark.parametrize("reference", ["sha256:zz", "sha256:" + "0" * 63, "sha256:" + "A" * 64, ":", "x:../y"])
def test_malformed_digests_are_invalid(reference: str) -> None:
    with pytest.raises(DigestInvalid, match="Invalid manifest digest"):
        check_reference(reference)


def serve(reference: str, *, name: str = "library/app") -> Document:
    """A pull as the view makes it: `manifest_to_serve` on an event loop, its thread hop back to this thread."""
    return async_to_sync(manifest_to_serve)(token=TOKEN, name=name, reference=reference, client_ip="192.0.2.1")


def test_served_memory_answers_without_database_or_upstream(
    fake_registry: FakeRegistry, django_assert_num_queries: Any
) -> None:
    digest = fake_registry.image("library/app", "v1")
    stored_request(source_image=f"{fake_registry.host}/library/app:v1")
    first = serve("v1")
    assert first.digest == digest
    assert shared_cache().get(served_key(TOKEN, "library/app", "v1")) == (first.media_type, first.content)
    fake_registry.requests.clear()
    with django_assert_num_queries(0):
        again = serve("v1")
    assert again == first
    assert fake_registry.requests == []
    token_mark_revoked(token=TOKEN)
    with pytest.raises(TokenUnknown):
        serve("v1")


class HopCounter:
    """Stands in for `sync_to_async` in a module: counts the hops it is asked for, then makes them."""

    def __init__(self) -> None:
        self.hops: list[str] = []

    def __call__(self, function: Any, **kwargs: Any) -> Any:
        self.hops.append(getattr(function, "__name__", repr(function)))
        return sync_to_async(function, **kwargs)


@pytest.mark.parametrize("pull_limit", [0, 1000])
def test_cached_pull_takes_no_thread_hop_and_counts_once(
    pull_limit: int, fake_registry: FakeRegistry, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.WAVE_RATE_LIMIT_PULLS_PER_MINUTE = pull_limit
    fake_registry.image("library/app", "v1")
    stored_request(source_image=f"{fake_registry.host}/library/app:v1")
    counter = HopCounter()
    monkeypatch.setattr("requests_app.oci.manifests.sync_to_async", counter)
    monkeypatch.setattr("wave_site.cache.sync_to_async", counter)  # the file-cache fallback's hop
    first = serve("v1")
    assert counter.hops == ["_manifest_uncached"]  # the miss: one hop to the full path
    for _ in range(3):
        assert serve("v1") == first
        assert serve(first.digest).digest == first.digest
    assert counter.hops == ["_manifest_uncached", "_manifest_uncached"]  # the first pull by digest only
    counters = shared_cache().keys("wave:ratelimit:pull:ip:192.0.2.1:*")
    if pull_limit:
        assert sum(shared_cache().get(key) for key in counters) == 7  # every pull counted once (a minute may turn)
    else:
        assert counters == []


def test_generated_config_is_not_served_as_a_manifest(fake_registry: FakeRegistry) -> None:
    fake_registry.image("library/app", "v1")
    stored_request(source_image=f"{fake_registry.host}/library/app:v1", container_config={"env": ["A=1"]})
    manifest = serve("v1")
    config_digest = json.loads(manifest.content)["config"]["digest"]
    assert config_digest in owned_digests(resolve_token(TOKEN, "library/app"))  # generated for this token
    shared_cache().delete(owned_key(TOKEN))
    for _ in range(2):  # the full path (manifest_for), then the cached one (cached_manifest)
        with pytest.raises(ManifestNotFound) as refused:
            serve(config_digest)
        assert refused.value.message == f"Manifest {config_digest} not found"
    assert serve(manifest.digest) == manifest


def credentials_file(tmp_path: Path, image: PushedImage, password: str) -> str:
    path = tmp_path / f"credentials-{password}.json"
    path.write_text(json.dumps({image.registry.host: {"username": image.registry.username, "password": password}}))
    return str(path)


def test_upstream_entries_are_keyed_by_the_credentials_they_were_fetched_with(
    basic_image: PushedImage, settings: Settings, tmp_path: Path
) -> None:
    host = basic_image.registry.host
    assert basic_image.registry.password is not None
    settings.WAVE_REGISTRY_CREDENTIALS = credentials_file(tmp_path, basic_image, basic_image.registry.password)
    stored_request(source_image=basic_image.reference)
    target = resolve_token(TOKEN, "library/busybox")
    identity = registry_client().identity(host)
    assert identity not in {"anonymous", basic_image.registry.password}

    document = manifest_for(target, "latest")
    assert document.digest == basic_image.digest
    assert shared_cache().get(tag_key(host, "library/busybox", "latest", identity=identity)) == document.digest
    cached = shared_cache().get(manifest_key(host, "library/busybox", document.digest, identity=identity))
    assert cached == (document.media_type, document.content)
    assert cached_manifest(target, "latest") == document

    # Another caller's credentials (here: a wrong password) read nothing fetched with these.
    settings.WAVE_REGISTRY_CREDENTIALS = credentials_file(tmp_path, basic_image, "wrong")
    assert registry_client().identity(host) != identity
    assert cached_manifest(target, "latest") is None
    assert cached_manifest(target, document.digest) is None
    with pytest.raises(RegistryUnauthorizedError):
        manifest_for(target, "latest")
