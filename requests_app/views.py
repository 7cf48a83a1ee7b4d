"""Container request API: thin views over `services` and `selectors`."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.permissions import AllowAny, BasePermission, IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from credentials.callers import Caller
from requests_app.api_examples import (
    DESCRIPTION_EXAMPLE,
    ERROR_EXAMPLES,
    NOT_FOUND_EXAMPLE,
    RECORD_V2_EXAMPLE,
    REQUEST_EXAMPLE,
    STATUS_EXAMPLES,
    V1_RESPONSE_EXAMPLE,
    V2_RESPONSE_EXAMPLES,
    error_example,
)
from requests_app.models import ContainerRequest
from requests_app.selectors import container_request_get_active
from requests_app.serializers import (
    ContainerDescriptionSerializer,
    ContainerRecordV2Serializer,
    ContainerRequestV1InputSerializer,
    ContainerRequestV2InputSerializer,
    ContainerStatusSerializer,
    ContainerTokenV1ResponseSerializer,
    ContainerTokenV2ResponseSerializer,
    present_description,
    present_record_v2,
    present_status,
    present_token,
)
from requests_app.services import container_request_create, container_request_revoke
from wave_site.authentication import OperatorBasicAuthentication
from wave_site.errors import NotFound, WaveError
from wave_site.serializers import ErrorMessageSerializer

TOKEN = re.compile(r"[0-9a-f]{12}")
ERRORS = {
    400: OpenApiResponse(ErrorMessageSerializer, description="Invalid request; `message` says why."),
    413: OpenApiResponse(ErrorMessageSerializer, description="Request body too large."),
    429: OpenApiResponse(ErrorMessageSerializer, description="Rate limit exceeded; see `Retry-After`."),
    501: OpenApiResponse(ErrorMessageSerializer, description="Builds are not available yet."),
    503: OpenApiResponse(ErrorMessageSerializer, description="The source registry is unavailable."),
}
NOT_FOUND = {404: OpenApiResponse(ErrorMessageSerializer, description="Unknown, expired or revoked token.")}


class RequestTooLarge(WaveError):
    status_code = 413


class ContainerRequestView(APIView):
    """POST a container request; v1 and v2 differ in accepted fields and response shape."""

    authentication_classes: list[type] = []
    api_version = ContainerRequest.ApiVersion.V1
    input_serializer: type = ContainerRequestV1InputSerializer

    def post(self, request: Request) -> Response:
        length = request.META.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > settings.WAVE_MAX_REQUEST_BYTES:
            raise RequestTooLarge(
                f"Request body exceeds the maximum allowed size of {settings.WAVE_MAX_REQUEST_BYTES} bytes"
            )
        serializer = self.input_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        caller = Caller(ip=request.META.get("REMOTE_ADDR"))
        accepted = container_request_create(
            data=dict(serializer.validated_data), api_version=self.api_version, caller=caller
        )
        v2 = self.api_version == ContainerRequest.ApiVersion.V2
        if accepted.request is None:  # dry run
            return Response({"containerImage": str(accepted.source), "freeze": False})
        return Response(present_token(accepted.request, v2=v2))


class ContainerTokenV1View(ContainerRequestView):
    @extend_schema(
        operation_id="container_token_create",
        summary="Request a container (v1)",
        request=ContainerRequestV1InputSerializer,
        responses={200: ContainerTokenV1ResponseSerializer, **ERRORS},
        examples=[REQUEST_EXAMPLE, V1_RESPONSE_EXAMPLE, *ERROR_EXAMPLES],
        tags=["containers"],
    )
    def post(self, request: Request) -> Response:
        return super().post(request)


class ContainerTokenV2View(ContainerRequestView):
    api_version = ContainerRequest.ApiVersion.V2
    input_serializer = ContainerRequestV2InputSerializer

    @extend_schema(
        operation_id="container_create_v2",
        summary="Request a container (v2)",
        request=ContainerRequestV2InputSerializer,
        responses={200: ContainerTokenV2ResponseSerializer, **ERRORS},
        examples=[REQUEST_EXAMPLE, *V2_RESPONSE_EXAMPLES, *ERROR_EXAMPLES],
        tags=["containers"],
    )
    def post(self, request: Request) -> Response:
        return super().post(request)


def active_request(token: str) -> ContainerRequest:
    request = container_request_get_active(token=token) if TOKEN.fullmatch(token) else None
    if request is None:
        raise NotFound(f"Unknown container token '{token}'")
    return request


class ContainerTokenDetailView(APIView):
    def get_authenticators(self) -> list[BaseAuthentication]:
        # Only DELETE authenticates (Basic first, so that anonymous callers get a 401 challenge, not a 403);
        # describing a token is public and must not fail on an unrelated Authorization header.
        request = getattr(self, "request", None)  # None while drf-spectacular builds the schema
        if request is not None and request.method == "DELETE":
            return [OperatorBasicAuthentication(), SessionAuthentication()]
        return []

    def get_permissions(self) -> list[BasePermission]:
        return [IsAdminUser()] if self.request.method == "DELETE" else [AllowAny()]

    @extend_schema(
        operation_id="container_token_describe",
        summary="Describe a container request",
        responses={200: ContainerDescriptionSerializer, **NOT_FOUND},
        examples=[DESCRIPTION_EXAMPLE, NOT_FOUND_EXAMPLE],
        tags=["containers"],
    )
    def get(self, request: Request, token: str) -> Response:
        return Response(present_description(active_request(token)))

    @extend_schema(
        operation_id="container_token_revoke",
        summary="Revoke a container token (operators only)",
        responses={
            200: OpenApiResponse(description="Revoked."),
            401: OpenApiResponse(ErrorMessageSerializer, description="No credentials."),
            403: OpenApiResponse(ErrorMessageSerializer, description="Not an operator."),
            **NOT_FOUND,
        },
        examples=[
            error_example("no credentials", 401, "Authentication credentials were not provided."),
            error_example("not an operator", 403, "You do not have permission to perform this action."),
            NOT_FOUND_EXAMPLE,
        ],
        tags=["containers"],
    )
    def delete(self, request: Request, token: str) -> Response:
        if not TOKEN.fullmatch(token):
            raise NotFound(f"Unknown container token '{token}'")
        container_request_revoke(token=token)
        return Response(status=200)


class ContainerRecordV2View(APIView):
    authentication_classes: list[type] = []

    @extend_schema(
        operation_id="container_describe_v2",
        summary="The stored container request",
        responses={200: ContainerRecordV2Serializer, **NOT_FOUND},
        examples=[RECORD_V2_EXAMPLE, NOT_FOUND_EXAMPLE],
        tags=["containers"],
    )
    def get(self, request: Request, token: str) -> Response:
        return Response(present_record_v2(active_request(token)))


class ContainerStatusV2View(APIView):
    authentication_classes: list[type] = []

    @extend_schema(
        operation_id="container_status_v2",
        summary="Whether the container is ready to pull",
        responses={200: ContainerStatusSerializer, **NOT_FOUND},
        examples=[*STATUS_EXAMPLES, NOT_FOUND_EXAMPLE],
        tags=["containers"],
    )
    def get(self, request: Request, token: str) -> Response:
        body: dict[str, Any] = present_status(active_request(token))
        return Response(body)
