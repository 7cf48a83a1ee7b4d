"""Spack recipes: a `spackFile` (spack.yaml) built in a Spack builder stage.

Alone, a small runner stage takes the installed tree, the view and the activation script; with a user's
`containerFile`, the builder stage is put before that file, whose stages read `/opt/...` from `builder`.
"""

from __future__ import annotations

import re

import yaml
from django.conf import settings

from builds.recipes.common import GeneratedBuild, RecipeError, render, shell_words
from registry.platform import Platform

SPACK_FILE = "spack.yaml"
BUILDER_STAGE = "builder"
# Spack's generic target for each platform's architecture (registry.platform names).
SPACK_TARGETS = {"amd64": "x86_64", "arm64": "aarch64"}
FROM_LINE = re.compile(r"\s*from\s", re.IGNORECASE)
PARSER_DIRECTIVE = re.compile(r"#\s*([A-Za-z]+)\s*=\s*(\S*)\s*$")


def _check_spack_file(spack_file: str) -> None:
    """A spack.yaml environment with at least one spec."""
    try:
        document = yaml.safe_load(spack_file)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise RecipeError(f"Malformed Spack environment in 'spackFile': {problem}{where}") from None
    spack = document.get("spack") if isinstance(document, dict) else None
    if not isinstance(spack, dict):
        raise RecipeError("The Spack environment in 'spackFile' must be a YAML mapping under a 'spack' key")
    specs = spack.get("specs")
    if not isinstance(specs, list) or not specs:
        raise RecipeError("The Spack environment in 'spackFile' has no specs: add a 'spack.specs' list")


def spack_target(platform: Platform) -> str:
    """The Spack target architecture of a build platform: linux/amd64 and linux/arm64 only."""
    target = SPACK_TARGETS.get(platform.arch) if platform.os == "linux" and not platform.variant else None
    if target is None:
        raise RecipeError(f"Spack builds support the platforms linux/amd64 and linux/arm64 only, not '{platform}'")
    return target


def _split_user_file(container_file: str) -> tuple[str, str]:
    """A user's Containerfile as (what precedes its first FROM, the rest). The head (parser directives,
    comments, global ARGs) goes first in the result, so that its ARGs stay global for the user's FROMs."""
    lines = container_file.splitlines(keepends=True)
    for line in lines:
        directive = PARSER_DIRECTIVE.match(line)
        if directive is None:
            break
        if directive.group(1).lower() == "escape" and directive.group(2) != "\\":
            raise RecipeError("The 'containerFile' given with 'spackFile' must use the default escape character '\\'")
    continued = False
    for index, line in enumerate(lines):
        if not continued and FROM_LINE.match(line):
            return "".join(lines[:index]), "".join(lines[index:]).rstrip("\n")
        text = line.rstrip()
        continued = text.endswith("\\") and not text.lstrip().startswith("#")
    raise RecipeError("The 'containerFile' given with 'spackFile' has no FROM instruction")


def spack_file_build(spack_file: str, *, platform: Platform, container_file: str | None = None) -> GeneratedBuild:
    """A `spackFile`, alone or before a user's `containerFile`, for the build platform."""
    _check_spack_file(spack_file)
    user_head, user_stages = _split_user_file(container_file) if container_file else ("", "")
    mirror = settings.WAVE_SPACK_CACHE_MIRROR
    context = {
        "builder_image": settings.WAVE_SPACK_BUILDER_IMAGE,
        "runner_image": settings.WAVE_SPACK_RUNNER_IMAGE,
        "target": spack_target(platform),
        "cache_mirror": shell_words([mirror]) if mirror else "",
        "user_head": user_head,
        "user_stages": user_stages,
    }
    return GeneratedBuild(
        container_file=render("spack.Containerfile", context, multiline=("user_head", "user_stages")),
        context_files={SPACK_FILE: spack_file.encode()},
        recipe_file=spack_file,
        tools="",
    )
