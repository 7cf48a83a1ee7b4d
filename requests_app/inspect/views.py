"""`POST /v1alpha1/inspect`: a thin view. The caller identified as for a container request, the image read with their
credentials (requests_app.inspect.services)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from credentials.callers import tower_endpoint_of
from credentials.clients import registry_client_with
from credentials.sessions import tower_caller_identify
from requests_app.inspect.api_examples import ERROR_EXAMPLES, REQUEST_EXAMPLE, RESPONSE_EXAMPLE
from requests_app.inspect.serializers import InspectRequestInputSerializer, InspectResponseSerializer
from requests_app.inspect.services import container_inspect
from requests_app.validation import check_image, check_platform
from requests_app.views import SERVICE_ERRORS
from wave_site.errors import InvalidRequest
from wave_site.serializers import ErrorMessageSerializer

ERRORS = {
    400: OpenApiResponse(
        ErrorMessageSerializer,
        description="Invalid request, an image that does not exist or is not readable with the caller's "
        "credentials, a refused registry host, a platform the index does not offer; `message` says why.",
    ),
    401: OpenApiResponse(ErrorMessageSerializer, description="Tower refused the `towerAccessToken`."),
    **SERVICE_ERRORS,
    503: OpenApiResponse(
        ErrorMessageSerializer, description="The registry, Tower, the database or Redis is unavailable; retry later."
    ),
}


class ContainerInspectView(APIView):
    """POST an image name; its manifest summary and config, read with the caller's credentials."""

    authentication_classes: list[type] = []

    @extend_schema(
        operation_id="container_inspect",
        summary="Inspect an image: its platforms, layers and config",
        request=InspectRequestInputSerializer,
        responses={200: InspectResponseSerializer, **ERRORS},
        examples=[REQUEST_EXAMPLE, RESPONSE_EXAMPLE, *ERROR_EXAMPLES],
        tags=["containers"],
    )
    def post(self, request: Request) -> Response:
        serializer = InspectRequestInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        ref = check_image(data)
        if ref is None:
            raise InvalidRequest("Specify the 'containerImage' attribute")
        platform = check_platform(data.get("platform"))
        tower = None
        if data.get("towerAccessToken"):
            _caller, tower = tower_caller_identify(
                ip=request.META.get("REMOTE_ADDR"), endpoint=tower_endpoint_of(data.get("towerEndpoint")),
                workspace_id=data.get("towerWorkspaceId"), access_token=data["towerAccessToken"],
                refresh_token=data.get("towerRefreshToken") or "",
            )  # fmt: skip
        inspection = container_inspect(
            ref=ref, image_name=data["containerImage"], platform=platform,
            is_platform_named=bool(data.get("platform")), client=registry_client_with(tower),
        )  # fmt: skip
        return Response(InspectResponseSerializer(inspection).data)
