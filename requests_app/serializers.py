"""Wire formats of the container request API (v1 `/container-token`, v2 `/v1alpha2/container`).

Input serializers only check types; the reference's rules and messages live in `validation.py`.
Output serializers both document and produce every answer, leaving out null fields as the reference
does; layer locations are shown without credentials or signatures.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from requests_app.models import InjectedLayer
from wave_site.redact import redact_url
from wave_site.serializers import InstantField, OutputSerializer, SharedFieldsSerializer
from wave_site.serializers import instant as instant  # moved to wave_site (builds use it too); still importable here

# --- input --------------------------------------------------------------------------------------


# DRF's default choice error repeats the value sent; ours never echoes client input.
NO_ECHO_CHOICE: dict[str, Any] = {"invalid_choice": "Not a valid choice."}


class StrictCharField(serializers.CharField):
    """A JSON string only: DRF's CharField would turn `42` or `true` into text."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class InputSerializer(SharedFieldsSerializer):
    """A request body's types."""

    # Type errors in JSON terms: DRF's defaults name Python types ("got list", "got str").
    default_error_messages = {"invalid": "Expected a JSON object."}


class LayerListField(serializers.ListField):
    """The layers of a request: at most `WAVE_MAX_LAYERS`, counted before any layer is looked at."""

    def to_internal_value(self, data: Any) -> list[Any]:
        limit = settings.WAVE_MAX_LAYERS
        if isinstance(data, list) and len(data) > limit:
            raise serializers.ValidationError(f"At most {limit} layers are allowed in one request, got {len(data)}.")
        return super().to_internal_value(data)


class ConfigListField(serializers.ListField):
    """`entrypoint`, `cmd` or `env`: at most `WAVE_MAX_CONFIG_ENTRIES` entries, counted before any is looked at
    (every pull reads them; their total size is `validation.check_config_size`'s)."""

    def to_internal_value(self, data: Any) -> list[Any]:
        limit = settings.WAVE_MAX_CONFIG_ENTRIES
        if isinstance(data, list) and len(data) > limit:
            raise serializers.ValidationError(f"At most {limit} entries are allowed, got {len(data)}.")
        return super().to_internal_value(data)


def _list(child: serializers.Field, *, kind: type[serializers.ListField] = serializers.ListField,
          **kwargs: Any) -> serializers.ListField:  # fmt: skip
    """A JSON array (null allowed, entries not)."""
    return kind(
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
        StrictCharField(allow_blank=True, trim_whitespace=False),
        kind=ConfigListField,
        help_text="Replaces the image's entrypoint; at most `WAVE_MAX_CONFIG_ENTRIES` (1000) entries.",
    )
    cmd = _list(
        StrictCharField(allow_blank=True, trim_whitespace=False),
        kind=ConfigListField,
        help_text="Replaces the image's command; at most `WAVE_MAX_CONFIG_ENTRIES` (1000) entries.",
    )
    env = _list(
        StrictCharField(trim_whitespace=False),
        kind=ConfigListField,
        help_text="`NAME=value` entries appended to the image's environment; at most `WAVE_MAX_CONFIG_ENTRIES` "
        "(1000). Entrypoint, cmd, env and workingDir together: at most `WAVE_MAX_CONFIG_BYTES` (64 KiB) of JSON.",
    )
    workingDir = _text(max_length=4096, help_text="Working directory of the container.")
    layers = _list(
        ContainerLayerInputSerializer(),
        kind=LayerListField,
        help_text="Layers appended, in order, to the image; at most `WAVE_MAX_LAYERS` (64 by default).",
    )


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
    towerAccessToken = _text(
        max_length=4096, write_only=True,
        help_text="Tower (Seqera Platform) access token: identifies the caller, whose registry credentials in "
        "Tower then pull the image (the service must be paired with the endpoint, `POST /pairing`). Kept "
        "encrypted for the proxy's pulls, never echoed.",
    )  # fmt: skip
    towerRefreshToken = _text(
        max_length=4096, write_only=True,
        help_text="Tower refresh token: used once when the access token has expired (kept encrypted, never echoed).",
    )  # fmt: skip
    towerEndpoint = _text(
        max_length=512,
        help_text="Tower API base URL, as is (no path is added; `https://tower.example.com/api` for an installation "
        "of your own); `https://api.tower.nf` means `https://api.cloud.seqera.io`, the default.",
    )
    towerWorkspaceId = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=0,
        max_value=2**63 - 1,
        help_text="Tower workspace whose registry credentials apply; the personal workspace when omitted.",
    )
    packages = serializers.JSONField(required=False, allow_null=True, help_text="v2 only: refused on v1.")
    freeze = serializers.BooleanField(
        required=False, default=False, help_text="Push the result to `buildRepository` instead of serving it."
    )


class ContainerRequestV2InputSerializer(ContainerRequestV1InputSerializer):
    packages = serializers.JSONField(required=False, allow_null=True, help_text="Packages to build (CONDA, CRAN).")
    nameStrategy = serializers.ChoiceField(
        choices=["none", "tagPrefix", "imageSuffix"],
        required=False,
        allow_null=True,
        error_messages=NO_ECHO_CHOICE,
        help_text="How a built image is named in the build repository.",
    )
    dryRun = serializers.BooleanField(
        required=False, default=False, help_text="Validate and check only; store nothing."
    )
    mirror = serializers.BooleanField(
        required=False, default=False, help_text="Copy the image to `buildRepository` as it is."
    )
    workflowId = _text(help_text="The pipeline run this request belongs to.")
    buildContext = ContainerLayerInputSerializer(
        required=False, allow_null=True,
        help_text="The build context of a `containerFile` (what `COPY` and `ADD` read): a tar.gz layer, downloaded "
        "and verified like `containerConfig.layers`, then unpacked.",
    )  # fmt: skip
    format = serializers.ChoiceField(
        choices=["docker", "sif"],
        required=False,
        allow_null=True,
        error_messages=NO_ECHO_CHOICE,
        help_text="Image format to build: `docker` (default) or Singularity `sif`.",
    )


# --- output -------------------------------------------------------------------------------------


class LayerLocationField(serializers.CharField):
    """`data:` for an inline layer (its payload is never stored); the URL without secrets otherwise."""

    def get_attribute(self, instance: InjectedLayer) -> str:
        return "data:" if instance.kind == InjectedLayer.Kind.DATA else redact_url(instance.url)


class NotFrozenField(serializers.BooleanField):
    """`freeze` of a stored request: always false, since freezing is a build and builds are refused for now."""

    def get_attribute(self, instance: object) -> bool:
        return False


class FrozenOnlyField(serializers.BooleanField):
    """v1 `freeze`: shown only for a freeze answer (v1 answers have no such field otherwise)."""

    def to_representation(self, value: Any) -> Any:
        return True if value else None


class MirrorOnlyField(serializers.BooleanField):
    """v2 `mirror`: shown only for a mirror answer (requests_app.mirror), true."""

    def to_representation(self, value: Any) -> Any:
        return True if value else None


class ContainerTokenV1ResponseSerializer(OutputSerializer):
    containerToken = serializers.CharField(
        source="request.token", required=False, help_text="12 lowercase hex characters; not for a freeze."
    )
    targetImage = serializers.CharField(
        source="request.target_image", help_text="`<server>/wt/<token>/<path>:<tag>`, pullable by any client."
    )
    expiration = InstantField(
        source="request.expires_at", required=False, help_text="When the token stops pulls; not for a freeze."
    )
    containerImage = serializers.CharField(source="source", help_text="The normalised source image.")
    buildId = serializers.CharField(
        source="request.build_id", required=False, help_text="Present when a build was started or joined."
    )
    freeze: serializers.BooleanField = FrozenOnlyField(
        source="is_frozen", required=False, help_text="Present, true, when the image was pushed to `buildRepository`."
    )


class ContainerTokenV2ResponseSerializer(ContainerTokenV1ResponseSerializer):
    containerToken = serializers.CharField(
        source="request.token", required=False, help_text="12 lowercase hex characters; not for a dry run."
    )
    targetImage = serializers.CharField(
        source="request.target_image",
        required=False,
        help_text="`<server>/wt/<token>/<path>:<tag>`, pullable by any client; not for a dry run.",
    )
    expiration = InstantField(
        source="request.expires_at", required=False, help_text="When the token stops authorising pulls."
    )
    cached = serializers.BooleanField(
        source="is_cached", required=False, help_text="Only with a buildId: the image already existed."
    )
    freeze = serializers.BooleanField(
        source="is_frozen", help_text="Whether the image was pushed to the caller's repository."
    )
    succeeded = serializers.BooleanField(
        required=False, help_text="True when there is nothing to build; with a buildId, once the build succeeded."
    )
    detailsUri = serializers.CharField(
        source="details_uri", required=False, help_text="With a buildId: the build's page (state, live log)."
    )
    mirror = MirrorOnlyField(
        source="is_mirror", required=False,
        help_text="Present, true, for a mirror: `targetImage` is the copy in `buildRepository` and `buildId` the "
        "mirror's id (`/v1alpha1/mirrors/{id}`).",
    )  # fmt: skip


class ContainerLayerOutputSerializer(OutputSerializer):
    location = LayerLocationField(
        source="*", help_text="The layer's URL without user info or signatures; `data:` for inline layers."
    )
    gzipDigest = serializers.CharField(source="gzip_digest", help_text="sha256 of the tar.gz.")
    gzipSize = serializers.IntegerField(source="gzip_size", help_text="Size of the tar.gz in bytes.")
    tarDigest = serializers.CharField(source="tar_digest", help_text="sha256 of the uncompressed tar.")


def _strings(help_text: str, source: str) -> serializers.ListField:
    return serializers.ListField(child=serializers.CharField(), source=source, required=False, help_text=help_text)


class ContainerConfigOutputSerializer(OutputSerializer):
    """The requested changes of a stored request (over the ContainerRequest row)."""

    entrypoint = _strings("Replaces the image's entrypoint.", "container_config.entrypoint")
    cmd = _strings("Replaces the image's command.", "container_config.cmd")
    env = _strings("`NAME=value` entries appended to the image's environment.", "container_config.env")
    workingDir = serializers.CharField(
        source="container_config.workingDir", required=False, help_text="Working directory of the container."
    )
    layers = ContainerLayerOutputSerializer(
        many=True, source="layers.all", required=False, help_text="Layers appended, in order, to the image."
    )

    def to_representation(self, instance: Any) -> dict[str, Any]:
        data = super().to_representation(instance)
        if not data.get("layers"):
            data.pop("layers", None)
        return data


class ContainerRequestRecordSerializer(OutputSerializer):
    containerImage = serializers.CharField(source="source_image", help_text="The normalised source image.")
    containerPlatform = serializers.CharField(
        source="platform", help_text="The normalised platform, e.g. `linux/amd64`."
    )
    containerConfig = ContainerConfigOutputSerializer(
        source="*", required=False, help_text="The requested changes; `data:` layers show as `data:` only."
    )
    targetImage = serializers.CharField(source="target_image", help_text="The image name to pull.")
    fingerprint = serializers.CharField(required=False, help_text="As sent by the client.")
    timestamp = serializers.CharField(source="client_timestamp", required=False, help_text="As sent by the client.")
    towerEndpoint = serializers.CharField(
        source="tower_endpoint", required=False, help_text="The Tower endpoint credentials come from."
    )
    towerWorkspaceId = serializers.IntegerField(
        source="tower_workspace_id", required=False, help_text="The Tower workspace."
    )
    userName = serializers.CharField(source="user_name", required=False, help_text="The Tower user, when identified.")
    buildId = serializers.CharField(source="build_id", required=False, help_text="The build, for built images.")
    creationTime = InstantField(source="created_at", help_text="When the request was accepted.")


class SourceImageSerializer(OutputSerializer):
    image = serializers.CharField(source="source_image", help_text="The normalised source image.")
    digest = serializers.CharField(
        source="source_digest", required=False, help_text="Digest of the source manifest (`sha256:...`)."
    )


class WaveImageSerializer(OutputSerializer):
    image = serializers.CharField(source="target_image", help_text="The image name to pull.")
    digest = serializers.CharField(
        source="wave_digest", required=False, help_text="Digest of the manifest served, once first pulled."
    )


class ContainerDescriptionSerializer(OutputSerializer):
    token = serializers.CharField(help_text="The container token.")
    expiration = InstantField(source="expires_at", help_text="When the token stops authorising pulls.")
    request = ContainerRequestRecordSerializer(source="*", help_text="The request as stored.")
    # A field named like Field.source: DRF's metaclass takes it out of the class attributes.
    source = SourceImageSerializer(source="*", help_text="The source image.")  # type: ignore[assignment]
    wave = WaveImageSerializer(source="*", help_text="The image served; its digest once first pulled.")


class ContainerRecordV2Serializer(ContainerRequestRecordSerializer):
    requestId = serializers.CharField(source="token", help_text="The container token.")
    expiration = InstantField(source="expires_at", help_text="When the token stops authorising pulls.")
    freeze = NotFrozenField(help_text="Whether the image was pushed to the caller's repository.")
    sourceDigest = serializers.CharField(
        source="source_digest", required=False, help_text="Digest of the source manifest."
    )
    waveDigest = serializers.CharField(
        source="wave_digest", required=False, help_text="Digest of the manifest served, once first pulled."
    )


class ContainerStatusSerializer(OutputSerializer):
    id = serializers.CharField(source="token", help_text="The container token.")
    status = serializers.ChoiceField(
        choices=["PENDING", "BUILDING", "DONE"], help_text="PENDING while layers download; DONE once settled."
    )
    buildId = serializers.CharField(source="build_id", required=False, help_text="The build, for built images.")
    succeeded = serializers.BooleanField(required=False, help_text="Present once DONE.")
    reason = serializers.CharField(required=False, help_text="Why it did not succeed.")
    detailsUri = serializers.CharField(
        source="details_uri", required=False, help_text="Where a person can read the build's details."
    )
    creationTime = InstantField(source="created_at", help_text="When the request was accepted.")
    duration = serializers.CharField(
        required=False,
        help_text="Seconds from creation until every layer was ready or one failed (until now while PENDING), "
        'as a decimal string with nanoseconds, e.g. `"1.250000000"`.',
    )
