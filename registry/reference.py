"""Container image references: parsing, validation and normalisation (Docker's reference grammar).

`docker.io` is the default registry (`index.docker.io` is the same), Docker Hub names without a `/`
get `library/`, a missing tag is `latest`. A reference carries a tag, a digest, or both.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
DEFAULT_TAG = "latest"

COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
SHA256_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
HOSTNAME = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*")


class InvalidReferenceError(ValueError):
    """A malformed image name; `message` is the text clients see."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def invalid_image_name(value: str) -> InvalidReferenceError:
    return InvalidReferenceError(f"Invalid container image name — offending value: '{value}'")


@dataclass(frozen=True)
class ImageReference:
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def path_and_version(self) -> str:
        """`repository:tag`, or `repository@digest` when the reference has a digest."""
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag or DEFAULT_TAG}"

    @property
    def version(self) -> str:
        """What follows the repository in a manifest URL: the digest, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        """The normalised name: `docker.io/library/ubuntu:latest`, `quay.io/a/b@sha256:...`."""
        return f"{self.registry}/{self.path_and_version}"


def _is_registry_component(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def _is_ipv6(text: str) -> bool:
    """An IPv6 address as written between brackets (no zone: registries are not reached by link-local names)."""
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _valid_registry(authority: str) -> bool:
    if authority.startswith("["):
        host, bracket, rest = authority[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return False  # `[::1` is not a registry: its bracket is never closed
        port = rest[1:] if rest else None
        host_ok = "%" not in host and _is_ipv6(host)
    else:
        host, sep, port_text = authority.partition(":")
        port = port_text if sep else None
        host_ok = bool(HOSTNAME.fullmatch(host))
    if port is not None and not (re.fullmatch(r"[0-9]{1,5}", port) and 0 < int(port) < 65536):
        return False
    return host_ok


def parse_image(value: str) -> ImageReference:
    """Parse and normalise an image name, raising InvalidReferenceError with the reference's wording."""
    if "://" in value:
        raise InvalidReferenceError(f"Invalid container repository name — offending value: '{value}'")
    if not value or value != value.strip() or any(ch.isspace() for ch in value):
        raise invalid_image_name(value)

    name, digest = value, None
    if "@" in value:
        name, digest = value.rsplit("@", 1)
        if not DIGEST.fullmatch(digest) or (digest.startswith("sha256:") and not SHA256_DIGEST.fullmatch(digest)):
            raise invalid_image_name(value)

    tag = None
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not TAG.fullmatch(tag):
            raise invalid_image_name(value)

    components = name.split("/")
    registry = DOCKER_HUB
    if len(components) > 1 and _is_registry_component(components[0]):
        registry = components.pop(0)
        if not _valid_registry(registry):
            raise invalid_image_name(value)
        registry = registry.lower()
        if registry == "index.docker.io":
            registry = DOCKER_HUB
    if not components or not all(COMPONENT.fullmatch(c) for c in components):
        raise invalid_image_name(value)
    if registry == DOCKER_HUB and len(components) == 1:
        components.insert(0, "library")
    repository = "/".join(components)
    if len(repository) + (0 if registry == DOCKER_HUB else len(registry) + 1) > 255:
        raise invalid_image_name(value)
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return ImageReference(registry=registry, repository=repository, tag=tag, digest=digest)


def parse_repository(value: str) -> tuple[str, str]:
    """A repository without tag or digest (`host[:port]/path`): `(registry, path)`. ValueError when malformed."""
    components = value.split("/")
    if len(components) < 2 or not _is_registry_component(components[0]) or not _valid_registry(components[0]):
        raise ValueError(value)
    if not all(COMPONENT.fullmatch(c) for c in components[1:]):
        raise ValueError(value)
    return components[0].lower(), "/".join(components[1:])
