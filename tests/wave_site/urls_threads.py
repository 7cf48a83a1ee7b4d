"""A URLconf whose one view says which thread served it, to test how requests are given threads."""

from __future__ import annotations

import threading

from django.http import HttpRequest, JsonResponse
from django.urls import path

# Set by a test to make concurrent requests wait for each other inside the view.
BARRIER: dict[str, threading.Barrier] = {}


def thread_view(request: HttpRequest) -> JsonResponse:
    barrier = BARRIER.get("current")
    if barrier is not None:
        barrier.wait(timeout=5)  # raises BrokenBarrierError (a 500) if the requests share one thread
    return JsonResponse({"thread": threading.get_ident()})


# The slow view says it started, waits for a test to release it, then records that it ran to the end.
STARTED = threading.Event()
RELEASE = threading.Event()
FINISHED: list[int] = []


def slow_view(request: HttpRequest) -> JsonResponse:
    STARTED.set()
    RELEASE.wait(timeout=5)
    FINISHED.append(threading.get_ident())
    return JsonResponse({"thread": threading.get_ident()})


urlpatterns = [path("thread", thread_view), path("slow", slow_view)]
