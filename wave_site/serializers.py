"""Wire formats of the service-wide answers (service info, health, the `{"message"}` error body) and the house
formats every app's answers share: instants, durations, and output serializers that leave out null fields."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from rest_framework import serializers


class ServiceInfoDetailSerializer(serializers.Serializer):
    version = serializers.CharField(help_text="Service version (semver).")
    commitId = serializers.CharField(help_text="Git commit the service runs, or `unknown`.")


class ServiceInfoSerializer(serializers.Serializer):
    serviceInfo = ServiceInfoDetailSerializer(help_text="What is running.")


class HealthCheckSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["UP", "DOWN"], help_text="State of this part.")
    detail = serializers.CharField(help_text="What was checked, or why it failed.")


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["UP", "DOWN"], help_text="UP when every part is up.")
    message = serializers.CharField(required=False, help_text="Present when DOWN: the failing parts.")
    checks = serializers.DictField(child=HealthCheckSerializer(), help_text="database, cache, broker, registry, blobs")


class ErrorMessageSerializer(serializers.Serializer):
    message = serializers.CharField(help_text="What went wrong, in words a person can act on.")


def error_body(message: str) -> dict[str, Any]:
    """The body of every API error answer (the exception handler's one mapping uses it)."""
    return dict(ErrorMessageSerializer({"message": message}).data)


# --- house formats, shared by every app's answers --------------------------------------------------


def instant(value: dt.datetime) -> str:
    """ISO-8601 instant in UTC with milliseconds: `2026-11-28T12:00:00.123Z`."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def duration_text(seconds: float) -> str:
    """A duration as the reference writes it: seconds as a decimal string with nanoseconds, `"12.500000000"`."""
    return f"{max(seconds, 0.0):.9f}"


class InstantField(serializers.DateTimeField):
    """An instant as the reference writes it: UTC, milliseconds, `Z`."""

    def to_representation(self, value: dt.datetime) -> str:
        return instant(value)


def _keeps_state(field: serializers.Field) -> bool:
    return isinstance(field, serializers.BaseSerializer) or isinstance(
        getattr(field, "child", None), serializers.BaseSerializer
    )


class SharedFieldsSerializer(serializers.Serializer):
    """Plain fields are shallow-copied per serializer instance, not rebuilt.

    DRF deep-copies every declared field for each serializer instance, which re-runs every field's
    constructor: that was a tenth of a POST's CPU. Plain fields keep no per-request state (binding
    sets attributes on the copy only), so a shallow copy is enough; nested serializers (and lists of
    them) still get a deep copy, because they do keep state while validating.
    """

    def get_fields(self) -> dict[str, serializers.Field]:
        return {name: copy.deepcopy(field) if _keeps_state(field) else copy.copy(field)
                for name, field in self._declared_fields.items()}  # fmt: skip


# Bound output fields per serializer class (see OutputSerializer._readable_fields).
_READABLE_FIELDS: dict[type, list[serializers.Field]] = {}


class OutputSerializer(SharedFieldsSerializer):
    """An answer: null and empty values are left out, as the reference omits null fields."""

    @property
    def _readable_fields(self) -> list[serializers.Field]:
        """Rendering only reads its fields, so they are bound once per class and shared by every answer:
        copying and binding them for each one was most of the cost of rendering it."""
        fields = _READABLE_FIELDS.get(type(self))
        if fields is None:
            bound = [field for field in self.fields.values() if not field.write_only]
            fields = _READABLE_FIELDS.setdefault(type(self), bound)
        return fields  # only iterated, never changed

    def to_representation(self, instance: Any) -> dict[str, Any]:
        data = super().to_representation(instance)
        return {key: value for key, value in data.items() if value is not None and value != "" and value != {}}
