"""The reference's validation rules for container requests, with its exact messages; the typed spec.

Pure functions over the already type-checked request fields (wire names): each raises InvalidRequest with
the text clients search for. Order follows the reference: the kind of request, then encodings and
sizes, then names, platform and repositories, then the container config and its layers.
`container_request_spec` runs them all and returns the `ContainerRequestSpec` services take.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from credentials.callers import tower_endpoint_of
from registry.platform import InvalidPlatformError, Platform, parse_platform
from registry.reference import ImageReference, InvalidReferenceError, parse_image, parse_repository
from requests_app.models import ContainerRequest
from requests_app.specs import BuildSpec, ContainerConfigSpec, ContainerRequestSpec, RequestedLayer, TowerSpec
from wave_site.errors import InvalidRequest
from wave_site.redact import redact_url

SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
FORBIDDEN_CONTAINER_FILE_PATHS = ("/.docker/config.json", "/kaniko")
# Whitespace, control and invisible format characters: never part of a URL as sent on the wire.
NOT_IN_URL = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")


def decode_base64(value: str, attribute: str) -> bytes:
    """Strict base64: no stray characters, correct padding, and the canonical encoding of its bytes.

    `QR==` decodes, but its unused bits are not zero: no encoder writes it.
    """
    invalid = InvalidRequest(f"Invalid '{attribute}' attribute - make sure it encoded as a base64 string")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise invalid from None
    if base64.b64encode(decoded).decode() != value:
        raise invalid
    return decoded


def shown_name(value: str) -> str:
    """An image name, repository or layer location as messages echo it: user info (with or without a scheme),
    signatures and control characters never go back to the client (wave_site.redact)."""
    return redact_url(value)


def is_build_request(data: Mapping[str, Any]) -> bool:
    return bool(
        data.get("containerFile")
        or data.get("condaFile")
        or data.get("spackFile")
        or data.get("packages")
        or data.get("freeze")
        or data.get("mirror")
    )


def check_request_kind(data: Mapping[str, Any], *, v2: bool) -> None:
    if v2:
        if data.get("containerFile") and data.get("packages"):
            raise InvalidRequest("Attribute `containerFile` and `packages` conflicts each other")
        if data.get("condaFile"):
            raise InvalidRequest("Attribute `condaFile` is deprecated - use `packages` instead")
    elif data.get("packages"):
        raise InvalidRequest("Attribute `packages` is not allowed")
    if data.get("containerImage") and data.get("containerFile"):
        raise InvalidRequest("Attributes 'containerImage' and 'containerFile' cannot be used in the same request")
    has_source = any(data.get(k) for k in ("containerImage", "containerFile", "condaFile", "spackFile", "packages"))
    if not has_source and data.get("containerImage") is None:
        raise InvalidRequest("Specify either 'containerImage' or 'containerFile' attribute")
    if data.get("freeze") and not data.get("buildRepository"):
        raise InvalidRequest("Attribute `buildRepository` must be specified when using freeze mode")


@dataclass(frozen=True)
class Recipes:
    """The build files of a request, decoded."""

    container_file: str | None = None
    conda_file: str | None = None
    spack_file: str | None = None


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def check_build_files(data: Mapping[str, Any]) -> Recipes:
    container_text = conda_text = spack_text = None
    container_file = data.get("containerFile")
    if container_file:
        if len(container_file) > settings.WAVE_CONTAINER_FILE_MAX_SIZE:
            raise InvalidRequest(
                f"Container file size exceeds the maximum allowed size of {settings.WAVE_CONTAINER_FILE_MAX_SIZE} bytes"
            )
        container_text = _text(decode_base64(container_file, "containerFile"))
        for path in FORBIDDEN_CONTAINER_FILE_PATHS:
            if path in container_text:
                raise InvalidRequest(f"Invalid container file - it must not access '{path}'")
    conda_file = data.get("condaFile")
    if conda_file:
        if len(conda_file) > settings.WAVE_CONDA_FILE_MAX_SIZE:
            raise InvalidRequest(
                f"Conda file size exceeds the maximum allowed size of {settings.WAVE_CONDA_FILE_MAX_SIZE} bytes"
            )
        conda_text = _text(decode_base64(conda_file, "condaFile"))
    if data.get("spackFile"):
        spack_text = _text(decode_base64(data["spackFile"], "spackFile"))
    return Recipes(container_file=container_text, conda_file=conda_text, spack_file=spack_text)


def check_packages(value: Any) -> Mapping[str, Any] | None:
    """v2 `packages`: an object naming its `type` (its entries and options are checked where the recipe is
    generated, builds.recipes); None when absent or empty."""
    if not value:
        return None
    if not isinstance(value, Mapping):
        raise InvalidRequest("Attribute 'packages' must be an object with a 'type' (CONDA or CRAN) and 'entries'")
    if value.get("type") in (None, ""):
        raise InvalidRequest("Attribute 'packages.type' is missing: use CONDA or CRAN")
    return value


def check_image(data: Mapping[str, Any]) -> ImageReference | None:
    value = data.get("containerImage")
    if value is None or (value == "" and data.get("containerFile")):
        return None
    try:
        ref = parse_image(value)
    except InvalidReferenceError as exc:
        # A name written as a URL may carry credentials (`https://user:pass@host/...`): never send them back.
        raise InvalidRequest(exc.message.replace(value, shown_name(value))) from None
    if ref.digest and any((data.get("containerConfig") or {}).values()):
        raise InvalidRequest(
            "Container requests made using a SHA256 as tag does not support the 'containerConfig' attribute"
        )
    return ref


def check_platform(value: str | None) -> Platform:
    try:
        return parse_platform(value)
    except InvalidPlatformError as exc:
        raise InvalidRequest(exc.message) from None


def check_repository(value: str | None, *, label: str) -> None:
    """`label` is "Container build repository" or "Container build cache repository"."""
    if not value:
        return
    if "://" in value:
        raise InvalidRequest(f"{label} should not include any protocol prefix - offending value: '{shown_name(value)}'")
    if "/" not in value.strip("/"):
        raise InvalidRequest(f"{label} is invalid or incomplete - offending value: '{shown_name(value)}'")
    if ":" in value.rsplit("/", 1)[1] or "@" in value:
        raise InvalidRequest(f"{label} should not include any tag suffix - offending value: '{shown_name(value)}'")
    try:
        parse_repository(value)
    except ValueError:
        raise InvalidRequest(f"{label} is invalid or incomplete - offending value: '{shown_name(value)}'") from None


def check_env(entries: list[str]) -> None:
    """Each entry sets a variable: `NAME=value` (the value may be empty, the name may not)."""
    for entry in entries:
        name, equals, _value = entry.partition("=")
        if not equals or not name:
            shown = entry[:60]
            raise InvalidRequest(
                f"Invalid container config 'env' entry - expected the form NAME=value, offending value: '{shown}'"
            )


def check_config_size(config: Mapping[str, Any]) -> None:
    """Entrypoint, cmd, env and workingDir are stored with the token and read by every pull: bounded together."""
    values = {key: config.get(key) for key in ("entrypoint", "cmd", "env", "workingDir")}
    size = len(json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode())
    limit = settings.WAVE_MAX_CONFIG_BYTES
    if size > limit:
        raise InvalidRequest(
            f"Container config size exceeds the maximum allowed size of {limit} bytes"
            " (entrypoint, cmd, env and workingDir together)"
        )


def check_layer_fields(layer: Mapping[str, Any], index: int) -> RequestedLayer:
    location = layer.get("location") or ""
    if len(location) > settings.WAVE_LAYER_MAX_SIZE:
        raise InvalidRequest("Container layer exceeds the maximum allowed size")
    if not location.startswith(("data:", "http://", "https://")):
        shown = shown_name(location)[:60]
        raise InvalidRequest(
            f"Container layer location must be an http(s) URL or a 'data:' payload - offending value: '{shown}'"
        )
    if not location.startswith("data:") and NOT_IN_URL.search(location):
        # A URL is sent as it is written: a CR/LF would split the request line, a space is no URL at all.
        shown = shown_name(location)[:80]
        raise InvalidRequest(
            f"Container layer location must not contain spaces or control characters - offending value: '{shown}'"
        )
    for attribute in ("gzipDigest", "tarDigest"):
        value = layer.get(attribute) or ""
        if not SHA256.fullmatch(value):
            raise InvalidRequest(f"Invalid container layer '{attribute}' attribute - offending value: '{value}'")
    return RequestedLayer(
        location=location, gzip_digest=layer["gzipDigest"], gzip_size=layer["gzipSize"], tar_digest=layer["tarDigest"]
    )


def check_container_config(config: Mapping[str, Any]) -> ContainerConfigSpec:
    check_env(config.get("env") or [])
    check_config_size(config)
    layers = tuple(check_layer_fields(layer, index) for index, layer in enumerate(config.get("layers") or []))

    def strings(key: str) -> tuple[str, ...] | None:
        value = config.get(key)
        return None if value is None else tuple(value)

    return ContainerConfigSpec(
        entrypoint=strings("entrypoint"),
        cmd=strings("cmd"),
        env=strings("env"),
        working_dir=config.get("workingDir"),
        layers=layers,
    )


def container_request_spec(data: Mapping[str, Any], *, api_version: str) -> ContainerRequestSpec:
    """Every rule, in the reference's order; the typed request. `data` is an input serializer's output."""
    check_request_kind(data, v2=api_version == ContainerRequest.ApiVersion.V2)
    recipes = check_build_files(data)
    ref = check_image(data)
    platform = check_platform(data.get("containerPlatform"))
    check_repository(data.get("buildRepository"), label="Container build repository")
    check_repository(data.get("cacheRepository"), label="Container build cache repository")
    config = check_container_config(data.get("containerConfig") or {})
    build = None
    if is_build_request(data):
        build = BuildSpec(
            container_file=recipes.container_file,
            conda_file=recipes.conda_file,
            spack_file=recipes.spack_file,
            packages=check_packages(data.get("packages")),
            build_repository=data.get("buildRepository") or None,
            cache_repository=data.get("cacheRepository") or None,
            name_strategy=data.get("nameStrategy"),
            build_context=check_layer_fields(data["buildContext"], 0) if data.get("buildContext") else None,
            format=data.get("format"),
            workflow_id=data.get("workflowId"),
            freeze=bool(data.get("freeze")),
            mirror=bool(data.get("mirror")),
        )
    return ContainerRequestSpec(
        api_version=api_version,
        image=ref,
        image_name=data.get("containerImage") or "",
        platform=platform,
        is_platform_named=bool(data.get("containerPlatform")),
        config=config,
        tower=TowerSpec(
            endpoint=tower_endpoint_of(data.get("towerEndpoint")),
            workspace_id=data.get("towerWorkspaceId"),
            access_token=data.get("towerAccessToken") or None,
            refresh_token=data.get("towerRefreshToken") or None,
        ),
        build=build,
        dry_run=bool(data.get("dryRun")),
        fingerprint=data.get("fingerprint") or "",
        timestamp=data.get("timestamp") or "",
    )
