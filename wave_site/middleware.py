"""Middleware tuned for ASGI. Session-bound middleware applies only where a session can exist.

Under ASGI each classic Django middleware hook is a hop to a thread; on the API and the registry proxy
(no cookies: pipeline engines, skopeo, docker) the session, CSRF, auth, messages and clickjacking hooks
have nothing to do, yet cost more than the view. This runs them only for the admin and for requests
that carry a session cookie, where they behave exactly as when listed in MIDDLEWARE.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.middleware.security import SecurityMiddleware
from django.utils.module_loading import import_string

from wave_site.errors import outage_of, outage_response


class InlineSecurityMiddleware(SecurityMiddleware):
    """Django's SecurityMiddleware without the two thread hops per request it costs under ASGI.

    Its hooks only read settings and set headers (no I/O), so they run inline on the event loop.
    """

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.process_request(request)
        if response is None:
            response = await self.get_response(request)  # type: ignore[misc]  # async in an async chain
        return self.process_response(request, response)


SESSION_MIDDLEWARE = (
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
)
SESSION_PATH_PREFIXES = ("/admin/",)


class SessionScopedMiddleware:
    async_capable = True
    sync_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]]) -> None:
        self.get_response = get_response
        chain = get_response
        for path in reversed(SESSION_MIDDLEWARE):
            chain = import_string(path)(chain)
        self.with_session = chain
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.path.startswith(SESSION_PATH_PREFIXES) or settings.SESSION_COOKIE_NAME in request.COOKIES:
            try:
                return await self.with_session(request)
            except Exception as exc:
                # The session middleware reads and saves sessions in the database outside any view, where
                # the error middleware cannot see an outage: answer it here, the same way.
                store = outage_of(exc)
                if store is None:
                    raise
                return outage_response(store, request, exc)
        return await self.get_response(request)
