"""The usage metrics API (`/v1alpha2/metrics/<builds|pulls|mirrors>`, Basic auth) and Prometheus' `/metrics`."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from wave_site.api_examples import SERVICE_ERROR_EXAMPLES, error_example
from wave_site.metrics.prometheus import metrics_text
from wave_site.metrics.serializers import UsageMetricsCountSerializer, UsageMetricsQuerySerializer
from wave_site.metrics.usage import UsageKind, usage_get
from wave_site.serializers import ErrorMessageSerializer

GetMethod = TypeVar("GetMethod", bound=Callable[..., Response])


def basic_auth_check(request: Request) -> None:
    """The operator's Basic credentials (WAVE_METRICS_USER / WAVE_METRICS_PASSWORD), else 401; 404 when unset."""
    user, password = settings.WAVE_METRICS_USER, settings.WAVE_METRICS_PASSWORD
    if not user or not password:
        raise Http404
    scheme, _space, encoded = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise exceptions.NotAuthenticated("Basic credentials required")
    try:
        given_user, colon, given_password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise exceptions.AuthenticationFailed("Malformed Basic credentials") from None
    # Both compared, whatever the first gives: the answer's time says nothing about which was wrong.
    user_ok = secrets.compare_digest(given_user.encode(), user.encode())
    password_ok = secrets.compare_digest(given_password.encode(), password.encode())
    if not (colon and user_ok and password_ok):
        raise exceptions.AuthenticationFailed("Invalid username or password")


def _schema(kind: UsageKind, what: str, example_count: int) -> Callable[[GetMethod], GetMethod]:
    """The OpenAPI description of one usage metrics operation."""
    return extend_schema(
        operation_id=f"metrics_{kind}",
        summary=f"How many {what}: on a day, of an organisation, or both",
        description=(
            f"Counts {what} as they happen, per day (UTC), per organisation (the caller's e-mail domain) and per "
            "architecture. Give `date`, `org` or both (`arch` narrows further). HTTP Basic auth with the "
            "operator's credentials (`WAVE_METRICS_USER` / `WAVE_METRICS_PASSWORD`); 404 when those are not set."
        ),
        parameters=[UsageMetricsQuerySerializer],
        auth=[{"metricsBasicAuth": []}],  # type: ignore[list-item]  # security requirements, as spectacular emits
        responses={
            200: UsageMetricsCountSerializer,
            400: OpenApiResponse(ErrorMessageSerializer, description="Neither date nor org, or a malformed one."),
            401: OpenApiResponse(ErrorMessageSerializer, description="Missing or wrong Basic credentials."),
            404: OpenApiResponse(ErrorMessageSerializer, description="The usage metrics are off (no credentials set)."),
            500: OpenApiResponse(ErrorMessageSerializer, description="Unexpected error; `message` holds an error ID."),
            503: OpenApiResponse(ErrorMessageSerializer, description="The cache (Redis) is unreachable."),
        },
        examples=[
            OpenApiExample(f"{kind} of a day", value={"count": example_count}, response_only=True),
            error_example("no filter", 400, "Give a date (YYYY-MM-DD), an org (an e-mail domain), or both"),
            error_example("malformed date", 400, "date: Invalid date '2024-13-01': expected YYYY-MM-DD"),
            error_example("no credentials", 401, "Basic credentials required"),
            error_example("wrong credentials", 401, "Invalid username or password"),
            error_example("metrics off", 404, "Not found"),
            *SERVICE_ERROR_EXAMPLES,
        ],
        tags=["metrics"],
    )


class _UsageMetricsView(APIView):
    authentication_classes: list[type] = []  # the operator's credentials are checked by basic_auth_check
    kind: UsageKind

    def get(self, request: Request) -> Response:
        basic_auth_check(request)
        query = UsageMetricsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        filters = query.validated_data
        count = usage_get(kind=self.kind, day=filters.get("date"), org=filters.get("org", ""),
                          arch=filters.get("arch", ""))  # fmt: skip
        return Response(UsageMetricsCountSerializer({"count": count}).data)


class BuildMetricsView(_UsageMetricsView):
    kind = UsageKind.BUILDS

    @_schema(UsageKind.BUILDS, "container builds were accepted", 42)
    def get(self, request: Request) -> Response:
        return super().get(request)


class PullMetricsView(_UsageMetricsView):
    kind = UsageKind.PULLS

    @_schema(UsageKind.PULLS, "container images were pulled (manifest requests by tag)", 1250)
    def get(self, request: Request) -> Response:
        return super().get(request)


class MirrorMetricsView(_UsageMetricsView):
    kind = UsageKind.MIRRORS

    @_schema(UsageKind.MIRRORS, "mirrors were accepted", 7)
    def get(self, request: Request) -> Response:
        return super().get(request)


def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus' scrape: 404 unless WAVE_METRICS_ENABLED, 401 without `Authorization: Bearer <WAVE_METRICS_TOKEN>`."""
    if not settings.WAVE_METRICS_ENABLED or request.method not in ("GET", "HEAD"):
        raise Http404
    scheme, _space, token = request.headers.get("Authorization", "").partition(" ")
    expected = settings.WAVE_METRICS_TOKEN.encode()
    if scheme.lower() != "bearer" or not expected or not secrets.compare_digest(token.strip().encode(), expected):
        return JsonResponse(
            {"message": "A bearer token is required"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)
