"""Upstream registry client (OCI distribution, pull side): endpoint, auth challenge, tokens, retries.

Auth follows the registry's challenge on `GET /v2/`: anonymous, Basic, or a Bearer token fetched from
the realm it names (`service` and `scope=repository:<name>:pull`, Basic credentials when known).
Tokens are cached (through the `cache` passed in, shared by every process when it is Redis) for
their `expires_in`; on a 401 the cached token is dropped and the request retried, twice at most.
429 and 5xx answers are retried with bounded backoff. Redirects are never followed with credentials.

One client serves every caller: `for_credentials` gives a view with other credentials that shares the
connection pool and the token cache (token keys name the credentials by a keyed fingerprint). Tokens obtained
with credentials are cached sealed (`seal` / `unseal`, given by the caller): whoever reads the cache cannot
pull with them; anonymous tokens, which anyone can obtain, are cached as they are. Only
well-formed tags and digests are ever put in a URL, whatever an upstream document says. `login` checks
someone's credentials as `docker login` does (`/validate-creds`); what it obtains is never cached.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlencode, urlsplit

import httpx

from registry.endpoints import registry_base_url
from registry.reference import DIGEST, SHA256_DIGEST, TAG, ImageReference

MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/json",
)
MANIFEST_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=5.0)
CHALLENGE_TTL = 300
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
DEFAULT_TOKEN_TTL = 60
MAX_TOKEN_TTL = 3600  # a token is cached no longer than this, whatever its expires_in
DEFAULT_RETRY_AFTER = 10
KEY_PREFIX = "wave:registry"
CredentialsLookup = Callable[[str], "Credentials | None"]
Seal = Callable[[str], str]
Unseal = Callable[[str], "str | None"]  # None: the value does not unseal (another key, garbage)


def _as_is(value: str) -> str:
    return value


def challenge_key(registry: str) -> str:
    """Cache key of a registry's auth challenge."""
    return f"{KEY_PREFIX}:challenge:{registry}"


def token_key(registry: str, repository: str, identity: str) -> str:
    """Cache key of a pull token for `repository`, per credentials identity (see `RegistryClient.identity`)."""
    return f"{KEY_PREFIX}:token:{registry}:{repository}:{identity}"


def is_digest(value: object) -> bool:
    """A well-formed digest (`algorithm:hex`; sha256 with exactly 64 lowercase hex digits)."""
    if not isinstance(value, str) or not DIGEST.fullmatch(value):
        return False
    return not value.startswith("sha256:") or bool(SHA256_DIGEST.fullmatch(value))


def is_reference(value: object) -> bool:
    """A tag or a well-formed digest: what may follow `/manifests/` in a URL."""
    return is_digest(value) or (isinstance(value, str) and bool(TAG.fullmatch(value)))


class Cache(Protocol):
    def get(self, key: str) -> object | None: ...
    def set(self, key: str, value: object, timeout: int) -> None: ...
    def delete(self, key: str) -> object: ...


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def fingerprint(self, key: bytes = b"") -> str:
        """A short keyed hash naming these credentials in cache keys (the password cannot be guessed from it)."""
        return hmac.new(key, f"{self.username}\0{self.password}".encode(), hashlib.sha256).hexdigest()[:24]


@dataclass(frozen=True)
class ManifestInfo:
    digest: str
    media_type: str
    size: int


class RegistryError(Exception):
    """An upstream failure; this base class: the registry answered something unusable."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ManifestUnknownError(RegistryError):
    """The registry does not know the manifest (or the blob, or the repository) asked for."""


class BlobUnknownError(ManifestUnknownError):
    pass


class RepositoryUnknownError(ManifestUnknownError):
    pass


class RegistryUnauthorizedError(RegistryError):
    pass


class RegistryDeniedError(RegistryError):
    pass


class RegistryUnavailableError(RegistryError):
    """Unreachable, or failing (5xx): worth retrying later."""


class RegistryRateLimitedError(RegistryUnavailableError):
    """The registry answered 429 (still, after our retries); `retry_after` is its advice, in seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnsafeReferenceError(RegistryError):
    """A tag or digest that is not well-formed (from a hostile document, say): never put in a URL."""


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "anonymous", "basic" or "bearer"
    realm: str = ""
    service: str = ""


_CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


def parse_challenge(header: str | None) -> Challenge:
    if not header:
        return Challenge("anonymous")
    scheme, _, params = header.strip().partition(" ")
    values = {name: quoted or bare for name, quoted, bare in _CHALLENGE_PARAM.findall(params)}
    if scheme.lower() == "bearer":
        return Challenge("bearer", realm=values.get("realm", ""), service=values.get("service", ""))
    if scheme.lower() == "basic":
        return Challenge("basic", realm=values.get("realm", ""))
    return Challenge("anonymous")


@dataclass(frozen=True)
class Resource:
    """Enough of a reference to name what failed: `registry/repository:version` (or `@digest`)."""

    registry: str
    repository: str
    version: str = ""  # empty: the repository itself

    def __str__(self) -> str:
        if not self.version:
            return f"{self.registry}/{self.repository}"
        separator = "@" if ":" in self.version else ":"
        return f"{self.registry}/{self.repository}{separator}{self.version}"


class RegistryClient:
    def __init__(
        self,
        *,
        insecure: Iterable[str],
        credentials: CredentialsLookup,
        cache: Cache,
        check_destination: Callable[[str], None] = lambda authority: None,
        http: httpx.Client | None = None,
        retries: int = 2,
        backoff: float = 0.25,
        fingerprint_key: bytes = b"",
        seal: Seal = _as_is,
        unseal: Unseal = _as_is,
    ) -> None:
        """`seal` and `unseal` protect the tokens cached for credentials (`unseal` answers None for a value it
        cannot open: a cache miss); by default they are cached as they are."""
        self.fingerprint_key = fingerprint_key
        self.seal = seal
        self.unseal = unseal
        self.insecure = tuple(insecure)
        self.credentials = credentials
        self.cache = cache
        self.check_destination = check_destination
        self.http = http or httpx.Client(timeout=DEFAULT_TIMEOUT, follow_redirects=False)
        self.retries = retries
        self.backoff = backoff

    # --- public API ---------------------------------------------------------------------------
    def for_credentials(self, credentials: CredentialsLookup) -> RegistryClient:
        """This client pulling with other credentials (a caller's own): same connections, same token cache."""
        view = copy.copy(self)
        view.credentials = credentials
        return view

    def identity(self, registry: str) -> str:
        """Who this client is at `registry`, for cache keys: a keyed fingerprint of its credentials, or anonymous."""
        credentials = self.credentials(registry)
        return credentials.fingerprint(self.fingerprint_key) if credentials else "anonymous"

    def head_manifest(self, ref: ImageReference) -> ManifestInfo:
        """Digest, media type and size of a manifest, by tag or digest."""
        _check_reference(ref.version)
        path = f"/v2/{ref.repository}/manifests/{ref.version}"
        response = self.request("HEAD", ref.registry, ref.repository, path, headers={"Accept": MANIFEST_ACCEPT})
        self.raise_for_status(response, ref)
        digest = response.headers.get("Docker-Content-Digest")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        length = response.headers.get("Content-Length") or ""
        size = int(length) if length.isascii() and length.isdigit() else 0
        if not is_digest(digest):
            # Some registries omit the digest on HEAD: fetch the bytes and hash them.
            full = self.request("GET", ref.registry, ref.repository, path, headers={"Accept": MANIFEST_ACCEPT})
            self.raise_for_status(full, ref)
            digest = "sha256:" + hashlib.sha256(full.content).hexdigest()
            size = len(full.content)
        assert digest is not None
        return ManifestInfo(digest=digest, media_type=media_type, size=size)

    def get_manifest(self, registry: str, repository: str, reference: str) -> tuple[bytes, str, str]:
        """A manifest's exact bytes, media type and digest (sha256 of the bytes), by tag or digest."""
        _check_reference(reference)
        path = f"/v2/{repository}/manifests/{reference}"
        response = self.request("GET", registry, repository, path, headers={"Accept": MANIFEST_ACCEPT})
        self.raise_for_status(response, Resource(registry, repository, reference))
        content = response.content
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(f"Registry '{registry}' sent a manifest that does not match digest {reference}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return content, media_type, digest

    def get_blob(self, registry: str, repository: str, digest: str, *, max_size: int = 16 * 1024 * 1024) -> bytes:
        """A small blob (an image config), verified against its digest; redirects followed without credentials."""
        if not is_digest(digest):
            raise UnsafeReferenceError(f"Refusing to fetch blob '{digest[:80]}': not a digest")
        response = self.request("GET", registry, repository, f"/v2/{repository}/blobs/{digest}")
        hops = 0
        while response.is_redirect and hops < 5:
            location = response.headers["Location"]
            target = urlsplit(str(response.url.join(location)))
            self.check_destination(target.netloc)
            response = self._send("GET", str(response.url.join(location)), {})
            hops += 1
        self.raise_for_status(response, Resource(registry, repository, digest), unknown=BlobUnknownError)
        content = response.content
        if len(content) > max_size:
            raise RegistryError(f"Blob {digest} is larger than {max_size} bytes")
        if "sha256:" + hashlib.sha256(content).hexdigest() != digest:
            raise RegistryError(f"Registry '{registry}' sent a blob that does not match digest {digest}")
        return content

    def list_tags(self, registry: str, repository: str, *, page: dict[str, str]) -> tuple[list[str], str | None]:
        """One page of a repository's tags (`n`, `last` as the spec names them) and the `Link` to the next."""
        query = urlencode(page)
        path = f"/v2/{repository}/tags/list" + (f"?{query}" if query else "")
        response = self.request("GET", registry, repository, path)
        self.raise_for_status(response, Resource(registry, repository), unknown=RepositoryUnknownError)
        try:
            tags = response.json().get("tags") or []
        except (ValueError, AttributeError, RecursionError):
            tags = None
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise RegistryError(f"Registry '{registry}' sent an unreadable tags list")
        return tags, response.headers.get("Link")

    def authorization(self, registry: str, repository: str) -> str | None:
        """The Authorization header value for pulling `repository` (for callers that stream themselves)."""
        self.check_destination(registry)
        return self._authorization(registry, repository, self.credentials(registry), fresh=False)

    def forget_authorization(self, registry: str, repository: str) -> None:
        """Drop the cached token and challenge (the registry answered 401 to them): the next call fetches anew."""
        self._forget(registry, repository, self.credentials(registry))

    def base_url(self, registry: str) -> str:
        return registry_base_url(registry, self.insecure)

    def request(
        self, method: str, registry: str, repository: str, path: str, *, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """An authenticated request to `registry`, with token refresh on 401 and retries on 429/5xx."""
        self.check_destination(registry)
        url = registry_base_url(registry, self.insecure) + path
        credentials = self.credentials(registry)
        for _attempt in range(3):
            authorization = self._authorization(registry, repository, credentials, fresh=False)
            request_headers = dict(headers or {})
            if authorization:
                request_headers["Authorization"] = authorization
            response = self._send(method, url, request_headers)
            if response.status_code != 401:
                return response
            self._forget(registry, repository, credentials)
            challenge = parse_challenge(response.headers.get("WWW-Authenticate"))
            if challenge.scheme != "anonymous":
                # The resource's own challenge wins over the /v2/ probe's (a registry may leave /v2/ open).
                self.cache.set(challenge_key(registry), challenge.__dict__, CHALLENGE_TTL)
            if authorization is None and challenge.scheme == "anonymous":
                break  # nothing to authenticate with: asking again cannot help
        return response

    @staticmethod
    def raise_for_status(
        response: httpx.Response, ref: ImageReference | Resource, *, unknown: type[RegistryError] = ManifestUnknownError
    ) -> None:
        """The registry error an answer means (nothing below 300); `unknown` is raised for a 404."""
        status = response.status_code
        if status < 300:
            return
        if status == 404:
            names: dict[type[RegistryError], str] = {BlobUnknownError: "Blob", RepositoryUnknownError: "Repository"}
            what = names.get(unknown, "Manifest")
            raise unknown(f"{what} '{ref}' not found")
        if status == 401:
            raise RegistryUnauthorizedError(f"Registry '{ref.registry}' requires authentication for '{ref}'")
        if status == 403:
            raise RegistryDeniedError(f"Registry '{ref.registry}' denied access to '{ref}'")
        if status == 429:
            raise RegistryRateLimitedError(
                f"Registry '{ref.registry}' answered {status} for '{ref}'",
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        if status >= 500:
            raise RegistryUnavailableError(f"Registry '{ref.registry}' answered {status} for '{ref}'")
        raise RegistryError(f"Registry '{ref.registry}' answered {status} for '{ref}'")

    # --- login --------------------------------------------------------------------------------
    def login(self, registry: str, credentials: Credentials) -> bool:
        """Whether `credentials` log in at `registry`, checked as `docker login` does (no repository involved).

        `/v2/` is probed without credentials. A Basic registry, and an open one, are then asked `/v2/` with the
        Basic header: 2xx valid, 401 or 403 not (an open registry that ignores the header accepts any login, as
        it does for `docker login`). A Bearer registry's token realm is asked for a token with its `service`
        and no scope: 200 with a token valid, 401 or 403 not. The token is thrown away and nothing is cached.
        RegistryUnavailableError when the registry or its token service is unreachable, fails (5xx; 429 after
        the retries) or sends no token; RegistryError when `/v2/` is no registry's answer. Messages name the
        registry and the status only, never the credentials.
        """
        self.check_destination(registry)
        url = registry_base_url(registry, self.insecure) + "/v2/"
        probe = self._send("GET", url, {})
        if probe.status_code == 401:
            challenge = parse_challenge(probe.headers.get("WWW-Authenticate"))
        elif probe.status_code < 300:
            challenge = Challenge("anonymous")
        else:
            raise _login_error(registry, probe, "/v2/")
        if challenge.scheme == "bearer":
            return self._token_login(registry, challenge, credentials)
        answer = self._send("GET", url, {"Authorization": credentials.basic_header()})
        if answer.status_code < 300:
            return True
        if answer.status_code in {401, 403}:
            return False
        raise _login_error(registry, answer, "/v2/")

    def _token_login(self, registry: str, challenge: Challenge, credentials: Credentials) -> bool:
        self._check_realm(challenge, registry)
        try:
            url = httpx.URL(challenge.realm)
            if challenge.service:
                url = url.copy_merge_params({"service": challenge.service})
        except httpx.InvalidURL:
            raise RegistryUnavailableError(f"Registry '{registry}' names an invalid token realm") from None
        headers = {"Authorization": credentials.basic_header()}
        try:
            answer = self._send_with_retries(lambda: self._read_bounded("GET", str(url), headers))
        except httpx.HTTPError as exc:
            raise RegistryUnavailableError(
                f"Token service of registry '{registry}' is unreachable: {type(exc).__name__}"
            ) from None
        if answer.status_code in {401, 403}:
            return False
        if answer.status_code != 200:
            raise _login_error(registry, answer, "the token request")
        try:
            body = answer.json()
        except (ValueError, RecursionError):
            body = None
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not token or not isinstance(token, str):
            raise RegistryUnavailableError(f"Token service of registry '{registry}' sent no token")
        return True

    # --- auth ---------------------------------------------------------------------------------
    def _challenge(self, registry: str, *, fresh: bool) -> Challenge:
        key = challenge_key(registry)
        cached = None if fresh else self.cache.get(key)
        if isinstance(cached, dict):
            return Challenge(**cached)
        response = self._send("GET", registry_base_url(registry, self.insecure) + "/v2/", {})
        if response.status_code == 401:
            challenge = parse_challenge(response.headers.get("WWW-Authenticate"))
        elif response.status_code < 400:
            challenge = Challenge("anonymous")
        else:
            raise RegistryUnavailableError(f"Registry '{registry}' answered {response.status_code} to /v2/")
        self.cache.set(key, challenge.__dict__, CHALLENGE_TTL)
        return challenge

    def _token_key(self, registry: str, repository: str, credentials: Credentials | None) -> str:
        who = credentials.fingerprint(self.fingerprint_key) if credentials else "anonymous"
        return token_key(registry, repository, who)

    def _forget(self, registry: str, repository: str, credentials: Credentials | None) -> None:
        self.cache.delete(self._token_key(registry, repository, credentials))
        self.cache.delete(challenge_key(registry))

    def _authorization(
        self, registry: str, repository: str, credentials: Credentials | None, *, fresh: bool
    ) -> str | None:
        challenge = self._challenge(registry, fresh=fresh)
        if challenge.scheme == "anonymous":
            return None
        if challenge.scheme == "basic":
            return credentials.basic_header() if credentials else None
        key = self._token_key(registry, repository, credentials)
        token = None if fresh else self._cached_token(key, is_sealed=credentials is not None)
        if token is None:
            token, ttl = self._fetch_token(challenge, repository, credentials, registry)
            self.cache.set(key, self.seal(token) if credentials is not None else token, ttl)
        return f"Bearer {token}"

    def _cached_token(self, key: str, *, is_sealed: bool) -> str | None:
        cached = self.cache.get(key)
        if not isinstance(cached, str):
            return None
        return self.unseal(cached) if is_sealed else cached

    def _fetch_token(
        self, challenge: Challenge, repository: str, credentials: Credentials | None, registry: str
    ) -> tuple[str, int]:
        self._check_realm(challenge, registry)
        params = {"scope": f"repository:{repository}:pull"}
        if challenge.service:
            params["service"] = challenge.service
        headers = {"Authorization": credentials.basic_header()} if credentials else {}
        try:
            url = str(httpx.URL(challenge.realm).copy_merge_params(params))
        except httpx.InvalidURL:
            raise RegistryUnavailableError(f"Registry '{registry}' names an invalid token realm") from None
        try:
            response = self._send_with_retries(lambda: self._read_bounded("GET", url, headers))
        except httpx.HTTPError as exc:
            raise RegistryUnavailableError(
                f"Token service of registry '{registry}' is unreachable: {type(exc).__name__}"
            ) from None
        if response.status_code in {401, 403}:
            raise RegistryUnauthorizedError(f"Registry '{registry}' refused the credentials")
        if response.status_code != 200:
            raise RegistryUnavailableError(f"Token service of registry '{registry}' answered {response.status_code}")
        try:
            body = response.json()
        except (ValueError, RecursionError):
            raise RegistryUnavailableError(f"Token service of registry '{registry}' sent no JSON") from None
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not token or not isinstance(token, str):
            raise RegistryUnavailableError(f"Token service of registry '{registry}' sent no token")
        try:
            expires_in = int(float(body.get("expires_in") or DEFAULT_TOKEN_TTL))
        except (TypeError, ValueError, OverflowError):
            expires_in = DEFAULT_TOKEN_TTL
        return token, min(max(expires_in - 10, 5), MAX_TOKEN_TTL)

    def _check_realm(self, challenge: Challenge, registry: str) -> None:
        """The token realm a registry names must be an http(s) URL without user info, to an allowed destination."""
        try:
            realm = urlsplit(challenge.realm)
            realm_port = realm.port
        except ValueError:
            raise RegistryUnavailableError(f"Registry '{registry}' names an invalid token realm") from None
        if realm.scheme not in {"http", "https"} or not realm.hostname or realm.username or realm.password:
            raise RegistryUnavailableError(f"Registry '{registry}' names an invalid token realm")
        host = f"[{realm.hostname}]" if ":" in realm.hostname else realm.hostname
        self.check_destination(f"{host}:{realm_port}" if realm_port else host)

    # --- transport ----------------------------------------------------------------------------
    def _send(self, method: str, url: str, headers: dict[str, str]) -> httpx.Response:
        try:
            return self._send_with_retries(lambda: self._read_bounded(method, url, headers))
        except httpx.HTTPError as exc:
            host = urlsplit(url).netloc
            raise RegistryUnavailableError(f"Registry '{host}' is unreachable: {type(exc).__name__}") from None

    def _read_bounded(self, method: str, url: str, headers: dict[str, str]) -> httpx.Response:
        """The whole response, refusing bodies past MAX_RESPONSE_BYTES (a hostile registry must not exhaust
        memory: manifests and configs are small; layers never go through here)."""
        response = self.http.send(self.http.build_request(method, url, headers=headers), stream=True)
        try:
            body = bytearray()
            for chunk in response.iter_bytes():  # decoded: a gzip answer is bounded as it inflates
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    host = urlsplit(url).netloc
                    raise RegistryError(f"Registry '{host}' sent more than {MAX_RESPONSE_BYTES} bytes for {url}")
        finally:
            response.close()
        kept = response.headers.copy()
        if "Content-Encoding" in kept:  # the body is decoded already: not to be decoded again
            del kept["Content-Encoding"]
            kept.pop("Content-Length", None)
        return httpx.Response(response.status_code, headers=kept, content=bytes(body),
                              request=response.request)  # fmt: skip

    def _send_with_retries(self, send: Callable[[], httpx.Response]) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                response = send()
            except (httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError):
                if attempt == self.retries:
                    raise
            else:
                if response.status_code not in RETRY_STATUSES or attempt == self.retries:
                    return response
            time.sleep(self.backoff * (2**attempt))
        raise AssertionError("unreachable")


def _login_error(registry: str, response: httpx.Response, what: str) -> RegistryError:
    """What an answer a login cannot read means: an outage (429, 5xx) or no registry's answer at all."""
    status = response.status_code
    message = f"Registry '{registry}' answered {status} to {what}"
    if status == 429:
        return RegistryRateLimitedError(message, retry_after=_retry_after(response.headers.get("Retry-After")))
    if status >= 500:
        return RegistryUnavailableError(message)
    return RegistryError(message)


def _check_reference(reference: str) -> None:
    if not is_reference(reference):
        raise UnsafeReferenceError(f"Refusing to fetch manifest '{reference[:80]}': not a tag or digest")


def _retry_after(value: str | None) -> int:
    """Seconds from a `Retry-After` header (delay-seconds only; a date or garbage: the default), 1..3600."""
    text = (value or "").strip()
    seconds = int(text) if text.isascii() and text.isdigit() and len(text) <= 6 else DEFAULT_RETRY_AFTER
    return min(max(seconds, 1), 3600)
