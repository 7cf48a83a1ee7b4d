"""Mirror API (record, log) and the mirror page: thin views over builds.mirrors.selectors and builds.logs; the page
is the build page's template (state, log followed live) on the mirror's row."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import parse_etags
from django.views.decorators.http import require_safe
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from builds.logs import build_log_text
from builds.mirrors.api_examples import LOG_EXAMPLE, NOT_FOUND_EXAMPLE, RECORD_EXAMPLES
from builds.mirrors.selectors import mirror_get
from builds.mirrors.serializers import MirrorRecordSerializer
from builds.models import Build
from builds.selectors import build_status_name
from builds.views import ERRORS, AnyAcceptNegotiation, log_etag, page_duration, page_time
from wave_site.api_examples import SERVICE_ERROR_EXAMPLES
from wave_site.errors import UnknownResource

MIRROR_ID_PARAMETER = OpenApiParameter(
    "mirror_id",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="The mirror id, `mr-<containerId>_<n>`, as a mirror request's answer gives it (`buildId`).",
    pattern=r"^mr-[0-9a-f]{16}_[0-9]+$",
)
ERROR_EXAMPLES = [NOT_FOUND_EXAMPLE, *SERVICE_ERROR_EXAMPLES]


def existing_mirror(mirror_id: str) -> Build:
    mirror = mirror_get(mirror_id=mirror_id)
    if mirror is None:
        raise UnknownResource(f"Unknown mirror id '{mirror_id}'")
    return mirror


class MirrorRecordView(APIView):
    authentication_classes: list[type] = []

    @extend_schema(
        operation_id="mirror_describe",
        summary="A mirror: what it copies where, its state, timings and result",
        parameters=[MIRROR_ID_PARAMETER],
        responses={200: MirrorRecordSerializer, **ERRORS},
        examples=[*RECORD_EXAMPLES, *ERROR_EXAMPLES],
        tags=["builds"],
    )
    def get(self, request: Request, mirror_id: str) -> Response:
        return Response(MirrorRecordSerializer(existing_mirror(mirror_id)).data)


class MirrorLogView(APIView):
    authentication_classes: list[type] = []
    content_negotiation_class = AnyAcceptNegotiation

    @extend_schema(
        operation_id="mirror_logs",
        summary="The mirror's log so far, as plain text",
        description="What the copy did so far (blobs copied or mounted, manifests pushed). Answers carry an `ETag`: "
        "send it back in `If-None-Match` to get a 304 when nothing was added.",
        parameters=[MIRROR_ID_PARAMETER],
        responses={
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="The log so far (UTF-8)."),
            (304, "text/plain"): OpenApiResponse(description="Nothing added since the `If-None-Match` ETag."),
            **{(status, "application/json"): response for status, response in ERRORS.items()},
        },
        examples=[LOG_EXAMPLE, *ERROR_EXAMPLES],
        tags=["builds"],
    )
    def get(self, request: Request, mirror_id: str) -> HttpResponse:
        mirror = existing_mirror(mirror_id)
        etag = log_etag(mirror)
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag in parse_etags(request.headers.get("If-None-Match", "")):
            return HttpResponse(status=304, headers=headers)
        return HttpResponse(build_log_text(build=mirror), content_type="text/plain; charset=utf-8", headers=headers)


@require_safe
def mirror_page(request: HttpRequest, mirror_id: str) -> HttpResponse:
    """The mirror for people: its state, source, target and log (followed live by the page's script; the record
    answers its status polls too)."""
    mirror = mirror_get(mirror_id=mirror_id)
    if mirror is None:
        return render(request, "builds/not_found.html", {"build_id": mirror_id}, status=404)
    record_url = reverse("mirror-record", args=[mirror.build_id])
    context = {
        "build": mirror,
        "status": build_status_name(mirror),
        "created": page_time(mirror.created_at),
        "started": page_time(mirror.started_at),
        "finished": page_time(mirror.finished_at),
        "duration": page_duration(mirror.duration),
        "log": build_log_text(build=mirror),
        "record_url": record_url,
        "status_url": record_url,  # the record has the status fields the page follows
        "logs_url": reverse("mirror-logs", args=[mirror.build_id]),
        "conda_lock_url": reverse("build-conda-lock", args=[mirror.build_id]),  # a 404: a mirror has no lock
    }
    return render(request, "builds/build.html", context)
