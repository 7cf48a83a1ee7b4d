"""Credentials API: thin views. `/validate-creds` checks a login at a registry, `/pairing` hands Tower a public key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from credentials.api_examples import PAIRING_EXAMPLES, VALIDATE_CREDS_EXAMPLES
from credentials.logins import registry_login_validate
from credentials.pairing import pairing_key_request
from credentials.serializers import PairingInputSerializer, PairingResponseSerializer, ValidateCredsInputSerializer
from wave_site.authentication import client_address
from wave_site.serializers import ErrorMessageSerializer

View = TypeVar("View", bound=Callable[..., Any])
COMMON_ERRORS = {
    413: OpenApiResponse(ErrorMessageSerializer, description="Request body too large."),
    415: OpenApiResponse(ErrorMessageSerializer, description="The body is not `application/json`."),
    500: OpenApiResponse(ErrorMessageSerializer, description="Unexpected error; `message` holds an error ID."),
}
VALIDATE_CREDS_DESCRIPTION = """\
Logs in at the registry with the credentials given, as `docker login` does: `GET /v2/` shows how the
registry authenticates; a Basic registry is asked `/v2/` again with the credentials, a Bearer one its token
service for a token (with its `service`, no scope). A registry open to anonymous pulls that accepts the
credentials counts as a valid login. Nothing is kept: no token, no password, no log line with either.

`200` with the JSON body `true`: the registry accepted the credentials. `400` with a `message`: it refused
them (`Invalid credentials for registry '<host>'`), a field is blank, the registry is malformed, or the
registry (or its token service) resolves to a private, local or metadata address (`Invalid registry
hostname`; operators exempt hosts with `WAVE_SSRF_ALLOW`). A registry that cannot be reached, or fails, is
not a verdict on the credentials: `503` with `Retry-After`.

Every attempt counts, valid or not, before anything is sent: against the client's address (an IPv6 client
by its /64), `WAVE_VALIDATE_CREDS_PER_MINUTE` per minute (10 by default), and against the account tried (the
user name at that registry) from all addresses together, `WAVE_VALIDATE_CREDS_PER_ACCOUNT_PER_HOUR` per hour
(20 by default); past either, `429` with `Retry-After`.
"""
PAIRING_DESCRIPTION = """\
Tower (Seqera Platform) registers the service's public key for its endpoint, then encrypts the registry
credentials it sends with it. One RSA-2048 key pair per endpoint is handed out while its lease lasts (a new
one after that); the same endpoint asked again gets the same pair meanwhile. `pairingId` is a number sent
as a string of digits (it may exceed what a JavaScript number holds exactly).

The endpoint must be one the service may contact: one that does not resolve, or resolves to a private, local
or metadata address, is refused before any key is made, `400` with `Tower endpoint refused: <reason>`
(operators exempt hosts with `WAVE_SSRF_ALLOW`). Each well-formed request counts against the client's address
(an IPv6 client by its /64): `WAVE_PAIRING_PER_MINUTE` per minute (10 by default), then `429` with
`Retry-After`.
"""


def validate_creds_schema(operation_id: str, summary: str) -> Callable[[View], View]:
    """The one description of `/validate-creds`, under each of its paths' operation IDs."""
    return extend_schema(
        operation_id=operation_id,
        summary=summary,
        description=VALIDATE_CREDS_DESCRIPTION,
        request=ValidateCredsInputSerializer,
        responses={
            200: OpenApiResponse(OpenApiTypes.BOOL, description="The credentials are valid: the body is `true`."),
            400: OpenApiResponse(
                ErrorMessageSerializer,
                description="Invalid credentials, a blank field, a malformed registry, or a registry the service "
                "may not contact (`Invalid registry hostname`).",
            ),
            429: OpenApiResponse(
                ErrorMessageSerializer,
                description="Too many checks from this address, or of this account; see `Retry-After`.",
            ),
            **COMMON_ERRORS,
            503: OpenApiResponse(
                ErrorMessageSerializer,
                description="The registry (or its token service), Redis or the database is unavailable; "
                "retry after `Retry-After`.",
            ),
        },
        examples=VALIDATE_CREDS_EXAMPLES,
        tags=["credentials"],
    )


class ValidateCredsView(APIView):
    authentication_classes: list[type] = []

    @validate_creds_schema("credentials_validate", "Check a login at a container registry")
    def post(self, request: Request) -> Response:
        serializer = ValidateCredsInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        registry_login_validate(
            registry=data.get("registry"),
            username=data["userName"],
            password=data["password"],
            client=client_address(request),
        )
        return Response(True)


class ValidateCredsV2View(ValidateCredsView):
    @validate_creds_schema("credentials_validate_v2", "Check a login at a container registry (v1alpha2 path)")
    def post(self, request: Request) -> Response:
        return super().post(request)


class PairingView(APIView):
    authentication_classes: list[type] = []

    @extend_schema(
        operation_id="pairing_register",
        summary="Pair with Tower: the public key for its endpoint",
        description=PAIRING_DESCRIPTION,
        request=PairingInputSerializer,
        responses={
            200: PairingResponseSerializer,
            400: OpenApiResponse(
                ErrorMessageSerializer,
                description="Unknown service, a missing or bad endpoint, or an endpoint the service may not contact "
                "(`Tower endpoint refused: ...`).",
            ),
            429: OpenApiResponse(
                ErrorMessageSerializer, description="Too many pairing requests from this address; see `Retry-After`."
            ),
            **COMMON_ERRORS,
            503: OpenApiResponse(
                ErrorMessageSerializer, description="The database is unreachable; retry after `Retry-After`."
            ),
        },
        examples=PAIRING_EXAMPLES,
        tags=["credentials"],
    )
    def post(self, request: Request) -> Response:
        serializer = PairingInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key = pairing_key_request(**serializer.validated_data, client=client_address(request))
        return Response(PairingResponseSerializer(key).data)
