"""Wire formats of `POST /v1alpha1/inspect`: the request's types, and the answer (null and empty fields left out)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from requests_app.inspect.services import Inspection
from requests_app.serializers import InputSerializer, StrictCharField
from wave_site.serializers import OutputSerializer


class InspectRequestInputSerializer(InputSerializer):
    containerImage = StrictCharField(max_length=1024, help_text="The image, e.g. `docker.io/library/ubuntu:22.04`.")
    platform = StrictCharField(
        required=False, allow_null=True, allow_blank=True,
        help_text="The platform whose image of an index is described: `linux/amd64` (default), `linux/arm64`...",
    )  # fmt: skip
    towerAccessToken = StrictCharField(
        max_length=4096, required=False, allow_null=True, allow_blank=True, write_only=True,
        help_text="Tower access token: the caller's registry credentials in Tower read the image (as for a "
        "container request); the service's own credentials when omitted.",
    )  # fmt: skip
    towerRefreshToken = StrictCharField(
        max_length=4096, required=False, allow_null=True, allow_blank=True, write_only=True,
        help_text="Tower refresh token: used once when the access token has expired.",
    )  # fmt: skip
    towerEndpoint = StrictCharField(
        max_length=512, required=False, allow_null=True, allow_blank=True,
        help_text="Tower API base URL (`https://api.cloud.seqera.io` by default).",
    )  # fmt: skip
    towerWorkspaceId = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=2**63 - 1,
        help_text="Tower workspace whose registry credentials apply; the personal workspace when omitted.",
    )  # fmt: skip


class InspectDescriptorSerializer(OutputSerializer):
    digest = serializers.CharField(help_text="`sha256:<hex>`.")
    size = serializers.IntegerField(help_text="Bytes.")
    mediaType = serializers.CharField(source="media_type", required=False, help_text="As the document names it.")


class InspectPlatformSerializer(InspectDescriptorSerializer):
    os = serializers.CharField(required=False, help_text="e.g. `linux`.")
    architecture = serializers.CharField(required=False, help_text="e.g. `amd64`, `arm64`.")
    variant = serializers.CharField(required=False, help_text="e.g. `v7`; absent when the index names none.")


class InspectConfigSerializer(OutputSerializer):
    """The image config's fields a user looks for; absent when the image does not set them."""

    architecture = serializers.CharField(required=False, help_text="e.g. `amd64`.")
    os = serializers.CharField(required=False, help_text="e.g. `linux`.")
    variant = serializers.CharField(required=False, help_text="e.g. `v7`, for arm images.")
    created = serializers.CharField(required=False, help_text="As the config writes it (RFC 3339).")
    entrypoint = serializers.ListField(child=serializers.CharField(), required=False, help_text="`Entrypoint`.")
    cmd = serializers.ListField(child=serializers.CharField(), required=False, help_text="`Cmd`.")
    env = serializers.ListField(child=serializers.CharField(), required=False, help_text="`NAME=value` entries.")
    workingDir = serializers.CharField(required=False, help_text="`WorkingDir`.")
    user = serializers.CharField(required=False, help_text="`User`.")
    diffIds = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Digests of the uncompressed layers."
    )


class InspectManifestSerializer(InspectPlatformSerializer):
    config = InspectDescriptorSerializer(source="config_descriptor", help_text="The config blob.")
    layers = InspectDescriptorSerializer(many=True, help_text="In order, base first; sizes compressed.")

    def to_representation(self, instance: Inspection) -> dict[str, Any]:
        summary = {**InspectPlatformSerializer(instance.manifest).data}
        return summary | {
            "config": InspectDescriptorSerializer(instance.config_descriptor).data,
            "layers": InspectDescriptorSerializer(instance.layers, many=True).data,
        }


class InspectContainerSerializer(OutputSerializer):
    registry = serializers.CharField(source="ref.registry", help_text="e.g. `docker.io`.")
    imageName = serializers.CharField(source="ref.repository", help_text="The repository, e.g. `library/ubuntu`.")
    reference = serializers.CharField(source="ref.version", help_text="The tag or digest asked for.")
    digest = serializers.CharField(help_text="Digest of what the reference names (an index or an image manifest).")
    mediaType = serializers.CharField(source="media_type", help_text="Media type of that document.")
    platforms = InspectPlatformSerializer(
        many=True, required=False, help_text="An index's images, one per platform; absent for a single image."
    )
    manifest = InspectManifestSerializer(source="*", help_text="The image manifest described (of the platform).")
    config = InspectConfigSerializer(help_text="The image config.")

    def to_representation(self, instance: Inspection) -> dict[str, Any]:
        data = super().to_representation(instance)
        return {key: value for key, value in data.items() if value != []}


class InspectResponseSerializer(OutputSerializer):
    container = InspectContainerSerializer(source="*", help_text="The image, as the registry describes it.")
