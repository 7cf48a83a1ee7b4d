"""Whether a caller may have a build made with somebody else's credentials.

containerId hashes the Containerfile, platform, repositories and context: not whose credentials pulled its
images. Two callers sending the same Containerfile share one target, so a caller who joins a running build,
or is answered `cached`, gets an image made from base images pulled with the credentials of the caller who
started it. Before that happens, each image the Containerfile names is looked up (HEAD) with the joining
caller's own credentials (their Tower workspace's, or the service's for a caller without Tower): an image they
cannot read refuses the request, as a pull of that image would be refused. A caller in the same credential
scope as the build's (same Tower user and workspace, or both without Tower) is not asked again. A yes is
cached per credential identity for WAVE_UPSTREAM_CACHE_TTL seconds, like the pull path's upstream check.
"""

from __future__ import annotations

from django.conf import settings

from builds.containerfiles import containerfile_parse
from builds.models import Build
from credentials.clients import registry_client_with, registry_errors_answered
from credentials.sessions import TowerContext
from registry.platform import parse_platform
from wave_site.cache import shared_cache


def same_scope(build: Build | None, tower: TowerContext | None) -> bool:
    """Whether `build` pulled its images with the credentials `tower`'s caller would use."""
    if build is None:
        return False
    if tower is None:
        return not build.tower_endpoint
    return (build.tower_endpoint, build.user_id, build.tower_workspace_id) == (
        tower.endpoint, tower.user_id, tower.workspace_id,
    )  # fmt: skip


def readable_key(reference: str, *, identity: str) -> str:
    return f"wave:build:readable:{reference}:{identity}"


def build_images_check(*, container_file: str, platform: str, tower: TowerContext | None) -> None:
    """Each image the Containerfile names is readable with the caller's credentials; else InvalidRequest
    ("Container image '<image>' does not exist or access is not authorized"), or TemporarilyUnavailable when a
    registry or Tower cannot be reached."""
    client = registry_client_with(tower)
    for image in containerfile_parse(container_file, target=parse_platform(platform)).images:
        shown = str(image)
        with registry_errors_answered(shown):
            key = readable_key(shown, identity=client.identity(image.registry))
            if shared_cache().get(key):
                continue
            client.head_manifest(image)
        shared_cache().set(key, True, settings.WAVE_UPSTREAM_CACHE_TTL)
