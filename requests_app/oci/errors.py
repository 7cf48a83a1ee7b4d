"""The proxy's errors and their one way out: `@oci_view` checks methods, turns errors into the spec's
error body, and stamps `Docker-Distribution-API-Version` on every answer.

Domain code raises the errors below (named for what happened, not for a status) or lets the registry
client's, augmentation's and the blob store's errors through; `RULES` maps each to an OCI code (its
status from `registry.errors`). Database and Redis outages are not caught here: they reach the site's
error middleware, which answers 503 for them.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Collection
from functools import wraps
from typing import Any, TypeVar, cast

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from credentials.lookups import CredentialsRefused, CredentialsUnavailable
from registry.augment import AugmentError
from registry.client import (
    BlobUnknownError,
    ManifestUnknownError,
    RegistryDeniedError,
    RegistryError,
    RegistryRateLimitedError,
    RegistryUnauthorizedError,
    RegistryUnavailableError,
    RepositoryUnknownError,
)
from registry.errors import API_VERSION, API_VERSION_HEADER, STATUS, OciCode, error_body
from registry.platform import InvalidPlatformError
from registry.ssrf import DestinationRefusedError
from wave_site.blobstore import BlobStoreUnavailable
from wave_site.errors import OUTAGE_RETRY_AFTER, RateLimited


class ProxyError(Exception):
    """A pull the proxy refuses; `message` is what the client reads, `headers` go with the answer."""

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class TokenUnknown(ProxyError):
    """No active request has this token (never issued, expired or revoked)."""

    def __init__(self, token: str) -> None:
        super().__init__(f"Unknown Wave container for token '{token}'")


class ImageNameMismatch(ProxyError):
    def __init__(self, name: str, token: str) -> None:
        super().__init__(f"Image path '{name}' does not match the image of token '{token}'")


class ReferenceInvalid(ProxyError):
    """A manifest reference that is neither a tag nor a digest."""


class DigestInvalid(ProxyError):
    """A malformed digest in a URL."""


class ManifestNotFound(ProxyError):
    pass


class UnsupportedManifest(ProxyError):
    pass


class LayerFailed(ProxyError):
    """An injected layer could not be downloaded or verified: the pull fails, naming it."""


class LayersPending(ProxyError):
    """Injected layers are still downloading after the bounded wait."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class BuildFailed(ProxyError):
    """The build that makes the image failed (or was cancelled): the message says why and where its log is."""


class BuildPending(ProxyError):
    """The build still runs after the bounded wait."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class BlobNotAvailable(ProxyError):
    pass


class RangeNotSatisfiable(ProxyError):
    """`size`: the blob's, when known; else the `content_range` an upstream registry sent, if any."""

    def __init__(self, size: int | None, *, content_range: str | None = None) -> None:
        content_range = f"bytes */{size}" if size is not None else content_range
        super().__init__(
            "Requested range not satisfiable", headers={"Content-Range": content_range} if content_range else None
        )


# First match wins: subclasses before their bases. None: the code's own status.
RULES: tuple[tuple[type[Exception], OciCode, int | None], ...] = (
    (TokenUnknown, OciCode.NAME_UNKNOWN, None),
    (ImageNameMismatch, OciCode.NAME_UNKNOWN, None),
    (ReferenceInvalid, OciCode.MANIFEST_INVALID, None),
    (DigestInvalid, OciCode.DIGEST_INVALID, None),
    (ManifestNotFound, OciCode.MANIFEST_UNKNOWN, None),
    (UnsupportedManifest, OciCode.MANIFEST_INVALID, None),
    (LayerFailed, OciCode.UNKNOWN, 400),
    (LayersPending, OciCode.UNAVAILABLE, None),
    (BuildFailed, OciCode.UNKNOWN, 400),
    (BuildPending, OciCode.UNAVAILABLE, None),
    (BlobNotAvailable, OciCode.BLOB_UNKNOWN, None),
    (RangeNotSatisfiable, OciCode.RANGE_INVALID, None),
    (BlobUnknownError, OciCode.BLOB_UNKNOWN, None),
    (RepositoryUnknownError, OciCode.NAME_UNKNOWN, None),
    (ManifestUnknownError, OciCode.MANIFEST_UNKNOWN, None),
    (RegistryUnauthorizedError, OciCode.UNAUTHORIZED, None),
    (RegistryDeniedError, OciCode.DENIED, None),
    (RegistryRateLimitedError, OciCode.TOOMANYREQUESTS, None),
    (RegistryUnavailableError, OciCode.UNAVAILABLE, None),
    (RegistryError, OciCode.UNKNOWN, 502),  # the upstream sent something unusable (too big, wrong digest...)
    (AugmentError, OciCode.UNKNOWN, 400),
    (InvalidPlatformError, OciCode.UNKNOWN, 400),  # stored by an earlier version that accepted more platforms
    (DestinationRefusedError, OciCode.DENIED, 400),
    (CredentialsRefused, OciCode.DENIED, None),  # the caller's Tower refused, or its answer is unusable
    (CredentialsUnavailable, OciCode.UNAVAILABLE, None),
    (RateLimited, OciCode.TOOMANYREQUESTS, None),
    (BlobStoreUnavailable, OciCode.UNAVAILABLE, None),
)
ANSWERED: tuple[type[Exception], ...] = (ProxyError, *(kind for kind, _, _ in RULES))


def _headers_of(exc: Exception) -> dict[str, str]:
    if isinstance(exc, RegistryUnauthorizedError):
        return {"WWW-Authenticate": 'Basic realm="wave"'}
    if isinstance(exc, RegistryRateLimitedError):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, CredentialsUnavailable):
        return {"Retry-After": str(OUTAGE_RETRY_AFTER)}
    headers = getattr(exc, "headers", None)
    return dict(headers) if isinstance(headers, dict) else {}


def oci_error(code: OciCode, message: str, *, status: int | None = None, headers: dict[str, str] | None = None
              ) -> HttpResponse:  # fmt: skip
    """An error answer in the spec's format."""
    response = HttpResponse(error_body(code, message), status=status or STATUS[code], content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def error_response(exc: Exception) -> HttpResponse:
    """The OCI error answer for one of the ANSWERED exceptions."""
    code, status = OciCode.UNKNOWN, None
    for kind, rule_code, rule_status in RULES:
        if isinstance(exc, kind):
            code, status = rule_code, rule_status
            break
    message = getattr(exc, "message", None) or str(exc)
    return oci_error(code, message, status=status, headers=_headers_of(exc))


View = TypeVar("View", bound=Callable[..., Any])


def oci_view(*, methods: Collection[str] | None) -> Callable[[View], View]:
    """Decorate a sync or async /v2 view: other methods get UNSUPPORTED (None: any method), the proxy's
    errors their OCI answer, and every answer the API version header. CSRF does not apply (no cookies)."""
    allowed = frozenset(methods) if methods is not None else None

    def refused(request: HttpRequest) -> HttpResponse | None:
        if allowed is None or request.method in allowed:
            return None
        return oci_error(OciCode.UNSUPPORTED, "This registry is read-only: pull only")

    def stamped(response: HttpResponseBase) -> HttpResponseBase:
        response[API_VERSION_HEADER] = API_VERSION
        return response

    def decorate(view: View) -> View:
        if inspect.iscoroutinefunction(view):
            async_view = cast(Callable[..., Awaitable[HttpResponseBase]], view)

            @wraps(view)
            async def run_async(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
                answer = refused(request)
                if answer is not None:
                    return stamped(answer)
                try:
                    return stamped(await async_view(request, *args, **kwargs))
                except ANSWERED as exc:
                    return stamped(error_response(exc))

            return cast(View, csrf_exempt(run_async))

        @wraps(view)
        def run(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            answer = refused(request)
            if answer is not None:
                return stamped(answer)
            try:
                return stamped(view(request, *args, **kwargs))
            except ANSWERED as exc:
                return stamped(error_response(exc))

        return cast(View, csrf_exempt(run))

    return decorate
