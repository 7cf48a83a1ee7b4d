"""OpenAPI examples every app's operations share: an error answer, and the answers any operation may give."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample


def error_example(name: str, status: int, message: str) -> OpenApiExample:
    return OpenApiExample(name, response_only=True, status_codes=[str(status)], value={"message": message})


# Answers every operation may give: an unexpected error (its ID is in the log), a store outage.
SERVICE_ERROR_EXAMPLES = [
    error_example("unexpected error", 500, "Unexpected error - Error ID: 3f2a9c0b7d1e"),
    error_example("database down", 503, "Service temporarily unavailable (database unreachable), retry in 10 seconds"),
]
