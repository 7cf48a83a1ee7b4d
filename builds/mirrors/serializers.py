"""Wire format of a mirror's record (`/v1alpha1/mirrors/{mirrorId}`): the build record's house formats, null
fields left out."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from builds.mirrors.selectors import mirror_page_url
from builds.models import Build
from builds.serializers import DURATION_HELP, BuildDurationField, BuildStatusField
from wave_site.serializers import InstantField, OutputSerializer


class MirrorPageUriField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(source="build_id", **kwargs)

    def to_representation(self, value: str) -> str:
        return mirror_page_url(value)


class MirrorRecordSerializer(OutputSerializer):
    """A mirror: what it copies where, its state, timings and result; absent fields are not known yet."""

    mirrorId = serializers.CharField(source="build_id", help_text="`mr-<containerId>_<n>`.")
    sourceImage = serializers.CharField(source="source_image", help_text="The image copied.")
    targetImage = serializers.CharField(
        source="target_image", help_text="The copy: `<build repository>/<source path>:<tag>`, pullable directly."
    )
    platform = serializers.CharField(
        required=False, help_text="The only platform copied from an index; absent: every platform."
    )
    digest = serializers.CharField(
        required=False, help_text="Digest of the manifest (or index) pushed, once succeeded: the source's own."
    )
    status = BuildStatusField(help_text="PENDING while queued or running; COMPLETED once finished.")
    succeeded = serializers.BooleanField(required=False, help_text="Once COMPLETED: whether the copy was pushed.")
    state = serializers.ChoiceField(
        choices=Build.State.values, help_text="pending (queued), running, succeeded, failed or cancelled."
    )
    reason = serializers.CharField(
        source="failure_reason", required=False, help_text="Why the mirror failed or was cancelled, in one line."
    )
    creationTime = InstantField(source="created_at", help_text="When the mirror was requested.")
    startTime = InstantField(
        source="started_at", required=False, help_text="When a worker started the copy; absent while queued."
    )
    duration = BuildDurationField(required=False, help_text=DURATION_HELP)
    finishTime = InstantField(source="finished_at", required=False, help_text="When the mirror ended.")
    pageUri = MirrorPageUriField(help_text="The mirror's page: its state and log, followed live while it runs.")
