"""ASGI entry point, served by uvicorn (`make run`): request-body limits, then request threads, then Django."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wave_site.settings")

Scope = dict[str, Any]
Message = dict[str, Any]


class RequestBodyLimit:
    """Bound every request body by WAVE_MAX_REQUEST_BYTES before Django sees it.

    Django's ASGI handler reads a whole body (spooling it to disk past 2.5 MiB) before any view runs, and
    gives a chunked body (no Content-Length) to views as empty. Here a declared length over the limit is
    answered 413 from the head alone, without reading the body; a body without a declared length is read
    here, counting, and answered 413 as soon as it passes the limit, else handed on with its length.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = settings.WAVE_MAX_REQUEST_BYTES
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if declared is not None:
            # uvicorn's parsers refuse a malformed length; anything else left here is Django's to answer.
            if declared.isdigit() and int(declared) > limit:
                await self.refuse(scope, send, limit)
                return
            await self.app(scope, receive, send)
            return

        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before its body was complete
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self.refuse(scope, send, limit)
                return
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        headers = [*scope["headers"], (b"content-length", str(len(body)).encode())] if body else scope["headers"]
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return dict(await receive())  # later calls wait for the disconnect, as Django expects

        await self.app({**scope, "headers": headers}, replay, send)

    @staticmethod
    async def refuse(scope: Scope, send: Any, limit: int) -> None:
        """413, and the connection closed: the rest of the body is never read."""
        message = f"Request body exceeds the maximum allowed size of {limit} bytes"
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        if scope["path"].startswith("/v2/"):
            document: dict[str, Any] = {"errors": [{"code": "SIZE_INVALID", "message": message, "detail": None}]}
            headers.append((b"docker-distribution-api-version", b"registry/2.0"))
        else:
            document = {"message": message}
        body = json.dumps(document).encode()
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class ReusedRequestThreads:
    """Run each HTTP request's synchronous code on a thread kept from earlier requests.

    Django gives every request a fresh thread-sensitive context, so the first synchronous call of
    each request (the request_started signal, a DRF view, the ORM) starts a new thread and the last
    one ends it. Starting threads was the largest single cost of a small POST here. A request still
    gets a thread of its own for its whole life, as Django requires (connections are thread-local);
    only threads of finished requests are handed on. At most `keep_idle` idle threads are kept.

    A request whose client goes away is cancelled while its synchronous code runs on; Django then sends
    request_finished on the same thread, which queues behind that code, so a thread is kept only once
    it is free. Django resets its own per-request state (connections, urlconf, timezone, language);
    a plain `threading.local` of our own would carry over, as under any WSGI server that reuses threads.
    """

    def __init__(self, app: Any, *, keep_idle: int) -> None:
        self.app = app
        self.keep_idle = keep_idle
        self.idle: list[ThreadPoolExecutor] = []  # touched only from the event loop's thread

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        executor = self.idle.pop() if self.idle else ThreadPoolExecutor(1, thread_name_prefix="wave-request")
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.app(scope, receive, send)
        finally:
            if len(self.idle) < self.keep_idle:
                self.idle.append(executor)
            else:
                executor.shutdown(wait=False)


application = RequestBodyLimit(ReusedRequestThreads(get_asgi_application(), keep_idle=64))
