"""`POST /pairing`: Tower gets this service's public key for its endpoint, the same one while the lease lasts."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key
from django.test import Client

from credentials.models import PairingKey

ENDPOINT = "https://tower.example.org/api"


def pair(body: Any) -> Any:
    data = body if isinstance(body, str) else json.dumps(body)
    return Client().post("/pairing", data=data, content_type="application/json")


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
