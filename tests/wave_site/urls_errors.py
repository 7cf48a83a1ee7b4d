"""A URLconf with views that fail on purpose, to test the error mapping."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from wave_site.errors import BadRequest, TooManyRequests


class EchoInputSerializer(serializers.Serializer):
    name = serializers.CharField()
    count = serializers.IntegerField()


class EchoView(APIView):
    def post(self, request: Request) -> Response:
        serializer = EchoInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(serializer.validated_data)


class FailingView(APIView):
    def get(self, request: Request) -> Response:
        kind = request.query_params.get("kind")
        if kind == "bad":
            raise BadRequest("Specify either 'containerImage' or 'containerFile' attribute")
        if kind == "limit":
            raise TooManyRequests("Request exceeded build rate limit", retry_after=42)
        raise KeyError("internal detail <secret-path>")


def plain_failing_view(request: HttpRequest) -> HttpResponse:
    raise ValueError("boom in a plain view")


urlpatterns = [
    path("echo", EchoView.as_view()),
    path("fail", FailingView.as_view()),
    path("plain-fail", plain_failing_view),
]
