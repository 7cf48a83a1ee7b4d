"""Tower's key packets: decryption with a pairing key's private key, and the credentials they carry.

Tower sends a credential's keys as `1\\P\\<base64 RSA-encrypted AES key>\\<base64 AES data>`: RSA-2048 with
PKCS#1 v1.5 padding wraps a 128-bit AES key, and the data is AES-ECB with PKCS#7 padding (Tower's format, not
our choice). Every failure is a `PacketError` whose message names the problem, never the packet or what it
holds.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding as asymmetric_padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

PACKET_VERSION = "1"
PACKET_MARKER = "P"
AES_KEY_BYTES = 16
AES_BLOCK_BITS = 128


class PacketError(ValueError):
    """A key packet, or the keys in it, that cannot be used; `message` holds no secret (safe to show)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ContainerRegistryKeys:
    """A `container-reg` credential: a registry login (`registry` absent means Docker Hub)."""

    user_name: str
    password: str = field(repr=False)
    registry: str | None = None


@dataclass(frozen=True)
class AwsKeys:
    """An `aws` credential: an access key pair, optionally a role to assume."""

    access_key: str
    secret_key: str = field(repr=False)
    assume_role_arn: str | None = None


def packet_decrypt(packet: str, *, private_key_pem: bytes) -> bytes:
    """The plaintext of a Tower key packet, decrypted with the PEM private key of the pairing it names."""
    parts = packet.strip().split("\\")
    if len(parts) != 4:
        raise PacketError(f"Malformed key packet - expected 4 parts separated by '\\', got {len(parts)}")
    version, marker, wrapped_key_b64, data_b64 = parts
    if version != PACKET_VERSION or marker != PACKET_MARKER:
        raise PacketError(f"Unsupported key packet - expected the version prefix '{PACKET_VERSION}\\{PACKET_MARKER}'")
    wrapped_key = _base64_decode(wrapped_key_b64, part="encrypted key")
    data = _base64_decode(data_b64, part="encrypted data")
    private_key = _private_key(private_key_pem)
    try:
        aes_key = private_key.decrypt(wrapped_key, asymmetric_padding.PKCS1v15())
    except ValueError:
        raise PacketError("Key packet not decryptable - its key was not encrypted with this pairing key") from None
    # OpenSSL's implicit rejection answers a key encrypted for another pair with random bytes instead of an
    # error: the length check and then the padding check are what catch it.
    if len(aes_key) != AES_KEY_BYTES:
        raise PacketError(
            "Key packet not decryptable - wrong key length (encrypted for another pairing key, or not AES-128)"
        )
    if not data or len(data) % (AES_BLOCK_BITS // 8):
        raise PacketError("Malformed key packet - the encrypted data is not a whole number of AES blocks")
    decryptor = Cipher(algorithms.AES(aes_key), modes.ECB()).decryptor()  # noqa: S305 - Tower's format
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = symmetric_padding.PKCS7(AES_BLOCK_BITS).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise PacketError("Key packet not decryptable - bad padding (wrong key or corrupted data)") from None


def keys_parse(plaintext: bytes) -> ContainerRegistryKeys | AwsKeys:
    """The credentials in a decrypted packet, by their `discriminator`: `container-reg` or `aws`."""
    try:
        document = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise PacketError("Malformed credential keys - not a JSON document") from None
    if not isinstance(document, dict):
        raise PacketError("Malformed credential keys - not a JSON object")
    discriminator = document.get("discriminator")
    if discriminator == "container-reg":
        return ContainerRegistryKeys(
            user_name=_required(document, "userName"),
            password=_required(document, "password"),
            registry=_optional(document, "registry"),
        )
    if discriminator == "aws":
        return AwsKeys(
            access_key=_required(document, "accessKey"),
            secret_key=_required(document, "secretKey"),
            assume_role_arn=_optional(document, "assumeRoleArn"),
        )
    if discriminator is None:
        raise PacketError("Malformed credential keys - no 'discriminator'")
    shown = (
        discriminator if isinstance(discriminator, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", discriminator) else ""
    )
    named = f" '{shown}'" if shown else ""
    raise PacketError(f"Unsupported credential keys{named} - expected the discriminator 'container-reg' or 'aws'")


def _base64_decode(value: str, *, part: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PacketError(f"Malformed key packet - the {part} is not valid base64") from None


def _private_key(pem: bytes) -> RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise PacketError("Pairing key unusable - not a PEM private key") from None
    if not isinstance(key, RSAPrivateKey):
        raise PacketError("Pairing key unusable - not an RSA key")
    return key


def _required(document: dict[str, object], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        raise PacketError(f"Malformed credential keys - '{name}' is missing or not a non-empty string")
    return value


def _optional(document: dict[str, object], name: str) -> str | None:
    value = document.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PacketError(f"Malformed credential keys - '{name}' is not a string")
    return value
