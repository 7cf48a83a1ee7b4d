"""Token resolution: one check (known, not revoked, not expired, its image), cached, revocation at once."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from requests_app.models import ContainerRequest, InjectedLayer
from requests_app.oci.errors import ImageNameMismatch, TokenUnknown
from requests_app.oci.tokens import (
    ProxyTarget,
    cached_target,
    resolve_token,
    revoked_key,
    target_key,
    token_mark_revoked,
)
from wave_site.cache import shared_cache

pytestmark = pytest.mark.django_db
TOKEN = "0123456789ab"


def stored_request(
    *, token: str = TOKEN, source_image: str = "127.0.0.1:5000/library/busybox:latest", expires_in: int = 3600,
    **fields: Any,
) -> ContainerRequest:  # fmt: skip
    now = timezone.now()
    return ContainerRequest.objects.create(
        token=token, source_image=source_image, target_image=f"wave.test/wt/{token}/x",
        expires_at=now + dt.timedelta(seconds=expires_in), **fields,
    )  # fmt: skip


def test_target_says_what_the_token_authorises(django_assert_num_queries: Any) -> None:
    request = stored_request(container_config={"env": ["A=1"], "workingDir": "/w"})
    InjectedLayer.objects.create(request=request, position=0, kind="data", gzip_digest="sha256:" + "a" * 64,
                                 gzip_size=10, tar_digest="sha256:" + "b" * 64)  # fmt: skip
    with django_assert_num_queries(2):  # the request and its layers
        target = resolve_token(TOKEN, "library/busybox")
    assert (target.pk, target.registry, target.repository, target.source_version, target.platform) == (
        request.pk, "127.0.0.1:5000", "library/busybox", "latest", "linux/amd64",
    )  # fmt: skip
    assert target.config.env == ("A=1",)
    assert target.config.working_dir == "/w"
    assert target.layer_digests == frozenset({"sha256:" + "a" * 64})
    assert target.is_augmented
    with django_assert_num_queries(0):  # cached
        assert resolve_token(TOKEN, "library/busybox") == target


def test_unknown_expired_and_malformed_tokens_are_unknown(django_assert_num_queries: Any) -> None:
    stored_request(expires_in=-1)
    for token in (TOKEN, "ffffffffffff"):
        with pytest.raises(TokenUnknown, match=f"Unknown Wave container for token '{token}'"):
            resolve_token(token, "library/busybox")
    with django_assert_num_queries(0), pytest.raises(TokenUnknown):
        resolve_token("\x00" * 12, "library/busybox")  # never sent to the database


def test_another_image_path_is_refused() -> None:
    stored_request()
    with pytest.raises(ImageNameMismatch, match="Image path 'library/other' does not match the image of token"):
        resolve_token(TOKEN, "library/other")


def test_revocation_beats_a_cached_target(django_assert_num_queries: Any) -> None:
    stored_request()
    resolve_token(TOKEN, "library/busybox")
    ContainerRequest.objects.filter(token=TOKEN).update(revoked_at=timezone.now())
    token_mark_revoked(token=TOKEN)
    assert shared_cache().get(revoked_key(TOKEN)) == 1
    with django_assert_num_queries(0), pytest.raises(TokenUnknown):
        resolve_token(TOKEN, "library/busybox")
    # Even a copy cached by a process that had not seen the revocation is refused.
    shared_cache().set(target_key(TOKEN), resolve_target_copy(), 30)
    with pytest.raises(TokenUnknown):
        cached_target(TOKEN, "library/busybox")


def resolve_target_copy() -> ProxyTarget:
    from registry.augment import ContainerConfig

    return ProxyTarget(pk=1, token=TOKEN, registry="r", repository="library/busybox", source_version="latest",
                       platform="linux/amd64", expires_at=4e9, config=ContainerConfig(),
                       layer_digests=frozenset())  # fmt: skip


def test_cached_target_reads_its_entries_in_one_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    from redis.connection import AbstractConnection

    stored_request()
    resolve_token(TOKEN, "library/busybox")
    shared_cache().set("wave:test:extra", "value", 30)
    sent: list[object] = []
    send = AbstractConnection.send_packed_command

    def counting(self: AbstractConnection, *args: Any, **kwargs: Any) -> Any:
        sent.append(args[0])
        return send(self, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    target, found = cached_target(TOKEN, "library/busybox", "wave:test:extra")
    assert target is not None
    assert target.token == TOKEN
    assert found["wave:test:extra"] == "value"
    assert len(sent) == 1
