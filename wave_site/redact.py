"""URLs and image names as they may be shown or logged: no user info, no signature-like query parameters.

Clients name layer locations such as `https://alice:pass@host/x?X-Amz-Signature=...` and images such as
`alice:pass@quay.io/x`; the host and path help whoever reads a log, a status or a 400, the secrets never
do. Parsing is by hand and errs towards hiding: user info is recognised with or without a scheme, query
parameters are split on `&` and `;` and percent-decoded before they are matched, an authority that does
not parse is hidden whole, and a query whose secrets cannot be told apart from the rest is dropped whole.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

REDACTED = "REDACTED"
# Query parameters that carry or prove a secret: presigned S3/GCS/Azure URLs, API keys, tokens.
_SECRET_PARAM = re.compile(
    r"(signature|sig|token|key|secret|password|passwd|pwd|credential|auth|session|x-amz-security-token|x-goog-.*)",
    re.IGNORECASE,
)
# A secret's name followed by its value, inside another parameter's value (`q=X-Amz-Signature=...`).
_SECRET_IN_VALUE = re.compile(_SECRET_PARAM.pattern + r"[^=:]*[=:]", re.IGNORECASE)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# host, [IPv6], each with an optional numeric port: anything else in an authority is not shown.
_HOST_PORT = re.compile(r"(?:\[[0-9A-Za-z:.%]*\]|[^\[\]:@/?#%]*)(?::[0-9]*)?")
# `user:pass@` at the start of a path segment, unless the `@` introduces a digest (`repo:tag@sha256:...`).
_USER_INFO = re.compile(r"(?:^|(?<=/))[^/?#]+@(?![A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32})")
# Shown escaped (`\r`, `\x00`) so that a message or a log line stays one line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_controls(text: str) -> str:
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def _decoded(text: str) -> str | None:
    """`text` percent-decoded until it no longer changes (double encoding hides nothing); None if it keeps changing."""
    for _ in range(4):
        decoded = unquote_plus(text)
        if decoded == text:
            return text
        text = decoded
    return None


def _redact_parameters(query: str) -> str:
    """`a=1&X-Amz-Signature=REDACTED;b=2`; REDACTED whole when a secret hides where it cannot be cut out."""
    shown: list[str] = []
    for piece in re.split(r"([&;])", query):
        if piece in ("&", ";", ""):
            shown.append(piece)
            continue
        decoded = _decoded(piece)
        if decoded is None:
            return REDACTED
        name, _equals, value = decoded.partition("=")
        if _SECRET_PARAM.search(name):
            shown.append(f"{name}={REDACTED}")
        elif _SECRET_IN_VALUE.search(value) or re.search(r"[&;]", value):
            return REDACTED  # a secret's name inside a value (`q=X-Amz-Signature%3D...`): keep none of it
        else:
            shown.append(piece)
    return "".join(shown)


def _redact_path(path: str) -> str:
    """A path without user-info-looking segments; its `;parameters` treated like a query."""
    path = _USER_INFO.sub(f"{REDACTED}@", path)
    before, semicolon, parameters = path.partition(";")
    return before + semicolon + _redact_parameters(parameters) if semicolon else path


def redact_url(url: str) -> str:
    """`url` (or an image name) with user info and secret-looking query values replaced by REDACTED.

    An authority that does not parse is REDACTED whole (`http://REDACTED`), a fragment is dropped, control
    characters are escaped.
    """
    if url.startswith("data:"):
        return "data:..."
    url = url.partition("#")[0]
    rest, question, query = url.partition("?")
    scheme_match = _SCHEME.match(rest)
    prefix = ""
    if scheme_match is not None or rest.startswith("//"):
        prefix = scheme_match.group() if scheme_match is not None else "//"
        authority, slash, path = rest[len(prefix) :].partition("/")
        _user_info, at, host_port = authority.rpartition("@")
        if not _HOST_PORT.fullmatch(host_port):
            return _escape_controls(prefix + REDACTED)
        prefix += f"{REDACTED}@{host_port}" if at else host_port
        rest = slash + path
    shown = prefix + _redact_path(rest)
    if question:
        shown += "?" + _redact_parameters(query)
    return _escape_controls(shown)


def redact_text(text: str, url: str) -> str:
    """`text` (an error message) with every occurrence of `url` replaced by its redacted form."""
    return text.replace(url, redact_url(url)) if url else text
