"""Tower key packets decrypted and parsed: packets are made here with cryptography's RSA and AES, as Tower does,
never with the service's own code."""

from __future__ import annotations

import base64
import json
import os

import pytest
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asymmetric_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from credentials.packets import AwsKeys, ContainerRegistryKeys, PacketError, keys_parse, packet_decrypt

PASSWORD = "s3cr3t-Pa55word-for-quay"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
REGISTRY_KEYS = {"userName": "alice", "password": PASSWORD, "registry": "quay.io", "discriminator": "container-reg"}
AWS_KEYS = {"accessKey": "AKIAEXAMPLE", "secretKey": SECRET_KEY, "assumeRoleArn": "arn:aws:iam::1:role/r",
            "discriminator": "aws"}  # fmt: skip


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def private_key_pem(private_key: rsa.RSAPrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def aes_ecb_encrypt(key: bytes, plaintext: bytes, *, pad: bool = True) -> bytes:
    if pad:
        padder = symmetric_padding.PKCS7(128).padder()
        plaintext = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - Tower's format
    return encryptor.update(plaintext) + encryptor.finalize()


def make_packet(
    public_key: rsa.RSAPublicKey, plaintext: bytes, *, aes_key: bytes | None = None, pad: bool = True
) -> str:
    """What Tower's /keys answers: `1\\P\\<RSA-wrapped AES key>\\<AES data>`, standard base64."""
    aes_key = aes_key if aes_key is not None else os.urandom(16)
    wrapped = public_key.encrypt(aes_key, asymmetric_padding.PKCS1v15())
    data = aes_ecb_encrypt(aes_key, plaintext, pad=pad)
    return "\\".join(["1", "P", base64.b64encode(wrapped).decode(), base64.b64encode(data).decode()])


def test_container_registry_keys_round_trip(private_key: rsa.RSAPrivateKey, private_key_pem: bytes) -> None:
    packet = make_packet(private_key.public_key(), json.dumps(REGISTRY_KEYS).encode())
    plaintext = packet_decrypt(packet, private_key_pem=private_key_pem)
    assert json.loads(plaintext) == REGISTRY_KEYS
    keys = keys_parse(plaintext)
    assert keys == ContainerRegistryKeys(user_name="alice", password=PASSWORD, registry="quay.io")
    assert PASSWORD not in repr(keys)


def test_aws_keys_round_trip(private_key: rsa.RSAPrivateKey, private_key_pem: bytes) -> None:
    packet = make_packet(private_key.public_key(), json.dumps(AWS_KEYS).encode())
    keys = keys_parse(packet_decrypt(packet, private_key_pem=private_key_pem))
    assert keys == AwsKeys(access_key="AKIAEXAMPLE", secret_key=SECRET_KEY, assume_role_arn="arn:aws:iam::1:role/r")
    assert SECRET_KEY not in repr(keys)


def test_a_plaintext_of_whole_blocks_gets_a_full_padding_block(
    private_key: rsa.RSAPrivateKey, private_key_pem: bytes
) -> None:
    plaintext = b"x" * 32
    packet = make_packet(private_key.public_key(), plaintext)
    assert len(base64.b64decode(packet.split("\\")[3])) == 48
    assert packet_decrypt(packet, private_key_pem=private_key_pem) == plaintext


def test_optional_fields_may_be_absent() -> None:
    keys = keys_parse(json.dumps({"userName": "bob", "password": PASSWORD, "discriminator": "container-reg"}).encode())
    assert keys == ContainerRegistryKeys(user_name="bob", password=PASSWORD, registry=None)
    keys = keys_parse(json.dumps({"accessKey": "A", "secretKey": SECRET_KEY, "discriminator": "aws"}).encode())
    assert keys == AwsKeys(access_key="A", secret_key=SECRET_KEY, assume_role_arn=None)


def replace_part(packet: str, index: int, value: str) -> str:
    parts = packet.split("\\")
    parts[index] = value
    return "\\".join(parts)


def malformed_packets(public_key: rsa.RSAPublicKey) -> dict[str, tuple[str, str]]:
    """name -> (packet, a phrase of the expected message)."""
    good = make_packet(public_key, json.dumps(REGISTRY_KEYS).encode())
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    data = base64.b64encode(aes_ecb_encrypt(os.urandom(16), b"0123456789abcdef")).decode()
    url_safe_key = base64.urlsafe_b64encode(b"\xfb\xff" * 128).decode()  # has - and _, not + and /
    return {
        "empty": ("", "expected 4 parts"),
        "three parts": ("\\".join(good.split("\\")[:3]), "expected 4 parts"),
        "five parts": (good + "\\AAAA", "expected 4 parts"),
        "version 2": (replace_part(good, 0, "2"), "version prefix"),
        "marker Q": (replace_part(good, 1, "Q"), "version prefix"),
        "key not base64": (replace_part(good, 2, "not*base64!"), "encrypted key is not valid base64"),
        "key url-safe base64": (replace_part(good, 2, url_safe_key), "encrypted key is not valid base64"),
        "data not base64": (replace_part(good, 3, "%%%%"), "encrypted data is not valid base64"),
        "data not ascii": (replace_part(good, 3, "é"), "encrypted data is not valid base64"),
        "key of 24 bytes": (make_packet(public_key, b"{}", aes_key=os.urandom(24)), "wrong key length"),
        "key of 32 bytes": (make_packet(public_key, b"{}", aes_key=os.urandom(32)), "wrong key length"),
        "key for another pair": (make_packet(other_key, json.dumps(REGISTRY_KEYS).encode()), "not decryptable"),
        "key not RSA-encrypted": (replace_part(good, 2, base64.b64encode(os.urandom(256)).decode()), "not decryptable"),
        "data not whole blocks": (replace_part(good, 3, base64.b64encode(b"short").decode()), "whole number"),
        "data empty": (replace_part(good, 3, ""), "whole number"),
        "data unpadded": (make_packet(public_key, b"0123456789abcdef", pad=False), "bad padding"),
        "data of another key": (replace_part(good, 3, data), "bad padding"),
    }


def test_malformed_packets_raise_packet_error_without_content(
    private_key: rsa.RSAPrivateKey, private_key_pem: bytes
) -> None:
    for name, (packet, phrase) in malformed_packets(private_key.public_key()).items():
        with pytest.raises(PacketError) as caught:
            packet_decrypt(packet, private_key_pem=private_key_pem)
        message = str(caught.value)
        assert caught.value.message == message
        assert phrase in message, (name, message)
        assert PASSWORD not in message, name
        for part in packet.split("\\")[2:]:
            assert not part or part not in message, name


def test_an_unusable_private_key_is_a_packet_error(private_key: rsa.RSAPrivateKey) -> None:
    packet = make_packet(private_key.public_key(), json.dumps(REGISTRY_KEYS).encode())
    with pytest.raises(PacketError, match="not a PEM private key"):
        packet_decrypt(packet, private_key_pem=b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(PacketError, match="not an RSA key"):
        packet_decrypt(packet, private_key_pem=ec_pem)


MALFORMED_KEYS: list[tuple[bytes, str]] = [
    (b"\xff\xfe not utf-8", "not a JSON document"),
    (f"userName={PASSWORD}".encode(), "not a JSON document"),
    (json.dumps([PASSWORD]).encode(), "not a JSON object"),
    (json.dumps(PASSWORD).encode(), "not a JSON object"),
    (json.dumps({"userName": "a", "password": PASSWORD}).encode(), "no 'discriminator'"),
    (json.dumps({**REGISTRY_KEYS, "discriminator": "gitlab"}).encode(), "Unsupported credential keys 'gitlab'"),
    (json.dumps({**REGISTRY_KEYS, "discriminator": PASSWORD + "!"}).encode(), "Unsupported credential keys - "),
    (json.dumps({**REGISTRY_KEYS, "discriminator": 7}).encode(), "Unsupported credential keys - "),
    (json.dumps({**REGISTRY_KEYS, "password": None}).encode(), "'password' is missing"),
    (json.dumps({k: v for k, v in REGISTRY_KEYS.items() if k != "password"}).encode(), "'password' is missing"),
    (json.dumps({k: v for k, v in REGISTRY_KEYS.items() if k != "userName"}).encode(), "'userName' is missing"),
    (json.dumps({**REGISTRY_KEYS, "userName": ""}).encode(), "'userName' is missing"),
    (json.dumps({**REGISTRY_KEYS, "registry": ["quay.io"]}).encode(), "'registry' is not a string"),
    (json.dumps({k: v for k, v in AWS_KEYS.items() if k != "secretKey"}).encode(), "'secretKey' is missing"),
    (json.dumps({k: v for k, v in AWS_KEYS.items() if k != "accessKey"}).encode(), "'accessKey' is missing"),
    (json.dumps({**AWS_KEYS, "assumeRoleArn": {"arn": SECRET_KEY}}).encode(), "'assumeRoleArn' is not a string"),
]


@pytest.mark.parametrize(("plaintext", "phrase"), MALFORMED_KEYS)
def test_malformed_keys_raise_packet_error_naming_the_problem_not_the_secret(plaintext: bytes, phrase: str) -> None:
    with pytest.raises(PacketError) as caught:
        keys_parse(plaintext)
    message = str(caught.value)
    assert phrase in message
    assert PASSWORD not in message
    assert SECRET_KEY not in message
    assert caught.value.__cause__ is None  # the JSON error, which may quote the document, is not chained
