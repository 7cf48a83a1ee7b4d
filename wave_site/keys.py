"""The service's own secrets: the Django secret key and the key that encrypts secrets at rest.

Both derive from one master secret, `WAVE_SECRET_KEY`, or from a random one generated into the data
dir on first run, by whichever process starts first (settings read it, and write it only when missing).
Derivation keeps them independent: knowing the Django signing key reveals nothing about the encryption key.
"""

from __future__ import annotations

import base64
import os
import secrets
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MASTER_KEY_FILE = "secret.key"


def master_secret(*, configured: str | None, data_dir: Path) -> str:
    """The configured secret, else the one stored in the data dir (generated on first use, mode 0600)."""
    if configured:
        return configured
    path = data_dir / MASTER_KEY_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the first start: a private data dir
    generated = secrets.token_urlsafe(48)
    # Write a private temp file, then link it into place: link fails if the file exists, so when
    # several processes start together exactly one secret wins and nobody reads a half-written file.
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".secret-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(generated + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            return path.read_text().strip()
    finally:
        os.unlink(tmp)
    return generated


def derive_key(master: str, purpose: str) -> bytes:
    """32 bytes for one purpose, derived from the master secret with HKDF-SHA256."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"wave:{purpose}".encode())
    return hkdf.derive(master.encode())


def fernet_key(master: str) -> bytes:
    """The Fernet key for secrets at rest."""
    return base64.urlsafe_b64encode(derive_key(master, "secrets-at-rest"))


def encrypt_secret(plaintext: str, *, key: bytes) -> str:
    return Fernet(key).encrypt(plaintext.encode()).decode()


def decrypt_secret(token: str, *, key: bytes) -> str:
    return Fernet(key).decrypt(token.encode()).decode()
