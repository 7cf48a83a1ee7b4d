"""The usage metrics API's query and answer."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class UsageMetricsQuerySerializer(serializers.Serializer):
    date = serializers.DateField(
        required=False,
        input_formats=["%Y-%m-%d"],
        help_text="A day (UTC), `YYYY-MM-DD`: count that day's events only.",
        error_messages={"invalid": "Invalid date: expected YYYY-MM-DD"},
    )
    org = serializers.CharField(
        required=False,
        max_length=253,
        help_text="An organisation, the e-mail domain of the callers (`example.com`): count their events only.",
    )
    arch = serializers.RegexField(
        r"^[a-z0-9_]{1,16}$",
        required=False,
        help_text="An architecture (`amd64`, `arm64`): count events on that architecture only.",
    )

    def to_internal_value(self, data: Any) -> Any:
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            date = exc.detail.get("date") if isinstance(exc.detail, dict) else None
            if date:  # DRF's own message does not name the bad value
                raise serializers.ValidationError(
                    {"date": [f"Invalid date '{str(data.get('date'))[:40]}': expected YYYY-MM-DD"]}
                ) from None
            raise

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "date" not in attrs and "org" not in attrs:
            raise serializers.ValidationError("Give a date (YYYY-MM-DD), an org (an e-mail domain), or both")
        return attrs


class UsageMetricsCountSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="How many events the filters match.")
