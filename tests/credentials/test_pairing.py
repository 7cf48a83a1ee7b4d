"""Pairing keys: one pair per Tower endpoint while its lease lasts, a new one after, old ones decrypting until
they are retired and purged; private keys sealed at rest. Packets are made here with cryptography, as Tower
makes them."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import threading

import pytest
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding as asymmetric_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from django.db import connection
from django.utils import timezone
from pytest_django.fixtures import Settings

from credentials.models import PairingKey
from credentials.packets import PacketError
from credentials.pairing import (
    pairing_key_current,
    pairing_key_decrypt,
    pairing_key_get,
    pairing_key_purge,
    pairing_key_register,
)
from credentials.secrets import unseal
from credentials.tasks import pairing_key_purge_task
from wave_site.errors import HTTP_STATUS, InvalidRequest

ENDPOINT = "https://tower.example.org/api"
PLAINTEXT = json.dumps({"userName": "alice", "password": "pa55-for-quay", "discriminator": "container-reg"}).encode()


def public_key_of(key: PairingKey) -> rsa.RSAPublicKey:
    public_key = serialization.load_der_public_key(base64.b64decode(key.public_key, validate=True))
    assert isinstance(public_key, rsa.RSAPublicKey)
    return public_key


def tower_packet(public_key_b64: str, plaintext: bytes) -> str:
    """A packet as Tower's /keys answers it, encrypted with the public key `/pairing` handed out."""
    public_key = serialization.load_der_public_key(base64.b64decode(public_key_b64))
    assert isinstance(public_key, rsa.RSAPublicKey)
    aes_key = os.urandom(16)
    padder = symmetric_padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(aes_key), modes.ECB()).encryptor()  # noqa: S305 - Tower's format
    data = encryptor.update(padder.update(plaintext) + padder.finalize()) + encryptor.finalize()
    wrapped = public_key.encrypt(aes_key, asymmetric_padding.PKCS1v15())
    return f"1\\P\\{base64.b64encode(wrapped).decode()}\\{base64.b64encode(data).decode()}"


def end_lease(key: PairingKey) -> None:
    PairingKey.objects.filter(pk=key.pk).update(lease_ends_at=timezone.now() - dt.timedelta(seconds=1))


@pytest.mark.django_db
def test_same_endpoint_twice_gets_the_same_pair(settings: Settings) -> None:
    settings.WAVE_PAIRING_LEASE = 3600
    settings.WAVE_PAIRING_RETENTION = 7200
    before = timezone.now()
    first = pairing_key_register(service="tower", endpoint=ENDPOINT)
    second = pairing_key_register(service="tower", endpoint=ENDPOINT + "/")
    assert (second.pk, second.pairing_id, second.public_key) == (first.pk, first.pairing_id, first.public_key)
    assert PairingKey.objects.count() == 1
    assert first.service == "tower"
    assert first.endpoint == ENDPOINT
    assert 0 < first.pairing_id < 2**62
    assert before <= first.created_at <= timezone.now()
    assert first.lease_ends_at == first.created_at + dt.timedelta(hours=1)
    assert first.retired_at == first.created_at + dt.timedelta(hours=2)
    public_key = public_key_of(first)
    assert public_key.key_size == 2048
    assert public_key.public_numbers().e == 65537
    assert pairing_key_current(endpoint=ENDPOINT) == first
    assert pairing_key_get(pairing_id=first.pairing_id) == first


@pytest.mark.django_db
def test_the_handed_out_public_key_encrypts_what_the_pair_decrypts() -> None:
    key = pairing_key_register(service="tower", endpoint=ENDPOINT)
    stored = PairingKey.objects.get(pk=key.pk)
    assert pairing_key_decrypt(key=stored, packet=tower_packet(key.public_key, PLAINTEXT)) == PLAINTEXT


@pytest.mark.django_db
def test_private_key_is_sealed_at_rest() -> None:
    key = pairing_key_register(service="tower", endpoint=ENDPOINT)
    with connection.cursor() as cursor:
        cursor.execute("SELECT private_key_sealed FROM credentials_pairingkey WHERE id = %s", [key.pk])
        (column,) = cursor.fetchone()
    assert "PRIVATE KEY" not in column
    assert "MII" not in column  # nor the DER inside a PEM
    pem = unseal(column).encode()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8
    private_key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(private_key, rsa.RSAPrivateKey)
    assert private_key.public_key().public_numbers() == public_key_of(key).public_numbers()


@pytest.mark.django_db
def test_after_the_lease_a_new_pair_and_the_old_one_still_decrypts() -> None:
    old = pairing_key_register(service="tower", endpoint=ENDPOINT)
    packet_for_old = tower_packet(old.public_key, PLAINTEXT)  # Tower encrypted for the old pairing
    end_lease(old)

    new = pairing_key_register(service="tower", endpoint=ENDPOINT)
    assert new.pk != old.pk
    assert new.pairing_id != old.pairing_id
    assert new.public_key != old.public_key
    assert PairingKey.objects.count() == 2
    assert pairing_key_register(service="tower", endpoint=ENDPOINT) == new
    assert pairing_key_current(endpoint=ENDPOINT) == new

    retained = pairing_key_get(pairing_id=old.pairing_id)
    assert retained == old
    assert pairing_key_decrypt(key=retained, packet=packet_for_old) == PLAINTEXT
    with pytest.raises(PacketError):
        pairing_key_decrypt(key=new, packet=packet_for_old)


@pytest.mark.django_db
def test_purge_removes_retired_pairs_only() -> None:
    retired = pairing_key_register(service="tower", endpoint=ENDPOINT)
    end_lease(retired)
    kept = pairing_key_register(service="tower", endpoint=ENDPOINT)
    other = pairing_key_register(service="tower", endpoint="https://other.example.org")
    PairingKey.objects.filter(pk=retired.pk).update(retired_at=timezone.now() - dt.timedelta(seconds=1))
    assert pairing_key_get(pairing_id=retired.pairing_id) is None  # retired: no longer decrypts, even unpurged

    assert pairing_key_purge() == 1
    assert set(PairingKey.objects.values_list("pk", flat=True)) == {kept.pk, other.pk}
    assert pairing_key_purge() == 0


@pytest.mark.django_db
def test_purge_at_a_later_time_and_its_task_run_twice() -> None:
    key = pairing_key_register(service="tower", endpoint=ENDPOINT)
    assert pairing_key_purge(now=key.retired_at - dt.timedelta(seconds=1)) == 0
    assert PairingKey.objects.filter(pk=key.pk).exists()
    PairingKey.objects.filter(pk=key.pk).update(retired_at=timezone.now())
    assert pairing_key_purge_task() == 1
    assert pairing_key_purge_task() == 0
    assert not PairingKey.objects.exists()


@pytest.mark.django_db
def test_current_is_the_newest_unretired_pair_of_that_endpoint() -> None:
    assert pairing_key_current(endpoint=ENDPOINT) is None
    old = pairing_key_register(service="tower", endpoint=ENDPOINT)
    end_lease(old)
    new = pairing_key_register(service="tower", endpoint=ENDPOINT)
    pairing_key_register(service="tower", endpoint="https://other.example.org")
    assert pairing_key_current(endpoint=ENDPOINT) == new
    PairingKey.objects.filter(pk=new.pk).update(retired_at=timezone.now() - dt.timedelta(seconds=1))
    assert pairing_key_current(endpoint=ENDPOINT) == old  # lease over, still retained: Tower may still use it
    PairingKey.objects.filter(pk=old.pk).update(retired_at=timezone.now() - dt.timedelta(seconds=1))
    assert pairing_key_current(endpoint=ENDPOINT) is None
    assert pairing_key_current(service="other", endpoint=ENDPOINT) is None


@pytest.mark.django_db
def test_legacy_tower_endpoint_pairs_as_its_successor() -> None:
    legacy = pairing_key_register(service="tower", endpoint="https://api.tower.nf")
    assert legacy.endpoint == "https://api.cloud.seqera.io"
    assert pairing_key_register(service="tower", endpoint="https://api.cloud.seqera.io/") == legacy
    assert pairing_key_current(endpoint="https://api.cloud.seqera.io") == legacy
    assert PairingKey.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("service", "message"),
    [
        ("github", "Unsupported pairing service 'github'"),
        ("Tower", "Unsupported pairing service 'Tower'"),
        ("", "Unsupported pairing service ''"),
        ('it\'s\n"x"', "Unsupported pairing service 'itsx'"),
        ("s" * 500, f"Unsupported pairing service '{'s' * 64}'"),
    ],
)
def test_unsupported_service_is_refused_and_nothing_stored(service: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        pairing_key_register(service=service, endpoint=ENDPOINT)
    assert caught.value.message == message
    assert HTTP_STATUS[type(caught.value)] == 400
    assert not PairingKey.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("", "Missing pairing endpoint"),
        ("  ", "Missing pairing endpoint"),
        ("ftp://tower.example.org", "Invalid Tower endpoint 'ftp://tower.example.org'"),
        ("https://user:pw@tower.example.org", "Invalid Tower endpoint"),
        ("tower.example.org", "Invalid Tower endpoint 'tower.example.org'"),
    ],
)
def test_invalid_endpoint_is_refused_and_nothing_stored(endpoint: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        pairing_key_register(service="tower", endpoint=endpoint)
    assert caught.value.message.startswith(message)
    assert HTTP_STATUS[type(caught.value)] == 400
    assert not PairingKey.objects.exists()


@pytest.mark.django_db
def test_a_bad_packet_for_a_pair_is_a_packet_error() -> None:
    key = pairing_key_register(service="tower", endpoint=ENDPOINT)
    with pytest.raises(PacketError, match="version prefix"):
        pairing_key_decrypt(key=key, packet="2\\P\\AAAA\\AAAA")


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_registrations_hand_out_one_pair() -> None:
    callers = 4
    start = threading.Barrier(callers)
    results: list[PairingKey] = []
    errors: list[BaseException] = []

    def register() -> None:
        try:
            start.wait(timeout=10)
            results.append(pairing_key_register(service="tower", endpoint=ENDPOINT))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=register) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(results) == callers
    assert {key.pairing_id for key in results} == {PairingKey.objects.get().pairing_id}
