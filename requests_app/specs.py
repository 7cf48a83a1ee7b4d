"""A validated container request, typed: what `validation` produces and `services` take.

Snake_case and frozen, built once from the wire's camelCase fields after every rule passed; services
never read the request body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from registry.platform import Platform
from registry.reference import ImageReference


@dataclass(frozen=True)
class RequestedLayer:
    """A layer to append, as the client named it: an http(s) URL or a `data:` payload, and its digests."""

    location: str = field(repr=False)  # may carry credentials or a whole tarball
    gzip_digest: str
    gzip_size: int
    tar_digest: str

    @property
    def is_inline(self) -> bool:
        return self.location.startswith("data:")


@dataclass(frozen=True)
class ContainerConfigSpec:
    """Changes to the image: None leaves the image's own value."""

    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[str, ...] | None = None
    working_dir: str | None = None
    layers: tuple[RequestedLayer, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.entrypoint or self.cmd or self.env or self.working_dir or self.layers)

    def stored(self) -> dict[str, Any]:
        """What a ContainerRequest row keeps, in wire names (layers are rows of their own)."""
        values = {"entrypoint": self.entrypoint, "cmd": self.cmd, "env": self.env, "workingDir": self.working_dir}
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in values.items() if value is not None}  # fmt: skip


@dataclass(frozen=True)
class TowerSpec:
    """Where the caller's registry credentials live; the tokens are never stored or shown."""

    endpoint: str
    workspace_id: int | None = None
    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class BuildSpec:
    """What a build request asks for; recipes are decoded text, `packages` the v2 object as sent (builds.recipes
    reads it)."""

    container_file: str | None = None
    conda_file: str | None = None
    spack_file: str | None = None
    packages: Mapping[str, Any] | None = None  # {"type": "CONDA"|"CRAN", "entries": [...], ...}
    build_repository: str | None = None
    cache_repository: str | None = None
    name_strategy: str | None = None
    build_context: RequestedLayer | None = None  # what COPY and ADD read
    format: str | None = None
    workflow_id: str | None = None
    freeze: bool = False
    mirror: bool = False


@dataclass(frozen=True)
class ContainerRequestSpec:
    """One container request after validation.

    `image` is the normalised source (None only for a build from a recipe); `image_name` is the name as
    sent, which messages quote. `build` is None unless the request asks for a build.
    """

    api_version: str  # ContainerRequest.ApiVersion
    image: ImageReference | None
    image_name: str
    platform: Platform
    is_platform_named: bool  # False: the default platform applies
    config: ContainerConfigSpec
    tower: TowerSpec
    build: BuildSpec | None = None
    dry_run: bool = False
    fingerprint: str = ""
    timestamp: str = ""
