"""`POST /validate-creds` against real registries: Basic and Bearer logins, the SSRF policy, the throttle,
registries that cannot answer, and passwords that never reach a log line or an answer."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from pytest_django.fixtures import Settings

from credentials.logins import registry_authority
from tests.conftest import PushedImage
from tests.support.fake_registry import FakeRegistry
from tests.support.registry import ANONYMOUS, start_registry
from wave_site.errors import InvalidRequest

ADDRESS = "192.0.2.40"
PATHS = ["/validate-creds", "/v1alpha2/validate-creds"]
WRONG_PASSWORD = "Wr0ng-pa55word-7c1e"
EXAMPLE_HOST = "registry.example.com:5000"


def validate(body: Any, *, path: str = "/validate-creds", address: str = ADDRESS) -> Any:
    data = body if isinstance(body, str) else json.dumps(body)
    return Client(REMOTE_ADDR=address).post(path, data=data, content_type="application/json")


def login_of(image: PushedImage, **overrides: str) -> dict[str, str]:
    registry = image.registry
    assert registry.username is not None
    assert registry.password is not None
    return {"userName": registry.username, "password": registry.password, "registry": registry.host, **overrides}


@pytest.fixture
def fake_registry() -> Iterator[FakeRegistry]:
    registry = FakeRegistry().start()
    yield registry
    registry.stop()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fixture_name", ["basic_image", "token_image"])
def test_right_password_is_valid_wrong_one_is_not(path: str, fixture_name: str, request: pytest.FixtureRequest) -> None:
    image: PushedImage = request.getfixturevalue(fixture_name)
    valid = validate(login_of(image), path=path)
    assert (valid.status_code, valid.json()) == (200, True)
    invalid = validate(login_of(image, password=WRONG_PASSWORD), path=path)
    assert invalid.status_code == 400
    assert invalid.json() == {"message": f"Invalid credentials for registry '{image.registry.host}'"}


@pytest.mark.parametrize("fixture_name", ["basic_image", "token_image"])
def test_unknown_user_is_invalid(fixture_name: str, request: pytest.FixtureRequest) -> None:
    image: PushedImage = request.getfixturevalue(fixture_name)
    response = validate(login_of(image, userName="nobody"))
    assert response.status_code == 400
    assert response.json() == {"message": f"Invalid credentials for registry '{image.registry.host}'"}


def test_bearer_login_asks_for_no_scope(token_image: PushedImage) -> None:
    server = token_image.registry.token_server
    assert server is not None
    server.requests.clear()
    assert validate(login_of(token_image)).status_code == 200
    assert [request.scopes for request in server.requests] == [[]]


@pytest.mark.parametrize("prefix", ["http://", "https://", "HTTPS://"])
@pytest.mark.parametrize("suffix", ["", "/"])
def test_scheme_prefix_and_trailing_slash_are_dropped(basic_image: PushedImage, prefix: str, suffix: str) -> None:
    # The scheme named is dropped, not used: the registry is reached as configured (plain http for loopback here).
    response = validate(login_of(basic_image, registry=f"{prefix}{basic_image.registry.host}{suffix}"))
    assert (response.status_code, response.json()) == (200, True)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"userName": "", "password": "x"}, "userName: This field may not be blank."),
        ({"userName": "   ", "password": "x"}, "userName: This field may not be blank."),
        ({"userName": "alice", "password": ""}, "password: This field may not be blank."),
        ({"userName": "alice", "password": "  \t"}, "password: This field may not be blank."),
        ({"password": "x"}, "userName: This field is required."),
        ({"userName": "alice"}, "password: This field is required."),
        ({"userName": "alice", "password": None}, "password: This field may not be null."),
    ],
)
def test_blank_or_missing_fields_are_refused_before_any_network_call(
    body: dict[str, Any], message: str, fake_registry: FakeRegistry
) -> None:
    response = validate({**body, "registry": fake_registry.host})
    assert response.status_code == 400
    assert response.json() == {"message": message}
    assert fake_registry.requests == []


@pytest.mark.parametrize(
    "registry",
    [
        "quay.io/alice",
        "https://quay.io/v2/",
        "alice:s3cret@quay.io",
        "quay.io:99999",
        "quay.io:0",
        "quay.io:port",
        "quay io",
        "quay.io?x=1",
        "ftp://quay.io",
        "[::1",
        "[not-ipv6]:5000",
        "[::1]x",
        "[fe80::1%eth0]:5000",
        "quay.io:",
        "quay.io:05000",
        "-quay.io",
        "https://",
    ],
)
def test_malformed_registries_are_refused_with_a_clear_message(registry: str) -> None:
    response = validate({"userName": "alice", "password": WRONG_PASSWORD, "registry": registry})
    assert response.status_code == 400
    message = response.json()["message"]
    assert message.startswith("Invalid registry '")
    assert message.endswith(
        "' - expected a host name with an optional port, such as quay.io or registry.example.com:5000"
    )
    assert "s3cret" not in message


@pytest.mark.parametrize(
    ("value", "authority"),
    [
        (None, "docker.io"),
        ("", "docker.io"),
        ("  ", "docker.io"),
        ("docker.io", "docker.io"),
        ("https://Quay.IO", "quay.io"),
        ("http://registry.example.com:5000/", "registry.example.com:5000"),
        ("10.1.2.3:443", "10.1.2.3:443"),
        ("[2001:DB8::1]:5000", "[2001:db8::1]:5000"),
        ("localhost", "localhost"),
    ],
)
def test_registry_is_normalised_to_host_and_port(value: str | None, authority: str) -> None:
    assert registry_authority(value) == authority


def test_user_info_in_the_registry_is_not_echoed() -> None:
    with pytest.raises(InvalidRequest) as error:
        registry_authority("https://alice:s3cret@quay.io")
    assert "s3cret" not in error.value.message


@pytest.mark.parametrize(
    "registry", ["127.0.0.1:{port}", "localhost:{port}", "10.0.0.1", "169.254.169.254", "registry.invalid"]
)
def test_private_local_metadata_and_unresolvable_registries_are_refused(
    registry: str, basic_image: PushedImage, settings: Settings
) -> None:
    settings.WAVE_SSRF_ALLOW = []
    port = basic_image.registry.host.rsplit(":", 1)[1]  # a live registry: only the policy can refuse it
    response = validate(login_of(basic_image, registry=registry.format(port=port)))
    assert response.status_code == 400
    assert response.json() == {"message": "Invalid registry hostname"}


def test_an_allowed_host_is_checked(basic_image: PushedImage, settings: Settings) -> None:
    settings.WAVE_SSRF_ALLOW = ["127.0.0.1"]
    response = validate(login_of(basic_image))
    assert (response.status_code, response.json()) == (200, True)


def test_a_refused_destination_gets_no_request(fake_registry: FakeRegistry, settings: Settings) -> None:
    settings.WAVE_SSRF_ALLOW = []
    response = validate({"userName": "alice", "password": WRONG_PASSWORD, "registry": fake_registry.host})
    assert response.json() == {"message": "Invalid registry hostname"}
    assert fake_registry.requests == []


def test_a_token_service_on_a_refused_address_gets_no_password(token_image: PushedImage, settings: Settings) -> None:
    # The registry itself is trusted (the service's own build registry); the token realm it names is not.
    settings.WAVE_SSRF_ALLOW = []
    settings.WAVE_BUILD_REPO = f"{token_image.registry.host}/wave/build"
    server = token_image.registry.token_server
    assert server is not None
    server.requests.clear()
    response = validate(login_of(token_image))
    assert (response.status_code, response.json()) == (400, {"message": "Invalid registry hostname"})
    assert server.requests == []


def test_a_stopped_registry_is_unavailable_not_invalid() -> None:
    registry = start_registry(ANONYMOUS)
    registry.stop()
    response = validate({"userName": "alice", "password": WRONG_PASSWORD, "registry": registry.host})
    assert response.status_code == 503
    assert response.json() == {"message": f"Registry '{registry.host}' is unreachable: ConnectError"}
    assert response["Retry-After"] == "10"


def test_a_failing_registry_is_unavailable(fake_registry: FakeRegistry) -> None:
    fake_registry.answers["/v2/"] = (502, {})
    response = validate({"userName": "alice", "password": WRONG_PASSWORD, "registry": fake_registry.host})
    assert response.status_code == 503
    assert response.json() == {"message": f"Registry '{fake_registry.host}' answered 502 to /v2/"}
    assert response["Retry-After"] == "10"


def test_an_open_registry_accepts_any_login(fake_registry: FakeRegistry) -> None:
    response = validate({"userName": "anyone", "password": "anything", "registry": fake_registry.host})
    assert (response.status_code, response.json()) == (200, True)


def test_every_attempt_counts_and_past_the_limit_nothing_is_sent(
    basic_image: PushedImage, fake_registry: FakeRegistry, settings: Settings
) -> None:
    settings.WAVE_VALIDATE_CREDS_PER_MINUTE = 3
    assert validate(login_of(basic_image, password=WRONG_PASSWORD)).status_code == 400
    assert validate(login_of(basic_image, password=WRONG_PASSWORD), path="/v1alpha2/validate-creds").status_code == 400
    assert validate(login_of(basic_image)).status_code == 200
    throttled = validate({"userName": "alice", "password": WRONG_PASSWORD, "registry": fake_registry.host})
    assert throttled.status_code == 429
    assert throttled.json()["message"].startswith("Too many credential checks from this address (3 per minute)")
    assert 1 <= int(throttled["Retry-After"]) <= 60
    assert fake_registry.requests == []  # the refused attempt reached no registry
    # Another address has its own allowance.
    other = validate({"userName": "alice", "password": "x", "registry": fake_registry.host}, address="192.0.2.41")
    assert other.status_code == 200
    assert fake_registry.requests == [("GET", "/v2/"), ("GET", "/v2/")]


def test_passwords_never_reach_logs_or_answers(
    basic_image: PushedImage,
    token_image: PushedImage,
    fake_registry: FakeRegistry,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "wave", "django"):
        caplog.set_level(logging.DEBUG, logger=name)
    settings.WAVE_VALIDATE_CREDS_PER_MINUTE = 100
    fake_registry.answers["/v2/"] = (500, {})
    attempts = [
        login_of(basic_image),
        login_of(basic_image, password=WRONG_PASSWORD),
        login_of(token_image),
        login_of(token_image, password=WRONG_PASSWORD),
        {"userName": "alice", "password": WRONG_PASSWORD, "registry": fake_registry.host},  # 503
        {"userName": "alice", "password": WRONG_PASSWORD, "registry": "169.254.169.254"},  # refused
        {"userName": "alice", "password": WRONG_PASSWORD, "registry": "bad/registry"},  # malformed
    ]
    answers = [validate(body) for body in attempts]
    assert [answer.status_code for answer in answers] == [200, 400, 200, 400, 503, 400, 400]
    assert any(record.name == "wave.credentials" for record in caplog.records)  # attempts are logged...
    assert any(record.name.startswith("httpcore") for record in caplog.records)  # ...and so is the HTTP traffic
    secrets = {WRONG_PASSWORD, basic_image.registry.password, token_image.registry.password}
    for secret in secrets:
        assert secret
        encoded = [base64.b64encode(f"{user}:{secret}".encode()).decode() for user in ("wave", "alice")]
        for text in [caplog.text, *(answer.content.decode() for answer in answers)]:
            assert secret not in text
            assert not any(value in text for value in encoded)


def test_not_json_is_refused() -> None:
    response = Client(REMOTE_ADDR=ADDRESS).post("/validate-creds", data="userName=a", content_type="text/plain")
    assert response.status_code == 415
    malformed = validate("{not json")
    assert (malformed.status_code, malformed.json()) == (400, {"message": "Malformed JSON request body"})


def test_an_ipv6_client_counts_by_its_64(fake_registry: FakeRegistry, settings: Settings) -> None:
    settings.WAVE_VALIDATE_CREDS_PER_MINUTE = 2
    body = {"userName": "alice", "password": "x", "registry": fake_registry.host}
    answers = [validate({**body, "userName": f"user-{n}"}, address=f"2001:db8:1:2::{n:x}") for n in range(1, 4)]
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert answers[-1].json()["message"].startswith("Too many credential checks from this address (2 per minute)")
    assert validate(body, address="2001:db8:1:3::1").status_code == 200  # another /64
    assert validate(body, address="::ffff:192.0.2.60").status_code == 200  # an IPv4 client, as mapped
    assert validate(body, address="192.0.2.60").status_code == 200
    assert validate(body, address="192.0.2.60").status_code == 429  # ... counted as the same client


def test_one_account_is_throttled_across_addresses(
    basic_image: PushedImage, fake_registry: FakeRegistry, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wave")
    settings.WAVE_VALIDATE_CREDS_PER_ACCOUNT_PER_HOUR = 3
    host = basic_image.registry.host
    guesses = [
        validate(login_of(basic_image, userName=name, password=f"{WRONG_PASSWORD}-{n}"), address=f"198.51.100.{n}")
        for n, name in enumerate(["wave", "wave", "WAVE", "wave"], start=1)
    ]  # the user name as the registry may take it: case does not make another account
    assert [answer.status_code for answer in guesses] == [400, 400, 400, 429]
    throttled = guesses[-1]
    retry_after = int(throttled["Retry-After"])
    assert 1 <= retry_after <= 3600
    assert throttled.json() == {
        "message": f"Too many credential checks of this account at registry '{host}' (3 per hour) - "
        f"retry in {retry_after} seconds"
    }
    # Past the limit even the right password is not tried; other accounts, and the same name elsewhere, are.
    assert validate(login_of(basic_image), address="198.51.100.9").status_code == 429
    other = {"userName": "wave", "password": "x", "registry": fake_registry.host}
    assert validate(other, address="198.51.100.9").status_code == 200
    assert fake_registry.requests == [("GET", "/v2/"), ("GET", "/v2/")]
    lines = [record.getMessage() for record in caplog.records if record.levelno >= logging.INFO]
    assert any("too many checks of one account" in line for line in lines)
    user_name = basic_image.registry.username
    assert user_name
    assert not [line for line in lines if user_name in line.lower()]  # the user name only at DEBUG
    assert WRONG_PASSWORD not in caplog.text
