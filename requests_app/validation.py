"""The reference's validation rules for container requests, with its exact messages.

Pure functions over the already type-checked request fields: each raises BadRequest with the text
clients search for. Order follows the reference: the kind of request, then encodings and sizes, then
names, platform and repositories, then layers.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from django.conf import settings

from registry.platform import InvalidPlatformError, Platform, parse_platform
from registry.reference import ImageReference, InvalidReferenceError, parse_image, parse_repository
from wave_site.errors import BadRequest

SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
FORBIDDEN_CONTAINER_FILE_PATHS = ("/.docker/config.json", "/kaniko")


def decode_base64(value: str, attribute: str) -> bytes:
    """Strict base64: no stray characters, correct padding, and the canonical encoding of its bytes.

    `QR==` decodes, but its unused bits are not zero: no encoder writes it.
    """
    invalid = BadRequest(f"Invalid '{attribute}' attribute - make sure it encoded as a base64 string")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise invalid from None
    if base64.b64encode(decoded).decode() != value:
        raise invalid
    return decoded


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
            raise BadRequest("Attribute `containerFile` and `packages` conflicts each other")
        if data.get("condaFile"):
            raise BadRequest("Attribute `condaFile` is deprecated - use `packages` instead")
    elif data.get("packages"):
        raise BadRequest("Attribute `packages` is not allowed")
    if data.get("containerImage") and data.get("containerFile"):
        raise BadRequest("Attributes 'containerImage' and 'containerFile' cannot be used in the same request")
    has_source = any(data.get(k) for k in ("containerImage", "containerFile", "condaFile", "spackFile", "packages"))
    if not has_source and data.get("containerImage") is None:
        raise BadRequest("Specify either 'containerImage' or 'containerFile' attribute")
    if data.get("freeze") and not data.get("buildRepository"):
        raise BadRequest("Attribute `buildRepository` must be specified when using freeze mode")


def check_build_files(data: Mapping[str, Any]) -> None:
    container_file = data.get("containerFile")
    if container_file:
        if len(container_file) > settings.WAVE_CONTAINER_FILE_MAX_SIZE:
            raise BadRequest(
                f"Container file size exceeds the maximum allowed size of {settings.WAVE_CONTAINER_FILE_MAX_SIZE} bytes"
            )
        text = decode_base64(container_file, "containerFile").decode("utf-8", "replace")
        for path in FORBIDDEN_CONTAINER_FILE_PATHS:
            if path in text:
                raise BadRequest(f"Invalid container file - it must not access '{path}'")
    conda_file = data.get("condaFile")
    if conda_file:
        if len(conda_file) > settings.WAVE_CONDA_FILE_MAX_SIZE:
            raise BadRequest(
                f"Conda file size exceeds the maximum allowed size of {settings.WAVE_CONDA_FILE_MAX_SIZE} bytes"
            )
        decode_base64(conda_file, "condaFile")
    if data.get("spackFile"):
        decode_base64(data["spackFile"], "spackFile")


def check_image(data: Mapping[str, Any]) -> ImageReference | None:
    value = data.get("containerImage")
    if value is None or (value == "" and data.get("containerFile")):
        return None
    try:
        ref = parse_image(value)
    except InvalidReferenceError as exc:
        raise BadRequest(exc.message) from None
    if ref.digest and any((data.get("containerConfig") or {}).values()):
        raise BadRequest(
            "Container requests made using a SHA256 as tag does not support the 'containerConfig' attribute"
        )
    return ref


def check_platform(value: str | None) -> Platform:
    try:
        return parse_platform(value)
    except InvalidPlatformError as exc:
        raise BadRequest(exc.message) from None


def check_repository(value: str | None, *, label: str) -> None:
    """`label` is "Container build repository" or "Container build cache repository"."""
    if not value:
        return
    if "://" in value:
        raise BadRequest(f"{label} should not include any protocol prefix - offending value: '{value}'")
    if "/" not in value.strip("/"):
        raise BadRequest(f"{label} is invalid or incomplete - offending value: '{value}'")
    if ":" in value.rsplit("/", 1)[1] or "@" in value:
        raise BadRequest(f"{label} should not include any tag suffix - offending value: '{value}'")
    try:
        parse_repository(value)
    except ValueError:
        raise BadRequest(f"{label} is invalid or incomplete - offending value: '{value}'") from None


def check_layer_fields(layer: Mapping[str, Any], index: int) -> None:
    location = layer.get("location") or ""
    if len(location) > settings.WAVE_LAYER_MAX_SIZE:
        raise BadRequest("Container layer exceeds the maximum allowed size")
    if not location.startswith(("data:", "http://", "https://")):
        shown = location[:60]
        raise BadRequest(
            f"Container layer location must be an http(s) URL or a 'data:' payload - offending value: '{shown}'"
        )
    for attribute in ("gzipDigest", "tarDigest"):
        value = layer.get(attribute) or ""
        if not SHA256.fullmatch(value):
            raise BadRequest(f"Invalid container layer '{attribute}' attribute - offending value: '{value}'")


def check_request(data: Mapping[str, Any], *, v2: bool) -> tuple[ImageReference | None, Platform]:
    """Every rule; returns the normalised image (None for builds from a file) and the platform."""
    check_request_kind(data, v2=v2)
    check_build_files(data)
    ref = check_image(data)
    platform = check_platform(data.get("containerPlatform"))
    check_repository(data.get("buildRepository"), label="Container build repository")
    check_repository(data.get("cacheRepository"), label="Container build cache repository")
    for index, layer in enumerate((data.get("containerConfig") or {}).get("layers") or []):
        check_layer_fields(layer, index)
    return ref, platform
