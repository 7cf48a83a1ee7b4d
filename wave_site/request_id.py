"""A request id for the logs: set per web request (or taken from a sane `X-Request-Id`), sent with the Celery
tasks the request enqueues (a task header) and restored while those tasks run; with WAVE_LOG_FORMAT=json each
record is one JSON object per line, with the id (console handlers format in the thread that logged)."""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from celery.signals import before_task_publish, task_postrun, task_prerun
from django.http import HttpRequest, HttpResponseBase

HEADER = "X-Request-Id"
TASK_HEADER = "wave_request_id"
SANE = re.compile(r"[A-Za-z0-9._-]{8,64}")  # a caller's id is kept only if it cannot forge a log line

_current: contextvars.ContextVar[str] = contextvars.ContextVar("wave_request_id", default="")


def request_id() -> str:
    """The id of the request (or task) this code runs for; "" outside one."""
    return _current.get()


def _new_id(given: str | None) -> str:
    return given if given and SANE.fullmatch(given) else uuid.uuid4().hex


class RequestIdMiddleware:
    """Gives each request its id (in the logs of the request and its tasks) and answers it in `X-Request-Id`."""

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
        token = _current.set(_new_id(request.headers.get(HEADER)))
        try:
            response = self.get_response(request)
            assert isinstance(response, HttpResponseBase)
            response[HEADER] = _current.get()
            return response
        finally:
            _current.reset(token)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        token = _current.set(_new_id(request.headers.get(HEADER)))
        try:
            response: HttpResponseBase = await self.get_response(request)  # type: ignore[misc]
            response[HEADER] = _current.get()
            return response
        finally:
            _current.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, request_id, and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = getattr(record, "request_id", None) or _current.get()  # formatted where it was logged
        if current:
            entry["request_id"] = current
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


@before_task_publish.connect
def _send_request_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """A task enqueued while a request is served carries its id (in the message's headers)."""
    current = _current.get()
    if current and headers is not None:
        headers[TASK_HEADER] = current


_task_tokens: dict[str, contextvars.Token[str]] = {}


@task_prerun.connect
def _restore_request_id(task_id: str = "", task: Any = None, **_: Any) -> None:
    """The task runs under the id of the request that enqueued it (none for beat's periodic tasks)."""
    given = getattr(task.request, TASK_HEADER, None) if task is not None else None
    _task_tokens[task_id] = _current.set(given if isinstance(given, str) and SANE.fullmatch(given) else "")


@task_postrun.connect
def _forget_request_id(task_id: str = "", **_: Any) -> None:
    token = _task_tokens.pop(task_id, None)
    if token is not None:
        try:
            _current.reset(token)
        except ValueError:  # set in another context (another thread): nothing of this task's left here
            _current.set("")
