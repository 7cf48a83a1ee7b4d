"""Wire formats of the build API (`/v1alpha1/builds/{buildId}` and its `/status`): the reference's fields, in the
house formats (instants in UTC with milliseconds, durations as seconds with nanoseconds), null fields left out."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from builds.models import Build
from builds.selectors import COMPLETED, PENDING, build_page_url, build_status_name
from wave_site.serializers import InstantField, OutputSerializer, duration_text


class BuildDurationField(serializers.CharField):
    """Seconds from the start until the end (until now while running), as `"12.500000000"`; absent before the
    build started."""

    def to_representation(self, value: Any) -> str:  # the model's `duration`, a float
        return duration_text(float(value))


# A pattern, not an enum: drf-spectacular names enums by field name, and `status` already names three choice sets
# (ENUM_NAME_OVERRIDES in the settings could name this one).
@extend_schema_field({"type": "string", "pattern": f"^({PENDING}|{COMPLETED})$", "example": PENDING})
class BuildStatusField(serializers.ChoiceField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=[PENDING, COMPLETED], source="*", **kwargs)

    def to_representation(self, value: Any) -> str:  # the Build itself (source "*")
        return build_status_name(value)


class BuildPageUriField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(source="build_id", **kwargs)

    def to_representation(self, value: str) -> str:
        return build_page_url(value)


DURATION_HELP = (
    "Seconds from the start until the end (until now while it runs), as a decimal string with nanoseconds, "
    'e.g. `"84.250000000"`; absent while queued.'
)


class BuildStatusSerializer(OutputSerializer):
    """Whether a build has completed and whether it succeeded; absent fields are not known yet."""

    id = serializers.CharField(source="build_id", help_text="The build id, `bd-<containerId>_<n>`.")
    status = BuildStatusField(help_text="PENDING while queued or running; COMPLETED once finished.")
    startTime = InstantField(
        source="started_at", required=False, help_text="When a worker started the build; absent while queued."
    )
    duration = BuildDurationField(required=False, help_text=DURATION_HELP)
    succeeded = serializers.BooleanField(
        required=False, help_text="Once COMPLETED: whether the image was built and pushed."
    )


class BuildRecordSerializer(OutputSerializer):
    """A build: what it builds, where it pushes, its state, timings and result; absent fields are not known yet
    (or empty)."""

    buildId = serializers.CharField(source="build_id", help_text="`bd-<containerId>_<n>`.")
    dockerFile = serializers.CharField(source="container_file", help_text="The Containerfile built.")
    condaFile = serializers.CharField(
        source="conda_file", required=False, help_text="The Conda environment file, for Conda builds."
    )
    spackFile = serializers.CharField(
        source="spack_file", required=False, help_text="The Spack recipe, for Spack builds."
    )
    targetImage = serializers.CharField(
        source="target_image", help_text="Where the image is pushed: `<build repository>:<containerId>`."
    )
    platform = serializers.CharField(help_text="The platform built for, e.g. `linux/amd64`.")
    startTime = InstantField(
        source="started_at", required=False, help_text="When a worker started the build; absent while queued."
    )
    duration = BuildDurationField(required=False, help_text=DURATION_HELP)
    exitStatus = serializers.IntegerField(
        source="exit_status", required=False, help_text="The builder's exit status, once it ran."
    )
    digest = serializers.CharField(required=False, help_text="Digest of the pushed image manifest, once succeeded.")
    status = BuildStatusField(help_text="PENDING while queued or running; COMPLETED once finished.")
    succeeded = serializers.BooleanField(
        required=False, help_text="Once COMPLETED: whether the image was built and pushed."
    )
    state = serializers.ChoiceField(
        choices=Build.State.values, help_text="pending (queued), running, succeeded, failed or cancelled."
    )
    reason = serializers.CharField(
        source="failure_reason", required=False, help_text="Why the build failed or was cancelled, in one line."
    )
    creationTime = InstantField(source="created_at", help_text="When the build was requested.")
    finishTime = InstantField(source="finished_at", required=False, help_text="When the build ended.")
    pageUri = BuildPageUriField(help_text="The build's page: its state and log, followed live while it runs.")
