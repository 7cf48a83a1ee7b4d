"""OCI distribution error codes: the HTTP status each one answers with, and the error body.

The table follows the distribution spec (and the reference registry's own codes: UNAVAILABLE,
RANGE_INVALID, UNKNOWN). Callers pick a code; a different status only where the spec has no code for
the case (an upstream that misbehaved is UNKNOWN with 502, not a server fault of ours).
"""

from __future__ import annotations

import json
from enum import StrEnum

API_VERSION_HEADER = "Docker-Distribution-API-Version"
API_VERSION = "registry/2.0"


class OciCode(StrEnum):
    BLOB_UNKNOWN = "BLOB_UNKNOWN"
    BLOB_UPLOAD_INVALID = "BLOB_UPLOAD_INVALID"
    BLOB_UPLOAD_UNKNOWN = "BLOB_UPLOAD_UNKNOWN"
    DIGEST_INVALID = "DIGEST_INVALID"
    MANIFEST_BLOB_UNKNOWN = "MANIFEST_BLOB_UNKNOWN"
    MANIFEST_INVALID = "MANIFEST_INVALID"
    MANIFEST_UNKNOWN = "MANIFEST_UNKNOWN"
    NAME_INVALID = "NAME_INVALID"
    NAME_UNKNOWN = "NAME_UNKNOWN"
    SIZE_INVALID = "SIZE_INVALID"
    UNAUTHORIZED = "UNAUTHORIZED"
    DENIED = "DENIED"
    UNSUPPORTED = "UNSUPPORTED"
    TOOMANYREQUESTS = "TOOMANYREQUESTS"
    RANGE_INVALID = "RANGE_INVALID"
    UNAVAILABLE = "UNAVAILABLE"
    UNKNOWN = "UNKNOWN"


STATUS: dict[OciCode, int] = {
    OciCode.BLOB_UNKNOWN: 404,
    OciCode.BLOB_UPLOAD_INVALID: 400,
    OciCode.BLOB_UPLOAD_UNKNOWN: 404,
    OciCode.DIGEST_INVALID: 400,
    OciCode.MANIFEST_BLOB_UNKNOWN: 404,
    OciCode.MANIFEST_INVALID: 400,
    OciCode.MANIFEST_UNKNOWN: 404,
    OciCode.NAME_INVALID: 400,
    OciCode.NAME_UNKNOWN: 404,
    OciCode.SIZE_INVALID: 400,
    OciCode.UNAUTHORIZED: 401,
    OciCode.DENIED: 403,
    OciCode.UNSUPPORTED: 405,
    OciCode.TOOMANYREQUESTS: 429,
    OciCode.RANGE_INVALID: 416,
    OciCode.UNAVAILABLE: 503,
    OciCode.UNKNOWN: 500,
}


def error_body(code: OciCode, message: str) -> bytes:
    """The spec's error document: `{"errors": [{"code", "message", "detail"}]}`."""
    return json.dumps({"errors": [{"code": code.value, "message": message, "detail": None}]}).encode()
