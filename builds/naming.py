"""Names of builds, from their inputs alone (no database): containerId, target image, buildId.

containerId is SipHash-2-4 with the key bytes 0x00..0x0f over the UTF-16LE encoding of
`key + "\\x1c" + value + "\\x1e"` for `containerFile`, `condaFile`, `platform`, `repository` (and `buildContext`
when there is one), in that order; the 8-byte result as little-endian hex. Identical inputs give identical
ids, hence identical targets: that is what deduplicates builds.
"""

from __future__ import annotations

import struct

import siphashc

SIPHASH_KEY = bytes(range(16))
FIELD_SEPARATOR = "\x1c"
ENTRY_SEPARATOR = "\x1e"


def container_id(
    *, container_file: str, conda_file: str | None, platform: str, repository: str, build_context: str | None = None
) -> str:
    """16 lowercase hex characters naming what a build makes."""
    entries = [
        ("containerFile", container_file),
        ("condaFile", conda_file),
        ("platform", platform),
        ("repository", repository),
    ]
    if build_context:
        entries.append(("buildContext", build_context))
    text = "".join(f"{key}{FIELD_SEPARATOR}{value or ''}{ENTRY_SEPARATOR}" for key, value in entries)
    return struct.pack("<Q", siphashc.siphash(SIPHASH_KEY, text.encode("utf-16-le"))).hex()


def target_image(*, repository: str, container_id: str) -> str:
    """`<repository>:<containerId>`: where the build is pushed."""
    return f"{repository}:{container_id}"


def build_id(*, container_id: str, number: int) -> str:
    """`bd-<containerId>_<n>`, n counting the builds of that containerId from 1."""
    return f"bd-{container_id}_{number}"
