"""Pairing keys: the RSA-2048 pairs this service hands to Tower (`POST /pairing`) and decrypts its key packets with.

One pair per (service, endpoint) is handed out while its lease lasts (WAVE_PAIRING_LEASE), then a new one; an
old pair keeps decrypting the packets Tower encrypted for its `pairing_id` until it is retired
(WAVE_PAIRING_RETENTION after its creation) and purged. Private keys are sealed at rest (credentials.secrets).

`POST /pairing` is open to anyone and a new pair costs an RSA generation, so `pairing_key_request` counts each
request against its client (WAVE_PAIRING_PER_MINUTE) and applies the SSRF rules to the endpoint before any key
is generated: a Tower the service may not contact gets no pair.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from credentials.callers import tower_endpoint_of
from credentials.models import PairingKey
from credentials.packets import packet_decrypt
from credentials.policy import url_destination_check
from credentials.secrets import seal
from credentials.throttle import client_network, throttle_hit
from registry.ssrf import DestinationRefusedError
from wave_site.errors import InvalidRequest, RateLimited

SUPPORTED_SERVICES = frozenset({"tower"})
RSA_KEY_BITS = 2048
RSA_PUBLIC_EXPONENT = 65537
PAIRING_ID_BITS = 62
PAIRING_ID_ATTEMPTS = 5
THROTTLE_WINDOW = 60


def pairing_key_request(*, service: str, endpoint: str, client: str) -> PairingKey:
    """What `POST /pairing` answers `client` (its address): `pairing_key_register`, once the request is counted
    against the client (RateLimited past WAVE_PAIRING_PER_MINUTE; an IPv6 client counts by its /64) and the
    endpoint passed the SSRF rules (InvalidRequest "Tower endpoint refused: ..."), both before any key is
    generated. Malformed requests (InvalidRequest) are refused first and not counted."""
    endpoint = _pairing_endpoint(service=service, endpoint=endpoint)
    limit = settings.WAVE_PAIRING_PER_MINUTE
    retry_after = throttle_hit(name="pairing", subject=client_network(client), limit=limit, window=THROTTLE_WINDOW)
    if retry_after:
        raise RateLimited(
            f"Too many pairing requests from this address ({limit} per minute) - retry in {retry_after} seconds",
            retry_after=retry_after,
        )
    try:
        url_destination_check(endpoint)  # contacted later, checked again then (and at connect time)
    except DestinationRefusedError as exc:
        raise InvalidRequest(f"Tower endpoint refused: {exc.message}") from None
    return pairing_key_register(service=service, endpoint=endpoint)


def pairing_key_register(*, service: str, endpoint: str) -> PairingKey:
    """The key pair to hand to `service` at `endpoint`: the newest one whose lease has not ended, else a new one.

    A new pair is generated (~50-100 ms of CPU) outside any transaction, then stored in a short one that holds
    a lock of the endpoint's own and looks again: when concurrent first registrations race, the later ones
    find the pair the first stored and answer with it (their own is discarded), so every caller gets the same
    pairing. Even without that, two pairs would be harmless: each decrypts the packets made for its own
    `pairing_id` until it is retired. No throttle and no SSRF check here: requests from the API come through
    `pairing_key_request`.
    """
    endpoint = _pairing_endpoint(service=service, endpoint=endpoint)
    leased = _leased_key(service=service, endpoint=endpoint, now=timezone.now())
    if leased is not None:
        return leased
    private_pem, public_b64 = _generate_key_pair()
    sealed = seal(private_pem.decode())
    with transaction.atomic():
        _serialize_endpoint(service=service, endpoint=endpoint)
        now = timezone.now()
        leased = _leased_key(service=service, endpoint=endpoint, now=now)
        if leased is not None:
            return leased
        return _store(service=service, endpoint=endpoint, public_key=public_b64, private_key_sealed=sealed, now=now)


def pairing_key_current(*, service: str = "tower", endpoint: str) -> PairingKey | None:
    """The newest not yet retired pair of an endpoint (already normalised by the caller): the one whose
    `pairing_id` a container request sends to Tower's /keys call."""
    return (
        PairingKey.objects.filter(service=service, endpoint=endpoint, retired_at__gt=timezone.now())
        .order_by("-created_at", "-pk")
        .first()
    )


def pairing_key_get(*, pairing_id: int) -> PairingKey | None:
    """The pair named `pairing_id`, unless it is retired (or unknown)."""
    return PairingKey.objects.filter(pairing_id=pairing_id, retired_at__gt=timezone.now()).first()


def pairing_key_decrypt(*, key: PairingKey, packet: str) -> bytes:
    """The plaintext of a Tower key packet encrypted for `key` (credentials.packets.PacketError when it is not)."""
    return packet_decrypt(packet, private_key_pem=key.private_key_pem())


def pairing_key_purge(*, now: dt.datetime | None = None) -> int:
    """Delete the retired pairs; the number deleted."""
    deleted, _ = PairingKey.objects.filter(retired_at__lte=now or timezone.now()).delete()
    return deleted


def _pairing_endpoint(*, service: str, endpoint: str) -> str:
    """The endpoint to pair `service` at, normalised (tower_endpoint_of); InvalidRequest when either is not one."""
    if service not in SUPPORTED_SERVICES:
        shown = "".join(char for char in service[:64] if char.isprintable() and char not in "'\"")
        raise InvalidRequest(f"Unsupported pairing service '{shown}'")
    if not endpoint.strip():
        raise InvalidRequest("Missing pairing endpoint")
    return tower_endpoint_of(endpoint)


def _leased_key(*, service: str, endpoint: str, now: dt.datetime) -> PairingKey | None:
    return (
        PairingKey.objects.filter(service=service, endpoint=endpoint, lease_ends_at__gt=now, retired_at__gt=now)
        .order_by("-created_at", "-pk")
        .first()
    )


def _generate_key_pair() -> tuple[bytes, str]:
    """A new RSA-2048 pair: the private key as PKCS#8 PEM, the public key as base64 of its X.509 DER."""
    private_key = rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_KEY_BITS)
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, base64.b64encode(public_der).decode()


def _serialize_endpoint(*, service: str, endpoint: str) -> None:
    """Until the transaction ends, hold a lock of this endpoint's own, so that its registrations look for a
    leased pair and store a new one one at a time. PostgreSQL: a transaction-level advisory lock; SQLite
    already runs one writing transaction at a time (transaction mode IMMEDIATE)."""
    if connection.vendor == "postgresql":
        digest = hashlib.sha256(f"wave-pairing:{service}:{endpoint}".encode()).digest()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest[:8], "big", signed=True)])


def _store(*, service: str, endpoint: str, public_key: str, private_key_sealed: str, now: dt.datetime) -> PairingKey:
    """Insert the pair under a random positive 62-bit `pairing_id`, drawing again on the rare clash."""
    for attempt in range(PAIRING_ID_ATTEMPTS):
        try:
            with transaction.atomic():  # a savepoint: a clash rolls back the insert only
                return PairingKey.objects.create(
                    service=service,
                    endpoint=endpoint,
                    pairing_id=secrets.randbelow(2**PAIRING_ID_BITS - 1) + 1,
                    public_key=public_key,
                    private_key_sealed=private_key_sealed,
                    created_at=now,
                    lease_ends_at=now + dt.timedelta(seconds=settings.WAVE_PAIRING_LEASE),
                    retired_at=now + dt.timedelta(seconds=settings.WAVE_PAIRING_RETENTION),
                )
        except IntegrityError:
            if attempt == PAIRING_ID_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
