"""Secrets at rest: sealed (Fernet, with the key derived from the service's master secret) before they are
stored in the database or the cache, unsealed only where they are used."""

from __future__ import annotations

from django.conf import settings

from wave_site.keys import decrypt_secret, encrypt_secret


def seal(plaintext: str) -> str:
    return encrypt_secret(plaintext, key=settings.SECRETS_ENCRYPTION_KEY)


def unseal(sealed: str) -> str:
    return decrypt_secret(sealed, key=settings.SECRETS_ENCRYPTION_KEY)
