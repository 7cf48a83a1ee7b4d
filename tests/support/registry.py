"""A real `docker-registry` (CNCF distribution) on a free loopback port, in three flavours.

Besides its main user, an authenticated registry can have more: `extra_users` at start (full access; for
the Basic flavour that is the only way, htpasswd cannot scope) and, for the token flavour,
`Registry.add_user` with the repositories that user may pull.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import httpx

from tests.support.network import free_port, wait_until
from tests.support.token_server import ISSUER, SERVICE, TokenServer

ANONYMOUS = "anonymous"
BASIC = "basic"
TOKEN = "token"


@dataclass
class Registry:
    """A running registry: `host` is `127.0.0.1:<port>`, the name images are pushed and pulled with."""

    flavour: str
    host: str
    root: Path
    process: subprocess.Popen[bytes]
    username: str | None = None
    password: str | None = None
    token_server: TokenServer | None = None
    extra_users: dict[str, str] = field(default_factory=dict, repr=False)  # name -> password

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def creds(self) -> str | None:
        """`user:password` for skopeo/buildah `--creds`, or None for the anonymous flavour."""
        return f"{self.username}:{self.password}" if self.username else None

    def add_user(self, username: str, password: str, repositories: set[str] | None = None) -> None:
        """A token-flavour user allowed to pull `repositories` only (everything when None)."""
        if self.token_server is None:
            raise ValueError(f"only a token registry can add users while running, not a {self.flavour} one")
        self.token_server.add_user(username, password, repositories)
        self.extra_users[username] = password

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.token_server is not None:
            self.token_server.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_registry(
    flavour: str = ANONYMOUS,
    *,
    username: str = "wave",
    password: str | None = None,
    redirect_blobs_to: str = "",
    extra_users: dict[str, str] | None = None,
) -> Registry:
    """Start a registry and wait until `/v2/` answers; the caller must `stop()` it.

    `extra_users`: more `{name: password}` accounts besides `username`, with full access (basic and token).

    `redirect_blobs_to`: a base URL; blob GETs then answer with a redirect there, as registries backed by
    S3 or a CDN do (distribution's `redirect` storage middleware), to the path of the blob in `root/data`.
    """
    extra_users = dict(extra_users or {})
    if extra_users and flavour == ANONYMOUS:
        raise ValueError("an anonymous registry has no users")
    root = Path(tempfile.mkdtemp(prefix=f"wave-registry-{flavour}-"))
    port = free_port()
    auth = ""
    token_server = None
    creds: tuple[str | None, str | None] = (None, None)
    if flavour == BASIC:
        password = password or "basic-secret"
        lines = [
            f"{name}:{bcrypt.hashpw(secret.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
            for name, secret in {username: password, **extra_users}.items()
        ]
        (root / "htpasswd").write_text("".join(lines))
        auth = f"auth:\n  htpasswd:\n    realm: wave-test\n    path: {root / 'htpasswd'}\n"
        creds = (username, password)
    elif flavour == TOKEN:
        password = password or "token-secret"
        token_server = TokenServer(username=username, password=password, cert_path=root / "token-cert.pem")
        for name, secret in extra_users.items():
            token_server.add_user(name, secret)
        token_server.start()
        auth = (
            "auth:\n  token:\n"
            f"    realm: {token_server.realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
            f"    rootcertbundle: {token_server.cert_path}\n"
        )
        creds = (username, password)
    elif flavour != ANONYMOUS:
        raise ValueError(f"unknown registry flavour {flavour!r}")
    (root / "data").mkdir()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n" + auth
        + (f"middleware:\n  storage:\n    - name: redirect\n      options:\n        baseurl: {redirect_blobs_to}\n"
           if redirect_blobs_to else "")
    )  # fmt: skip
    log = open(root / "registry.log", "wb")  # noqa: SIM115 - owned by the process, closed with the dir
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    registry = Registry(
        flavour=flavour,
        host=f"127.0.0.1:{port}",
        root=root,
        process=process,
        username=creds[0],
        password=creds[1],
        token_server=token_server,
        extra_users=extra_users,
    )

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {(root / 'registry.log').read_text()[-2000:]}")
        return httpx.get(f"{registry.url}/v2/", timeout=1).status_code in {200, 401}

    try:
        wait_until(answers, timeout=20, what=f"{flavour} registry on {registry.host}")
    except BaseException:
        registry.stop()
        raise
    return registry
