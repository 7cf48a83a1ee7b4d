"""Writes of container requests: accept (validate, check upstream, store), revoke, purge."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from credentials.callers import Caller, tower_endpoint_of
from credentials.clients import registry_client
from credentials.policy import url_destination_check
from registry.client import (
    ManifestUnknownError,
    RegistryDeniedError,
    RegistryError,
    RegistryUnauthorizedError,
)
from registry.reference import ImageReference
from registry.ssrf import DestinationRefusedError
from requests_app.layers import LayerSpec, decode_data_layer
from requests_app.models import ContainerRequest, InjectedLayer
from requests_app.oci.manifests import upstream_check_key
from requests_app.oci.tokens import token_mark_revoked
from requests_app.ratelimit import rate_limit_acquire
from requests_app.selectors import injected_layer_verified_before
from requests_app.validation import check_request, is_build_request
from wave_site.blobstore import blob_key, blob_store_put
from wave_site.cache import shared_cache
from wave_site.errors import BadRequest, NotFound, ServiceUnavailable, WaveError

logger = logging.getLogger(__name__)


class BuildsUnavailable(WaveError):
    status_code = 501


def new_token() -> str:
    """12 lowercase hex characters: 48 random bits from the OS, never all zero."""
    while True:
        token = secrets.token_hex(6)
        if int(token, 16) != 0:
            return token


def target_image_for(token: str, ref: ImageReference) -> str:
    authority = urlsplit(settings.WAVE_SERVER_URL).netloc
    return f"{authority}/wt/{token}/{ref.path_and_version}"


def upstream_digest(ref: ImageReference, *, shown_name: str) -> str:
    """The source manifest's digest (HEAD upstream with the resolved credentials), cached briefly."""
    key = upstream_check_key(ref, identity=registry_client().identity(ref.registry))
    cached = shared_cache().get(key)
    if isinstance(cached, str):
        return cached
    try:
        info = registry_client().head_manifest(ref)
    except DestinationRefusedError as exc:
        raise BadRequest(exc.message) from None
    except (ManifestUnknownError, RegistryUnauthorizedError, RegistryDeniedError):
        raise BadRequest(f"Container image '{shown_name}' does not exist or access is not authorized") from None
    except RegistryError as exc:
        raise ServiceUnavailable(exc.message) from None
    shared_cache().set(key, info.digest, settings.WAVE_UPSTREAM_CACHE_TTL)
    return info.digest


def _layer_specs(data: dict[str, Any]) -> list[LayerSpec]:
    specs = []
    for position, layer in enumerate((data.get("containerConfig") or {}).get("layers") or []):
        location = layer["location"]
        inline = location.startswith("data:")
        payload = None
        if not inline:
            try:
                url_destination_check(location)
            except DestinationRefusedError as exc:
                raise BadRequest(exc.message) from None
        else:
            payload = decode_data_layer(
                location, gzip_digest=layer["gzipDigest"], gzip_size=layer["gzipSize"], tar_digest=layer["tarDigest"]
            )
        specs.append(
            LayerSpec(
                position=position,
                url="" if inline else location,
                gzip_digest=layer["gzipDigest"],
                gzip_size=layer["gzipSize"],
                tar_digest=layer["tarDigest"],
                data=payload,
            )
        )
    return specs


def _stored_config(data: dict[str, Any]) -> dict[str, Any]:
    config = data.get("containerConfig") or {}
    return {key: config[key] for key in ("entrypoint", "cmd", "env", "workingDir") if config.get(key) is not None}


@dataclass(frozen=True)
class Accepted:
    request: ContainerRequest | None  # None for a dry run: nothing stored
    source: ImageReference


def container_request_create(*, data: dict[str, Any], api_version: str, caller: Caller) -> Accepted:
    """Validate a request, check its source upstream, store it with its layers; the stored request.

    Nothing is stored when any check fails. Network I/O (the upstream check) happens before the
    transaction; `data:` layers are verified in memory first and written to the blob store only
    once the request is known to be good.
    """
    v2 = api_version == ContainerRequest.ApiVersion.V2
    ref, platform = check_request(data, v2=v2)
    if is_build_request(data):
        rate_limit_acquire(kind="build", key=caller.rate_limit_key)
        raise BuildsUnavailable(
            "Container builds (containerFile, condaFile, spackFile, packages, freeze, mirror) "
            "are not available on this service yet"
        )
    assert ref is not None  # a request that is not a build names an image
    layers = _layer_specs(data)
    source_digest = upstream_digest(ref, shown_name=data["containerImage"])
    if v2 and data.get("dryRun"):
        return Accepted(request=None, source=ref)

    for layer in layers:
        if layer.data is not None:
            blob_store_put(layer.gzip_digest, layer.data)
    # Asked before the transaction: the blob store may be a remote one (S3).
    stored = {layer.gzip_digest for layer in layers if not layer.is_inline and _verified_before(layer)}

    now = timezone.now()
    for _attempt in range(5):
        token = new_token()
        request = ContainerRequest(
            token=token,
            api_version=api_version,
            source_image=str(ref),
            target_image=target_image_for(token, ref),
            platform=str(platform),
            container_config=_stored_config(data),
            fingerprint=data.get("fingerprint") or "",
            client_timestamp=data.get("timestamp") or "",
            client_ip=caller.ip,
            tower_endpoint=tower_endpoint_of(data.get("towerEndpoint")),
            tower_workspace_id=data.get("towerWorkspaceId"),
            user_id=caller.user_id,
            user_name=caller.user_name,
            source_digest=source_digest if ref.digest is None else ref.digest,
            created_at=now,
            expires_at=now + dt.timedelta(seconds=settings.WAVE_TOKEN_TTL),
        )
        try:
            # One statement needs no transaction of its own; with layers, the rows land together or not at all.
            with transaction.atomic() if layers else contextlib.nullcontext():
                request.save(force_insert=True)
                rows = InjectedLayer.objects.bulk_create(_layer_rows(request, layers, stored=stored))
                for row in rows:
                    if row.state == InjectedLayer.State.PENDING:
                        transaction.on_commit(functools.partial(_enqueue_download, row.pk))
        except IntegrityError:
            continue  # token collision: 48 bits make it rare, a new token fixes it
        return Accepted(request=request, source=ref)
    raise ServiceUnavailable("Could not allocate a container token, retry later")


def _verified_before(layer: LayerSpec) -> bool:
    return injected_layer_verified_before(
        url=layer.url, gzip_digest=layer.gzip_digest, gzip_size=layer.gzip_size, tar_digest=layer.tar_digest
    )


def _enqueue_download(layer_pk: int) -> None:
    from requests_app.tasks import layer_download_task

    layer_download_task.delay(layer_pk)


def _layer_rows(request: ContainerRequest, layers: list[LayerSpec], *, stored: set[str]) -> list[InjectedLayer]:
    """Rows for the layers; inline ones, and those whose digest (`stored`) was verified before, are ready at once."""
    return [
        InjectedLayer(
            request=request,
            position=layer.position,
            kind=InjectedLayer.Kind.DATA if layer.is_inline else InjectedLayer.Kind.HTTP,
            url=layer.url,
            gzip_digest=layer.gzip_digest,
            gzip_size=layer.gzip_size,
            tar_digest=layer.tar_digest,
            state=InjectedLayer.State.READY if ready else InjectedLayer.State.PENDING,
            blob_key=blob_key(layer.gzip_digest) if ready else "",
            finished_at=request.created_at if ready else None,
        )
        for layer in layers
        for ready in [layer.is_inline or layer.gzip_digest in stored]
    ]


def container_request_revoke(*, token: str) -> ContainerRequest:
    """Revoke an active token: pulls with it are refused from now on."""
    now = timezone.now()
    updated = ContainerRequest.objects.filter(token=token, revoked_at__isnull=True, expires_at__gt=now).update(
        revoked_at=now
    )
    if updated != 1:
        raise NotFound(f"Unknown container token '{token}'")
    # The marker outlives any cached copy of the token, so that no process can serve it again.
    token_mark_revoked(token=token)
    logger.info("container token %s revoked", token)
    return ContainerRequest.objects.get(token=token)


def container_request_purge(*, older_than: dt.timedelta | None = None) -> int:
    """Delete requests expired longer than the retention period ago; the number deleted."""
    retention = older_than if older_than is not None else dt.timedelta(days=settings.WAVE_REQUEST_RETENTION_DAYS)
    cutoff = timezone.now() - retention
    _, per_model = ContainerRequest.objects.filter(expires_at__lt=cutoff).delete()
    return per_model.get(ContainerRequest._meta.label, 0)
