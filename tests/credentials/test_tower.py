"""The Tower client's limits against a scripted Tower: one deadline per exchange (headers and body dripped,
retries), answers capped after decoding, `/user-info` values the database could not hold refused."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from credentials.tower import TowerClient, TowerTokens, TowerUnavailable, TowerUser
from tests.support.network import free_port

Script = Callable[[BaseHTTPRequestHandler], None]
TOKENS = TowerTokens(access_token="a-token")


class ScriptedTower:
    """Answers every request with `script`; counts the requests."""

    def __init__(self) -> None:
        self.script: Script = lambda handler: handler.send_error(404)
        self.requests = 0
        tower = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                tower.requests += 1
                try:
                    tower.script(self)
                except OSError:  # the client hung up: what the limits are for
                    return

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[ScriptedTower]:
    tower = ScriptedTower()
    yield tower
    tower.stop()


def answer(body: bytes, *, status: int = 200, headers: dict[str, str] | None = None) -> Script:
    def script(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return script


def user_answer(user: dict[str, object]) -> Script:
    return answer(json.dumps({"user": user}).encode())


def client(*, deadline: float = 1.0, retries: int = 0, timeout: float = 5.0) -> TowerClient:
    return TowerClient(http=httpx.Client(timeout=timeout), retries=retries, backoff=0.01, deadline=deadline)


def timed(call: Callable[[], object]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        call()
    except TowerUnavailable as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def test_a_tower_dripping_its_headers_is_cut_at_the_deadline(scripted: ScriptedTower) -> None:
    """Each byte comes well within the read timeout (5 s); the exchange still ends at its deadline (1 s)."""

    def drip_headers(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        for _ in range(100):
            handler.wfile.write(b"a")
            handler.wfile.flush()
            time.sleep(0.2)

    scripted.script = drip_headers
    elapsed, error = timed(lambda: client().user_info(scripted.url, TOKENS))
    assert isinstance(error, TowerUnavailable)
    assert error.message == f"Tower at '{scripted.url}' did not answer within 1 s (ReadTimeout)"
    assert elapsed < 1.8


def test_a_tower_dripping_its_body_is_cut_at_the_deadline(scripted: ScriptedTower) -> None:
    def drip_body(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        for _ in range(100):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.2)

    scripted.script = drip_body
    elapsed, error = timed(lambda: client().user_info(scripted.url, TOKENS))
    assert isinstance(error, TowerUnavailable)
    assert error.message.startswith(f"Tower at '{scripted.url}' did not answer within 1 s")
    assert elapsed < 1.8


def test_retries_end_with_the_exchanges_deadline(scripted: ScriptedTower) -> None:
    """Ten retries allowed, each 503 after 0.4 s: the attempts stop when the deadline (1 s) leaves no time."""

    def slow_failure(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(0.4)
        answer(b"{}", status=503)(handler)

    scripted.script = slow_failure
    elapsed, error = timed(lambda: client(retries=10).user_info(scripted.url, TOKENS))
    assert isinstance(error, TowerUnavailable)
    assert elapsed < 1.5
    assert scripted.requests <= 3


def test_fast_failures_are_still_retried_within_the_deadline(scripted: ScriptedTower) -> None:
    outcomes = iter([503, 502, 200])

    def flaky(handler: BaseHTTPRequestHandler) -> None:
        status = next(outcomes)
        body = {"user": {"id": 7, "userName": "alice", "email": "a@example.org"}} if status == 200 else {}
        answer(json.dumps(body).encode(), status=status)(handler)

    scripted.script = flaky
    assert client(retries=2).user_info(scripted.url, TOKENS) == TowerUser(7, "alice", "a@example.org")
    assert scripted.requests == 3


def test_a_compressed_answer_is_read_and_capped_after_decoding(scripted: ScriptedTower) -> None:
    user = {"user": {"id": 7, "userName": "alice", "email": "a@example.org"}}
    scripted.script = answer(gzip.compress(json.dumps(user).encode()), headers={"Content-Encoding": "gzip"})
    assert client().user_info(scripted.url, TOKENS) == TowerUser(7, "alice", "a@example.org")
    bomb = gzip.compress(b'{"user": "' + b" " * (64 * 1024 * 1024) + b'"}')  # ~64 KiB on the wire
    scripted.script = answer(bomb, headers={"Content-Encoding": "gzip"})
    _, error = timed(lambda: client().user_info(scripted.url, TOKENS))
    assert isinstance(error, TowerUnavailable)
    assert error.message == f"Tower at '{scripted.url}' sent an answer too large to read"


def test_user_info_at_the_columns_limits_is_accepted(scripted: ScriptedTower) -> None:
    user = {"id": 2**63 - 1, "userName": "u" * 256, "email": "e" * 320}
    scripted.script = user_answer(user)
    assert client().user_info(scripted.url, TOKENS) == TowerUser(2**63 - 1, "u" * 256, "e" * 320)
    scripted.script = user_answer({**user, "id": -(2**63)})
    assert client().user_info(scripted.url, TOKENS).id == -(2**63)


@pytest.mark.parametrize(
    ("user", "problem"),
    [
        ({"id": 2**63, "userName": "u"}, "a user id outside the signed 64-bit range"),
        ({"id": -(2**63) - 1, "userName": "u"}, "a user id outside the signed 64-bit range"),
        ({"id": 1, "userName": "u" * 257}, "a user name longer than 256 characters"),
        ({"id": 1, "userName": "u", "email": "e" * 321}, "an email longer than 320 characters"),
        ({"id": 1, "userName": "nul\u0000name"}, "a user name with characters that cannot be stored"),
        ({"id": 1, "userName": "u", "email": "\ud800@example.org"}, "an email with characters that cannot be stored"),
    ],
)
def test_user_info_the_database_cannot_hold_is_refused(
    scripted: ScriptedTower, user: dict[str, object], problem: str
) -> None:
    scripted.script = user_answer(user)
    with pytest.raises(TowerUnavailable) as refused:
        client().user_info(scripted.url, TOKENS)
    assert refused.value.message == f"Tower at '{scripted.url}' sent {problem}"


def test_credentials_names_keep_printable_characters_only(scripted: ScriptedTower) -> None:
    entries = [{"id": "c1", "name": "quay\u0000\n" + "x" * 300, "provider": "container-reg\u0007"}]
    scripted.script = answer(json.dumps({"credentials": entries}).encode())
    (found,) = client().list_credentials(scripted.url, TOKENS, workspace_id=None)
    assert (found.id, found.name, found.provider) == ("c1", ("quay" + "x" * 300)[:256], "container-reg")
