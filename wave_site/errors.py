"""The application's error hierarchy and its one mapping to HTTP for the REST API.

Services raise `WaveError` subclasses with the message the client should read; the DRF exception
handler and the error middleware turn them, and anything unexpected, into `{"message": ...}`.
Unexpected errors never leak internals: the client gets an error ID that is also in the log.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from django.utils.deprecation import MiddlewareMixin
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response

logger = logging.getLogger("wave.errors")


class WaveError(Exception):
    """An error the client caused or must know about; `message` is shown to the client as is."""

    status_code = 400

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(WaveError):
    status_code = 400


class Unauthorized(WaveError):
    status_code = 401


class Forbidden(WaveError):
    status_code = 403


class NotFound(WaveError):
    status_code = 404


class TooManyRequests(WaveError):
    status_code = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class ServiceUnavailable(WaveError):
    status_code = 503


def new_error_id() -> str:
    return secrets.token_hex(6)


def unexpected_error_message(exc: BaseException) -> str:
    """Log `exc` with a fresh error ID and return the message the client sees."""
    error_id = new_error_id()
    logger.error("Unexpected error - Error ID: %s", error_id, exc_info=(type(exc), exc, exc.__traceback__))
    return f"Unexpected error - Error ID: {error_id}"


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


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    headers: dict[str, str] = {}
    if isinstance(exc, WaveError):
        status, message, headers = exc.status_code, exc.message, exc.headers
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
    elif isinstance(exc, Http404):
        status, message = 404, "Not found"
    elif isinstance(exc, PermissionDenied):
        status, message = 403, "Forbidden"
    else:
        status, message = 500, unexpected_error_message(exc)
    return Response({"message": message}, status=status, headers=headers)


class ErrorIdMiddleware(MiddlewareMixin):
    """Unexpected exceptions outside DRF views: a JSON 500 with an error ID, the traceback only in the log."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> JsonResponse | None:
        if isinstance(exception, Http404 | PermissionDenied):
            return None  # Django's own handlers answer these
        message = unexpected_error_message(exception)
        if request.path.startswith("/v2/"):  # registry clients read the distribution spec's error body
            body = {"errors": [{"code": "UNKNOWN", "message": message, "detail": None}]}
            return JsonResponse(body, status=500, headers={"Docker-Distribution-API-Version": "registry/2.0"})
        return JsonResponse({"message": message}, status=500)


def not_found_view(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"message": "Not found"}, status=404)


def server_error_view(request: HttpRequest) -> JsonResponse:
    """Last resort (an error outside any view); Django has already logged the traceback just before."""
    error_id = new_error_id()
    logger.error("Unexpected error - Error ID: %s (traceback logged above by django.request)", error_id)
    return JsonResponse({"message": f"Unexpected error - Error ID: {error_id}"}, status=500)
