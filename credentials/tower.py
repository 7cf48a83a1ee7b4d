"""The Tower (Seqera Platform) API client: who a token belongs to, the credentials of a workspace, their keys.

Every call is a GET with `Authorization: Bearer <token>` to `<endpoint><path>` (the endpoint is the API base
URL as the caller gave it). A 401 is answered once by a refresh, when there is a refresh token:
`POST <endpoint>/oauth/access_token` with a form body; Tower sends the new tokens back as the `JWT` and
`JWT_REFRESH_TOKEN` cookies, handed to `on_refresh` (which stores them) before the call is retried once.
Network errors and 5xx answers are retried a bounded number of times; every call has timeouts.
No token, password or packet ever appears in a message or a log line.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any

import httpx

from registry.ssrf import DestinationRefusedError

CREDENTIALS_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_BODY_BYTES = 4 * 1024 * 1024


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


class TowerClient:
    def __init__(self, *, http: httpx.Client, retries: int = 2, backoff: float = 0.25) -> None:
        self.http = http
        self.retries = retries
        self.backoff = backoff

    # --- API ----------------------------------------------------------------------------------
    def user_info(self, endpoint: str, tokens: TowerTokens, *, on_refresh: RefreshHook | None = None) -> TowerUser:
        body = self._get(endpoint, "/user-info", {}, tokens, on_refresh)
        user = body.get("user")
        if not isinstance(user, dict) or not isinstance(user.get("id"), int) or isinstance(user.get("id"), bool):
            raise TowerUnavailable(f"Tower at '{endpoint}' sent an unreadable user-info answer")
        return TowerUser(id=user["id"], user_name=_text(user.get("userName")), email=_text(user.get("email")))

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
                    name=_text(entry.get("name")),
                    provider=_text(entry.get("provider")),
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
        response = self._send(endpoint, "GET", path, params=query, headers=_bearer(tokens))
        if response.status_code == 401 and tokens.refresh_token:
            self._refresh(endpoint, tokens)
            if on_refresh is not None:
                on_refresh(tokens)
            response = self._send(endpoint, "GET", path, params=query, headers=_bearer(tokens))
        return _json(endpoint, path, response)

    def _refresh(self, endpoint: str, tokens: TowerTokens) -> None:
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
        response = self._send(endpoint, "POST", "/oauth/access_token", data=form)
        if response.status_code in {400, 401, 403}:
            raise TowerUnauthorized(f"Tower at '{endpoint}' refused the access token and its refresh")
        if response.status_code >= 300:
            raise TowerUnavailable(f"Tower at '{endpoint}' answered {response.status_code} to a token refresh")
        cookies = _cookies(response)
        access = cookies.get("JWT")
        if not access:
            raise TowerUnavailable(f"Tower at '{endpoint}' refreshed the token but sent no JWT cookie")
        tokens.access_token = access
        tokens.refresh_token = cookies.get("JWT_REFRESH_TOKEN") or tokens.refresh_token

    def _send(self, endpoint: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = endpoint + path
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(method, url, **kwargs)
            except DestinationRefusedError:
                raise
            except httpx.HTTPError as exc:
                if attempt == self.retries:
                    raise TowerUnavailable(f"Tower at '{endpoint}' is unreachable: {type(exc).__name__}") from None
            else:
                if response.status_code not in RETRY_STATUSES or attempt == self.retries:
                    return response
            time.sleep(self.backoff * (2**attempt))
        raise AssertionError("unreachable")


def _bearer(tokens: TowerTokens) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.access_token}", "Accept": "application/json"}


def _json(endpoint: str, path: str, response: httpx.Response) -> dict[str, Any]:
    status = response.status_code
    if status == 401:
        raise TowerUnauthorized(f"Tower at '{endpoint}' refused the access token")
    if status == 403:
        raise TowerForbidden(f"Tower at '{endpoint}' denied access to {path.split('?')[0]}")
    if status == 404:
        raise TowerNotFound(f"Tower at '{endpoint}' has no {path.split('?')[0]}")
    if status >= 300:
        raise TowerUnavailable(f"Tower at '{endpoint}' answered {status} to {path.split('?')[0]}")
    if len(response.content) > MAX_BODY_BYTES:
        raise TowerUnavailable(f"Tower at '{endpoint}' sent an answer too large to read")
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise TowerUnavailable(f"Tower at '{endpoint}' sent no JSON object for {path.split('?')[0]}")
    return body


def _cookies(response: httpx.Response) -> dict[str, str]:
    found: dict[str, str] = {}
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(header)
        except CookieError:
            continue
        found.update({name: morsel.value for name, morsel in cookie.items()})
    return found


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
