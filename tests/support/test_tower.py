"""The Tower stand-in and the token server's per-user scopes, through real HTTP."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asymmetric_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.support.registry import BASIC, TOKEN, start_registry
from tests.support.token_server import TokenServer
from tests.support.tower import TowerStandIn, TowerUser, encrypt_packet


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def public_key_b64(private_key: rsa.RSAPrivateKey) -> str:
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@pytest.fixture
def tower() -> Iterator[TowerStandIn]:
    with TowerStandIn() as tower:
        yield tower


@pytest.fixture
def alice(tower: TowerStandIn) -> TowerUser:
    return tower.add_user(7, "alice", "alice@example.org")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def decrypt(private_key: rsa.RSAPrivateKey, packet: str) -> dict[str, Any]:
    version, mode, wrapped, data = packet.split("\\")
    assert (version, mode) == ("1", "P")
    aes_key = private_key.decrypt(base64.b64decode(wrapped, validate=True), asymmetric_padding.PKCS1v15())
    assert len(aes_key) == 16
    decryptor = Cipher(algorithms.AES(aes_key), modes.ECB()).decryptor()  # noqa: S305 - the protocol's mode
    padded = decryptor.update(base64.b64decode(data, validate=True)) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    result: dict[str, Any] = json.loads(unpadder.update(padded) + unpadder.finalize())
    return result


def test_user_info_answers_the_token_owner(tower: TowerStandIn, alice: TowerUser) -> None:
    access, _ = tower.issue_tokens(alice)
    response = httpx.get(f"{tower.url}/user-info", headers=bearer(access))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {
        "user": {"id": 7, "userName": "alice", "email": "alice@example.org", "firstName": None,
                 "lastName": None, "organization": None, "avatar": None},
        "needConsent": False, "defaultWorkspaceId": None,
    }  # fmt: skip
    assert tower.url == f"http://127.0.0.1:{tower.port}/api"


def test_user_info_refuses_expired_unknown_and_missing_tokens(tower: TowerStandIn, alice: TowerUser) -> None:
    expired, _ = tower.issue_tokens(alice)
    tower.expire(expired)
    short_lived, _ = tower.issue_tokens(alice, ttl=0)
    for headers in (bearer(expired), bearer(short_lived), bearer("not-a-token"), {}, {"Authorization": expired}):
        response = httpx.get(f"{tower.url}/user-info", headers=headers)
        assert (response.status_code, response.json()) == (401, {"message": "Unauthorized"})


def test_credentials_listed_per_workspace_in_creation_order_without_secrets(
    tower: TowerStandIn, alice: TowerUser
) -> None:
    bob = tower.add_user(8, "bob", "bob@example.org")
    tower.add_workspace(bob, 500)
    first = tower.add_credentials(alice, name="hub", registry=None, user_name="alice-hub", password="hub-pw")
    second = tower.add_credentials(alice, name="quay", registry="quay.io", user_name="al", password="quay-pw")
    aws = tower.add_credentials(alice, name="ecr", registry=None, user_name="AKIA1", password="aws-secret",
                                provider="aws")  # fmt: skip
    shared = tower.add_credentials(alice, workspace_id=42, name="ws", registry="ghcr.io", user_name="a",
                                   password="ws-pw", extra_keys={"custom": 1})  # fmt: skip
    tower.add_credentials(bob, name="bobs", registry="ghcr.io", user_name="b", password="bob-pw")
    access, _ = tower.issue_tokens(alice)

    personal = httpx.get(f"{tower.url}/credentials", headers=bearer(access))
    assert personal.status_code == 200
    listed = personal.json()["credentials"]
    assert [c["id"] for c in listed] == [first, second, aws]
    assert all(len(c["id"]) == 22 and c["id"].isalnum() for c in listed)
    assert {k: v for k, v in listed[1].items() if k not in {"dateCreated", "lastUpdated"}} == {
        "id": second, "name": "quay", "description": None, "provider": "container-reg", "baseUrl": None,
        "category": None, "deleted": None, "lastUsed": None,
        "keys": {"registry": "quay.io", "userName": "al", "discriminator": "container-reg"},
    }  # fmt: skip
    assert listed[0]["keys"] == {"userName": "alice-hub", "discriminator": "container-reg"}
    assert listed[2]["keys"] == {"discriminator": "aws", "assumeRoleArn": None}
    assert listed[2]["provider"] == "aws"
    assert listed[0]["dateCreated"].endswith("Z")
    assert "pw" not in personal.text
    assert "aws-secret" not in personal.text

    workspace = httpx.get(f"{tower.url}/credentials", params={"workspaceId": 42}, headers=bearer(access))
    assert [c["id"] for c in workspace.json()["credentials"]] == [shared]
    assert workspace.json()["credentials"][0]["keys"] == {
        "registry": "ghcr.io", "userName": "a", "discriminator": "container-reg", "custom": 1,
    }  # fmt: skip

    foreign = httpx.get(f"{tower.url}/credentials", params={"workspaceId": 500}, headers=bearer(access))
    assert (foreign.status_code, foreign.json()) == (403, {"message": "Forbidden"})
    bad = httpx.get(f"{tower.url}/credentials", params={"workspaceId": "abc"}, headers=bearer(access))
    assert (bad.status_code, bad.json()) == (400, {"message": "Invalid workspaceId"})
    outsider = bearer(tower.issue_tokens(bob)[0])
    assert httpx.get(f"{tower.url}/credentials", params={"workspaceId": 42}, headers=outsider).status_code == 403


def test_keys_packet_decrypts_to_the_secret(
    tower: TowerStandIn, alice: TowerUser, private_key: rsa.RSAPrivateKey, public_key_b64: str
) -> None:
    tower.register_pairing(31, public_key_b64)
    quay = tower.add_credentials(alice, name="quay", registry="quay.io", user_name="al", password="quay-pw")
    hub = tower.add_credentials(alice, name="hub", registry=None, user_name="alice-hub", password="hub-pw")
    aws = tower.add_credentials(alice, name="ecr", registry=None, user_name="AKIA1", password="aws-secret",
                                provider="aws")  # fmt: skip
    shared = tower.add_credentials(alice, workspace_id=42, name="ws", registry="ghcr.io", user_name="a",
                                   password="ws-pw")  # fmt: skip
    access, _ = tower.issue_tokens(alice)

    def keys(credentials_id: str, **params: str | int) -> httpx.Response:
        return httpx.get(f"{tower.url}/credentials/{credentials_id}/keys", params=params, headers=bearer(access))

    assert decrypt(private_key, keys(quay, pairingId=31).json()["keys"]) == {
        "userName": "al", "password": "quay-pw", "registry": "quay.io", "discriminator": "container-reg",
    }  # fmt: skip
    assert decrypt(private_key, keys(hub, pairingId=31).json()["keys"]) == {
        "userName": "alice-hub", "password": "hub-pw", "discriminator": "container-reg",
    }  # fmt: skip
    assert decrypt(private_key, keys(aws, pairingId=31).json()["keys"]) == {
        "accessKey": "AKIA1", "secretKey": "aws-secret", "assumeRoleArn": None, "discriminator": "aws",
    }  # fmt: skip
    assert decrypt(private_key, keys(shared, pairingId=31, workspaceId=42).json()["keys"])["password"] == "ws-pw"
    first, again = keys(quay, pairingId=31).json()["keys"], keys(quay, pairingId=31).json()["keys"]
    assert first != again  # a fresh AES key each time

    for response, expected in [
        (keys(quay), (400, "Missing pairing record")),
        (keys(quay, pairingId=32), (400, "Missing pairing record")),
        (keys("unknownId", pairingId=31), (404, "Credentials not found")),
        (keys(shared, pairingId=31), (404, "Credentials not found")),  # workspace credentials, personal query
        (keys(quay, pairingId=31, workspaceId=42), (404, "Credentials not found")),
        (keys(quay, pairingId=31, workspaceId=43), (403, "Forbidden")),
    ]:
        assert (response.status_code, response.json()["message"]) == expected

    bob = tower.add_user(8, "bob", "bob@example.org")
    response = httpx.get(f"{tower.url}/credentials/{quay}/keys", params={"pairingId": 31},
                         headers=bearer(tower.issue_tokens(bob)[0]))  # fmt: skip
    assert (response.status_code, response.json()) == (404, {"message": "Credentials not found"})


def test_encrypt_packet_is_the_protocol_format(private_key: rsa.RSAPrivateKey, public_key_b64: str) -> None:
    packet = encrypt_packet(public_key_b64, b'{"a":1}')
    assert packet.startswith("1\\P\\")
    assert len(base64.b64decode(packet.split("\\")[2])) == 256  # RSA-2048
    assert len(base64.b64decode(packet.split("\\")[3])) == 16  # one AES block, padded
    assert decrypt(private_key, packet) == {"a": 1}


def test_refresh_rotates_tokens_and_sets_both_cookies(tower: TowerStandIn, alice: TowerUser) -> None:
    access, refresh = tower.issue_tokens(alice)
    tower.expire(access)
    form = {"grant_type": "refresh_token", "refresh_token": refresh}

    response = httpx.post(f"{tower.url}/oauth/access_token", data=form)
    assert (response.status_code, response.json()) == (200, {})
    cookies = response.headers.get_list("Set-Cookie")
    assert len(cookies) == 2
    new_access, new_refresh = response.cookies["JWT"], response.cookies["JWT_REFRESH_TOKEN"]
    assert cookies == [f"JWT={new_access}; Path=/; HttpOnly", f"JWT_REFRESH_TOKEN={new_refresh}; Path=/; HttpOnly"]
    assert len({access, refresh, new_access, new_refresh}) == 4
    assert tower.refreshes == 1
    assert httpx.get(f"{tower.url}/user-info", headers=bearer(new_access)).status_code == 200
    assert httpx.get(f"{tower.url}/user-info", headers=bearer(access)).status_code == 401

    for refused in [form, {"grant_type": "password", "refresh_token": new_refresh}, {"grant_type": "refresh_token"}]:
        again = httpx.post(f"{tower.url}/oauth/access_token", data=refused)
        assert (again.status_code, again.json()) == (401, {"message": "Unauthorized"})
        assert "Set-Cookie" not in again.headers
    as_json = httpx.post(f"{tower.url}/oauth/access_token", json={**form, "refresh_token": new_refresh})
    assert as_json.status_code == 415
    assert tower.refreshes == 1

    unexpired, old_refresh = tower.issue_tokens(alice)
    httpx.post(f"{tower.url}/oauth/access_token", data={"grant_type": "refresh_token", "refresh_token": old_refresh})
    assert httpx.get(f"{tower.url}/user-info", headers=bearer(unexpired)).status_code == 200  # still valid
    assert tower.refreshes == 2


def test_fail_next_answers_a_status_then_recovers(tower: TowerStandIn, alice: TowerUser) -> None:
    access, _ = tower.issue_tokens(alice)
    tower.fail_next(2, status=502)
    statuses = [httpx.get(f"{tower.url}/user-info", headers=bearer(access)).status_code for _ in range(3)]
    assert statuses == [502, 502, 200]


def test_fail_next_drops_the_connection_then_recovers(tower: TowerStandIn, alice: TowerUser) -> None:
    access, _ = tower.issue_tokens(alice)
    tower.fail_next(1, drop=True)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{tower.url}/user-info", headers=bearer(access))
    assert httpx.get(f"{tower.url}/user-info", headers=bearer(access)).status_code == 200
    with pytest.raises(ValueError, match="either a status or drop"):
        tower.fail_next(1)


def test_requests_are_recorded_without_showing_tokens(tower: TowerStandIn, alice: TowerUser) -> None:
    access, refresh = tower.issue_tokens(alice)
    httpx.get(f"{tower.url}/credentials", params={"workspaceId": "3"}, headers=bearer(access))
    httpx.get(f"{tower.url}/nowhere")
    httpx.post(f"{tower.url}/oauth/access_token", data={"grant_type": "refresh_token", "refresh_token": refresh})
    assert [(r.method, r.path, r.query, r.has_authorization) for r in tower.requests] == [
        ("GET", "/credentials", {"workspaceId": "3"}, True),
        ("GET", "/nowhere", {}, False),
        ("POST", "/oauth/access_token", {}, False),
    ]
    assert tower.requests[0].authorization == f"Bearer {access}"
    assert tower.requests[2].form["refresh_token"] == refresh
    shown = repr(tower.requests) + repr(tower)
    assert access not in shown
    assert refresh not in shown
    tower.clear_requests()
    assert tower.requests == []


def test_other_paths_and_methods_are_not_found(tower: TowerStandIn, alice: TowerUser) -> None:
    access, refresh = tower.issue_tokens(alice)
    for method, url in [
        ("GET", f"{tower.url}/workflows"),
        ("POST", f"{tower.url}/user-info"),
        ("GET", f"http://127.0.0.1:{tower.port}/user-info"),  # outside the prefix
        ("POST", f"http://127.0.0.1:{tower.port}/oauth/access_token"),
    ]:
        response = httpx.request(method, url, headers=bearer(access),
                                 data={"grant_type": "refresh_token", "refresh_token": refresh})  # fmt: skip
        assert (response.status_code, response.json()) == (404, {"message": "Not found"})
    assert tower.refreshes == 0


def test_stop_closes_the_port_and_start_serves_the_same_state_again(tower: TowerStandIn, alice: TowerUser) -> None:
    access, _ = tower.issue_tokens(alice)
    url = tower.url
    tower.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/user-info", headers=bearer(access))
    tower.start()
    assert tower.url == url
    assert httpx.get(f"{url}/user-info", headers=bearer(access)).json()["user"]["id"] == 7


def test_pair_with_registers_the_service_public_key(
    tower: TowerStandIn, alice: TowerUser, private_key: rsa.RSAPrivateKey, public_key_b64: str
) -> None:
    received: list[dict[str, Any]] = []

    class Pairing(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append({"path": self.path, "body": json.loads(self.rfile.read(length))})
            body = json.dumps({"pairingId": 1234, "publicKey": public_key_b64}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    service = ThreadingHTTPServer(("127.0.0.1", 0), Pairing)
    threading.Thread(target=service.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        answer = tower.pair_with(f"http://127.0.0.1:{service.server_address[1]}/")
    finally:
        service.shutdown()
        service.server_close()
    assert answer == {"pairingId": 1234, "publicKey": public_key_b64}
    assert received == [{"path": "/pairing", "body": {"service": "tower", "endpoint": tower.url}}]

    credentials_id = tower.add_credentials(alice, name="c", registry="r.io", user_name="u", password="p")
    response = httpx.get(f"{tower.url}/credentials/{credentials_id}/keys", params={"pairingId": "1234"},
                         headers=bearer(tower.issue_tokens(alice)[0]))  # fmt: skip
    assert decrypt(private_key, response.json()["keys"])["password"] == "p"


def token_access(server: TokenServer, auth: tuple[str, str] | None, *scopes: str) -> list[dict[str, Any]]:
    response = httpx.get(server.realm, params={"service": "wave-test-registry", "scope": list(scopes)}, auth=auth)
    assert response.status_code == 200
    claims = jwt.decode(response.json()["token"], options={"verify_signature": False})
    access: list[dict[str, Any]] = claims["access"]
    return access


def test_token_server_grants_each_user_only_its_repositories(tmp_path: Path) -> None:
    server = TokenServer(username="wave", password="main-pw", cert_path=tmp_path / "cert.pem")
    server.add_user("alice", "alice-pw", {"team/app"})
    server.add_user("carol", "carol-pw", None)
    server.start()
    try:
        busybox, app = "repository:library/busybox:pull", "repository:team/app:pull"
        assert token_access(server, ("alice", "alice-pw"), busybox) == []
        assert token_access(server, ("alice", "alice-pw"), busybox, app) == [
            {"type": "repository", "name": "team/app", "actions": ["pull"]}
        ]
        assert token_access(server, ("alice", "alice-pw"), "registry:catalog:*") == []
        for full in [("wave", "main-pw"), ("carol", "carol-pw")]:
            assert [entry["name"] for entry in token_access(server, full, busybox, app)] == ["library/busybox",
                                                                                             "team/app"]  # fmt: skip
        assert token_access(server, None, app) == []
        for wrong in [("alice", "main-pw"), ("nobody", "x")]:
            response = httpx.get(server.realm, params={"scope": app}, auth=wrong)
            assert response.status_code == 401
            assert "token" not in response.json()
        assert [r.username for r in server.requests] == ["alice", "alice", "alice", "wave", "carol", None]
    finally:
        server.stop()


@pytest.mark.slow
def test_token_registry_refuses_a_scoped_user_outside_its_repositories() -> None:
    registry = start_registry(TOKEN, extra_users={"dave": "dave-pw"})
    try:
        registry.add_user("alice", "alice-pw", {"team/app"})
        token_server = registry.token_server
        assert token_server is not None

        def manifest_status(user: str, password: str, repository: str) -> int:
            scope = f"repository:{repository}:pull"
            token = httpx.get(token_server.realm, params={"service": "wave-test-registry", "scope": scope},
                              auth=(user, password)).json()["token"]  # fmt: skip
            return httpx.get(f"{registry.url}/v2/{repository}/manifests/latest", headers=bearer(token)).status_code

        assert manifest_status("alice", "alice-pw", "team/app") == 404  # allowed: the image is just not there
        assert manifest_status("alice", "alice-pw", "library/busybox") == 401
        assert manifest_status("dave", "dave-pw", "library/busybox") == 404
        assert manifest_status("wave", "token-secret", "library/busybox") == 404
    finally:
        registry.stop()


@pytest.mark.slow
def test_basic_registry_accepts_extra_users() -> None:
    registry = start_registry(BASIC, extra_users={"dave": "dave-pw"})
    try:
        assert httpx.get(f"{registry.url}/v2/", auth=("dave", "dave-pw")).status_code == 200
        assert httpx.get(f"{registry.url}/v2/", auth=("wave", "basic-secret")).status_code == 200
        assert httpx.get(f"{registry.url}/v2/", auth=("dave", "basic-secret")).status_code == 401
        with pytest.raises(ValueError, match="only a token registry"):
            registry.add_user("erin", "pw")
    finally:
        registry.stop()
