"""Build API (record, status, log) and the build page: thin views over builds.selectors and builds.logs.

The log is text/plain and carries an ETag (its size): the page polls it every two seconds, and a poll
that finds nothing new is answered 304 without reading the blob store.
"""

from __future__ import annotations

import datetime as dt

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import parse_etags
from django.views.decorators.http import require_safe
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from builds.api_examples import (
    CONDA_LOCK_EXAMPLE,
    LOG_EXAMPLE,
    NO_CONDA_LOCK_EXAMPLE,
    NOT_FOUND_EXAMPLE,
    RECORD_EXAMPLES,
    STATUS_EXAMPLES,
)
from builds.logs import build_log_text
from builds.models import Build
from builds.selectors import build_get, build_status_name
from builds.serializers import BuildRecordSerializer, BuildStatusSerializer
from wave_site.api_examples import SERVICE_ERROR_EXAMPLES
from wave_site.errors import UnknownResource
from wave_site.serializers import ErrorMessageSerializer

BUILD_ID_PARAMETER = OpenApiParameter(
    "build_id",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="The build id, `bd-<containerId>_<n>`, as a container request's answer gives it.",
    pattern=r"^bd-[0-9a-f]{16}_[0-9]+$",
)
ERRORS = {
    404: OpenApiResponse(ErrorMessageSerializer, description="Unknown build id."),
    500: OpenApiResponse(ErrorMessageSerializer, description="Unexpected error; `message` holds an error ID."),
    503: OpenApiResponse(
        ErrorMessageSerializer, description="The database, Redis or the blob store is unreachable; retry later."
    ),
}
ERROR_EXAMPLES = [NOT_FOUND_EXAMPLE, *SERVICE_ERROR_EXAMPLES]
CONDA_LOCK_ERRORS = {
    **ERRORS,
    404: OpenApiResponse(ErrorMessageSerializer, description="Unknown build id, or a build without a Conda lock."),
}


def existing_build(build_id: str) -> Build:
    build = build_get(build_id=build_id)
    if build is None:
        raise UnknownResource(f"Unknown build id '{build_id}'")
    return build


class BuildRecordView(APIView):
    authentication_classes: list[type] = []

    @extend_schema(
        operation_id="build_describe",
        summary="A build: its inputs, state, timings and result",
        parameters=[BUILD_ID_PARAMETER],
        responses={200: BuildRecordSerializer, **ERRORS},
        examples=[*RECORD_EXAMPLES, *ERROR_EXAMPLES],
        tags=["builds"],
    )
    def get(self, request: Request, build_id: str) -> Response:
        return Response(BuildRecordSerializer(existing_build(build_id)).data)


class BuildStatusView(APIView):
    authentication_classes: list[type] = []

    @extend_schema(
        operation_id="build_status",
        summary="Whether a build has completed, and whether it succeeded",
        parameters=[BUILD_ID_PARAMETER],
        responses={200: BuildStatusSerializer, **ERRORS},
        examples=[*STATUS_EXAMPLES, *ERROR_EXAMPLES],
        tags=["builds"],
    )
    def get(self, request: Request, build_id: str) -> Response:
        return Response(BuildStatusSerializer(existing_build(build_id)).data)


class AnyAcceptNegotiation(BaseContentNegotiation):
    """Errors are JSON whatever the client accepts (the log itself is always text/plain): a client asking for
    `text/plain` gets the log or a JSON error, never a 406."""

    def select_parser(self, request: Request, parsers: list) -> None:  # type: ignore[override]
        return None  # GET only: no body to parse

    def select_renderer(self, request: Request, renderers: list, format_suffix: str | None = None) -> tuple:  # type: ignore[override]
        return renderers[0], renderers[0].media_type


def log_etag(build: Build) -> str:
    """A log only grows: its size names its content."""
    return f'"{build.build_id}-{build.log_size}"'


class BuildLogView(APIView):
    authentication_classes: list[type] = []
    content_negotiation_class = AnyAcceptNegotiation

    @extend_schema(
        operation_id="build_logs",
        summary="The build's log so far, as plain text",
        description="The builder's output written so far (all of it once the build ended; capped at "
        "`WAVE_BUILD_LOG_MAX_BYTES`). Answers carry an `ETag`: send it back in `If-None-Match` to get a 304 "
        "when nothing was added.",
        parameters=[BUILD_ID_PARAMETER],
        responses={
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="The log so far (UTF-8)."),
            (304, "text/plain"): OpenApiResponse(description="Nothing added since the `If-None-Match` ETag."),
            **{(status, "application/json"): response for status, response in ERRORS.items()},
        },
        examples=[LOG_EXAMPLE, *ERROR_EXAMPLES],
        tags=["builds"],
    )
    def get(self, request: Request, build_id: str) -> HttpResponse:
        build = existing_build(build_id)
        etag = log_etag(build)
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag in parse_etags(request.headers.get("If-None-Match", "")):
            return HttpResponse(status=304, headers=headers)
        return HttpResponse(build_log_text(build=build), content_type="text/plain; charset=utf-8", headers=headers)


class BuildCondaLockView(APIView):
    authentication_classes: list[type] = []
    content_negotiation_class = AnyAcceptNegotiation

    @extend_schema(
        operation_id="build_conda_lock",
        summary="The Conda lock of a build, as plain text",
        description="The explicit lock (`micromamba env export --explicit`) a Conda recipe build printed between "
        "`>> CONDA_LOCK_START` and `<< CONDA_LOCK_END`: one package URL a line. Kept once the build ended; 404 "
        "for an unknown build and for one without a lock (not a Conda build, still running, or failed before "
        "the lock was printed).",
        parameters=[BUILD_ID_PARAMETER],
        responses={
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="The lock (UTF-8)."),
            **{(status, "application/json"): response for status, response in CONDA_LOCK_ERRORS.items()},
        },
        examples=[CONDA_LOCK_EXAMPLE, NO_CONDA_LOCK_EXAMPLE, *ERROR_EXAMPLES],
        tags=["builds"],
    )
    def get(self, request: Request, build_id: str) -> HttpResponse:
        build = existing_build(build_id)
        if not build.conda_lock:
            raise UnknownResource(f"No Conda lock for build '{build_id}'")
        disposition = f'inline; filename="conda-env-{build.build_id}.lock"'
        return HttpResponse(
            build.conda_lock, content_type="text/plain; charset=utf-8", headers={"Content-Disposition": disposition}
        )


# --- the page ------------------------------------------------------------------------------------


def page_time(moment: dt.datetime | None) -> str:
    """`2026-11-27 10:00:01 UTC`: what the page's script writes from the API's instants too."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


def page_duration(seconds: float | None) -> str:
    """`42.3 s`, `3 min 05 s`, `1 h 02 min`: as the page's script writes them."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@require_safe
def build_page(request: HttpRequest, build_id: str) -> HttpResponse:
    """The build for people: its state, inputs and log (the log so far rendered here, so it reads without
    JavaScript); while it is active the page's script follows the status and the log."""
    build = build_get(build_id=build_id)
    if build is None:
        return render(request, "builds/not_found.html", {"build_id": build_id}, status=404)
    context = {
        "build": build,
        "status": build_status_name(build),
        "created": page_time(build.created_at),
        "started": page_time(build.started_at),
        "finished": page_time(build.finished_at),
        "duration": page_duration(build.duration),
        "log": build_log_text(build=build),
        "record_url": reverse("build-record", args=[build.build_id]),
        "status_url": reverse("build-status", args=[build.build_id]),
        "logs_url": reverse("build-logs", args=[build.build_id]),
        "conda_lock_url": reverse("build-conda-lock", args=[build.build_id]),
    }
    return render(request, "builds/build.html", context)
