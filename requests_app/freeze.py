"""Freeze (v1 and v2 `freeze: true`): the image built and pushed to the caller's `buildRepository`, answered by
its own name, with no token (nothing is served through the proxy, so no request row is stored).

A `containerFile` is built as sent, a recipe (Conda, Spack, CRAN) as generated; a `containerImage` becomes
`FROM <image>`; each gets the request's
`containerConfig` applied in the Containerfile (builds.freeze). The layers are fetched and verified by the
layer downloads, as a build context is: the build waits for them (builds.runs) and is sent once each settles
(builds.services.build_context_settled). Pushing needs the caller's own login for that registry: a Tower
caller with credentials for it that the registry accepts, else a 400 and nothing stored.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from django.db import transaction

from builds.freeze import freeze_containerfile
from builds.models import Build
from builds.recipes import RecipeError
from builds.services import BuildAnswer, build_create_or_join
from credentials.callers import Caller
from credentials.clients import push_login_check, registry_client_with
from credentials.lookups import CredentialsLookupError
from credentials.policy import destination_check, is_service_repository
from credentials.sessions import TowerContext
from registry.client import RegistryError
from registry.reference import parse_image
from registry.ssrf import DestinationRefusedError
from requests_app.downloads import layer_download_create_or_join_all
from requests_app.models import ContainerRequest
from requests_app.ratelimit import rate_limit_acquire
from requests_app.services import (
    Accepted,
    _check_repository_owner,
    _layer_specs,
    _layers_prepare,
    _recipe_generate,
    build_request_of,
)
from requests_app.specs import BuildSpec, ContainerRequestSpec
from wave_site.errors import InvalidRequest

LABEL = "Container build repository"


@dataclass(frozen=True)
class FrozenAccepted(Accepted):
    """A freeze answer: `request` is the answer's row, never stored (no token, no expiration)."""

    @property
    def is_frozen(self) -> bool:
        return True


def freeze_request_create(
    spec: ContainerRequestSpec, build: BuildSpec, *, caller: Caller, tower: TowerContext | None
) -> Accepted:
    """Check the repository and the caller's right to push there, generate the Containerfile, create or join its
    build, start the downloads of its layers; the answer naming `<buildRepository>:<containerId>` (a recipe's
    name follows its `nameStrategy`, as for any recipe build)."""
    generated = _recipe_generate(build, platform=spec.platform)  # a recipe build: its generated Containerfile
    config = spec.config
    repository = build.build_repository
    assert repository  # validation requires it with freeze
    if generated is not None:
        base = generated.container_file
    else:
        base = build.container_file if build.container_file is not None else f"FROM {spec.image}"
    try:  # first: it needs no network
        container_file = freeze_containerfile(
            base=base, repository=repository, layer_digests=[layer.gzip_digest for layer in config.layers],
            working_dir=config.working_dir, env=config.env, entrypoint=config.entrypoint, cmd=config.cmd,
        )  # fmt: skip
    except RecipeError as exc:
        raise InvalidRequest(exc.message) from None
    cache_repository = build.cache_repository or ""
    for label, value in ((LABEL, repository), ("Container build cache repository", cache_repository)):
        if value:
            try:
                destination_check(value.split("/", 1)[0])
            except DestinationRefusedError as exc:
                raise InvalidRequest(f"{label} refused: {exc.message}") from None
            instead = "name" if label == LABEL else "leave it out to use"  # freeze needs a repository
            _check_repository_owner(value, label=label, tower=tower, instead=instead)
    if not is_service_repository(repository):  # the service's own: pushed with its login, as any build
        assert tower is not None  # only a Tower caller may name a repository of their own (_check_repository_owner)
        push_login_check(repository, tower=tower, purpose="freeze an image there")

    layers = _layer_specs(config.layers)
    context = _layer_specs((build.build_context,))[0] if build.build_context else None
    request = build_request_of(
        spec, build, container_file=container_file, generated=generated, repository=repository,
        cache_repository=cache_repository, context=context,
    )  # fmt: skip
    ref = parse_image(request.target)
    if spec.dry_run:
        return FrozenAccepted(request=None, source=ref)

    frozen = _frozen_before(request.target, tower=tower) if not is_service_repository(repository) else None
    if frozen is not None:
        return FrozenAccepted(request=_answered(spec, frozen), source=ref, build=frozen)
    needed = [*layers, *([context] if context is not None else [])]
    needed = [dataclasses.replace(layer, position=position) for position, layer in enumerate(needed)]  # one list
    stored = _layers_prepare(needed, client=caller.rate_limit_key)
    answer = build_create_or_join(
        request=request, caller=caller, tower=tower,
        before_start=functools.partial(rate_limit_acquire, kind="build", key=caller.rate_limit_key),
    )  # fmt: skip
    fetched = [layer for layer in needed if not layer.is_inline and layer.gzip_digest not in stored]
    if not answer.cached and fetched:
        # Once the build that waits for them exists: the end of each download then always finds it.
        with transaction.atomic():
            layer_download_create_or_join_all(layers=fetched, stored=stored, client=caller.rate_limit_key)
    return FrozenAccepted(request=_answered(spec, answer), source=ref, build=answer)


def _answered(spec: ContainerRequestSpec, answer: BuildAnswer) -> ContainerRequest:
    """The answer's row, never stored: the frozen image's name, no token."""
    return ContainerRequest(
        token="", api_version=spec.api_version, source_image=answer.target, target_image=answer.target,
        platform=str(spec.platform), build_id=answer.build_id,
    )  # fmt: skip


def _frozen_before(target: str, *, tower: TowerContext | None) -> BuildAnswer | None:
    """The answer when the caller's repository has the image already (asked with their login: the service has
    none there, builds.services.target_exists cannot tell); None to build it."""
    try:
        registry_client_with(tower).head_manifest(parse_image(target))
    except (RegistryError, CredentialsLookupError):  # missing, or not to be told now: built (again), pushed
        return None
    last = Build.objects.filter(target_image=target).order_by("-number").first()
    return BuildAnswer(target=target, build_id=last.build_id if last else "", build=last, cached=True, started=False)
