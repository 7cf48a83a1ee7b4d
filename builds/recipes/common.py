"""What every recipe shares: the error, the result, the checks on user values, and the template engine.

Containerfiles are laid out by templates in `templates/builds/recipes/`; Python only prepares the values.
Every value that lands on a Containerfile line is checked to be one line: no line breaks or other control
characters, no trailing backslash (a continuation would swallow the template's next line). `render` checks
every string it is given once more, so a value that skipped its check cannot add a line either.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.template import Context, Engine, Origin
from django.template.loaders.filesystem import Loader as FilesystemLoader

from registry.reference import InvalidReferenceError, parse_image

# Control characters and every character some parser takes for a line break.
LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
TEMPLATE_TAG = re.compile(r"\{%[^\n]*?%\}|\{#[^\n]*?#\}")
# A line holding only template tags or comments: the tags stay, the line goes (like Jinja's trim_blocks).
TAG_ONLY_LINE = re.compile(rf"^[ \t]*((?:(?:{TEMPLATE_TAG.pattern})[ \t]*)+)\n", re.MULTILINE)


class RecipeError(ValueError):
    """A recipe that cannot become a Containerfile; `message` is one line saying what to fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class GeneratedBuild:
    """A recipe as the builder takes it: a Containerfile and the files it COPYs from the build context.

    `recipe_file` is the recipe text the Containerfile copies from the context (conda.yml, spack.yaml), None
    when everything is in the Containerfile: it goes into the containerId as `condaFile`, so that two recipes
    never share a target. `tools` names the packages for the target's tag (builds.naming.recipe_target_image).
    """

    container_file: str
    context_files: dict[str, bytes] = field(default_factory=dict)
    recipe_file: str | None = None
    tools: str = ""


def one_line(value: object, *, what: str) -> str:
    """A string that is safe on a Containerfile line (RecipeError naming `what` otherwise)."""
    if not isinstance(value, str):
        raise RecipeError(f"Attribute '{what}' must be a string")
    if LINE_BREAKING.search(value):
        raise RecipeError(f"Attribute '{what}' must be a single line without control characters")
    if value.rstrip().endswith("\\"):
        raise RecipeError(f"Attribute '{what}' must not end with a backslash (a line continuation)")
    return value


def string_list(value: object, *, what: str) -> list[str]:
    """A JSON list of one-line, non-blank strings; None is an empty list."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecipeError(f"Attribute '{what}' must be a list of strings")
    items = [one_line(item, what=what).strip() for item in value]
    if any(not item for item in items):
        raise RecipeError(f"Attribute '{what}' must not contain blank entries")
    return items


def image_name(value: object, *, what: str) -> str:
    """An image name as written (`ubuntu:24.04`), once it parses as one."""
    name = one_line(value, what=what).strip()
    try:
        parse_image(name)
    except InvalidReferenceError as exc:
        raise RecipeError(f"Attribute '{what}': {exc.message}") from None
    return name


def shell_words(words: Iterable[str]) -> str:
    """Words for a `RUN` line, each quoted when the shell would read it otherwise (`'numpy>=1.2'`)."""
    return " ".join(shlex.quote(word) for word in words)


def option(options: Mapping[str, Any], key: str, default: Any) -> Any:
    """An option of `condaOpts`/`cranOpts`: absent and JSON null alike give the default."""
    value = options.get(key)
    return default if value is None else value


def options_of(packages: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = packages.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RecipeError(f"Attribute 'packages.{key}' must be an object")
    return value


class TrimmedLoader(FilesystemLoader):
    """Loads templates with their tag-only lines removed, so that a template reads as the file it makes."""

    def get_contents(self, origin: Origin) -> str:
        def tags_alone(line: re.Match[str]) -> str:
            return "".join(TEMPLATE_TAG.findall(line.group(1)))

        return TAG_ONLY_LINE.sub(tags_alone, super().get_contents(origin))


@cache
def _engine() -> Engine:
    folder = Path(settings.BASE_DIR) / "templates" / "builds" / "recipes"
    loader = ("django.template.loaders.cached.Loader", [("builds.recipes.common.TrimmedLoader", [str(folder)])])
    return Engine(dirs=[str(folder)], loaders=[loader], autoescape=False)


def _strings(value: object) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def render(template: str, context: Mapping[str, Any], *, multiline: Iterable[str] = ()) -> str:
    """A Containerfile from its template (no HTML escaping). Every string value must be one line, but for
    the keys named in `multiline` (a user's whole Containerfile)."""
    for key, value in context.items():
        if key not in multiline and any(_breaks_line(text) for text in _strings(value)):
            raise RecipeError(f"A value for the generated Containerfile is not a single line ({key})")
    return _engine().get_template(template).render(Context(dict(context), autoescape=False))


def _breaks_line(text: str) -> bool:
    return bool(LINE_BREAKING.search(text)) or text.rstrip().endswith("\\")
