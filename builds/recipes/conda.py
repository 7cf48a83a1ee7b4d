"""Conda recipes: a `condaFile` environment or v2 `packages` of type CONDA, installed with micromamba.

The environment file is copied from the build context as `conda.yml`; a lock file URL (a single http(s)
entry) is fetched by the builder with `ADD`, after the SSRF rules allowed its host, and installed as it is.
Either way the explicit lock of what was installed is printed between `>> CONDA_LOCK_START` and
`<< CONDA_LOCK_END` for `conda_lock_extract`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

import yaml
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
from credentials.policy import url_destination_check
from registry.ssrf import DestinationRefusedError

ENVIRONMENT_FILE = "conda.yml"
PIP_PREFIX = "pip:"
PIP_PACKAGE = re.compile(r"(?:.*::)?pip(?:[\s=<>!~\[]|$)")
# Wave's names for the two layouts (`buildTemplate`): v1 installs in the micromamba image, v2 copies the
# prefix into `condaOpts.baseImage` (default WAVE_CONDA_BASE_IMAGE). Without a template, a `baseImage` means v2.
SINGLE_STAGE = "conda/micromamba:v1"
MULTISTAGE = "conda/micromamba:v2"
BUILD_TEMPLATES = (None, SINGLE_STAGE, MULTISTAGE)
LOCK_URL = re.compile(r"https?://", re.IGNORECASE)
# What a URL may hold on an `ADD` line: no spaces, quotes, backslashes or `$` (the builder expands variables).
URL_CHARACTERS = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!&()*+,;=%-]+")


class _IndentedDumper(yaml.SafeDumper):
    """Lists indented under their key, as `conda env export` writes them."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _environment_of(text: str, *, what: str) -> dict[str, Any]:
    """A Conda environment YAML parsed, with at least one dependency."""
    try:
        environment = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise RecipeError(f"Malformed Conda environment in '{what}': {problem}{where}") from None
    if not isinstance(environment, dict):
        raise RecipeError(f"The Conda environment in '{what}' must be a YAML mapping with a 'dependencies' list")
    dependencies = environment.get("dependencies")
    if not isinstance(dependencies, list) or not dependencies:
        raise RecipeError(f"The Conda environment in '{what}' has no dependencies: add a 'dependencies' list")
    return environment


def _tools(environment: Mapping[str, Any]) -> str:
    """Tools of an environment: its conda dependencies, then its pip ones; `pip` itself is left out when it is
    there only for a `pip:` list."""
    dependencies = environment["dependencies"]
    # Strings only: a `pip:` that is no list, or holds YAML aliases of nested lists, is not expanded (500, or a
    # billion-laughs `str()` in the web process).
    pip = [
        item
        for entry in dependencies
        if isinstance(entry, dict) and isinstance(entry.get("pip"), list)
        for item in entry["pip"]
        if isinstance(item, str)
    ]
    conda = [entry for entry in dependencies if isinstance(entry, str) and not (pip and entry.strip() == "pip")]
    name = environment.get("name")
    return recipe_tools(name=name if isinstance(name, str) else None, packages=[*conda, *pip])


def _environment_from_entries(entries: list[str], channels: list[str]) -> str:
    """`channels:` / `dependencies:` YAML for entries; `pip:x` entries go into a `pip:` list (with `pip`)."""
    conda: list[str] = []
    pip: list[str] = []
    for entry in entries:
        if entry.startswith("pip::"):
            raise RecipeError(f"Invalid package entry '{entry}': write 'pip:{entry[5:]}' (one colon) for a pip package")
        if entry.startswith(PIP_PREFIX):
            package = entry[len(PIP_PREFIX) :].strip()
            if not package:
                raise RecipeError(f"Invalid package entry '{entry}': name the pip package after 'pip:'")
            pip.append(package)
        else:
            conda.append(entry)
    dependencies: list[Any] = list(conda)
    if pip:
        if not any(PIP_PACKAGE.match(entry) for entry in conda):
            dependencies.append("pip")
        dependencies.append({"pip": pip})
    return _dump(_with_channels({"dependencies": dependencies}, channels))


def _with_channels(environment: Mapping[str, Any], channels: list[str]) -> dict[str, Any]:
    """The environment with `channels` (when there are any) after its `name`, before everything else."""
    head = {key: environment[key] for key in ("name",) if key in environment}
    if channels:
        head["channels"] = channels
    return {**head, **{key: value for key, value in environment.items() if key not in head}}


def _dump(environment: Mapping[str, Any]) -> str:
    return yaml.dump(dict(environment), Dumper=_IndentedDumper, sort_keys=False, default_flow_style=False)


def _lock_url(url: str) -> str:
    """A lock file URL the builder may fetch: one `ADD` word, on a host the SSRF rules allow."""
    if not URL_CHARACTERS.fullmatch(url):
        raise RecipeError(
            "Conda lock file URL has characters an ADD line cannot carry (spaces, quotes, '$', '\\'): "
            "percent-encode them"
        )
    try:
        url_destination_check(url)
    except DestinationRefusedError as exc:
        raise RecipeError(f"Conda lock file URL refused: {exc.message}") from None
    return url


def _base_packages(value: object) -> str:
    """condaOpts.basePackages: space-separated specs (or a list), quoted for the shell; "" for none."""
    what = "packages.condaOpts.basePackages"
    return shell_words(one_line(value, what=what).split() if isinstance(value, str) else string_list(value, what=what))


def _generate(
    *,
    environment: str | None,
    lock_url: str | None,
    options: Mapping[str, Any],
    tools: str,
    build_template: str | None = None,
) -> GeneratedBuild:
    if build_template not in BUILD_TEMPLATES:
        raise RecipeError(f"Unsupported build template '{build_template}': use one of {', '.join(BUILD_TEMPLATES[1:])}")
    if build_template == SINGLE_STAGE:
        base_image = ""  # as Wave's v1 layout does, a `baseImage` sent along is not used
    else:
        base_image = option(
            options, "baseImage", settings.WAVE_CONDA_BASE_IMAGE if build_template == MULTISTAGE else ""
        )
    context = {
        "mamba_image": image_name(
            option(options, "mambaImage", settings.WAVE_CONDA_MAMBA_IMAGE), what="packages.condaOpts.mambaImage"
        ),
        "base_image": image_name(base_image, what="packages.condaOpts.baseImage") if base_image else "",
        "base_packages": _base_packages(option(options, "basePackages", settings.WAVE_CONDA_BASE_PACKAGES)),
        "commands": string_list(option(options, "commands", []), what="packages.condaOpts.commands"),
        "lock_url": lock_url or "",
    }
    template = "conda-multistage.Containerfile" if base_image else "conda.Containerfile"
    return GeneratedBuild(
        container_file=render(template, context),
        context_files={ENVIRONMENT_FILE: environment.encode()} if environment is not None else {},
        recipe_file=environment,
        tools=tools,
    )


def conda_file_build(conda_file: str, *, build_template: str | None = None) -> GeneratedBuild:
    """A v1 `condaFile`: the environment as sent, installed with the default options."""
    environment = _environment_of(conda_file, what="condaFile")
    return _generate(
        environment=conda_file, lock_url=None, options={}, tools=_tools(environment), build_template=build_template
    )


def conda_packages_build(packages: Mapping[str, Any], *, build_template: str | None = None) -> GeneratedBuild:
    """v2 `packages` of type CONDA: `entries` (or a base64 `environment`), `channels`, `condaOpts`.

    `channels` (default WAVE_CONDA_CHANNELS) go into the environment made of `entries`, and into an
    `environment` only when it names no channels of its own; an `environment` with channels is used as sent.
    """
    options = options_of(packages, "condaOpts")
    entries = string_list(packages.get("entries"), what="packages.entries")
    channels = string_list(packages.get("channels"), what="packages.channels") or list(settings.WAVE_CONDA_CHANNELS)
    encoded = packages.get("environment")
    if encoded is not None and entries:
        raise RecipeError("Attributes 'packages.entries' and 'packages.environment' cannot be used together")
    if encoded is not None:
        try:
            text = base64.b64decode(one_line(encoded, what="packages.environment"), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise RecipeError(
                "Invalid 'packages.environment' attribute - make sure it encoded as a base64 string"
            ) from None
        environment = _environment_of(text, what="packages.environment")
        if not environment.get("channels") and channels:
            text = _dump(_with_channels(environment, channels))
        return _generate(
            environment=text, lock_url=None, options=options, tools=_tools(environment), build_template=build_template
        )
    if not entries:
        raise RecipeError("Attribute 'packages.entries' is empty: list the packages, or give 'packages.environment'")
    urls = [entry for entry in entries if LOCK_URL.match(entry)]
    if urls and len(entries) > 1:
        raise RecipeError("A Conda lock file URL must be the only entry of 'packages.entries'")
    if urls:
        return _generate(
            environment=None, lock_url=_lock_url(urls[0]), options=options, tools="", build_template=build_template
        )
    text = _environment_from_entries(entries, channels)
    tools = _tools(yaml.safe_load(text))
    return _generate(environment=text, lock_url=None, options=options, tools=tools, build_template=build_template)
