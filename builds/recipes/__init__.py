"""Containerfiles generated from recipes (`condaFile`, `spackFile`, v2 `packages`), for the usual builder.

`recipe_containerfile` is the one entry point: a GeneratedBuild (the Containerfile, the files it COPYs from
the build context, the recipe text for the containerId and the tools for the name), or RecipeError with a
one-line message for the client (a 400). No I/O but the DNS lookup of a lock file URL's SSRF check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from builds.recipes.common import GeneratedBuild, RecipeError
from builds.recipes.conda import conda_file_build, conda_packages_build
from builds.recipes.cran import cran_packages_build
from builds.recipes.lock import conda_lock_extract
from builds.recipes.spack import spack_file_build
from registry.platform import DEFAULT_PLATFORM, Platform

__all__ = ["GeneratedBuild", "RecipeError", "conda_lock_extract", "recipe_containerfile"]

PACKAGE_TYPES = ("CONDA", "CRAN")


def recipe_containerfile(
    *,
    conda_file: str | None = None,
    spack_file: str | None = None,
    packages: Mapping[str, Any] | None = None,
    container_file: str | None = None,
    platform: Platform = DEFAULT_PLATFORM,
    build_template: str | None = None,
) -> GeneratedBuild:
    """The build of one recipe: a `condaFile`, a `spackFile` (with an optional `containerFile` supplying the
    final stage) or v2 `packages`; files are decoded text. Exactly one recipe must be given.

    `build_template` picks a Conda layout by Wave's names: `conda/micromamba:v1` (the default, one stage) or
    `conda/micromamba:v2` (built in micromamba, the prefix copied into `condaOpts.baseImage`)."""
    recipes = {"condaFile": conda_file, "spackFile": spack_file, "packages": packages}
    given = [name for name, value in recipes.items() if value is not None]
    if len(given) != 1:
        raise RecipeError(
            f"Give exactly one of 'condaFile', 'spackFile' or 'packages', not {' and '.join(given) or 'none'}"
        )
    if container_file is not None and spack_file is None:
        raise RecipeError(f"Attribute 'containerFile' cannot be combined with '{given[0]}'")
    is_conda = conda_file is not None or (isinstance(packages, Mapping) and packages.get("type") == "CONDA")
    if build_template is not None and not is_conda:
        raise RecipeError("Attribute 'buildTemplate' applies to Conda recipes only")
    if conda_file is not None:
        return conda_file_build(conda_file, build_template=build_template)
    if spack_file is not None:
        return spack_file_build(spack_file, platform=platform, container_file=container_file)
    if not isinstance(packages, Mapping):
        raise RecipeError("Attribute 'packages' must be an object")
    kind = packages.get("type")
    if kind == "CONDA":
        return conda_packages_build(packages, build_template=build_template)
    if kind == "CRAN":
        return cran_packages_build(packages)
    named = kind is None or (isinstance(kind, str) and kind.isalnum() and len(kind) <= 32)
    shown = f" '{kind}'" if named else ""  # never markup, nor the repr of nested JSON
    raise RecipeError(f"Unsupported packages type{shown}: use one of {', '.join(PACKAGE_TYPES)}")
