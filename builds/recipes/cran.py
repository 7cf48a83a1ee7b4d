"""CRAN recipes: v2 `packages` of type CRAN, installed in an R image with littler's `install2.r`.

Entries are R package names; `bioc::name` entries come from Bioconductor through `BiocManager::install`
(BiocManager itself installed first). `channels` are CRAN-like repository URLs used instead of the image's
own repository. `cranOpts.basePackages` are apt packages installed first (default WAVE_CRAN_BASE_PACKAGES).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.conf import settings

from builds.naming import recipe_tools
from builds.recipes.common import (
    GeneratedBuild,
    RecipeError,
    image_name,
    one_line,
    option,
    options_of,
    render,
    shell_words,
    string_list,
)

BIOC_PREFIX = "bioc::"
# R's rule: letters, digits and dots, at least two characters, starting with a letter, not ending with a dot.
R_PACKAGE = re.compile(r"[A-Za-z][A-Za-z0-9.]*[A-Za-z0-9]")
APT_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+(?:=[A-Za-z0-9.+:~-]+)?")
REPOSITORY_URL = re.compile(r"https?://[A-Za-z0-9._~:/?#\[\]@!&()*+,;=%-]+", re.IGNORECASE)


def _r_package(name: str, *, entry: str) -> str:
    if not R_PACKAGE.fullmatch(name):
        raise RecipeError(
            f"Invalid CRAN package entry '{entry}': give an R package name (letters, digits and dots, starting "
            "with a letter), or 'bioc::<name>' for Bioconductor"
        )
    return name


def _apt_packages(value: object) -> list[str]:
    what = "packages.cranOpts.basePackages"
    words = one_line(value, what=what).split() if isinstance(value, str) else string_list(value, what=what)
    for word in words:
        if not APT_PACKAGE.fullmatch(word):
            raise RecipeError(
                f"Invalid apt package '{word}' in 'packages.cranOpts.basePackages': give Debian package names"
            )
    return words


def cran_packages_build(packages: Mapping[str, Any]) -> GeneratedBuild:
    """v2 `packages` of type CRAN: `entries`, `channels`, `cranOpts` (`rImage`, `basePackages`, `commands`)."""
    options = options_of(packages, "cranOpts")
    entries = string_list(packages.get("entries"), what="packages.entries")
    if not entries:
        raise RecipeError("Attribute 'packages.entries' is empty: list the R packages to install")
    cran = [_r_package(entry, entry=entry) for entry in entries if not entry.startswith(BIOC_PREFIX)]
    bioc = [_r_package(entry[len(BIOC_PREFIX) :], entry=entry) for entry in entries if entry.startswith(BIOC_PREFIX)]
    repositories = string_list(packages.get("channels"), what="packages.channels")
    for url in repositories:
        if not REPOSITORY_URL.fullmatch(url):
            raise RecipeError(f"Invalid CRAN channel '{url}': 'packages.channels' lists repository URLs (https://...)")
    context = {
        "r_image": image_name(option(options, "rImage", settings.WAVE_CRAN_R_IMAGE), what="packages.cranOpts.rImage"),
        "base_packages": shell_words(_apt_packages(option(options, "basePackages", settings.WAVE_CRAN_BASE_PACKAGES))),
        "repositories": "".join(f"-r {shell_words([url])} " for url in repositories),
        "cran_packages": " ".join(cran),
        "bioc_packages": ", ".join(f'"{name}"' for name in bioc),
        "commands": string_list(option(options, "commands", []), what="packages.cranOpts.commands"),
    }
    return GeneratedBuild(
        container_file=render("cran.Containerfile", context),
        tools=recipe_tools(name=None, packages=entries),
    )
