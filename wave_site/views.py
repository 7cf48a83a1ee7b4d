from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from wave_site.health import run_checks
from wave_site.serializers import HealthSerializer, ServiceInfoSerializer


class ServiceInfoView(APIView):
    authentication_classes: list[type] = []

    @extend_schema(
        operation_id="service_info",
        summary="Service version and commit",
        responses={200: ServiceInfoSerializer},
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
        return Response({"serviceInfo": {"version": settings.WAVE_VERSION, "commitId": settings.WAVE_COMMIT_ID}})


class HealthView(APIView):
    authentication_classes: list[type] = []

    @extend_schema(
        operation_id="health",
        summary="State of the database, cache, broker and default build registry",
        description="200 when every part is up; 503 with `message` naming the failing parts otherwise.",
        responses={200: HealthSerializer, 503: HealthSerializer},
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
