"""The Tower (Seqera Platform) API client: who a token belongs to, the credentials of a workspace, their keys.

Every call is a GET with `Authorization: Bearer <token>` to `<endpoint><path>` (the endpoint is the API base
URL as the caller gave it). A 401 is answered once by a refresh, when there is a refresh token:
`POST <endpoint>/oauth/access_token` with a form body; Tower sends the new tokens back as the `JWT` and
`JWT_REFRESH_TOKEN` cookies, handed to `on_refresh` (which stores them) before the call is retried once.
Network errors and 5xx answers are retried a bounded number of times. Each exchange (one request and its
retries) has an absolute deadline, checked on every socket operation and while the body is read, so that a
Tower dripping its answer cannot hold a request; answers are streamed and refused past MAX_BODY_BYTES.
`/user-info` values the database cannot hold (an id past 64 bits, an over-long name or email) are refused.
No token, password or packet ever appears in a message or a log line.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any

import httpx

from registry.deadlines import bound_by_deadline
from registry.ssrf import DestinationRefusedError

CREDENTIALS_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_DEADLINE = 30.0  # seconds, when the HTTP client given has no read timeout to take it from
# What the columns that hold a Tower user take (TowerAuth, CredentialLookup, ContainerRequest).
USER_ID_RANGE = range(-(2**63), 2**63)
MAX_USER_NAME = 256
MAX_EMAIL = 320
MAX_LABEL = 256


class TowerError(Exception):
    """Tower could not answer usefully; `message` is safe to show to the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TowerUnauthorized(TowerError):
    """Tower refused the token (and its refresh, when there was one)."""


class TowerForbidden(TowerError):
    """The token is good but may not see what was asked (a workspace the user is not a member of)."""


class TowerNotFound(TowerError):
    pass


class TowerUnavailable(TowerError):
    """Tower is unreachable, too slow, or failing (5xx), or sent something unreadable."""


@dataclass
class TowerTokens:
    """The tokens a call is made with; replaced in place when a refresh succeeds."""

    access_token: str = field(repr=False)
    refresh_token: str = field(default="", repr=False)


@dataclass(frozen=True)
class TowerUser:
    id: int
    user_name: str
    email: str


@dataclass(frozen=True)
class TowerCredentials:
    """One entry of `/credentials` (no secret: the keys come from `/credentials/{id}/keys`)."""

    id: str
    name: str
    provider: str
    registry: str | None  # container-reg only; absent means docker.io


RefreshHook = Callable[[TowerTokens], None]


@dataclass(frozen=True)
class TowerAnswer:
    """A whole Tower answer, read within the limits (its body decoded as sent: gzip undone)."""

    status_code: int
    headers: httpx.Headers
    content: bytes


class TowerClient:
    def __init__(
        self, *, http: httpx.Client, retries: int = 2, backoff: float = 0.25, deadline: float | None = None
    ) -> None:
        """`deadline`: seconds one exchange (a request and its retries) may take, from its start to the last byte
        of its answer; by default the read timeout of `http` (WAVE_TOWER_TIMEOUT for the service's client)."""
        self.http = http
        self.retries = retries
        self.backoff = backoff
        self.deadline = deadline if deadline is not None else _read_timeout(http)
        bound_by_deadline(getattr(http, "_transport", None), _deadline.get)

    # --- API ----------------------------------------------------------------------------------
    def user_info(self, endpoint: str, tokens: TowerTokens, *, on_refresh: RefreshHook | None = None) -> TowerUser:
        body = self._get(endpoint, "/user-info", {}, tokens, on_refresh)
        user = body.get("user")
        if not isinstance(user, dict) or not isinstance(user.get("id"), int) or isinstance(user.get("id"), bool):
            raise TowerUnavailable(f"Tower at '{endpoint}' sent an unreadable user-info answer")
        if user["id"] not in USER_ID_RANGE:
            raise TowerUnavailable(f"Tower at '{endpoint}' sent a user id outside the signed 64-bit range")
        user_name = _user_field(endpoint, "a user name", user.get("userName"), MAX_USER_NAME)
        email = _user_field(endpoint, "an email", user.get("email"), MAX_EMAIL)
        return TowerUser(id=user["id"], user_name=user_name, email=email)

    def list_credentials(
        self, endpoint: str, tokens: TowerTokens, *, workspace_id: int | None, on_refresh: RefreshHook | None = None
    ) -> list[TowerCredentials]:
        query = {"workspaceId": str(workspace_id)} if workspace_id is not None else {}
        body = self._get(endpoint, "/credentials", query, tokens, on_refresh)
        entries = body.get("credentials")
        if not isinstance(entries, list):
            raise TowerUnavailable(f"Tower at '{endpoint}' sent an unreadable credentials list")
        found = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str | int):
                continue
            keys = entry.get("keys")
            registry = keys.get("registry") if isinstance(keys, dict) else None
            found.append(
                TowerCredentials(
                    id=str(entry["id"]),
                    name=_label(entry.get("name")),
                    provider=_label(entry.get("provider")),
                    registry=registry if isinstance(registry, str) and registry else None,
                )
            )
        return found

    def credential_keys(
        self,
        endpoint: str,
        tokens: TowerTokens,
        *,
        credentials_id: str,
        pairing_id: int,
        workspace_id: int | None,
        on_refresh: RefreshHook | None = None,
    ) -> str:
        """The encrypted key packet of one credentials entry (for the pairing key `pairing_id`)."""
        query = {"pairingId": str(pairing_id)}
        if workspace_id is not None:
            query["workspaceId"] = str(workspace_id)
        if not CREDENTIALS_ID.fullmatch(credentials_id):  # it goes into a URL path
            raise TowerNotFound(f"Tower at '{endpoint}' named credentials with an invalid id")
        path = f"/credentials/{credentials_id}/keys"
        body = self._get(endpoint, path, query, tokens, on_refresh)
        packet = body.get("keys")
        if not isinstance(packet, str) or not packet:
            raise TowerUnavailable(f"Tower at '{endpoint}' sent no credentials keys")
        return packet

    # --- transport ----------------------------------------------------------------------------
    def _get(
        self, endpoint: str, path: str, query: dict[str, str], tokens: TowerTokens, on_refresh: RefreshHook | None
    ) -> dict[str, Any]:
        answer = self._send(endpoint, "GET", path, params=query, headers=_bearer(tokens))
        if answer.status_code == 401 and tokens.refresh_token:
            self._refresh(endpoint, tokens)
            if on_refresh is not None:
                on_refresh(tokens)
            answer = self._send(endpoint, "GET", path, params=query, headers=_bearer(tokens))
        return _json(endpoint, path, answer)

    def _refresh(self, endpoint: str, tokens: TowerTokens) -> None:
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
        answer = self._send(endpoint, "POST", "/oauth/access_token", data=form)
        if answer.status_code in {400, 401, 403}:
            raise TowerUnauthorized(f"Tower at '{endpoint}' refused the access token and its refresh")
        if answer.status_code >= 300:
            raise TowerUnavailable(f"Tower at '{endpoint}' answered {answer.status_code} to a token refresh")
        cookies = _cookies(answer)
        access = cookies.get("JWT")
        if not access:
            raise TowerUnavailable(f"Tower at '{endpoint}' refreshed the token but sent no JWT cookie")
        tokens.access_token = access
        tokens.refresh_token = cookies.get("JWT_REFRESH_TOKEN") or tokens.refresh_token

    def _send(self, endpoint: str, method: str, path: str, **kwargs: Any) -> TowerAnswer:
        """One exchange: the request, retried on network errors, 429 and 5xx while attempts and time remain,
        all of it within `deadline` seconds."""
        deadline = time.monotonic() + self.deadline
        for attempt in range(self.retries + 1):
            answer = None
            try:
                answer = self._attempt(endpoint, method, endpoint + path, deadline, **kwargs)
            except DestinationRefusedError:
                raise
            except httpx.HTTPError as exc:
                if time.monotonic() >= deadline:
                    raise self._too_slow(endpoint, exc) from None
                if attempt == self.retries:
                    raise TowerUnavailable(f"Tower at '{endpoint}' is unreachable: {type(exc).__name__}") from None
            else:
                if answer.status_code not in RETRY_STATUSES or attempt == self.retries:
                    return answer
            pause = self.backoff * (2**attempt)
            if time.monotonic() + pause >= deadline:  # no time left for another attempt
                if answer is not None:
                    return answer
                raise self._too_slow(endpoint, None)
            time.sleep(pause)
        raise AssertionError("unreachable")

    def _attempt(self, endpoint: str, method: str, url: str, deadline: float, **kwargs: Any) -> TowerAnswer:
        """One request, its answer read whole (streamed: refused past MAX_BODY_BYTES, or past `deadline`)."""
        token = _deadline.set(deadline)
        try:
            with self.http.stream(method, url, **kwargs) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        raise TowerUnavailable(f"Tower at '{endpoint}' sent an answer too large to read")
                    if time.monotonic() >= deadline:
                        raise self._too_slow(endpoint, None)
                return TowerAnswer(status_code=response.status_code, headers=response.headers, content=bytes(body))
        finally:
            _deadline.reset(token)

    def _too_slow(self, endpoint: str, exc: Exception | None) -> TowerUnavailable:
        cause = f" ({type(exc).__name__})" if exc is not None else ""
        return TowerUnavailable(f"Tower at '{endpoint}' did not answer within {self.deadline:g} s{cause}")


# While a Tower exchange runs, `_deadline` holds its end (a context variable: one per thread or task); the
# connections of the client's default transport (registry.deadlines) end by it. Other exchanges on the same pool
# are unaffected; a transport of another kind is left as it is: the body loop still checks between chunks.
_deadline: ContextVar[float | None] = ContextVar("tower_deadline", default=None)


def _read_timeout(http: httpx.Client) -> float:
    read = http.timeout.read
    return float(read) if read is not None else DEFAULT_DEADLINE


def _bearer(tokens: TowerTokens) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.access_token}", "Accept": "application/json"}


def _json(endpoint: str, path: str, answer: TowerAnswer) -> dict[str, Any]:
    status = answer.status_code
    if status == 401:
        raise TowerUnauthorized(f"Tower at '{endpoint}' refused the access token")
    if status == 403:
        raise TowerForbidden(f"Tower at '{endpoint}' denied access to {path.split('?')[0]}")
    if status == 404:
        raise TowerNotFound(f"Tower at '{endpoint}' has no {path.split('?')[0]}")
    if status >= 300:
        raise TowerUnavailable(f"Tower at '{endpoint}' answered {status} to {path.split('?')[0]}")
    try:
        body = json.loads(answer.content)
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise TowerUnavailable(f"Tower at '{endpoint}' sent no JSON object for {path.split('?')[0]}")
    return body


def _cookies(answer: TowerAnswer) -> dict[str, str]:
    found: dict[str, str] = {}
    for header in answer.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(header)
        except CookieError:
            continue
        found.update({name: morsel.value for name, morsel in cookie.items()})
    return found


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _user_field(endpoint: str, what: str, value: object, limit: int) -> str:
    """A `/user-info` text as the database stores it: refused (TowerUnavailable) when longer than its column, or
    holding what PostgreSQL cannot store (NUL, lone surrogates); absent or not a string is empty."""
    text = _text(value)
    if len(text) > limit:
        raise TowerUnavailable(f"Tower at '{endpoint}' sent {what} longer than {limit} characters")
    if not _is_storable(text):
        raise TowerUnavailable(f"Tower at '{endpoint}' sent {what} with characters that cannot be stored")
    return text


def _label(value: object) -> str:
    """A name Tower gives (credentials, provider), as it may be quoted in messages and lookup rows: printable
    characters only, at most MAX_LABEL of them."""
    return "".join(char for char in _text(value) if char.isprintable())[:MAX_LABEL]


def _is_storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
