"""The builder interface: what a build is given (`BuildJob`), what it ends with (`BuildOutcome`), who builds.

Independent of where the Containerfile came from (a client, a Conda or Spack recipe) and of the database:
the Celery task turns a `Build` row into a job and records the outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from registry.client import CredentialsLookup
from registry.platform import Platform


@dataclass(frozen=True)
class BuildJob:
    build_id: str
    container_file: str
    context_dir: Path | None  # files COPY/ADD may use (the build context), or None (empty context)
    platform: Platform
    target: str  # "<repository>:<containerId>", pushed there
    cache_repository: str | None  # registry layer cache (buildah --layers --cache-from/--cache-to)
    credentials: CredentialsLookup  # registry host -> Credentials | None (for the auth file)
    timeout: float  # seconds, the whole build + push
    network: str = ""  # buildah --network value; "" = default


@dataclass(frozen=True)
class BuildOutcome:
    succeeded: bool
    exit_status: int | None  # buildah's, when it ran
    digest: str  # the pushed manifest digest ("" unless succeeded)
    failure_reason: str  # one line, for people ("" when succeeded); never a secret


class Builder(Protocol):
    def build(self, job: BuildJob, *, log: Callable[[str], None], should_stop: Callable[[], bool]) -> BuildOutcome: ...
