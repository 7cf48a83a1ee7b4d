"""Counts every answered request for Prometheus, by endpoint (the URL's name), method and status."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

from wave_site.metrics.prometheus import REQUESTS

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _count(request: HttpRequest, response: HttpResponseBase) -> None:
    if not settings.WAVE_METRICS_ENABLED:
        return
    match = request.resolver_match
    endpoint = (match.url_name or match.route or "unnamed") if match is not None else "unmatched"
    method = request.method if request.method in METHODS else "other"  # bounded label values
    REQUESTS.labels(endpoint, method, str(response.status_code)).inc()


class RequestMetricsMiddleware:
    """Outermost but one: sees the status of every answer, errors included (they are answered inside)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self._acall(request)
        response = self.get_response(request)
        assert isinstance(response, HttpResponseBase)
        _count(request, response)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        response: HttpResponseBase = await self.get_response(request)  # type: ignore[misc]
        _count(request, response)
        return response
