"""Augmenting an image: new config and manifest documents, and index rewriting.

Pure functions over bytes: every document produced is serialised once, and its digest is the sha256
of exactly those bytes, which is what the proxy then serves. Upstream documents are untrusted: every
digest they name (config, layers, index entries) must be well-formed before it is used or passed on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from registry.client import is_digest
from registry.platform import Platform

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})


class AugmentError(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class InjectedLayerRef:
    gzip_digest: str
    gzip_size: int
    tar_digest: str


@dataclass(frozen=True)
class ContainerConfig:
    entrypoint: Sequence[str] | None = None
    cmd: Sequence[str] | None = None
    env: Sequence[str] = ()
    working_dir: str | None = None
    layers: Sequence[InjectedLayerRef] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.entrypoint or self.cmd or self.env or self.working_dir or self.layers)


@dataclass(frozen=True)
class Document:
    """Bytes to serve with their media type and digest."""

    content: bytes
    media_type: str
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", sha256_digest(self.content))

    @property
    def size(self) -> int:
        return len(self.content)


def sha256_digest(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()


def serialise(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def media_type_of(content: bytes, declared: str | None = None) -> str:
    """The manifest's own `mediaType`, else the one the registry declared, else guessed from its shape."""
    try:
        document = json.loads(content)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise AugmentError("The upstream manifest is not valid JSON") from None
    media_type = document.get("mediaType") if isinstance(document, dict) else None
    if isinstance(media_type, str):
        return media_type
    if declared and declared != "application/json":
        return declared
    if isinstance(document, dict) and "manifests" in document:
        return OCI_INDEX
    return OCI_MANIFEST


def augment_config(config_bytes: bytes, config: ContainerConfig) -> bytes:
    """Append diff_ids, replace Entrypoint/Cmd/WorkingDir, append Env; record the original entrypoint."""
    document = json.loads(config_bytes)
    rootfs = document.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs.setdefault("diff_ids", [])
    rootfs["diff_ids"] = [*rootfs["diff_ids"], *(layer.tar_digest for layer in config.layers)]
    image_config = document.get("config") or {}
    original_entrypoint = image_config.get("Entrypoint")
    env = list(image_config.get("Env") or [])
    if config.entrypoint:
        if original_entrypoint:
            chain = original_entrypoint[0] if len(original_entrypoint) == 1 else json.dumps(original_entrypoint)
            env.append(f"WAVE_ENTRY_CHAIN={chain}")
        image_config["Entrypoint"] = list(config.entrypoint)
    if config.cmd:
        image_config["Cmd"] = list(config.cmd)
    if config.working_dir:
        image_config["WorkingDir"] = config.working_dir
    env.extend(config.env)
    if env:
        image_config["Env"] = env
    document["config"] = image_config
    if config.layers:
        history = document.get("history")
        if isinstance(history, list):
            document["history"] = [*history, *({"created_by": "wave: injected layer"} for _ in config.layers)]
    return serialise(document)


def augment_manifest(manifest_bytes: bytes, media_type: str, new_config: Document, config: ContainerConfig) -> bytes:
    """Point the manifest at the new config and append one layer entry per injected layer."""
    document = json.loads(manifest_bytes)
    layer_type = OCI_LAYER_GZIP if media_type == OCI_MANIFEST else DOCKER_LAYER_GZIP
    document["config"] = {**document["config"], "digest": new_config.digest, "size": new_config.size}
    document["layers"] = [
        *document.get("layers", []),
        *({"mediaType": layer_type, "size": layer.gzip_size, "digest": layer.gzip_digest} for layer in config.layers),
    ]
    return serialise(document)


FetchBlob = Callable[[str], bytes]
FetchManifest = Callable[[str], tuple[bytes, str]]


@dataclass
class Augmented:
    """The document to serve, plus every document generated on the way (all to be stored)."""

    served: Document
    generated: list[Document]


def _malformed(what: str) -> AugmentError:
    return AugmentError(f"The upstream {what} is malformed")


def augment_image_manifest(
    manifest_bytes: bytes, media_type: str, config: ContainerConfig, fetch_blob: FetchBlob
) -> Augmented:
    try:
        manifest = json.loads(manifest_bytes)
        config_digest = manifest.get("config", {}).get("digest")
        layers = manifest.get("layers") or []
    except (ValueError, AttributeError, RecursionError):
        raise _malformed("manifest") from None
    if not config_digest:
        raise AugmentError("The upstream manifest has no config")
    if not is_digest(config_digest) or not isinstance(layers, list):
        raise _malformed("manifest")
    if not all(isinstance(layer, dict) and is_digest(layer.get("digest")) for layer in layers):
        raise _malformed("manifest")
    config_media_type = manifest["config"].get("mediaType") or (
        OCI_CONFIG if media_type == OCI_MANIFEST else DOCKER_CONFIG
    )
    try:
        new_config = Document(augment_config(fetch_blob(config_digest), config), config_media_type)
    except (ValueError, AttributeError, TypeError, KeyError, RecursionError):
        raise _malformed("image config") from None
    try:
        new_manifest = Document(augment_manifest(manifest_bytes, media_type, new_config, config), media_type)
    except (ValueError, AttributeError, TypeError, KeyError, RecursionError):
        raise _malformed("manifest") from None
    return Augmented(served=new_manifest, generated=[new_config, new_manifest])


def augment_index(
    index_bytes: bytes,
    media_type: str,
    platform: Platform,
    config: ContainerConfig,
    fetch_manifest: FetchManifest,
    fetch_blob: FetchBlob,
) -> Augmented:
    """Augment only the entries matching `platform`; other entries keep their digests."""
    try:
        index = json.loads(index_bytes)
        index_entries = list(index.get("manifests") or [])
    except (ValueError, AttributeError, TypeError, RecursionError):
        raise _malformed("image index") from None
    generated: list[Document] = []
    entries = []
    matched = False
    for entry in index_entries:
        if not isinstance(entry, dict) or not is_digest(entry.get("digest")):
            raise _malformed("image index")
        entry_platform = entry.get("platform") or {}
        declared = entry.get("mediaType")
        if not isinstance(entry_platform, dict) or not isinstance(declared, str | None):
            raise _malformed("image index")
        if platform.matches(entry_platform):
            matched = True
            content, entry_type = fetch_manifest(entry["digest"])
            entry_type = media_type_of(content, declared or entry_type)
            if entry_type not in MANIFEST_TYPES:
                raise AugmentError(f"Unsupported manifest type '{entry_type}' in the image index")
            result = augment_image_manifest(content, entry_type, config, fetch_blob)
            generated.extend(result.generated)
            entry = {**entry, "digest": result.served.digest, "size": result.served.size}
        entries.append(entry)
    if not matched:
        raise AugmentError(f"Cannot find matching platform '{platform}' in the image index")
    index["manifests"] = entries
    served = Document(serialise(index), media_type)
    return Augmented(served=served, generated=[*generated, served])
