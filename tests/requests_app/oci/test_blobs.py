"""Blob answers: Range parsing (any length of digits, one range honoured, several ignored, anything else
refused before it reaches upstream) and digests checked before any lookup."""

from __future__ import annotations

import pytest

from requests_app.oci.blobs import MalformedRange, check_digest, parse_range, requested_range
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
        ("bytes= 0-1", (0, 1)),
        ("bytes=0 - 1\t", (0, 1)),
        ("Bytes=2-3", (2, 3)),
        ("bytes=0-1,2-3", None),  # several ranges: the whole blob (RFC 9110 allows ignoring Range)
        ("bytes=0-1, 50-", None),
        ("items=0-1", None),  # another unit: ignored
        ("none", None),
    ],
)
def test_satisfiable_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    "header",
    ["bytes=100-", "bytes=5-4", "bytes=-", "bytes=-0", "bytes=a-b", f"bytes={HUGE}-", "bytes=\xff-1", "bytes=0-1\x00",
     "bytes=0-1\n", "bytes=0-1,a-2", "bytes=0-1,,2-3", "bytes=\u0661-2", "bytes=0--1"],
)  # fmt: skip
def test_unsatisfiable_ranges_name_the_size(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as refused:
        parse_range(header, 100)
    assert refused.value.headers == {"Content-Range": "bytes */100"}


@pytest.mark.parametrize(
    ("header", "forwarded"),
    [
        ("bytes=0-1", "bytes=0-1"),
        ("bytes= 0 -1\t", "bytes=0-1"),
        (f"bytes={HUGE}-", f"bytes={10**18}-"),
        (f"bytes=-{HUGE}", f"bytes=-{10**18}"),
        ("bytes=0-1,2-3", None),
        ("items=0-1", None),
    ],
)
def test_only_a_well_formed_single_range_is_forwarded_upstream(header: str, forwarded: str | None) -> None:
    byte_range = requested_range(header)
    assert (byte_range.header if byte_range else None) == forwarded


@pytest.mark.parametrize("header", ["bytes=\xff-1", "bytes=0-1\x01", "bytes=a-", "bytes=9-1"])
def test_malformed_ranges_are_never_forwarded(header: str) -> None:
    with pytest.raises(MalformedRange):
        requested_range(header)


@pytest.mark.parametrize(
    "digest", ["sha256:" + "0" * 63, "sha256:" + "G" * 64, "../../etc/passwd", "sha512:" + "0" * 128]
)
def test_blob_digests_are_sha256(digest: str) -> None:
    with pytest.raises(DigestInvalid, match="Invalid blob digest"):
        check_digest(digest)
