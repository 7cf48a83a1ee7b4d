from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import InvalidToken
from django.conf import settings

from wave_site.keys import MASTER_KEY_FILE, decrypt_secret, encrypt_secret, fernet_key, master_secret


def test_master_secret_is_generated_once_private_and_stable(tmp_path: Path) -> None:
    first = master_secret(configured=None, data_dir=tmp_path)
    second = master_secret(configured=None, data_dir=tmp_path)
    assert first == second
    assert len(first) >= 48
    path = tmp_path / MASTER_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [MASTER_KEY_FILE]


def test_configured_secret_wins_and_writes_nothing(tmp_path: Path) -> None:
    assert master_secret(configured="from-env", data_dir=tmp_path) == "from-env"
    assert list(tmp_path.iterdir()) == []


def test_secrets_at_rest_round_trip_and_do_not_contain_the_plaintext() -> None:
    key = settings.SECRETS_ENCRYPTION_KEY
    token = encrypt_secret("registry-password", key=key)
    assert "registry-password" not in token
    assert decrypt_secret(token, key=key) == "registry-password"


def test_encryption_key_is_independent_of_the_django_secret() -> None:
    assert fernet_key("a") != fernet_key("b")
    assert settings.SECRETS_ENCRYPTION_KEY.decode() not in settings.SECRET_KEY
    other = fernet_key("another-master")
    with pytest.raises(InvalidToken):
        decrypt_secret(encrypt_secret("x", key=settings.SECRETS_ENCRYPTION_KEY), key=other)
