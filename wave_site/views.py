"""The service's own pages and endpoints: home page, favicon, /service-info and /health."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from wave_site.config import commit_id
from wave_site.health import run_checks
from wave_site.serializers import ErrorMessageSerializer, HealthSerializer, ServiceInfoSerializer

# Any endpoint may answer this (wave_site.errors): documented so that the schema names every answer.
UNEXPECTED_ERROR = OpenApiResponse(ErrorMessageSerializer, description="Unexpected error; `message` holds an error ID.")
FAVICON = Path(__file__).resolve().parent / "static" / "wave_site" / "favicon.ico"


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    """What this service is, where its docs, admin and status endpoints are, and how images are named."""
    image_prefix = urlsplit(settings.WAVE_SERVER_URL).netloc
    local_registry = settings.WAVE_BUILD_REPO.split("/", 1)[0] if settings.WAVE_LOCAL_REGISTRY else None
    context = {"server_url": settings.WAVE_SERVER_URL, "image_prefix": image_prefix, "local_registry": local_registry}
    return render(request, "wave_site/home.html", context)


@cache
def _favicon_bytes() -> bytes:
    return FAVICON.read_bytes()


@require_safe
def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico whatever the page says: answer it instead of logging a 404."""
    response = HttpResponse(_favicon_bytes(), content_type="image/vnd.microsoft.icon")
    response["Cache-Control"] = "public, max-age=86400"
    return response


class ServiceInfoView(APIView):
    authentication_classes: list[type] = []

    @extend_schema(
        operation_id="service_info",
        summary="Service version and commit",
        responses={200: ServiceInfoSerializer, 500: UNEXPECTED_ERROR},
        examples=[
            OpenApiExample(
                "service info",
                value={"serviceInfo": {"version": "0.1.0", "commitId": "1a2b3c4d5e"}},
                response_only=True,
            )
        ],
        tags=["service"],
    )
    def get(self, request: Request) -> Response:
        return Response({"serviceInfo": {"version": settings.WAVE_VERSION, "commitId": commit_id()}})


class HealthView(APIView):
    authentication_classes: list[type] = []

    @extend_schema(
        operation_id="health",
        summary="State of the database, cache, broker and default build registry",
        description="200 when every part is up; 503 with `message` naming the failing parts otherwise.",
        responses={
            200: HealthSerializer,
            503: OpenApiResponse(HealthSerializer, description="Some part is down: `message` names which."),
            500: UNEXPECTED_ERROR,
        },
        examples=[
            OpenApiExample(
                "down",
                status_codes=["503"],
                response_only=True,
                value={
                    "status": "DOWN",
                    "message": "Unhealthy: registry: connection refused or unreachable",
                    "checks": {
                        "database": {"status": "UP", "detail": "postgresql"},
                        "cache": {"status": "UP", "detail": "RedisCache"},
                        "broker": {"status": "UP", "detail": "redis"},
                        "registry": {"status": "DOWN", "detail": "connection refused or unreachable"},
                        "blobs": {"status": "UP", "detail": "filesystem"},
                    },
                },
            )
        ],
        tags=["service"],
    )
    def get(self, request: Request) -> Response:
        results = run_checks()
        checks = {r.name: {"status": "UP" if r.is_up else "DOWN", "detail": r.detail} for r in results}
        failing = [r for r in results if not r.is_up]
        if not failing:
            return Response({"status": "UP", "checks": checks})
        message = "Unhealthy: " + "; ".join(f"{r.name}: {r.detail}" for r in failing)
        return Response({"status": "DOWN", "message": message, "checks": checks}, status=503)
