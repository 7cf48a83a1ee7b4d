"""Blob answers: Range parsing (any length of digits) and digests checked before any lookup."""

from __future__ import annotations

import pytest

from requests_app.oci.blobs import check_digest, parse_range
from requests_app.oci.errors import DigestInvalid, RangeNotSatisfiable

HUGE = "9" * 5000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("bytes=0-9", (0, 9)),
        ("bytes=10-", (10, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=90-500", (90, 99)),
        (f"bytes=0-{HUGE}", (0, 99)),
        (f"bytes=-{HUGE}", (0, 99)),
        (" bytes=1-1 ", (1, 1)),
    ],
)
def test_satisfiable_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    "header", ["bytes=100-", "bytes=5-4", "bytes=-", "bytes=0-1,3-4", "items=0-1", "bytes=a-b", f"bytes={HUGE}-"]
)
def test_unsatisfiable_ranges_name_the_size(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as refused:
        parse_range(header, 100)
    assert refused.value.headers == {"Content-Range": "bytes */100"}


@pytest.mark.parametrize(
    "digest", ["sha256:" + "0" * 63, "sha256:" + "G" * 64, "../../etc/passwd", "sha512:" + "0" * 128]
)
def test_blob_digests_are_sha256(digest: str) -> None:
    with pytest.raises(DigestInvalid, match="Invalid blob digest"):
        check_digest(digest)
