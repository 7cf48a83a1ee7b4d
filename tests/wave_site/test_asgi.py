from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.asgi import get_asgi_application

from tests.wave_site import urls_threads
from wave_site.asgi import ReusedRequestThreads

pytestmark = pytest.mark.urls("tests.wave_site.urls_threads")


async def get(app: Any, path: str, *, disconnect: bool = False) -> tuple[int, dict[str, Any]]:
    """One GET straight through the ASGI interface, as uvicorn would make it."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": [],
        "server": ("testserver", 80), "client": ("127.0.0.1", 40000),
    }  # fmt: skip
    sent: list[dict[str, Any]] = []
    body_sent = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not body_sent.is_set():
            body_sent.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        if disconnect:
            await asyncio.to_thread(urls_threads.STARTED.wait, 5)  # leave while the view runs
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    if disconnect:
        return 0, {}
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body)


def request_threads() -> set[int]:
    return {t.ident for t in threading.enumerate() if t.name.startswith("wave-request") and t.ident is not None}


@pytest.fixture
def barrier() -> Iterator[None]:
    yield
    urls_threads.BARRIER.pop("current", None)


def test_sequential_requests_reuse_one_thread() -> None:
    app = ReusedRequestThreads(get_asgi_application(), keep_idle=4)

    async def three() -> list[int]:
        return [(await get(app, "/thread"))[1]["thread"] for _ in range(3)]

    threads = asyncio.run(three())
    assert len(set(threads)) == 1
    assert len(app.idle) == 1
    assert threads[0] in request_threads()
    assert threads[0] != threading.get_ident()


def three_at_once(app: ReusedRequestThreads) -> list[tuple[int, dict[str, Any]]]:
    """Three requests that must all be inside the view at the same time to succeed."""
    urls_threads.BARRIER["current"] = threading.Barrier(3)

    async def together() -> list[tuple[int, dict[str, Any]]]:
        return await asyncio.gather(*(get(app, "/thread") for _ in range(3)))

    return asyncio.run(together())


def test_concurrent_requests_each_get_their_own_thread(barrier: None) -> None:
    app = ReusedRequestThreads(get_asgi_application(), keep_idle=8)
    responses = three_at_once(app)
    assert [status for status, _ in responses] == [200, 200, 200]  # all three met inside the view at once
    assert len({body["thread"] for _, body in responses}) == 3
    assert len(app.idle) == 3


def test_threads_beyond_keep_idle_end_with_their_request(barrier: None) -> None:
    app = ReusedRequestThreads(get_asgi_application(), keep_idle=1)
    responses = three_at_once(app)
    served = {body["thread"] for _, body in responses}
    assert len(served) == 3
    assert len(app.idle) == 1
    kept = app.idle[0]
    kept_thread = asyncio.run(sync_in(kept))
    for thread in threading.enumerate():
        if thread.ident in served and thread.ident != kept_thread:
            thread.join(timeout=5)
    assert request_threads() & served == {kept_thread}


async def sync_in(executor: Any) -> int:
    return await asyncio.get_running_loop().run_in_executor(executor, threading.get_ident)


def test_non_http_scopes_pass_through_without_a_thread() -> None:
    seen: list[str] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    app = ReusedRequestThreads(inner, keep_idle=4)
    asyncio.run(app({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]
    assert app.idle == []


def test_a_thread_is_kept_only_once_an_abandoned_request_is_done_with_it() -> None:
    """A client that goes away cancels the request, but its synchronous code runs on to the end; Django
    then sends request_finished on the same thread, so the thread is handed on only when it is free."""
    app = ReusedRequestThreads(get_asgi_application(), keep_idle=4)
    urls_threads.STARTED.clear()
    urls_threads.RELEASE.clear()
    urls_threads.FINISHED.clear()
    release = threading.Timer(0.3, urls_threads.RELEASE.set)
    release.start()

    async def abandoned_then_next() -> tuple[int, dict[str, Any]]:
        await get(app, "/slow", disconnect=True)
        assert len(urls_threads.FINISHED) == 1  # the abandoned view ran to the end before its thread was kept
        return await get(app, "/thread")

    try:
        status, body = asyncio.run(abandoned_then_next())
    finally:
        release.cancel()
        urls_threads.RELEASE.set()
    assert status == 200
    assert body["thread"] == urls_threads.FINISHED[0]  # the same thread, free again
    assert len(app.idle) == 1
