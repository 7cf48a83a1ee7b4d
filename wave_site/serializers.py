"""Wire formats of the service-wide answers: service info, health, and the `{"message"}` error body."""

from __future__ import annotations

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
