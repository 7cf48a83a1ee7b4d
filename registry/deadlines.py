"""Absolute deadlines on an httpx transport's connections.

httpx's timeouts bound each socket operation, not an exchange: a server sending a byte of its headers or body
every few seconds never trips them. A transport bound here asks `deadline()` on every connect, TLS handshake,
read and write, and gives each at most the time left until it (a `time.monotonic()` value), failing at once
past it with httpcore's timeout of that operation (httpx's `TimeoutException`s). `deadline()` returns None
where no deadline applies: the timeouts are then those httpx gives.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpcore
import httpx

Deadline = Callable[[], float | None]


def _time_left(deadline: Deadline, timeout: float | None, expired: type[httpcore.TimeoutException]) -> float | None:
    """`timeout`, cut to the time left until the deadline; `expired` when none is left."""
    end = deadline()
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise expired("the deadline has passed")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake ends by the deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: Deadline) -> None:
        self.stream = stream
        self.deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.stream.read(max_bytes, _time_left(self.deadline, timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.stream.write(buffer, _time_left(self.deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        left = _time_left(self.deadline, timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self.stream.start_tls(ssl_context, server_hostname, left), self.deadline)

    def get_extra_info(self, info: str) -> Any:
        return self.stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """Wraps a network backend (the SSRF guard of registry.ssrf included): its connections end by the deadline."""

    def __init__(self, backend: httpcore.NetworkBackend, deadline: Deadline) -> None:
        self.backend = backend
        self.deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        left = _time_left(self.deadline, timeout, httpcore.ConnectTimeout)
        stream = self.backend.connect_tcp(host, port, left, local_address, socket_options)
        return DeadlineStream(stream, self.deadline)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.NetworkStream:
        left = _time_left(self.deadline, timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self.backend.connect_unix_socket(path, left, socket_options), self.deadline)

    def sleep(self, seconds: float) -> None:
        self.backend.sleep(seconds)


def bound_by_deadline(transport: httpx.BaseTransport | None, deadline: Deadline) -> bool:
    """Have the connections of `transport` (an httpx.HTTPTransport: its pool's network backend is wrapped) end by
    `deadline()`; False, and left as it is, for any other transport or one already bound."""
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(backend, httpcore.NetworkBackend) or isinstance(backend, DeadlineBackend):
        return False
    pool._network_backend = DeadlineBackend(backend, deadline)  # type: ignore[union-attr]
    return True
