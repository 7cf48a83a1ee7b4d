"""Inspect an image (`POST /v1alpha1/inspect`): its manifest summary and config, read upstream with the caller's
credentials, as a container request would pull it.

The caller is identified as for a container request (a Tower token: `tower_caller_identify`; else the service's
credentials), the registry reached through the same client, SSRF rules and error answers
(`registry_errors_answered`). An index is summarised (its platforms), and the image of the requested platform
(linux/amd64 by default) described: its layers and config. Upstream documents are untrusted: only well-formed
digests, strings and lists of strings are passed on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from credentials.clients import registry_errors_answered
from registry.augment import INDEX_TYPES, AugmentError, media_type_of
from registry.client import RegistryClient, RegistryError, is_digest
from registry.platform import Platform
from registry.reference import ImageReference
from requests_app.upstream import NOT_A_PLATFORM, platform_name
from requests_app.validation import shown_name
from wave_site.errors import InvalidRequest


@dataclass(frozen=True)
class Descriptor:
    """A blob or manifest a document names: digest, size, media type (and an index entry's platform)."""

    digest: str
    size: int
    media_type: str
    os: str = ""
    architecture: str = ""
    variant: str = ""


@dataclass(frozen=True)
class Inspection:
    """What `POST /v1alpha1/inspect` answers: the document the reference names, the image of one platform."""

    ref: ImageReference
    digest: str  # of what the reference names: an index or an image manifest
    media_type: str
    platforms: list[Descriptor]  # an index's entries; empty for a single image
    manifest: Descriptor  # the image manifest described (the index entry of the platform)
    config_descriptor: Descriptor
    layers: list[Descriptor]
    config: dict[str, Any] = field(default_factory=dict)  # wire names: architecture, os, entrypoint, env...


def container_inspect(
    *, ref: ImageReference, image_name: str, platform: Platform, is_platform_named: bool, client: RegistryClient
) -> Inspection:
    """Read the image upstream with `client` (the caller's credentials): an index and the entry of `platform`
    (refused when a platform named is not offered), its manifest and config. 400 for an image that is missing or
    not readable with these credentials, or a refused host; 503 when the registry is unreachable."""
    shown = shown_name(image_name)
    with registry_errors_answered(shown):
        content, declared, digest = client.get_manifest(ref.registry, ref.repository, ref.version)
        media_type, document = _document(content, declared, ref)
        platforms: list[Descriptor] = []
        manifest = Descriptor(digest=digest, size=len(content), media_type=media_type)
        image = document
        if media_type in INDEX_TYPES:
            platforms = _index_entries(document)
            manifest = _entry_for(platforms, platform, named=is_platform_named, shown=shown)
            child, child_declared, _ = client.get_manifest(ref.registry, ref.repository, manifest.digest)
            child_type, image = _document(child, child_declared, ref)
            manifest = Descriptor(
                digest=manifest.digest, size=len(child), media_type=child_type, os=manifest.os,
                architecture=manifest.architecture, variant=manifest.variant,
            )  # fmt: skip
        config_descriptor = _descriptor(image.get("config"))
        if config_descriptor is None:
            raise RegistryError(f"Registry '{ref.registry}' sent an image manifest without a valid config")
        config_bytes = client.get_blob(ref.registry, ref.repository, config_descriptor.digest)
    config = _config_summary(config_bytes)
    offered: dict[str, str] = {key: str(config[key]) for key in ("os", "architecture", "variant") if key in config}
    if not platforms and is_platform_named and offered.get("architecture") and not platform.matches(offered):
        raise InvalidRequest(
            f"Container image '{shown}' is not available for platform '{platform}' - available platforms: "
            f"{platform_name(offered)}"
        )  # as a container request for it would be
    layers = [layer for layer in map(_descriptor, _list(image.get("layers"))) if layer is not None]
    return Inspection(
        ref=ref, digest=digest, media_type=media_type, platforms=platforms, manifest=manifest,
        config_descriptor=config_descriptor, layers=layers, config=config,
    )  # fmt: skip


def _document(content: bytes, declared: str, ref: ImageReference) -> tuple[str, dict[str, Any]]:
    try:
        media_type = media_type_of(content, declared)
        document = json.loads(content)
    except (AugmentError, ValueError, RecursionError):
        document = None
    if not isinstance(document, dict):
        raise RegistryError(f"Registry '{ref.registry}' sent a manifest that is not a JSON object")
    return media_type, document


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _descriptor(value: object) -> Descriptor | None:
    """A descriptor with a well-formed digest and a size; None for anything else."""
    if not isinstance(value, dict) or not is_digest(value.get("digest")):
        return None
    size = value.get("size")
    platform = _object(value.get("platform"))
    return Descriptor(
        digest=value["digest"], size=size if isinstance(size, int) and size >= 0 else 0,
        media_type=_text(value.get("mediaType")), os=_text(platform.get("os")),
        architecture=_text(platform.get("architecture")), variant=_text(platform.get("variant")),
    )  # fmt: skip


def _index_entries(document: dict[str, Any]) -> list[Descriptor]:
    """An index's image entries (attestations, `unknown/unknown`, left out)."""
    entries = [_descriptor(entry) for entry in _list(document.get("manifests"))]
    return [entry for entry in entries if entry is not None and entry.os != NOT_A_PLATFORM]


def _platform_of(entry: Descriptor) -> dict[str, str]:
    return {"os": entry.os, "architecture": entry.architecture, "variant": entry.variant}


def _entry_for(entries: list[Descriptor], platform: Platform, *, named: bool, shown: str) -> Descriptor:
    """The entry of `platform`; without a platform named, the first entry when the default is not offered."""
    for entry in entries:
        if platform.matches(_platform_of(entry)):
            return entry
    if entries and not named:
        return entries[0]
    names = ", ".join(dict.fromkeys(platform_name(_platform_of(entry)) for entry in entries if entry.os))
    raise InvalidRequest(
        f"Container image '{shown}' is not available for platform '{platform}' - available platforms: {names}"
    )


def _strings(value: object) -> list[str] | None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    return list(value)


def _config_summary(config_bytes: bytes) -> dict[str, Any]:
    """The image config's platform, entrypoint, cmd, env and working dir (wire names); what is malformed is left
    out."""
    try:
        document = json.loads(config_bytes)
    except (ValueError, RecursionError):
        document = None
    if not isinstance(document, dict):
        return {}
    runtime = _object(document.get("config"))
    rootfs = _object(document.get("rootfs"))
    summary = {
        "architecture": _text(document.get("architecture")),
        "os": _text(document.get("os")),
        "variant": _text(document.get("variant")),
        "created": _text(document.get("created")),
        "entrypoint": _strings(runtime.get("Entrypoint")),
        "cmd": _strings(runtime.get("Cmd")),
        "env": _strings(runtime.get("Env")),
        "workingDir": _text(runtime.get("WorkingDir")),
        "user": _text(runtime.get("User")),
        "diffIds": _strings(rootfs.get("diff_ids")),
    }
    return {key: value for key, value in summary.items() if value not in (None, "")}
