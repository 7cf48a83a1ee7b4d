"""A stand-in for the Tower (Seqera Platform) API, speaking its real protocol (behavior.md section 4).

Tower is the one remote service the tests cannot run, so this serves the part of its API the service
calls, on a free loopback port: `GET /user-info`, `GET /credentials[?workspaceId=N]`,
`GET /credentials/{id}/keys?pairingId=P[&workspaceId=N]` (Bearer auth) and
`POST /oauth/access_token` (refresh-token rotation, new tokens as `JWT` and `JWT_REFRESH_TOKEN` cookies),
all under `prefix` so that `url` is a `towerEndpoint`. The keys packet is encrypted here with
`cryptography` directly (`encrypt_packet`), independently of the service's code.

Errors are JSON `{"message": ...}`: 401 `Unauthorized` (missing, unknown or expired token; unknown or used
refresh token), 403 `Forbidden` (a workspace the user is not a member of), 400 `Invalid workspaceId`
(not a number), 400 `Missing pairing record` (pairingId absent or never registered), 404
`Credentials not found` (unknown id, or one of another user or workspace), 404 `Not found` (any other
path or method). The keys endpoint checks in that order: token, workspaceId, membership, pairing, id.

Every request is recorded (`requests`), and `fail_next` makes the next ones fail with a status or with
a dropped connection. State survives `stop()`; `start()` again serves it on the same port.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import secrets
import string
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography.hazmat.primitives import padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asymmetric_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

UNAUTHORIZED = "Unauthorized"
FORBIDDEN = "Forbidden"
INVALID_WORKSPACE = "Invalid workspaceId"
MISSING_PAIRING = "Missing pairing record"
CREDENTIALS_NOT_FOUND = "Credentials not found"
NOT_FOUND = "Not found"
INJECTED_FAILURE = "Injected failure"

CONTAINER_REGISTRY = "container-reg"
AWS = "aws"
_ID_ALPHABET = string.ascii_letters + string.digits
_KEYS_PATH = re.compile(r"/credentials/(?P<id>[^/]+)/keys")


def encrypt_packet(public_key_b64: str, plaintext: bytes) -> str:
    """Tower's keys packet: `1\\P\\<b64 RSA(PKCS#1 v1.5) of a fresh AES-128 key>\\<b64 AES-ECB(PKCS#7) data>`."""
    public_key = serialization.load_der_public_key(base64.b64decode(public_key_b64))
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ValueError("the pairing public key is not an RSA key")
    aes_key = secrets.token_bytes(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(aes_key), modes.ECB()).encryptor()  # noqa: S305 - the protocol's mode
    data = encryptor.update(padded) + encryptor.finalize()
    wrapped_key = public_key.encrypt(aes_key, asymmetric_padding.PKCS1v15())
    return "1\\P\\" + base64.b64encode(wrapped_key).decode() + "\\" + base64.b64encode(data).decode()


@dataclass(eq=False)
class TowerUser:
    id: int
    user_name: str
    email: str
    workspaces: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received; the Authorization header and the form body (tokens) are kept out of repr."""

    method: str
    path: str  # without the prefix (the full path when outside it)
    query: dict[str, str]
    has_authorization: bool
    authorization: str | None = field(default=None, repr=False, compare=False)
    form: dict[str, str] = field(default_factory=dict, repr=False, compare=False)


@dataclass(eq=False)
class _Credentials:
    id: str
    scope: tuple[str, int]  # ("user", user id) or ("workspace", workspace id)
    name: str
    provider: str
    discriminator: str
    registry: str | None
    user_name: str
    password: str
    extra_keys: dict[str, Any]
    created: str

    def listed(self) -> dict[str, Any]:
        if self.provider == AWS:
            keys: dict[str, Any] = {"discriminator": self.discriminator, "assumeRoleArn": None}
        else:
            keys = {"userName": self.user_name, "discriminator": self.discriminator}
            if self.registry is not None:
                keys = {"registry": self.registry, **keys}
        keys.update(self.extra_keys)
        return {
            "id": self.id, "name": self.name, "description": None, "provider": self.provider, "baseUrl": None,
            "category": None, "deleted": None, "lastUsed": None, "dateCreated": self.created,
            "lastUpdated": self.created, "keys": keys,
        }  # fmt: skip

    def secret(self) -> bytes:
        if self.provider == AWS:
            plain: dict[str, Any] = {"accessKey": self.user_name, "secretKey": self.password, "assumeRoleArn": None}
        else:
            plain = {"userName": self.user_name, "password": self.password}
            if self.registry is not None:
                plain["registry"] = self.registry
        plain["discriminator"] = self.discriminator
        return json.dumps(plain, separators=(",", ":")).encode()


class _Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(eq=False)
class TowerStandIn:
    """The Tower API on `url` (`http://127.0.0.1:<port><prefix>`), with test helpers to shape its state."""

    prefix: str = "/api"
    port: int = 0
    requests: list[RecordedRequest] = field(default_factory=list)
    refreshes: int = 0
    users: dict[int, TowerUser] = field(default_factory=dict)
    _credentials: list[_Credentials] = field(default_factory=list, repr=False)
    _access: dict[str, tuple[int, float]] = field(default_factory=dict, repr=False)  # token -> (user, expiry)
    _refresh: dict[str, tuple[int, float]] = field(default_factory=dict, repr=False)  # token -> (user, ttl)
    _pairings: dict[str, str] = field(default_factory=dict, repr=False)  # pairing id -> public key (b64)
    _failures: tuple[int, int | None, bool] = (0, None, False)  # (remaining, status, drop)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the Tower stand-in is not started")
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def start(self) -> Self:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.port = self._server.server_address[1]
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="tower-stand-in"
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
                 ) -> None:  # fmt: skip
        self.stop()

    # State for tests

    def add_user(self, user_id: int, user_name: str, email: str) -> TowerUser:
        user = TowerUser(id=user_id, user_name=user_name, email=email)
        with self._lock:
            self.users[user_id] = user
        return user

    def issue_tokens(self, user: TowerUser, *, ttl: float = 300) -> tuple[str, str]:
        """A new (access token, refresh token) pair; the access token expires after `ttl` seconds, and so
        do the access tokens later refreshed from this refresh token."""
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self._lock:
            self._access[access] = (user.id, time.monotonic() + ttl)
            self._refresh[refresh] = (user.id, ttl)
        return access, refresh

    def expire(self, access_token: str) -> None:
        with self._lock:
            user_id, _ = self._access[access_token]
            self._access[access_token] = (user_id, time.monotonic())

    def add_workspace(self, user: TowerUser, workspace_id: int) -> None:
        with self._lock:
            user.workspaces.add(workspace_id)

    def add_credentials(
        self, user: TowerUser, *, workspace_id: int | None = None, name: str, registry: str | None,
        user_name: str, password: str, provider: str = CONTAINER_REGISTRY, discriminator: str | None = None,
        extra_keys: dict[str, Any] | None = None,
    ) -> str:  # fmt: skip
        """Credentials in `user`'s personal workspace, or in workspace `workspace_id` (the user becomes a
        member of it); their id. For "aws", `user_name`/`password` are the access and secret keys.
        `extra_keys` are merged into the listed `keys` object only (not into the encrypted packet)."""
        credentials_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        scope = ("user", user.id) if workspace_id is None else ("workspace", workspace_id)
        with self._lock:
            if workspace_id is not None:
                user.workspaces.add(workspace_id)
            self._credentials.append(_Credentials(
                id=credentials_id, scope=scope, name=name, provider=provider,
                discriminator=discriminator or provider, registry=registry, user_name=user_name,
                password=password, extra_keys=dict(extra_keys or {}), created=now,
            ))  # fmt: skip
        return credentials_id

    def register_pairing(self, pairing_id: int | str, public_key_b64: str) -> None:
        with self._lock:
            self._pairings[str(pairing_id)] = public_key_b64

    def pair_with(self, wave_url: str) -> dict[str, Any]:
        """Ask the service at `wave_url` for its key pair for this endpoint (`POST /pairing`) and register it."""
        response = httpx.post(
            f"{wave_url.rstrip('/')}/pairing", json={"service": "tower", "endpoint": self.url}, timeout=10
        )
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        self.register_pairing(answer["pairingId"], answer["publicKey"])
        return answer

    def fail_next(self, count: int, *, status: int | None = None, drop: bool = False) -> None:
        """The next `count` requests answer `status`, or (drop=True) get their connection closed unanswered."""
        if (status is None) == (not drop):
            raise ValueError("give either a status or drop=True")
        with self._lock:
            self._failures = (count, status, drop)

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # Protocol

    def _user_for(self, authorization: str | None) -> TowerUser:
        scheme, _, token = (authorization or "").partition(" ")
        found = self._access.get(token) if scheme.lower() == "bearer" else None
        if found is None or found[1] <= time.monotonic():
            raise _Reject(401, UNAUTHORIZED)
        return self.users[found[0]]

    @staticmethod
    def _workspace(query: dict[str, str], user: TowerUser) -> int | None:
        value = query.get("workspaceId")
        if value is None:
            return None
        if not re.fullmatch(r"[0-9]{1,18}", value):
            raise _Reject(400, INVALID_WORKSPACE)
        if int(value) not in user.workspaces:
            raise _Reject(403, FORBIDDEN)
        return int(value)

    def _answer(self, method: str, path: str, query: dict[str, str], authorization: str | None,
                form: dict[str, str], content_type: str) -> tuple[int, dict[str, Any], list[str]]:  # fmt: skip
        """(status, body, Set-Cookie values) for one request; called with the lock held."""
        keys_match = _KEYS_PATH.fullmatch(path)
        if method == "POST" and path == "/oauth/access_token":
            return self._refresh_answer(form, content_type)
        if method != "GET" or not (path in {"/user-info", "/credentials"} or keys_match):
            raise _Reject(404, NOT_FOUND)
        user = self._user_for(authorization)
        if path == "/user-info":
            profile = {"id": user.id, "userName": user.user_name, "email": user.email, "firstName": None,
                       "lastName": None, "organization": None, "avatar": None}  # fmt: skip
            return 200, {"user": profile, "needConsent": False, "defaultWorkspaceId": None}, []
        workspace_id = self._workspace(query, user)
        scope = ("user", user.id) if workspace_id is None else ("workspace", workspace_id)
        if keys_match is None:
            listed = [c.listed() for c in self._credentials if c.scope == scope]
            return 200, {"credentials": listed}, []
        public_key = self._pairings.get(query.get("pairingId", ""))
        if public_key is None:
            raise _Reject(400, MISSING_PAIRING)
        found = [c for c in self._credentials if c.scope == scope and c.id == keys_match["id"]]
        if not found:
            raise _Reject(404, CREDENTIALS_NOT_FOUND)
        return 200, {"keys": encrypt_packet(public_key, found[0].secret())}, []

    def _refresh_answer(self, form: dict[str, str], content_type: str) -> tuple[int, dict[str, Any], list[str]]:
        if content_type != "application/x-www-form-urlencoded":
            raise _Reject(415, "Unsupported Media Type")
        found = self._refresh.get(form.get("refresh_token", ""))
        if form.get("grant_type") != "refresh_token" or found is None:
            raise _Reject(401, UNAUTHORIZED)
        del self._refresh[form["refresh_token"]]
        user_id, ttl = found
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self._access[access] = (user_id, time.monotonic() + ttl)
        self._refresh[refresh] = (user_id, ttl)
        self.refreshes += 1
        return 200, {}, [f"JWT={access}; Path=/; HttpOnly", f"JWT_REFRESH_TOKEN={refresh}; Path=/; HttpOnly"]

    def _take_failure(self) -> tuple[int | None, bool] | None:
        remaining, status, drop = self._failures
        if remaining <= 0:
            return None
        self._failures = (remaining - 1, status, drop)
        return status, drop

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        tower = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def reply(self, status: int, body: dict[str, Any], cookies: list[str]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for cookie in cookies:
                    self.send_header("Set-Cookie", cookie)
                self.end_headers()
                self.wfile.write(data)

            def handle_any(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode(errors="replace") if length else ""
                form = {name: values[0] for name, values in parse_qs(body).items()}
                query = {name: values[0] for name, values in parse_qs(url.query).items()}
                authorization = self.headers.get("Authorization")
                content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                inside = url.path == tower.prefix or url.path.startswith(tower.prefix + "/")
                path = url.path.removeprefix(tower.prefix) if inside else url.path
                with tower._lock:
                    tower.requests.append(RecordedRequest(
                        method=self.command, path=path, query=query, has_authorization=authorization is not None,
                        authorization=authorization, form=form,
                    ))  # fmt: skip
                    failure = tower._take_failure()
                    if failure is None:
                        try:
                            if not inside:
                                raise _Reject(404, NOT_FOUND)
                            answer = tower._answer(self.command, path, query, authorization, form, content_type)
                        except _Reject as reject:
                            answer = (reject.status, {"message": reject.message}, [])
                if failure is not None:
                    status, drop = failure
                    if drop or status is None:
                        self.close_connection = True  # no answer at all: a network error for the client
                        return
                    answer = (status, {"message": INJECTED_FAILURE}, [])
                self.reply(*answer)

            def do_GET(self) -> None:
                self.handle_any()

            def do_POST(self) -> None:
                self.handle_any()

            def do_PUT(self) -> None:
                self.handle_any()

            def do_DELETE(self) -> None:
                self.handle_any()

        return Handler
