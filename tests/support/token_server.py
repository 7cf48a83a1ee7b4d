"""A small registry token server (the Docker/OCI token auth protocol) for the Bearer registry fixture.

It signs real RS256 JWTs with an `x5c` header; the registry verifies them against the certificate
in its `rootcertbundle`. Valid Basic credentials get the actions they ask for, on the repositories that
user may pull (`add_user`; the constructor's user may pull everything); anonymous callers, and users asking
for a repository outside theirs, get a token with no access to it (the registry then refuses them); wrong
credentials get 401.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

ISSUER = "wave-test-token-issuer"
SERVICE = "wave-test-registry"


@dataclass
class TokenRequest:
    username: str | None
    scopes: list[str]


@dataclass(frozen=True)
class TokenUser:
    password: str = field(repr=False)
    repositories: frozenset[str] | None  # None: every repository (and non-repository scopes)

    def may_access(self, kind: str, name: str) -> bool:
        if self.repositories is None:
            return True
        return kind == "repository" and name in self.repositories


@dataclass
class TokenServer:
    username: str
    password: str
    cert_path: Path
    port: int = 0
    requests: list[TokenRequest] = field(default_factory=list)
    users: dict[str, TokenUser] = field(default_factory=dict, repr=False)
    _server: ThreadingHTTPServer | None = None
    _key: rsa.RSAPrivateKey | None = None
    _cert_der: bytes = b""

    def __post_init__(self) -> None:
        self.users.setdefault(self.username, TokenUser(password=self.password, repositories=None))

    def add_user(self, username: str, password: str, repositories: set[str] | None = None) -> None:
        """Let `username` pull `repositories` (names like `library/busybox`), or everything when None."""
        allowed = None if repositories is None else frozenset(repositories)
        self.users[username] = TokenUser(password=password, repositories=allowed)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def start(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._cert_der = cert.public_bytes(serialization.Encoding.DER)
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def issue(self, *, subject: str, access: list[dict[str, object]], ttl: int = 300) -> str:
        now = int(dt.datetime.now(dt.UTC).timestamp())
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + ttl,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        headers = {"x5c": [base64.b64encode(self._cert_der).decode()]}
        assert self._key is not None, "start() first"
        return jwt.encode(claims, self._key, algorithm="RS256", headers=headers)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def _reply(self, status: int, body: dict[str, object]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != "/token":
                    self._reply(404, {"details": "not found"})
                    return
                query = parse_qs(url.query)
                username = None
                known = None
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    known = server.users.get(user)
                    if known is None or not secrets.compare_digest(known.password.encode(), password.encode()):
                        self._reply(401, {"details": "incorrect username or password"})
                        return
                    username = user
                scopes = query.get("scope", [])
                server.requests.append(TokenRequest(username=username, scopes=scopes))
                access: list[dict[str, object]] = []
                if known is not None:
                    for scope in scopes:
                        kind, _, rest = scope.partition(":")
                        name, _, actions = rest.rpartition(":")
                        if known.may_access(kind, name):
                            access.append({"type": kind, "name": name, "actions": actions.split(",")})
                token = server.issue(subject=username or "anonymous", access=access)
                self._reply(200, {"token": token, "access_token": token, "expires_in": 300})

        return Handler
