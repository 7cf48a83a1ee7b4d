"""Wire formats of the container request API (v1 `/container-token`, v2 `/v1alpha2/container`).

Input serializers only check types; the reference's rules and messages live in `validation.py`.
Output is built from the model by `present_*` functions, omitting null fields as the reference does.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from requests_app.models import ContainerRequest, InjectedLayer

# --- input --------------------------------------------------------------------------------------


# DRF's default choice error repeats the value sent; ours never echoes client input.
NO_ECHO_CHOICE: dict[str, Any] = {"invalid_choice": "Not a valid choice."}


class StrictCharField(serializers.CharField):
    """A JSON string only: DRF's CharField would turn `42` or `true` into text."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class InputSerializer(serializers.Serializer):
    """A request body's types. Its plain fields are shallow-copied per request, not rebuilt.

    DRF deep-copies every declared field for each serializer instance, which re-runs every field's
    constructor: that was a tenth of a POST's CPU. Plain fields keep no per-request state (binding
    sets attributes on the copy only), so a shallow copy is enough; nested serializers (and lists of
    them) still get a deep copy, because they do keep state while validating.
    """

    # Type errors in JSON terms: DRF's defaults name Python types ("got list", "got str").
    default_error_messages = {"invalid": "Expected a JSON object."}

    def get_fields(self) -> dict[str, serializers.Field]:
        return {name: copy.deepcopy(field) if _keeps_state(field) else copy.copy(field)
                for name, field in self._declared_fields.items()}  # fmt: skip


def _keeps_state(field: serializers.Field) -> bool:
    return isinstance(field, serializers.BaseSerializer) or isinstance(
        getattr(field, "child", None), serializers.BaseSerializer
    )


def _list(child: serializers.Field, **kwargs: Any) -> serializers.ListField:
    """A JSON array (null allowed, entries not)."""
    return serializers.ListField(
        child=child,
        required=False,
        allow_null=True,
        error_messages={"not_a_list": "Expected a JSON array."},
        **kwargs,
    )


def _text(**kwargs: Any) -> serializers.CharField:
    """A string kept exactly as sent (validation decides about blanks and spaces)."""
    return StrictCharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False, **kwargs)


class ContainerLayerInputSerializer(InputSerializer):
    location = StrictCharField(
        trim_whitespace=False, help_text="http(s) URL of a tar.gz layer, or `data:` + its base64 content."
    )
    gzipDigest = StrictCharField(help_text="sha256 of the tar.gz, e.g. `sha256:a7c7...`.")
    gzipSize = serializers.IntegerField(
        min_value=0, max_value=2**63 - 1, help_text="Size of the tar.gz in bytes (number or string)."
    )
    tarDigest = StrictCharField(help_text="sha256 of the uncompressed tar.")


class ContainerConfigInputSerializer(InputSerializer):
    entrypoint = _list(
        StrictCharField(allow_blank=True, trim_whitespace=False), help_text="Replaces the image's entrypoint."
    )
    cmd = _list(StrictCharField(allow_blank=True, trim_whitespace=False), help_text="Replaces the image's command.")
    env = _list(
        StrictCharField(trim_whitespace=False), help_text="`NAME=value` entries appended to the image's environment."
    )
    workingDir = _text(max_length=4096, help_text="Working directory of the container.")
    layers = _list(ContainerLayerInputSerializer(), help_text="Layers appended, in order, to the image.")


class ContainerRequestV1InputSerializer(InputSerializer):
    containerImage = _text(max_length=1024, help_text="Image to serve, e.g. `docker.io/library/ubuntu:latest`.")
    containerFile = _text(help_text="Dockerfile to build, base64-encoded.")
    containerConfig = ContainerConfigInputSerializer(
        required=False, allow_null=True, help_text="Changes to the image: layers, entrypoint, cmd, env, working dir."
    )
    condaFile = _text(help_text="Conda environment file, base64-encoded.")
    spackFile = _text(help_text="Spack recipe, base64-encoded.")
    containerPlatform = _text(
        help_text="`linux/amd64` (default), `linux/arm64` or `linux/arm/v7`; aliases such as `x86_64`, `aarch64`."
    )
    buildRepository = _text(help_text="Repository builds are pushed to, e.g. `docker.io/user/my-image`.")
    cacheRepository = _text(help_text="Repository of build layer caches, e.g. `docker.io/user/my-cache`.")
    timestamp = _text(max_length=64, help_text="Submission time, ISO-8601.")
    fingerprint = _text(max_length=256, help_text="The client's unique fingerprint of the request.")
    towerAccessToken = _text(write_only=True, help_text="Tower access token (never stored or echoed).")
    towerRefreshToken = _text(write_only=True, help_text="Tower refresh token (never stored or echoed).")
    towerEndpoint = _text(
        max_length=512, help_text="Tower endpoint; `https://api.tower.nf` means `https://api.cloud.seqera.io`."
    )
    towerWorkspaceId = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=0,
        max_value=2**63 - 1,
        help_text="Tower workspace whose registry credentials apply; the personal workspace when omitted.",
    )
    packages = serializers.JSONField(required=False, allow_null=True, help_text="v2 only: refused on v1.")


class ContainerRequestV2InputSerializer(ContainerRequestV1InputSerializer):
    packages = serializers.JSONField(required=False, allow_null=True, help_text="Packages to build (CONDA, CRAN).")
    nameStrategy = serializers.ChoiceField(
        choices=["none", "tagPrefix", "imageSuffix"],
        required=False,
        allow_null=True,
        error_messages=NO_ECHO_CHOICE,
        help_text="How a built image is named in the build repository.",
    )
    freeze = serializers.BooleanField(
        required=False, default=False, help_text="Push the result to `buildRepository` instead of serving it."
    )
    dryRun = serializers.BooleanField(
        required=False, default=False, help_text="Validate and check only; store nothing."
    )
    mirror = serializers.BooleanField(
        required=False, default=False, help_text="Copy the image to `buildRepository` as it is."
    )
    workflowId = _text(help_text="The pipeline run this request belongs to.")
    buildContext = serializers.JSONField(
        required=False, allow_null=True, help_text="A build context layer (`location`, digests, size) for builds."
    )
    format = serializers.ChoiceField(
        choices=["docker", "sif"],
        required=False,
        allow_null=True,
        error_messages=NO_ECHO_CHOICE,
        help_text="Image format to build: `docker` (default) or Singularity `sif`.",
    )


# --- output (documented shapes; responses are built by present_* below) ------------------------


class ContainerTokenV1ResponseSerializer(serializers.Serializer):
    containerToken = serializers.CharField(help_text="12 lowercase hex characters.")
    targetImage = serializers.CharField(help_text="`<server>/wt/<token>/<path>:<tag>`, pullable by any client.")
    expiration = serializers.DateTimeField(help_text="When the token stops authorising pulls.")
    containerImage = serializers.CharField(help_text="The normalised source image.")
    buildId = serializers.CharField(required=False, help_text="Present when a build was started or joined.")


class ContainerTokenV2ResponseSerializer(ContainerTokenV1ResponseSerializer):
    containerToken = serializers.CharField(required=False, help_text="12 lowercase hex characters; not for a dry run.")
    targetImage = serializers.CharField(
        required=False, help_text="`<server>/wt/<token>/<path>:<tag>`, pullable by any client; not for a dry run."
    )
    expiration = serializers.DateTimeField(required=False, help_text="When the token stops authorising pulls.")
    cached = serializers.BooleanField(required=False, help_text="Only with a buildId: the image already existed.")
    freeze = serializers.BooleanField(help_text="Whether the image was pushed to the caller's repository.")
    succeeded = serializers.BooleanField(
        required=False, help_text="True when there is nothing to build; with a buildId, once the build succeeded."
    )


class ImageDigestSerializer(serializers.Serializer):
    image = serializers.CharField(help_text="Image name.")
    digest = serializers.CharField(required=False, help_text="Manifest digest, once known (`sha256:...`).")


class ContainerRequestRecordSerializer(serializers.Serializer):
    containerImage = serializers.CharField(help_text="The normalised source image.")
    containerPlatform = serializers.CharField(help_text="The normalised platform, e.g. `linux/amd64`.")
    containerConfig = serializers.DictField(
        required=False, help_text="The requested changes; `data:` layers show as `data:` only."
    )
    targetImage = serializers.CharField(help_text="The image name to pull.")
    fingerprint = serializers.CharField(required=False, help_text="As sent by the client.")
    timestamp = serializers.CharField(required=False, help_text="As sent by the client.")
    towerEndpoint = serializers.CharField(required=False, help_text="The Tower endpoint credentials come from.")
    towerWorkspaceId = serializers.IntegerField(required=False, help_text="The Tower workspace.")
    userName = serializers.CharField(required=False, help_text="The Tower user, when identified.")
    buildId = serializers.CharField(required=False, help_text="The build, for built images.")
    creationTime = serializers.DateTimeField(help_text="When the request was accepted.")


class ContainerDescriptionSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="The container token.")
    expiration = serializers.DateTimeField(help_text="When the token stops authorising pulls.")
    request = ContainerRequestRecordSerializer(help_text="The request as stored.")
    source = ImageDigestSerializer(help_text="The source image.")  # type: ignore[assignment]  # a field named like Field.source
    wave = ImageDigestSerializer(help_text="The image served; its digest once first pulled.")


class ContainerRecordV2Serializer(ContainerRequestRecordSerializer):
    requestId = serializers.CharField(help_text="The container token.")
    expiration = serializers.DateTimeField(help_text="When the token stops authorising pulls.")
    freeze = serializers.BooleanField(help_text="Whether the image was pushed to the caller's repository.")
    sourceDigest = serializers.CharField(required=False, help_text="Digest of the source manifest.")
    waveDigest = serializers.CharField(required=False, help_text="Digest of the manifest served, once first pulled.")


class ContainerStatusSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The container token.")
    status = serializers.ChoiceField(
        choices=["PENDING", "BUILDING", "DONE"], help_text="PENDING while layers download; DONE once settled."
    )
    buildId = serializers.CharField(required=False, help_text="The build, for built images.")
    succeeded = serializers.BooleanField(required=False, help_text="Present once DONE.")
    reason = serializers.CharField(required=False, help_text="Why it did not succeed.")
    detailsUri = serializers.CharField(required=False, help_text="Where a person can read the build's details.")
    creationTime = serializers.DateTimeField(help_text="When the request was accepted.")
    duration = serializers.CharField(
        required=False,
        help_text="Seconds from creation until every layer was ready or one failed (until now while PENDING), "
        'as a decimal string with nanoseconds, e.g. `"1.250000000"`.',
    )


# --- presenters -----------------------------------------------------------------------------------


def instant(value: dt.datetime) -> str:
    """ISO-8601 instant in UTC with milliseconds: `2026-11-28T12:00:00.123Z`."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _without_nulls(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None and value != ""}


def present_token(request: ContainerRequest, *, v2: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "containerToken": request.token,
        "targetImage": request.target_image,
        "expiration": instant(request.expires_at),
        "containerImage": request.source_image,
        "buildId": request.build_id or None,
    }
    if v2:
        body["freeze"] = False
        if not request.build_id:
            body["succeeded"] = True  # nothing to build: the container is served as requested
    return _without_nulls(body)


def _layer(layer: InjectedLayer) -> dict[str, Any]:
    return {
        "location": layer.url if layer.kind == InjectedLayer.Kind.HTTP else "data:",
        "gzipDigest": layer.gzip_digest,
        "gzipSize": layer.gzip_size,
        "tarDigest": layer.tar_digest,
    }


def present_record(request: ContainerRequest) -> dict[str, Any]:
    config = dict(request.container_config)
    layers = list(request.layers.all())
    if layers:
        config["layers"] = [_layer(layer) for layer in layers]
    return _without_nulls(
        {
            "containerImage": request.source_image,
            "containerPlatform": request.platform,
            "containerConfig": config or None,
            "targetImage": request.target_image,
            "fingerprint": request.fingerprint,
            "timestamp": request.client_timestamp,
            "towerEndpoint": request.tower_endpoint,
            "towerWorkspaceId": request.tower_workspace_id,
            "userName": request.user_name,
            "buildId": request.build_id,
            "creationTime": instant(request.created_at),
        }
    )


def present_description(request: ContainerRequest) -> dict[str, Any]:
    return {
        "token": request.token,
        "expiration": instant(request.expires_at),
        "request": present_record(request),
        "source": _without_nulls({"image": request.source_image, "digest": request.source_digest}),
        "wave": _without_nulls({"image": request.target_image, "digest": request.wave_digest}),
    }


def present_record_v2(request: ContainerRequest) -> dict[str, Any]:
    return _without_nulls(
        {
            "requestId": request.token,
            **present_record(request),
            "expiration": instant(request.expires_at),
            "freeze": False,
            "sourceDigest": request.source_digest,
            "waveDigest": request.wave_digest,
        }
    )


def _duration(request: ContainerRequest, layers: list[InjectedLayer], *, is_pending: bool) -> str | None:
    """Seconds from creation until the last layer settled (until now while pending), as the reference
    writes them: a decimal string with nanoseconds, `"12.500000000"`. None when a settle time is unknown."""
    finished = [layer.finished_at for layer in layers]
    if is_pending:
        end = timezone.now()
    elif any(moment is None for moment in finished):
        return None
    else:
        end = max([request.created_at, *(moment for moment in finished if moment is not None)])
    seconds = max((end - request.created_at).total_seconds(), 0.0)
    return f"{seconds:.9f}"


def present_status(request: ContainerRequest) -> dict[str, Any]:
    """PENDING while layers download; DONE once all are ready (succeeded) or one failed (with the reason)."""
    layers = list(request.layers.all())
    failed = [layer for layer in layers if layer.state == InjectedLayer.State.FAILED]
    pending = [layer for layer in layers if layer.state == InjectedLayer.State.PENDING]
    body: dict[str, Any] = {"id": request.token, "creationTime": instant(request.created_at)}
    duration = _duration(request, layers, is_pending=bool(pending))
    if duration is not None:
        body["duration"] = duration
    if failed:
        first = failed[0]
        reason = f"Layer {first.position} ({first.gzip_digest}) failed: {first.failure_reason}"
        body.update(status="DONE", succeeded=False, reason=reason)
    elif pending:
        body.update(status="PENDING")
    else:
        body.update(status="DONE", succeeded=True)
    return body
