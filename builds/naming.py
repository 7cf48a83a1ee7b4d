"""Names of builds, from their inputs alone (no database): containerId, target image, buildId.

containerId is SipHash-2-4 with the key bytes 0x00..0x0f over the UTF-16LE encoding of
`key + "\\x1c" + value + "\\x1e"` for `containerFile`, `condaFile`, `platform`, `repository` (and `buildContext`
when there is one), in that order; the 8-byte result as little-endian hex. Identical inputs give identical
ids, hence identical targets: that is what deduplicates builds.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence

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


# --- Recipe builds: the tools in the tag -------------------------------------------------------------
# `nameStrategy` of v2 requests; None (v1, or not given) names a recipe build as `tagPrefix` does.
NAME_STRATEGIES = ("none", "tagPrefix", "imageSuffix")
TOOLS_SHOWN = 5
TOOLS_MAX_LENGTH = 80
PRUNED = "_pruned"
NOT_IN_TAG = re.compile(r"[^A-Za-z0-9_.-]+")
# A package spec: an optional `channel::`, the name, optional `[extras]`, then the version constraint.
PACKAGE_SPEC = re.compile(r"(?P<name>[^\s=<>!~\[]+)(?:\[[^\]]*\])?(?P<constraint>.*)")
VERSION = re.compile(r"[A-Za-z0-9_.]+")
SEPARATORS = re.compile(r"[._-]+")


def package_tool(spec: str) -> str:
    """`name-version` of one Conda, pip or CRAN package spec, as the tag shows it.

    The channel prefix goes (`bioconda::samtools=1.17` -> `samtools-1.17`); the version is the first version
    the constraint names, without its operator or build string (`numpy>=1.2,<2` -> `numpy-1.2`,
    `samtools=1.17=h00_1` -> `samtools-1.17`, `python=3.11.*` -> `python-3.11`, `requests[socks]==2.0` ->
    `requests-2.0`); a spec without a version is its name.
    """
    match = PACKAGE_SPEC.match(spec.rpartition("::")[2].strip())
    if match is None:
        return ""
    version = VERSION.search(match.group("constraint").lstrip(" =<>!~"))
    number = version.group(0).rstrip(".") if version and match.group("constraint").strip() else ""
    return f"{match.group('name')}-{number}" if number else match.group("name")


def recipe_tools(*, name: str | None, packages: Sequence[str]) -> str:
    """The `<tools>` of a recipe build's name: the recipe's `name`, else its first five packages as
    `name-version` joined by `_` (`_pruned` appended when there are more), limited to `[A-Za-z0-9_.-]`
    (each run of other characters becomes `-`) and 80 characters, starting with a letter, digit or `_`
    as a tag must. "" when nothing is left: the build is then named by its containerId alone."""
    if name and name.strip():
        text = name.strip()
    else:
        tools = [tool for tool in (package_tool(spec) for spec in packages) if tool]
        text = "_".join(tools[:TOOLS_SHOWN]) + (PRUNED if len(tools) > TOOLS_SHOWN else "")
    return NOT_IN_TAG.sub("-", text)[:TOOLS_MAX_LENGTH].lstrip(".-")


def image_component(tools: str) -> str:
    """`tools` as a repository path component: lowercase, separators single (`.`, `_`, `__` or dashes)."""

    def separator(match: re.Match[str]) -> str:
        run = match.group(0)
        return run if run in {".", "_", "__"} or set(run) == {"-"} else "-"

    return SEPARATORS.sub(separator, tools.lower()).strip("._-")


def recipe_target_image(*, repository: str, container_id: str, tools: str, name_strategy: str | None) -> str:
    """Where a recipe build is pushed: `none` -> `<repo>:<containerId>`, `tagPrefix` (and None) ->
    `<repo>:<tools>--<containerId>`, `imageSuffix` -> `<repo>/<tools>:<containerId>`; without tools, the
    plain `<repo>:<containerId>` in every case."""
    if name_strategy is not None and name_strategy not in NAME_STRATEGIES:
        raise ValueError(f"Unknown name strategy '{name_strategy}': use one of {', '.join(NAME_STRATEGIES)}")
    if name_strategy == "imageSuffix" and image_component(tools):
        return f"{repository}/{image_component(tools)}:{container_id}"
    if name_strategy in {None, "tagPrefix"} and tools:
        return f"{repository}:{tools}--{container_id}"
    return target_image(repository=repository, container_id=container_id)
