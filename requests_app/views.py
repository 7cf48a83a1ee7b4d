"""Container request API: thin views. Validate an input serializer, build the typed spec, call one
service or selector, render an output serializer."""

from __future__ import annotations

import re

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.permissions import AllowAny, BasePermission, IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from credentials.callers import Caller
from requests_app.api_examples import (
    BUILD_REQUEST_EXAMPLE,
    DESCRIPTION_EXAMPLE,
    ERROR_EXAMPLES,
    NOT_FOUND_EXAMPLE,
    RECORD_V2_EXAMPLE,
    REQUEST_EXAMPLE,
    STATUS_EXAMPLES,
    V1_RESPONSE_EXAMPLE,
    V2_RESPONSE_EXAMPLES,
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
)
from requests_app.services import container_request_create, container_request_revoke
from requests_app.status import container_request_status
from requests_app.validation import container_request_spec
from wave_site.api_examples import SERVICE_ERROR_EXAMPLES, error_example
from wave_site.authentication import OperatorBasicAuthentication
from wave_site.errors import RequestTooLarge, UnknownResource
from wave_site.serializers import ErrorMessageSerializer

TOKEN = re.compile(r"[0-9a-f]{12}")
# Every operation may answer these; `message` carries the error ID of a 500, also logged with its traceback.
SERVICE_ERRORS = {
    500: OpenApiResponse(ErrorMessageSerializer, description="Unexpected error; `message` holds an error ID."),
    503: OpenApiResponse(
        ErrorMessageSerializer, description="The database or Redis is unreachable; retry after `Retry-After`."
    ),
}
ERRORS = {
    400: OpenApiResponse(
        ErrorMessageSerializer,
        description="Invalid request, a source image (or platform) that does not exist upstream or is not "
        "accessible with the caller's credentials, a Tower endpoint without pairing or refused; `message` says why.",
    ),
    401: OpenApiResponse(
        ErrorMessageSerializer, description="Tower refused the `towerAccessToken` (and its refresh token, if any)."
    ),
    413: OpenApiResponse(ErrorMessageSerializer, description="Request body too large."),
    415: OpenApiResponse(ErrorMessageSerializer, description="The body is not `application/json`."),
    429: OpenApiResponse(
        ErrorMessageSerializer,
        description="Rate limit exceeded, or too many layer downloads of this client in progress; see `Retry-After`.",
    ),
    **SERVICE_ERRORS,
    503: OpenApiResponse(
        ErrorMessageSerializer,
        description="The source registry, Tower, the database or Redis is unavailable; retry later "
        "(after `Retry-After` when given).",
    ),
}
NOT_FOUND = {
    404: OpenApiResponse(ErrorMessageSerializer, description="Unknown, expired or revoked token."),
    **SERVICE_ERRORS,
}


class ContainerRequestView(APIView):
    """POST a container request; v1 and v2 differ in accepted fields and response shape."""

    authentication_classes: list[type] = []
    api_version = ContainerRequest.ApiVersion.V1
    input_serializer: type = ContainerRequestV1InputSerializer
    output_serializer: type = ContainerTokenV1ResponseSerializer

    def post(self, request: Request) -> Response:
        length = request.META.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > settings.WAVE_MAX_REQUEST_BYTES:
            raise RequestTooLarge(
                f"Request body exceeds the maximum allowed size of {settings.WAVE_MAX_REQUEST_BYTES} bytes"
            )
        serializer = self.input_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        spec = container_request_spec(serializer.validated_data, api_version=self.api_version)
        accepted = container_request_create(spec=spec, caller=Caller(ip=request.META.get("REMOTE_ADDR")))
        return Response(self.output_serializer(accepted).data)


class ContainerTokenV1View(ContainerRequestView):
    @extend_schema(
        operation_id="container_token_create",
        summary="Request a container (v1)",
        request=ContainerRequestV1InputSerializer,
        responses={200: ContainerTokenV1ResponseSerializer, **ERRORS},
        examples=[REQUEST_EXAMPLE, BUILD_REQUEST_EXAMPLE, V1_RESPONSE_EXAMPLE, *ERROR_EXAMPLES],
        tags=["containers"],
    )
    def post(self, request: Request) -> Response:
        return super().post(request)


class ContainerTokenV2View(ContainerRequestView):
    api_version = ContainerRequest.ApiVersion.V2
    input_serializer = ContainerRequestV2InputSerializer
    output_serializer = ContainerTokenV2ResponseSerializer

    @extend_schema(
        operation_id="container_create_v2",
        summary="Request a container (v2)",
        request=ContainerRequestV2InputSerializer,
        responses={200: ContainerTokenV2ResponseSerializer, **ERRORS},
        examples=[REQUEST_EXAMPLE, BUILD_REQUEST_EXAMPLE, *V2_RESPONSE_EXAMPLES, *ERROR_EXAMPLES],
        tags=["containers"],
    )
    def post(self, request: Request) -> Response:
        return super().post(request)


def active_request(token: str) -> ContainerRequest:
    request = container_request_get_active(token=token) if TOKEN.fullmatch(token) else None
    if request is None:
        raise UnknownResource(f"Unknown container token '{token}'")
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
        examples=[DESCRIPTION_EXAMPLE, NOT_FOUND_EXAMPLE, *SERVICE_ERROR_EXAMPLES],
        tags=["containers"],
    )
    def get(self, request: Request, token: str) -> Response:
        return Response(ContainerDescriptionSerializer(active_request(token)).data)

    @extend_schema(
        operation_id="container_token_revoke",
        summary="Revoke a container token (operators only)",
        responses={
            200: OpenApiResponse(description="Revoked."),
            401: OpenApiResponse(ErrorMessageSerializer, description="No credentials."),
            403: OpenApiResponse(ErrorMessageSerializer, description="Not an operator."),
            429: OpenApiResponse(
                ErrorMessageSerializer, description="Too many failed logins from this address; see `Retry-After`."
            ),
            **NOT_FOUND,
        },
        examples=[
            error_example("no credentials", 401, "Authentication credentials were not provided."),
            error_example("not an operator", 403, "You do not have permission to perform this action."),
            error_example("failed logins", 429, "Too many failed logins from this address - retry in 60 seconds"),
            NOT_FOUND_EXAMPLE,
            *SERVICE_ERROR_EXAMPLES,
        ],
        tags=["containers"],
    )
    def delete(self, request: Request, token: str) -> Response:
        if not TOKEN.fullmatch(token):
            raise UnknownResource(f"Unknown container token '{token}'")
        container_request_revoke(token=token)
        return Response(status=200)


class ContainerRecordV2View(APIView):
    authentication_classes: list[type] = []

    @extend_schema(
        operation_id="container_describe_v2",
        summary="The stored container request",
        responses={200: ContainerRecordV2Serializer, **NOT_FOUND},
        examples=[RECORD_V2_EXAMPLE, NOT_FOUND_EXAMPLE, *SERVICE_ERROR_EXAMPLES],
        tags=["containers"],
    )
    def get(self, request: Request, token: str) -> Response:
        return Response(ContainerRecordV2Serializer(active_request(token)).data)


class ContainerStatusV2View(APIView):
    authentication_classes: list[type] = []

    @extend_schema(
        operation_id="container_status_v2",
        summary="Whether the container is ready to pull",
        responses={200: ContainerStatusSerializer, **NOT_FOUND},
        examples=[*STATUS_EXAMPLES, NOT_FOUND_EXAMPLE, *SERVICE_ERROR_EXAMPLES],
        tags=["containers"],
    )
    def get(self, request: Request, token: str) -> Response:
        return Response(ContainerStatusSerializer(container_request_status(active_request(token))).data)
