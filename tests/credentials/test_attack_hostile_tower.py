"""Adversarial review of the Tower credentials: a hostile or careless Tower, and floods of the open endpoints.

A `towerEndpoint` is anything a caller names, and `POST /pairing` is open to anyone, so a hostile Tower is
one `POST /pairing` away. Each test here states what the service should do and fails while it does not.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings

from credentials.lookups import CredentialsLookupError, tower_registry_credentials
from credentials.models import CredentialLookup, PairingKey, TowerAuth
from credentials.pairing import pairing_key_register
from credentials.sessions import TowerContext, tower_client, tower_session_open
from registry.client import Credentials
from requests_app.models import ContainerRequest
from tests.conftest import PushedImage
from tests.support.network import free_port
from tests.support.tower import TowerStandIn

pytestmark = pytest.mark.django_db

IMAGE = "docker.io/library/busybox:latest"  # never reached: every attack fails before the upstream check

Route = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class HostileTower:
    """A Tower that answers what each test tells it to (`routes` by path, `/api` prefix), counting bytes sent."""

    routes: dict[str, Route] = field(default_factory=dict)
    sent: int = 0
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/api"

    def start(self) -> None:
        tower = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                route = tower.routes.get(self.path.split("?", 1)[0].removeprefix("/api"))
                if route is None:
                    self.send_error(404)
                    return
                route(self)

            def do_POST(self) -> None:
                self.do_GET()

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def json_answer(self, handler: BaseHTTPRequestHandler, body: object, status: int = 200) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


@pytest.fixture
def hostile(settings: Settings) -> Iterator[HostileTower]:
    """A hostile Tower, paired with the service as anyone can pair one (`POST /pairing`)."""
    tower_client.cache_clear()
    settings.WAVE_TOWER_RETRIES = 0
    tower = HostileTower()
    tower.start()
    answer = Client().post("/pairing", {"service": "tower", "endpoint": tower.url}, content_type="application/json")
    assert answer.status_code == 200
    yield tower
    tower.stop()
    tower_client.cache_clear()


def container_token(endpoint: str, access_token: str, **extra: object) -> tuple[int, str]:
    body = {"containerImage": IMAGE, "towerAccessToken": access_token, "towerEndpoint": endpoint, **extra}
    response = Client(raise_request_exception=False).post("/container-token", body, content_type="application/json")
    return response.status_code, response.content.decode()


def user_info(user: dict[str, object]) -> Callable[[HostileTower], Route]:
    return lambda tower: lambda handler: tower.json_answer(handler, {"user": user})


# --- a Tower answering garbage: a clear 4xx/503, never a 500, nothing stored -----------------------------


@pytest.mark.parametrize(
    "user",
    [
        pytest.param({"id": 5, "userName": "u" * 300, "email": "u@example.org"}, id="user-name-300-chars"),
        pytest.param({"id": 2**70, "userName": "mallory", "email": "m@example.org"}, id="user-id-past-bigint"),
        pytest.param({"id": -(2**70), "userName": "mallory", "email": "m@example.org"}, id="negative-user-id"),
    ],
)
def test_attack_user_info_with_values_the_database_cannot_hold_is_not_a_500(
    hostile: HostileTower, user: dict[str, object]
) -> None:
    """`/user-info` values are checked for type only: a user name longer than the column (256) or an id past a
    bigint reaches the `TowerAuth` update and the database refuses it (DataError), which nothing maps: 500."""
    hostile.routes["/user-info"] = user_info(user)(hostile)
    status, body = container_token(hostile.url, "any-token")
    assert status != 500, body
    assert status in {400, 401, 503}, body
    assert not ContainerRequest.objects.exists()


def test_attack_a_refused_token_leaves_no_tower_session_behind() -> None:
    """Every `/container-token` with a Tower token stores a `TowerAuth` row (sealed tokens of up to 4 KiB each)
    before Tower is asked who the token belongs to; a refused token leaves its row behind, kept until the purge
    (request retention). Anyone can add rows at will with made-up tokens against any paired endpoint."""
    with TowerStandIn() as tower:
        tower_client.cache_clear()
        key = pairing_key_register(service="tower", endpoint=tower.url)
        tower.register_pairing(key.pairing_id, key.public_key)
        for attempt in range(5):
            status, _ = container_token(tower.url, f"made-up-{attempt}-" + "x" * 4000, towerRefreshToken="r" * 4000)
            assert status == 401
    assert TowerAuth.objects.count() == 0, "rows stored for refused tokens"
    tower_client.cache_clear()


def test_attack_a_huge_tower_answer_is_read_whole_before_the_cap(hostile: HostileTower) -> None:
    """MAX_BODY_BYTES (4 MiB) is checked after httpx has read the whole body into memory: a Tower sending
    gigabytes makes the service hold them (one per concurrent request). The read should stop past the cap."""
    total = 64 * 1024 * 1024
    chunk = b" " * (1024 * 1024)

    def huge(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(total))
        handler.end_headers()
        try:
            for _ in range(total // len(chunk)):
                handler.wfile.write(chunk)
                hostile.sent += len(chunk)
        except OSError:
            return

    hostile.routes["/user-info"] = huge
    status, body = container_token(hostile.url, "any-token")
    assert status == 503, body
    assert hostile.sent <= 16 * 1024 * 1024, f"the service read {hostile.sent // 2**20} MiB of a Tower answer"


def test_attack_a_slow_drip_tower_holds_a_request_past_its_timeout(hostile: HostileTower, settings: Settings) -> None:
    """WAVE_TOWER_TIMEOUT is httpx's per-read timeout: a Tower sending one byte every half second never trips
    it, so one request (one worker thread) is held for as long as Tower likes. There should be an overall
    deadline per Tower call."""
    settings.WAVE_TOWER_TIMEOUT = 1
    tower_client.cache_clear()
    drip_seconds = 8.0

    def drip(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        deadline = time.monotonic() + drip_seconds
        try:
            while time.monotonic() < deadline:
                handler.wfile.write(b" ")
                handler.wfile.flush()
                time.sleep(0.5)
            handler.wfile.write(b'{"user": {"id": 1, "userName": "slow", "email": ""}}')
        except OSError:
            return

    hostile.routes["/user-info"] = drip
    started = time.monotonic()
    status, _ = container_token(hostile.url, "any-token")
    elapsed = time.monotonic() - started
    assert elapsed < 4 * settings.WAVE_TOWER_TIMEOUT, f"one Tower call held the request {elapsed:.1f} s ({status})"


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"<html>not json</html>", id="not-json"),
        pytest.param(b"[" * 200_000 + b"]" * 200_000, id="deeply-nested"),
        pytest.param(b'{"user": [1, 2]}', id="user-not-an-object"),
        pytest.param(b'{"user": {"id": "1", "userName": "x"}}', id="id-a-string"),
        pytest.param(b'{"user": {"id": true, "userName": "x"}}', id="id-a-boolean"),
        pytest.param(b'{"user": {"id": 1' + b"0" * 5000 + b"}}", id="id-past-int-digits-limit"),
        pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
    ],
)
def test_attack_garbage_user_info_is_a_503_and_nothing_is_stored(hostile: HostileTower, answer: bytes) -> None:
    """Held: unreadable `/user-info` answers are 503 (Tower failing), never a 500; no request row."""

    def garbage(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(answer)))
        handler.end_headers()
        handler.wfile.write(answer)

    hostile.routes["/user-info"] = garbage
    status, body = container_token(hostile.url, "any-token")
    assert status == 503, body
    assert not ContainerRequest.objects.exists()


def test_attack_a_redirect_to_the_metadata_address_is_not_followed(hostile: HostileTower) -> None:
    """Held: Tower's redirects are not followed (a 302 to 169.254.169.254 is Tower failing: 503)."""
    metadata = HostileTower()
    metadata.start()  # stands for the metadata service: must never be asked

    def redirect(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", "http://169.254.169.254/latest/meta-data/")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    asked: list[str] = []
    metadata.routes["/user-info"] = lambda handler: asked.append(handler.path)
    hostile.routes["/user-info"] = redirect
    try:
        status, body = container_token(hostile.url, "any-token")
    finally:
        metadata.stop()
    assert status == 503, body
    assert not asked


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:{port}/api",
        "http://localhost:{port}/api",
        "http://[::1]:{port}/api",
        "http://[::ffff:127.0.0.1]:{port}/api",
        "http://2130706433:{port}/api",
        "http://0x7f000001:{port}/api",
        "http://127.1:{port}/api",
        "http://0:{port}/api",
        "http://10.0.0.1/api",
        "http://169.254.169.254/latest",
        "http://metadata.google.internal/api",
    ],
)
def test_attack_ssrf_tower_endpoints_are_refused_before_anything_is_stored(
    hostile: HostileTower, settings: Settings, endpoint: str
) -> None:
    """Held: with WAVE_SSRF_ALLOW cleared, a paired Tower endpoint on a local, private or metadata address is a
    400 naming the refusal, and Tower is never asked."""
    assert hostile.server is not None
    endpoint = endpoint.format(port=hostile.server.server_address[1])
    asked: list[str] = []
    hostile.routes["/user-info"] = lambda handler: asked.append(handler.path)
    pairing_key_register(service="tower", endpoint=endpoint)  # paired: only the SSRF rules stand in the way
    settings.WAVE_SSRF_ALLOW = []
    status, body = container_token(endpoint, "any-token")
    assert status == 400, body
    assert "not allowed" in body, body
    assert not asked


def test_attack_a_refused_tower_endpoint_leaves_a_tower_session_behind(
    hostile: HostileTower, settings: Settings
) -> None:
    """Since the SSRF check moved into `_identify` (after `tower_session_open`), a request naming a paired
    endpoint the SSRF rules refuse (anyone can pair 10.0.0.1 or 169.254.169.254) is refused with 400 but
    leaves a `TowerAuth` row with its sealed tokens. Nothing should be stored for a refused request."""
    endpoint = "http://169.254.169.254/latest"
    pairing_key_register(service="tower", endpoint=endpoint)
    settings.WAVE_SSRF_ALLOW = []
    status, body = container_token(endpoint, "any-token", towerRefreshToken="refresh")
    assert status == 400, body
    assert not TowerAuth.objects.exists(), list(TowerAuth.objects.values_list("endpoint", flat=True))


# --- pairing: open to anyone -----------------------------------------------------------------------------


def test_attack_pairing_is_not_throttled_and_each_new_endpoint_costs_an_rsa_keygen() -> None:
    """`POST /pairing` is open, unthrottled, and each new endpoint costs an RSA-2048 generation (~50-200 ms of
    CPU) and a row kept for WAVE_PAIRING_RETENTION (30 days): one client can burn the web workers' CPU and
    fill the table. A client should be throttled (like /validate-creds) well before 40 endpoints a minute."""
    client = Client()
    statuses = []
    started = time.process_time()
    for number in range(40):
        endpoint = f"https://tower-{number}.example.org/api"
        response = client.post("/pairing", {"service": "tower", "endpoint": endpoint}, content_type="application/json")
        statuses.append(response.status_code)
    cpu = time.process_time() - started
    assert 429 in statuses, f"40 pairings from one address, {PairingKey.objects.count()} key pairs, {cpu:.1f} s CPU"


def test_attack_a_third_party_pairing_after_the_lease_breaks_every_lookup_until_tower_pairs_again(
    tower: TowerStandIn,
) -> None:
    """Lookups send the newest pair's `pairingId`. Once the lease of Tower's pair has ended, anyone who posts
    `/pairing` for Tower's endpoint first creates a new pair that Tower never saw: every user's lookup then
    fails ("Missing pairing record" at Tower) until Tower itself pairs again, although the pair Tower holds is
    retained and would still decrypt. Lookups should fall back to the older pairs that are not retired."""
    alice = tower.add_user(11, "alice", "alice@example.org")
    tower.add_credentials(alice, name="mine", registry="registry.example.org", user_name="al", password="al-secret")
    PairingKey.objects.update(lease_ends_at=timezone.now())  # Tower's pair: lease over, still retained
    stranger = Client().post("/pairing", {"service": "tower", "endpoint": tower.url}, content_type="application/json")
    assert stranger.status_code == 200
    assert PairingKey.objects.count() == 2
    access, refresh = tower.issue_tokens(alice)
    auth = tower_session_open(endpoint=tower.url, access_token=access, refresh_token=refresh)
    context = TowerContext(auth_id=auth.pk, endpoint=tower.url, workspace_id=None, user_id=11, user_name="alice")
    try:
        found = tower_registry_credentials(context=context, registry="registry.example.org")
    except CredentialsLookupError as exc:
        pytest.fail(f"alice's lookup failed after a stranger's pairing: {exc.message}")
    assert found == Credentials("al", "al-secret")
    assert CredentialLookup.objects.get().outcome == "found"


# --- /validate-creds: password guessing --------------------------------------------------------------------


def test_attack_validate_creds_guesses_one_account_from_many_addresses_of_one_network(
    basic_image: PushedImage, settings: Settings
) -> None:
    """The throttle counts per exact client address only: one IPv6 client holds a whole /64 (2^64 addresses), and
    a botnet many IPv4 ones, so guesses of one account's password at a registry are not bounded at all. Attempts
    should also be counted per network (/64 for IPv6) and per target account (registry + user name)."""
    settings.WAVE_VALIDATE_CREDS_PER_MINUTE = 3
    registry = basic_image.registry
    assert registry.username
    statuses = []
    for number in range(1, 13):  # 4x the limit, from one /64
        body = {"userName": registry.username, "password": f"guess-{number}", "registry": registry.host}
        response = Client(REMOTE_ADDR=f"2001:db8:1:2::{number:x}").post(
            "/validate-creds", body, content_type="application/json"
        )
        statuses.append(response.status_code)
    assert statuses.count(400) <= settings.WAVE_VALIDATE_CREDS_PER_MINUTE, statuses
