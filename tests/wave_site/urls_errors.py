"""A URLconf with views that fail on purpose, to test the error mapping."""

from __future__ import annotations

import redis
from django.core.exceptions import RequestDataTooBig
from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django_redis.exceptions import ConnectionInterrupted
from kombu.exceptions import OperationalError as BrokerOperationalError
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from wave_site.errors import InvalidRequest, RateLimited


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
            raise InvalidRequest("Specify either 'containerImage' or 'containerFile' attribute")
        if kind == "limit":
            raise RateLimited("Request exceeded build rate limit", retry_after=42)
        raise KeyError("internal detail <secret-path>")


def outage(kind: str | None) -> Exception:
    if kind == "database":
        return OperationalError("couldn't get a connection after 2.00 sec")
    if kind == "cache":  # as django-redis raises it
        try:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        except redis.ConnectionError as exc:
            wrapped = ConnectionInterrupted(connection=None)
            wrapped.__cause__ = exc
            return wrapped
    if kind == "broker":
        return BrokerOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    if kind == "too-big":
        return RequestDataTooBig("Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE.")
    return redis.TimeoutError("Timeout reading from socket")


class OutageView(APIView):
    def get(self, request: Request) -> Response:
        raise outage(request.query_params.get("kind"))


def plain_failing_view(request: HttpRequest) -> HttpResponse:
    raise ValueError("boom in a plain view")


def plain_outage_view(request: HttpRequest, rest: str = "") -> HttpResponse:
    raise outage(request.GET.get("kind"))


urlpatterns = [
    path("echo", EchoView.as_view()),
    path("fail", FailingView.as_view()),
    path("plain-fail", plain_failing_view),
    path("outage", OutageView.as_view()),
    path("plain-outage", plain_outage_view),
    path("v2/<path:rest>", plain_outage_view),
]
