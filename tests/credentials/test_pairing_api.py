"""`POST /pairing`: Tower gets this service's public key for its endpoint, the same one while the lease lasts;
endpoints the service may not contact get none, and each client is throttled."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key
from django.test import Client
from pytest_django.fixtures import Settings

from credentials.models import PairingKey
from credentials.pairing import pairing_key_register

ENDPOINT = "https://tower.example.org/api"
ADDRESS = "192.0.2.50"


@pytest.fixture(autouse=True)
def resolvable(settings: Settings) -> None:
    """The example hosts do not resolve here: allowed, they pass the SSRF rules without a DNS lookup."""
    settings.WAVE_SSRF_ALLOW = [*settings.WAVE_SSRF_ALLOW, "tower.example.org", "other.example.org"]


def pair(body: Any, *, address: str = ADDRESS) -> Any:
    data = body if isinstance(body, str) else json.dumps(body)
    return Client(REMOTE_ADDR=address).post("/pairing", data=data, content_type="application/json")


@pytest.mark.django_db
def test_pairing_answers_with_an_id_and_an_rsa_2048_public_key() -> None:
    response = pair({"service": "tower", "endpoint": ENDPOINT})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"pairingId", "publicKey"}
    assert isinstance(body["pairingId"], str)
    assert body["pairingId"].isdigit()
    public_key = load_der_public_key(base64.b64decode(body["publicKey"], validate=True))
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size == 2048
    stored = PairingKey.objects.get()
    assert (str(stored.pairing_id), stored.public_key, stored.endpoint) == (
        body["pairingId"],
        body["publicKey"],
        ENDPOINT,
    )
    assert "PRIVATE" not in response.content.decode()


@pytest.mark.django_db
def test_the_same_endpoint_gets_the_same_pairing() -> None:
    first = pair({"service": "tower", "endpoint": ENDPOINT}).json()
    again = pair({"service": "tower", "endpoint": ENDPOINT + "/"}).json()  # the trailing `/` is not part of it
    assert again == first
    other = pair({"service": "tower", "endpoint": "https://other.example.org/api"}).json()
    assert other["pairingId"] != first["pairingId"]
    assert other["publicKey"] != first["publicKey"]
    assert PairingKey.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"service": "gitlab", "endpoint": ENDPOINT}, 'service: "gitlab" is not a valid choice.'),
        ({"endpoint": ENDPOINT}, "service: This field is required."),
        ({"service": "tower"}, "endpoint: This field is required."),
        ({"service": "tower", "endpoint": ""}, "endpoint: This field may not be blank."),
        ({"service": "tower", "endpoint": None}, "endpoint: This field may not be null."),
        (
            {"service": "tower", "endpoint": "ftp://tower.example.org"},
            "Invalid Tower endpoint 'ftp://tower.example.org' - it must be an http(s) URL such as "
            "https://api.cloud.seqera.io",
        ),
    ],
)
def test_bad_pairings_are_refused_and_nothing_is_stored(body: dict[str, Any], message: str) -> None:
    response = pair(body)
    assert response.status_code == 400
    assert response.json() == {"message": message}
    assert not PairingKey.objects.exists()


@pytest.mark.django_db
def test_a_body_that_is_not_json_is_refused() -> None:
    form = Client().post("/pairing", data="service=tower", content_type="application/x-www-form-urlencoded")
    assert form.status_code == 415
    malformed = pair("{not json")
    assert (malformed.status_code, malformed.json()) == (400, {"message": "Malformed JSON request body"})
    assert not PairingKey.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("http://10.0.0.7/api", "Destination '10.0.0.7' is not allowed: it resolves to a private or local address "
         "(set WAVE_SSRF_ALLOW=10.0.0.7 to allow it)"),
        ("http://169.254.169.254/latest", "Destination '169.254.169.254' is not allowed: it resolves to a private or "
         "local address (set WAVE_SSRF_ALLOW=169.254.169.254 to allow it)"),
        ("http://127.0.0.1:8/api", "Destination '127.0.0.1' is not allowed: it resolves to a private or local "
         "address (set WAVE_SSRF_ALLOW=127.0.0.1 to allow it)"),
        ("http://[::1]/api", "Destination '::1' is not allowed: it resolves to a private or local address "
         "(set WAVE_SSRF_ALLOW=::1 to allow it)"),
        ("http://metadata.google.internal/api", "Destination 'metadata.google.internal' is not allowed: cloud "
         "metadata service (set WAVE_SSRF_ALLOW=metadata.google.internal to allow it)"),
        ("https://tower.example.invalid/api", "Destination 'tower.example.invalid' is not allowed: the host name "
         "does not resolve (check its spelling)"),
    ],
)  # fmt: skip
def test_an_endpoint_the_service_may_not_contact_gets_no_key(settings: Settings, endpoint: str, reason: str) -> None:
    settings.WAVE_SSRF_ALLOW = []
    response = pair({"service": "tower", "endpoint": endpoint})
    assert (response.status_code, response.json()) == (400, {"message": f"Tower endpoint refused: {reason}"})
    assert not PairingKey.objects.exists()


@pytest.mark.django_db
def test_a_refused_endpoint_is_refused_even_when_already_paired(settings: Settings) -> None:
    """A pair made while the operator allowed the host (or before these rules) is not handed out once refused."""
    key = pairing_key_register(service="tower", endpoint="http://10.0.0.7/api")
    settings.WAVE_SSRF_ALLOW = []
    response = pair({"service": "tower", "endpoint": "http://10.0.0.7/api"})
    assert response.status_code == 400
    assert key.public_key not in response.content.decode()


@pytest.mark.django_db
def test_each_client_is_throttled_before_any_key_is_made(settings: Settings) -> None:
    settings.WAVE_PAIRING_PER_MINUTE = 3
    settings.WAVE_SSRF_ALLOW = [*settings.WAVE_SSRF_ALLOW, *(f"tower-{n}.example.org" for n in range(6))]
    assert pair({"service": "gitlab", "endpoint": ENDPOINT}).status_code == 400  # malformed: not counted
    refused = pair({"service": "tower", "endpoint": "http://10.0.0.7/api"})  # counted, refused
    assert refused.status_code == 400
    answers = [pair({"service": "tower", "endpoint": f"https://tower-{n}.example.org/api"}) for n in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    throttled = answers[-1]
    retry_after = int(throttled["Retry-After"])
    assert 1 <= retry_after <= 60
    assert throttled.json() == {
        "message": f"Too many pairing requests from this address (3 per minute) - retry in {retry_after} seconds"
    }
    assert PairingKey.objects.count() == 2  # no key for the throttled request
    # Another address has its own allowance; one IPv6 client counts by its /64.
    assert pair({"service": "tower", "endpoint": ENDPOINT}, address="192.0.2.51").status_code == 200
    ipv6 = [pair({"service": "tower", "endpoint": ENDPOINT}, address=f"2001:db8:5:6::{n:x}") for n in range(1, 5)]
    assert [answer.status_code for answer in ipv6] == [200, 200, 200, 429]
    assert pair({"service": "tower", "endpoint": ENDPOINT}, address="2001:db8:5:7::1").status_code == 200


@pytest.mark.django_db
def test_a_known_endpoint_is_answered_quickly_and_a_new_one_once(settings: Settings) -> None:
    """The throttle bounds key generations: past it nothing is generated, however many endpoints are named."""
    settings.WAVE_PAIRING_PER_MINUTE = 2
    settings.WAVE_SSRF_ALLOW = [*settings.WAVE_SSRF_ALLOW, *(f"tower-{n}.example.org" for n in range(20))]
    started = time.process_time()
    statuses = [pair({"service": "tower", "endpoint": f"https://tower-{n}.example.org/api"}).status_code
                for n in range(20)]  # fmt: skip
    assert statuses == [200, 200] + [429] * 18
    assert PairingKey.objects.count() == 2
    assert time.process_time() - started < 5  # 18 refusals cost no key generation
