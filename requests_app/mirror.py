"""Mirror (v2 `mirror: true`): `containerImage` copied as it is to `buildRepository` (every platform of an index, or
the one named), answered by the copy's own name, with no token (nothing is served through the proxy, so no request
row is stored). The copy is a durable job of builds (builds.mirrors) with an id, a log and a page.

The source is checked upstream with the caller's credentials, as any container request's; the repository with the
SSRF rules and the ownership rules of builds (a foreign repository needs a Tower caller, who pushes with their own
login for it: checked here, so that a refused login is a 400 and nothing is stored).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from builds.mirrors.selectors import mirror_page_url
from builds.mirrors.services import MirrorRequest, mirror_create_or_join, mirror_target
from credentials.callers import Caller
from credentials.clients import push_login_check, registry_client_with
from credentials.policy import destination_check, is_service_repository, repository_host
from credentials.sessions import TowerContext
from registry.client import ManifestUnknownError, RegistryError
from registry.reference import parse_image
from registry.ssrf import DestinationRefusedError
from requests_app.models import ContainerRequest
from requests_app.ratelimit import rate_limit_acquire
from requests_app.services import Accepted, _check_repository_owner
from requests_app.specs import BuildSpec, ContainerRequestSpec
from requests_app.upstream import upstream_check
from wave_site.errors import InvalidRequest
from wave_site.redact import redact_url

logger = logging.getLogger(__name__)
LABEL = "Container build repository"


@dataclass(frozen=True)
class MirrorAccepted(Accepted):
    """A mirror answer: `request` is the answer's row, never stored (no token, no expiration)."""

    @property
    def is_mirror(self) -> bool:
        return True

    @property
    def details_uri(self) -> str | None:
        return mirror_page_url(self.build.build_id) if self.build is not None and self.build.build_id else None


def mirror_check(spec: ContainerRequestSpec, build: BuildSpec) -> str:
    """The rules of a mirror request (each a 400 saying what to fix); its build repository."""
    if build.freeze:
        raise InvalidRequest("Attributes `mirror` and `freeze` conflict each other")
    if build.container_file or build.conda_file or build.spack_file or build.packages:
        raise InvalidRequest("Attribute `mirror` cannot be used with `containerFile` or `packages`")
    if spec.image is None:
        raise InvalidRequest("Attribute `containerImage` must be specified when using mirror mode")
    if not build.build_repository:
        raise InvalidRequest("Attribute `buildRepository` must be specified when using mirror mode")
    if not spec.config.is_empty:
        raise InvalidRequest("Attribute `containerConfig` cannot be used when using mirror mode")
    return build.build_repository


def mirror_request_create(
    spec: ContainerRequestSpec, build: BuildSpec, *, caller: Caller, tower: TowerContext | None
) -> Accepted:
    """Check the request, the repository and the source upstream, create or join the copy; the answer naming the
    copy `<buildRepository>/<source path>:<tag>`."""
    repository = mirror_check(spec, build)
    ref = spec.image
    assert ref is not None  # mirror_check
    try:
        destination_check(repository_host(repository))
    except DestinationRefusedError as exc:
        raise InvalidRequest(f"{LABEL} refused: {exc.message}") from None
    if is_service_repository(repository):
        # Its paths and tags are the builds' targets (`imageSuffix`, sub-repositories): a copy there would plant
        # or replace the image a build answers as cached, pushed with the service's login for anyone.
        raise InvalidRequest(
            f"{LABEL} '{redact_url(repository)}' is not allowed for a mirror - send a towerAccessToken and name "
            "a repository of your own, on another registry"
        )
    _check_repository_owner(repository, label=LABEL, tower=tower, instead="")
    if not is_service_repository(repository):
        assert tower is not None  # only a Tower caller may name a repository of their own
        push_login_check(repository, tower=tower, purpose="mirror an image there")
    client = registry_client_with(tower)
    source_digest = upstream_check(
        ref, shown_name=spec.image_name, platform=spec.platform if spec.is_platform_named else None, named=True,
        client=client,
    )  # fmt: skip
    platform = str(spec.platform) if spec.is_platform_named else ""
    target = mirror_target(source=ref, repository=repository)
    request = MirrorRequest(
        source_image=str(ref), source_digest=ref.digest or source_digest, target_image=target, repository=repository,
        platform=platform,
    )  # fmt: skip
    if spec.dry_run:
        return MirrorAccepted(request=None, source=ref)
    answer = mirror_create_or_join(
        request=request, caller=caller, tower=tower, target_digest=None if platform else _digest_of(target, tower),
        before_start=functools.partial(rate_limit_acquire, kind="build", key=caller.rate_limit_key),
    )  # fmt: skip
    answered = ContainerRequest(
        token="", api_version=spec.api_version, source_image=str(ref), target_image=target, platform=platform,
        build_id=answer.build_id,
    )  # fmt: skip
    return MirrorAccepted(request=answered, source=ref, build=answer)


def _digest_of(target: str, tower: TowerContext | None) -> str | None:
    """What the target names now (None: nothing, or it cannot be read): a copy already there needs none."""
    try:
        return registry_client_with(tower).head_manifest(parse_image(target)).digest
    except ManifestUnknownError:
        return None
    except RegistryError as exc:
        logger.info("mirror target %s not read (%s): copying", redact_url(target), exc.message)
        return None
