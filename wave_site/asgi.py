"""ASGI entry point, served by uvicorn (`make run`)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wave_site.settings")

Scope = dict[str, Any]


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


application = ReusedRequestThreads(get_asgi_application(), keep_idle=64)
