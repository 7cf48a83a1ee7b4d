"""Absolute deadlines on a transport's connections (registry.deadlines): a server dripping its answer is cut at
the deadline whatever the per-read timeout, the deadline is asked afresh on every operation, and None leaves
httpx's timeouts alone."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from registry.deadlines import bound_by_deadline

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class DrippingServer:
    """Answers each request on a connection with ANSWER, a byte every `interval` seconds; counts connections."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.connections = 0
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}/"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            try:
                while connection.recv(65536):
                    for index in range(len(ANSWER)):
                        connection.sendall(ANSWER[index : index + 1])
                        time.sleep(self.interval)
            except OSError:
                return  # the client gave up


@pytest.fixture
def dripping() -> Iterator[DrippingServer]:
    server = DrippingServer(interval=0.05)
    yield server
    server.socket.close()


def bound_client(deadline: list[float | None]) -> httpx.Client:
    """A client whose deadline is `deadline[0]`, read on every socket operation (5 s per read otherwise)."""
    transport = httpx.HTTPTransport()
    assert bound_by_deadline(transport, lambda: deadline[0]) is True
    return httpx.Client(transport=transport, timeout=5.0)


def test_an_answer_dripped_within_the_read_timeout_is_cut_at_the_deadline(dripping: DrippingServer) -> None:
    """Each byte comes within 0.05 s (the read timeout is 5 s); the whole answer would take about 2 s."""
    deadline: list[float | None] = [time.monotonic() + 0.5]
    started = time.monotonic()
    with bound_client(deadline) as client, pytest.raises(httpx.ReadTimeout):
        client.get(dripping.url)
    assert 0.5 <= time.monotonic() - started < 1.0


def test_without_a_deadline_the_answer_is_read_whole(dripping: DrippingServer) -> None:
    with bound_client([None]) as client:
        response = client.get(dripping.url)
    assert (response.status_code, response.content) == (200, b"ok")


def test_the_deadline_is_asked_on_every_exchange_of_one_client(dripping: DrippingServer) -> None:
    deadline: list[float | None] = [None]
    with bound_client(deadline) as client:
        assert client.get(dripping.url).content == b"ok"
        deadline[0] = time.monotonic() - 1  # passed: the kept-alive connection's write fails at once
        started = time.monotonic()
        with pytest.raises(httpx.WriteTimeout):
            client.get(dripping.url)
        assert time.monotonic() - started < 0.1
        deadline[0] = None
        assert client.get(dripping.url).content == b"ok"


def test_a_deadline_passed_before_connecting_connects_to_nothing(dripping: DrippingServer) -> None:
    with bound_client([time.monotonic() - 1]) as client, pytest.raises(httpx.ConnectTimeout):
        client.get(dripping.url)
    time.sleep(0.1)
    assert dripping.connections == 0


def test_only_an_http_transport_not_yet_bound_is_bound() -> None:
    transport = httpx.HTTPTransport()
    assert bound_by_deadline(transport, lambda: None) is True
    backend = transport._pool._network_backend
    assert bound_by_deadline(transport, lambda: 0.0) is False
    assert transport._pool._network_backend is backend  # the first deadline stays
    assert bound_by_deadline(httpx.MockTransport(lambda request: httpx.Response(200)), lambda: None) is False
    assert bound_by_deadline(None, lambda: None) is False
