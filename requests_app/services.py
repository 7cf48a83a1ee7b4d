"""Writes of container requests: accept (check upstream, store), revoke, purge.

`container_request_create` takes a validated `ContainerRequestSpec`; before storing anything it checks
what needs the network: layer hosts (SSRF), `data:` payloads, the source image and its platforms upstream.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from builds.containerfiles import ContainerfileError, containerfile_check
from builds.naming import recipe_target_image
from builds.recipes import GeneratedBuild, RecipeError, recipe_containerfile
from builds.selectors import build_page_url
from builds.services import BuildAnswer, BuildRequest, build_create_or_join
from credentials.callers import Caller
from credentials.clients import registry_client_with
from credentials.policy import destination_check, is_service_repository, repository_host, url_destination_check
from credentials.sessions import TowerContext, tower_caller_identify
from registry.platform import Platform
from registry.reference import ImageReference, parse_image
from registry.ssrf import DestinationRefusedError
from requests_app.downloads import layer_download_cap_check, layer_download_create_or_join_all
from requests_app.layers import LayerSpec, decode_data_layer
from requests_app.models import ContainerRequest, InjectedLayer, LayerDownload
from requests_app.oci.tokens import token_mark_revoked
from requests_app.purge import expired_purge
from requests_app.ratelimit import rate_limit_acquire
from requests_app.selectors import layer_download_verified
from requests_app.specs import BuildSpec, ContainerRequestSpec, RequestedLayer
from requests_app.upstream import upstream_check
from wave_site.blobstore import blob_key, blob_store_put
from wave_site.errors import InvalidRequest, TemporarilyUnavailable, UnknownResource
from wave_site.redact import redact_url

logger = logging.getLogger(__name__)


def new_token() -> str:
    """12 lowercase hex characters: 48 random bits from the OS, never all zero."""
    while True:
        token = secrets.token_hex(6)
        if int(token, 16) != 0:
            return token


def target_image_for(token: str, ref: ImageReference) -> str:
    authority = urlsplit(settings.WAVE_SERVER_URL).netloc
    return f"{authority}/wt/{token}/{ref.path_and_version}"


def _layer_specs(layers: tuple[RequestedLayer, ...]) -> list[LayerSpec]:
    """Layer hosts allowed (SSRF), `data:` payloads decoded and verified; nothing is stored yet."""
    specs = []
    for position, layer in enumerate(layers):
        payload = None
        if not layer.is_inline:
            try:
                url_destination_check(layer.location)
            except DestinationRefusedError as exc:
                raise InvalidRequest(exc.message) from None
        else:
            payload = decode_data_layer(
                layer.location, gzip_digest=layer.gzip_digest, gzip_size=layer.gzip_size, tar_digest=layer.tar_digest
            )
        specs.append(
            LayerSpec(
                position=position,
                url="" if layer.is_inline else layer.location,
                gzip_digest=layer.gzip_digest,
                gzip_size=layer.gzip_size,
                tar_digest=layer.tar_digest,
                data=payload,
            )
        )
    return specs


@dataclass(frozen=True)
class Accepted:
    """An accepted request: the stored row, or for a dry run (nothing stored) only the normalised source;
    `build` when it asked for one."""

    request: ContainerRequest | None
    source: ImageReference
    build: BuildAnswer | None = None

    @property
    def is_frozen(self) -> bool:
        return False  # freeze arrives with the recipes issue: refused meanwhile

    @property
    def is_cached(self) -> bool | None:
        """Only with a build: whether its image already existed. None: no build."""
        return None if self.build is None else self.build.cached

    @property
    def succeeded(self) -> bool | None:
        """True when there is nothing to build (the container is served as requested) or the image already
        existed; with a build, once it finished; None for a dry run or while the build runs."""
        if self.request is None:
            return None
        if self.build is None or self.build.cached:
            return True
        return self.build.build.succeeded if self.build.build is not None else None

    @property
    def details_uri(self) -> str | None:
        """The build's page, when there is a build to show."""
        return build_page_url(self.build.build_id) if self.build is not None and self.build.build_id else None


def container_request_create(*, spec: ContainerRequestSpec, caller: Caller) -> Accepted:
    """Check a validated request against the network (the Tower user, layer hosts, source image upstream
    with the caller's credentials), store it with its layers; the stored request.

    Nothing is stored when any check fails. Network I/O (the upstream check) happens before the
    transaction; `data:` layers are verified in memory first and written to the blob store only
    once the request is known to be good.
    """
    tower = None
    if spec.tower.access_token:
        caller, tower = tower_caller_identify(
            ip=caller.ip, endpoint=spec.tower.endpoint, workspace_id=spec.tower.workspace_id,
            access_token=spec.tower.access_token, refresh_token=spec.tower.refresh_token or "",
        )  # fmt: skip
    if spec.build is not None and spec.build.mirror:
        from requests_app.mirror import mirror_request_create  # it builds on this module's checks

        return mirror_request_create(spec, spec.build, caller=caller, tower=tower)
    if spec.build is not None and spec.build.freeze and not spec.build.mirror:
        from requests_app.freeze import freeze_request_create  # it builds on this module's checks

        return freeze_request_create(spec, spec.build, caller=caller, tower=tower)
    if spec.build is not None:
        return _build_request_create(spec, spec.build, caller=caller, tower=tower)
    ref = spec.image
    assert ref is not None  # a request that is not a build names an image
    layers = _layer_specs(spec.config.layers)
    # Unchanged images are served as they are: only a named platform, or one the proxy must pick from an
    # index to augment the image, has to exist upstream.
    is_platform_checked = spec.is_platform_named or not spec.config.is_empty
    source_digest = upstream_check(
        ref, shown_name=spec.image_name, platform=spec.platform if is_platform_checked else None,
        named=spec.is_platform_named, client=registry_client_with(tower),
    )  # fmt: skip
    if spec.dry_run:
        return Accepted(request=None, source=ref)

    stored = _layers_prepare(layers, client=caller.rate_limit_key)
    request = _store_request(
        spec, ref, caller=caller, tower=tower, layers=layers, stored=stored,
        source_digest=source_digest if ref.digest is None else ref.digest,
    )  # fmt: skip
    return Accepted(request=request, source=ref)


def _layers_prepare(layers: list[LayerSpec], *, client: str) -> set[str]:
    """Before anything is stored: the client's download cap checked, `data:` payloads written to the blob
    store; the gzip digests of http layers already verified and stored (asked before the transaction: the
    blob store may be a remote one, S3)."""
    layer_download_cap_check(layers=layers, client=client)
    for layer in layers:
        if layer.data is not None:
            blob_store_put(layer.gzip_digest, layer.data)
    return {layer.gzip_digest for layer in layers if not layer.is_inline and _verified_before(layer)}


def _store_request(
    spec: ContainerRequestSpec, ref: ImageReference, *, caller: Caller, tower: TowerContext | None,
    layers: list[LayerSpec], stored: set[str], source_digest: str = "", build_id: str = "",
) -> ContainerRequest:  # fmt: skip
    """The request row (and its layers' rows, in one transaction), under a new token."""
    now = timezone.now()
    for _attempt in range(5):
        token = new_token()
        request = ContainerRequest(
            token=token,
            api_version=spec.api_version,
            source_image=str(ref),
            target_image=target_image_for(token, ref),
            platform=str(spec.platform),
            container_config=spec.config.stored(),
            fingerprint=spec.fingerprint,
            client_timestamp=spec.timestamp,
            client_ip=caller.ip,
            tower_endpoint=spec.tower.endpoint,
            tower_workspace_id=spec.tower.workspace_id,
            user_id=caller.user_id,
            user_name=caller.user_name,
            user_email=caller.email,
            tower_auth_id=tower.auth_id if tower is not None else None,
            build_id=build_id,
            source_digest=source_digest,
            created_at=now,
            expires_at=now + dt.timedelta(seconds=settings.WAVE_TOKEN_TTL),
        )
        try:
            # One statement needs no transaction of its own; with layers, the rows land together or not at all.
            with transaction.atomic() if layers else contextlib.nullcontext():
                request.save(force_insert=True)
                rows = _layer_rows(request, layers, stored=stored, client=caller.rate_limit_key)
                InjectedLayer.objects.bulk_create(rows)
        except IntegrityError:
            continue  # token collision: 48 bits make it rare, a new token fixes it
        return request
    raise TemporarilyUnavailable("Could not allocate a container token, retry later")


def _build_request_create(
    spec: ContainerRequestSpec, build: BuildSpec, *, caller: Caller, tower: TowerContext | None
) -> Accepted:
    """A request for a built image: the Containerfile and repositories checked, the build created or joined
    (none when its target already exists), the request stored with the build's target as its source."""
    assert not build.freeze, "freeze has its own path (requests_app.freeze)"
    assert not build.mirror, "mirror has its own path (requests_app.mirror)"
    generated = _recipe_generate(build, platform=spec.platform)
    container_file = generated.container_file if generated is not None else build.container_file
    assert container_file is not None  # a build without recipes is a containerFile build
    layers = _layer_specs(spec.config.layers)  # applied by the proxy to the built image, as to any image
    context = _layer_specs((build.build_context,))[0] if build.build_context else None
    repository = build.build_repository or settings.WAVE_BUILD_REPO
    cache_repository = build.cache_repository or settings.WAVE_CACHE_REPO or ""
    for label, value in (("Container build repository", repository), ("Container build cache repository",
                                                                       cache_repository)):  # fmt: skip
        if value:
            try:
                destination_check(value.split("/", 1)[0])
            except DestinationRefusedError as exc:
                raise InvalidRequest(f"{label} refused: {exc.message}") from None
            _check_repository_owner(value, label=label, tower=tower)

    request = build_request_of(
        spec, build, container_file=container_file, generated=generated, repository=repository,
        cache_repository=cache_repository, context=context,
    )  # fmt: skip
    ref = parse_image(request.target)
    if spec.dry_run:
        return Accepted(request=None, source=ref)
    stored = _layers_prepare([*layers, *([context] if context is not None else [])], client=caller.rate_limit_key)
    answer = build_create_or_join(
        request=request, caller=caller, tower=tower,
        before_start=functools.partial(rate_limit_acquire, kind="build", key=caller.rate_limit_key),
    )  # fmt: skip
    if not answer.cached and context is not None and not context.is_inline and context.gzip_digest not in stored:
        # Fetched and verified like an injected layer, once the build that waits for it exists (builds.runs): the
        # download's end, success or failure, then always finds it.
        with transaction.atomic():
            layer_download_create_or_join_all(layers=[context], stored=stored, client=caller.rate_limit_key)
    row = _store_request(spec, ref, caller=caller, tower=tower, layers=layers, stored=stored, build_id=answer.build_id)
    return Accepted(request=row, source=ref, build=answer)


RECIPE_IMAGES = (
    "the recipe's images are set by condaOpts.mambaImage, condaOpts.baseImage or cranOpts.rImage, or by the "
    "service's WAVE_CONDA_*, WAVE_SPACK_* and WAVE_CRAN_* settings"
)


def containerfile_checked_for(container_file: str, *, platform: Platform, generated: bool) -> None:
    """The Containerfile's images and URLs pass the SSRF rules, else a 400; for a recipe's generated file the
    message says so, and where its images are set (the caller never wrote a Containerfile)."""
    try:
        containerfile_check(container_file, platform=platform)
    except ContainerfileError as exc:
        if not generated:
            raise InvalidRequest(exc.message) from None
        message = exc.message.replace("in the Containerfile", "in the generated Containerfile", 1)
        raise InvalidRequest(f"{message} - {RECIPE_IMAGES}") from None


def build_request_of(
    spec: ContainerRequestSpec, build: BuildSpec, *, container_file: str, generated: GeneratedBuild | None,
    repository: str, cache_repository: str, context: LayerSpec | None,
) -> BuildRequest:  # fmt: skip
    """The Containerfile checked (SSRF rules), then what builds it: a recipe's text and name when it is one."""
    containerfile_checked_for(container_file, platform=spec.platform, generated=generated is not None)
    request = BuildRequest(
        container_file=container_file, platform=str(spec.platform), repository=repository,
        cache_repository=cache_repository, context_digest=context.gzip_digest if context is not None else "",
    )  # fmt: skip
    if generated is None:
        return request
    return _recipe_request(request, generated, spack=build.spack_file is not None, name_strategy=build.name_strategy)


def _recipe_generate(build: BuildSpec, *, platform: Platform) -> GeneratedBuild | None:
    """The Containerfile and context files of a recipe build (`condaFile`, `spackFile`, v2 `packages`); None
    for a plain containerFile build. A recipe that cannot be built is a 400 saying what to fix."""
    if build.conda_file is None and build.spack_file is None and build.packages is None:
        return None
    try:
        return recipe_containerfile(
            conda_file=build.conda_file, spack_file=build.spack_file, packages=build.packages,
            container_file=build.container_file, platform=platform,
        )  # fmt: skip
    except RecipeError as exc:
        raise InvalidRequest(exc.message) from None


def _recipe_request(
    request: BuildRequest, generated: GeneratedBuild, *, spack: bool, name_strategy: str | None
) -> BuildRequest:
    """A recipe build: its recipe text kept with the build (the worker writes the context files from it, and it
    names the containerId), pushed to the name the request's `nameStrategy` gives."""
    recipe = {"spack_file" if spack else "conda_file": generated.recipe_file or ""}
    request = dataclasses.replace(request, **recipe)
    target = recipe_target_image(
        repository=request.repository, container_id=request.container_id, tools=generated.tools,
        name_strategy=name_strategy,
    )  # fmt: skip
    return dataclasses.replace(request, target_image=target)


def _check_repository_owner(
    repository: str, *, label: str, tower: TowerContext | None, instead: str = "leave it out to use"
) -> None:  # fmt: skip
    """The service pushes with its own login only into its own repositories; into another, only a Tower caller,
    with their own credentials (builds.runs), and never on the host of the service's repositories. `instead`:
    how the message offers the service's repository ("" when the request cannot use it: a mirror)."""
    if is_service_repository(repository):
        return
    own_hosts = {repository_host(own) for own in (settings.WAVE_BUILD_REPO, settings.WAVE_CACHE_REPO) if own}
    if tower is None or repository_host(repository) in own_hosts:
        shown = redact_url(repository)
        offer = f"{instead} the service's ({settings.WAVE_BUILD_REPO}), or " if instead else ""
        raise InvalidRequest(
            f"{label} '{shown}' is not allowed - {offer}send a towerAccessToken to push to a repository of your "
            "own, on another registry than the service's, with your credentials"
        )


def _verified_before(layer: LayerSpec) -> bool:
    return layer_download_verified(
        url=layer.url, gzip_digest=layer.gzip_digest, gzip_size=layer.gzip_size, tar_digest=layer.tar_digest
    )


def _layer_rows(
    request: ContainerRequest, layers: list[LayerSpec], *, stored: set[str], client: str
) -> list[InjectedLayer]:
    """Rows for the layers, inside the request's transaction. Inline ones are ready at once; each http one
    joins the download of its exact layer (ready at once when that one is ready and its blob `stored`);
    the downloads it starts count against `client`'s cap (requests_app.downloads)."""
    downloads = layer_download_create_or_join_all(layers=layers, stored=stored, client=client)
    rows = []
    for layer in layers:
        download = downloads.get(layer.position)
        ready = download is None or download.state == LayerDownload.State.READY
        rows.append(
            InjectedLayer(
                request=request,
                position=layer.position,
                kind=InjectedLayer.Kind.DATA if layer.is_inline else InjectedLayer.Kind.HTTP,
                url=layer.url,
                gzip_digest=layer.gzip_digest,
                gzip_size=layer.gzip_size,
                tar_digest=layer.tar_digest,
                download=download,
                state=InjectedLayer.State.READY if ready else InjectedLayer.State.PENDING,
                blob_key=blob_key(layer.gzip_digest) if ready else "",
                finished_at=request.created_at if ready else None,
            )
        )
    return rows


def container_request_revoke(*, token: str) -> ContainerRequest:
    """Revoke an active token: pulls with it are refused from now on.

    The cache mark (which outlives any cached copy of the token, so that no process serves it again) is written
    before the row: if Redis refuses it, nothing has changed and the caller may retry; if the row update then
    fails, the token is already refused and a retry completes the revocation.
    """
    now = timezone.now()
    active = ContainerRequest.objects.filter(token=token, revoked_at__isnull=True, expires_at__gt=now)
    if not active.exists():
        raise UnknownResource(f"Unknown container token '{token}'")
    token_mark_revoked(token=token)
    if active.update(revoked_at=now) != 1:  # revoked or expired meanwhile: the mark is right all the same
        raise UnknownResource(f"Unknown container token '{token}'")
    logger.info("container token %s revoked", token)
    return ContainerRequest.objects.get(token=token)


def container_request_purge(*, older_than: dt.timedelta | None = None) -> int:
    """Purge what is past retention (requests_app.purge, in batches); the number of requests deleted."""
    return expired_purge(request_retention=older_than).requests
