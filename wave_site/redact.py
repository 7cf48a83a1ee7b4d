"""URLs as they may be shown or logged: no user info, no signature-like query parameters.

Clients name layer locations such as `https://alice:pass@host/x?X-Amz-Signature=...`; the host and
path help whoever reads a log or a status, the secrets never do.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "REDACTED"
# Query parameters that carry or prove a secret: presigned S3/GCS/Azure URLs, API keys, tokens.
_SECRET_PARAM = re.compile(
    r"(signature|sig|token|key|secret|password|passwd|pwd|credential|auth|session|x-amz-security-token|x-goog-.*)",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """`url` with user info and secret-looking query values replaced by REDACTED; unparsable input is cut."""
    if url.startswith("data:"):
        return "data:..."
    try:
        parts = urlsplit(url)
        hostname = parts.hostname or ""
        port = parts.port
    except ValueError:
        return url.split("://", 1)[0] + "://" + REDACTED if "://" in url else REDACTED
    netloc = f"[{hostname}]" if ":" in hostname else hostname
    if port is not None:
        netloc = f"{netloc}:{port}"
    if parts.username is not None or parts.password is not None:
        netloc = f"{REDACTED}@{netloc}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(name, REDACTED if _SECRET_PARAM.search(name) else value) for name, value in pairs], safe="/:"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_text(text: str, url: str) -> str:
    """`text` (an error message) with every occurrence of `url` replaced by its redacted form."""
    return text.replace(url, redact_url(url)) if url else text
