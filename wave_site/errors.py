"""The application's error hierarchy and its one mapping to HTTP for the REST API.

Services raise `WaveError` subclasses with the message the client should read; the DRF exception
handler and the error middleware turn them, and anything unexpected, into `{"message": ...}`.
Unexpected errors never leak internals: the client gets an error ID that is also in the log.

Outages of the database or Redis (cache and broker) are not unexpected: `outage_of` names the store an
exception says is unreachable, and both paths answer 503 with `Retry-After` (the OCI error body under
`/v2/`), logging one line without a traceback; the next request tries the store again.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

import redis
from django.core.exceptions import DisallowedHost, PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils.deprecation import MiddlewareMixin
from django_redis.exceptions import ConnectionInterrupted  # type: ignore[import-untyped]
from kombu.exceptions import OperationalError as BrokerOperationalError
from redis.exceptions import MasterDownError, OutOfMemoryError, ReadOnlyError
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response

from wave_site.serializers import error_body

logger = logging.getLogger("wave.errors")


class WaveError(Exception):
    """An error the client caused or must know about; `message` is shown to the client as is.

    Domain code raises these by what happened, never by HTTP status: the API maps each kind to its
    status once, in `HTTP_STATUS` (the `/v2` proxy maps its own errors in `requests_app.oci.errors`).
    """

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidRequest(WaveError):
    """The request breaks a rule; the message names it (the reference's wording where it has one)."""


class NotAuthenticated(WaveError):
    """The caller's credentials (a Tower access token) were refused by whoever issued them."""


class UnknownResource(WaveError):
    """What the request names does not exist for this caller (an unknown, expired or revoked token)."""


class RequestTooLarge(WaveError):
    """The request body is larger than the service accepts."""


class RateLimited(WaveError):
    """The caller asked too often; `Retry-After` says when to try again."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class FeatureUnavailable(WaveError):
    """A capability this service does not offer (yet)."""


class TemporarilyUnavailable(WaveError):
    """Something the answer depends on (a registry, the blob store) cannot be reached now."""


HTTP_STATUS: dict[type[WaveError], int] = {
    InvalidRequest: 400,
    NotAuthenticated: 401,
    UnknownResource: 404,
    RequestTooLarge: 413,
    RateLimited: 429,
    FeatureUnavailable: 501,
    TemporarilyUnavailable: 503,
}


def http_status_of(exc: WaveError) -> int:
    """The status of an application error: its kind's, or the closest base kind's in HTTP_STATUS."""
    for kind in type(exc).__mro__:
        if kind in HTTP_STATUS:
            return HTTP_STATUS[kind]
    return 400


def new_error_id() -> str:
    return secrets.token_hex(6)


def unexpected_error_message(exc: BaseException) -> str:
    """Log `exc` with a fresh error ID and return the message the client sees."""
    error_id = new_error_id()
    logger.error("Unexpected error - Error ID: %s", error_id, exc_info=(type(exc), exc, exc.__traceback__))
    return f"Unexpected error - Error ID: {error_id}"


# Seconds a client is told to wait when a store is down: long enough not to hammer it, short enough to
# notice a restart quickly.
OUTAGE_RETRY_AFTER = 10
OCI_HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}
# Distribution-spec error codes for application errors that reach the middleware under /v2/.
OCI_CODES = {400: "UNSUPPORTED", 401: "UNAUTHORIZED", 403: "DENIED", 404: "NAME_UNKNOWN", 429: "TOOMANYREQUESTS",
             503: "UNAVAILABLE"}  # fmt: skip


def outage_of(exc: BaseException) -> str | None:
    """The store `exc` says is unreachable (`database`, `redis` or `broker`), or None for any other error.

    django.db's OperationalError covers a refused connection, a connection dropped mid-query and the pool's
    PoolTimeout (Django wraps whatever the driver raises); a Celery publish fails with kombu's. A Redis that
    refuses writes (out of memory, a read-only replica) is an outage too: the request can succeed once it is fixed.
    """
    if isinstance(exc, DatabaseOperationalError | DatabaseInterfaceError):
        return "database"
    if isinstance(exc, ConnectionInterrupted):  # django-redis wraps the redis-py error
        exc = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError) or _is_redis_refusal(exc):
        return "redis"
    if isinstance(exc, BrokerOperationalError):
        return "broker"
    return None


# Replies of a Redis that is up but refuses writes (full under `noeviction`, a read-only replica, a replica
# without its master). redis-py raises them as ResponseError subclasses; older servers nest the code in a
# script's error ("ERR Error running script ...: -OOM command not allowed ...").
REDIS_REFUSALS = re.compile(r"(?:^|-)(?:OOM|READONLY|MASTERDOWN) ")


def _is_redis_refusal(exc: BaseException) -> bool:
    if isinstance(exc, OutOfMemoryError | ReadOnlyError | MasterDownError):
        return True
    return isinstance(exc, redis.ResponseError) and REDIS_REFUSALS.search(str(exc)) is not None


def outage_message(store: str) -> str:
    return f"Service temporarily unavailable ({store} unreachable), retry in {OUTAGE_RETRY_AFTER} seconds"


def log_outage(store: str, request: HttpRequest, exc: BaseException) -> None:
    """One line per failed request, without a traceback: an outage is expected, and its cause is known."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    logger.warning("%s unreachable: %s %s answered 503 (%s)", store, request.method, request.path, lines[0][:200])


def outage_response(store: str, request: HttpRequest, exc: BaseException) -> HttpResponse:
    """503 with Retry-After; the OCI error body under `/v2/`, `{"message"}` elsewhere."""
    log_outage(store, request, exc)
    message = outage_message(store)
    headers = {"Retry-After": str(OUTAGE_RETRY_AFTER)}
    if request.path.startswith("/v2/"):
        body = {"errors": [{"code": "UNAVAILABLE", "message": message, "detail": None}]}
        response = JsonResponse(body, status=503, headers={**headers, **OCI_HEADERS})
    else:
        response = JsonResponse({"message": message}, status=503, headers=headers)
    response._has_been_logged = True  # type: ignore[attr-defined]  # Django's own "already logged" mark
    return response


def request_too_large_message() -> str:
    from django.conf import settings

    return f"Request body exceeds the maximum allowed size of {settings.WAVE_MAX_REQUEST_BYTES} bytes"


def _first_validation_message(detail: Any, field: str | None = None) -> str:
    """DRF's nested validation errors reduced to one readable line: `field.sub[0].name: message`."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if not value:
                continue
            if key == "non_field_errors":
                name = field
            elif isinstance(key, int) or str(key).isdigit():
                name = f"{field}[{key}]" if field else f"[{key}]"
            else:
                name = f"{field}.{key}" if field else str(key)
            return _first_validation_message(value, name)
        return "Invalid request"
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if not value:
                continue
            if isinstance(value, dict | list):
                return _first_validation_message(value, f"{field}[{index}]" if field else None)
            return _first_validation_message(value, field)
        return "Invalid request"
    text = str(detail)
    return f"{field}: {text}" if field else text


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    headers: dict[str, str] = {}
    if isinstance(exc, SuspiciousOperation) and not isinstance(exc, RequestDataTooBig):
        return None  # re-raised by DRF, answered by ErrorIdMiddleware: JSON even on the HTML docs pages
    store = outage_of(exc)
    if store is not None:
        log_outage(store, context["request"], exc)
        response = Response(
            error_body(outage_message(store)), status=503, headers={"Retry-After": str(OUTAGE_RETRY_AFTER)}
        )
        response._has_been_logged = True  # type: ignore[attr-defined]  # Django's own "already logged" mark
        return response
    if isinstance(exc, WaveError):
        status, message, headers = http_status_of(exc), exc.message, exc.headers
    elif isinstance(exc, drf_exceptions.ParseError):
        status, message = 400, "Malformed JSON request body"
    elif isinstance(exc, drf_exceptions.UnsupportedMediaType):
        status, message = 415, "Unsupported media type: send a JSON body with Content-Type: application/json"
    elif isinstance(exc, drf_exceptions.ValidationError):
        status, message = 400, _first_validation_message(exc.detail)
    elif isinstance(exc, drf_exceptions.NotAuthenticated | drf_exceptions.AuthenticationFailed):
        status, message = 401, str(exc.detail)
        headers = {"WWW-Authenticate": 'Basic realm="wave"'}
    elif isinstance(exc, drf_exceptions.Throttled):
        status, message = 429, str(exc.detail)
        wait = getattr(exc, "wait", None)  # set by Throttled.__init__; missing from the type stubs
        if wait is not None:
            headers = {"Retry-After": str(int(wait))}
    elif isinstance(exc, drf_exceptions.APIException):
        status, message = exc.status_code, str(exc.detail)
    elif isinstance(exc, RequestDataTooBig):
        status, message = 413, request_too_large_message()
    elif isinstance(exc, Http404):
        status, message = 404, "Not found"
    elif isinstance(exc, PermissionDenied):
        status, message = 403, "Forbidden"
    else:
        status, message = 500, unexpected_error_message(exc)
    return Response(error_body(message), status=status, headers=headers)


class ErrorIdMiddleware(MiddlewareMixin):
    """Exceptions outside DRF views (the `/v2/` proxy, the admin): outages are 503s, request bodies over the
    limit 413s, hostile requests Django calls suspicious (a malformed Host header) 400s, anything unexpected a
    JSON 500 with an error ID and the traceback only in the log."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, Http404 | PermissionDenied):
            return None  # Django's own handlers answer these
        store = outage_of(exception)
        if store is not None:
            return outage_response(store, request, exception)
        oci = request.path.startswith("/v2/")  # registry clients read the distribution spec's error body
        headers: dict[str, str] = {}
        if isinstance(exception, WaveError):  # e.g. the login throttle on the admin's login form
            status, message, headers = http_status_of(exception), exception.message, exception.headers
            code = OCI_CODES.get(status, "UNKNOWN")
        elif isinstance(exception, RequestDataTooBig):
            status, code, message = 413, "SIZE_INVALID", request_too_large_message()
        elif isinstance(exception, DisallowedHost):  # a Host header that is no host name, e.g. "a b"
            status, code, message = 400, "UNSUPPORTED", "Invalid Host header"
        elif isinstance(exception, SuspiciousOperation):
            status, code, message = 400, "UNSUPPORTED", "Bad request"
        else:
            status, code, message = 500, "UNKNOWN", unexpected_error_message(exception)
        if oci:
            body = {"errors": [{"code": code, "message": message, "detail": None}]}
            return JsonResponse(body, status=status, headers={**headers, **OCI_HEADERS})
        return JsonResponse({"message": message}, status=status, headers=headers)


def not_found_view(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"message": "Not found"}, status=404)


def server_error_view(request: HttpRequest) -> JsonResponse:
    """Last resort (an error outside any view); Django has already logged the traceback just before."""
    error_id = new_error_id()
    logger.error("Unexpected error - Error ID: %s (traceback logged above by django.request)", error_id)
    return JsonResponse({"message": f"Unexpected error - Error ID: {error_id}"}, status=500)
