"""Containerfiles as the builder sees them: the images they name, the checks before a build, the auth file.

`containerfile_parse` reads the stages (dockerfile-parse does the lines, continuations and comments; the
words, `ARG` defaults and `${VAR:-word}` are expanded here as Docker does). `containerfile_check` is what
runs before a build: every image's registry host and every `ADD <url>` host pass the SSRF rules, and no `ADD`
source takes its scheme or host from a variable the base image's ENV may set (buildah expands ADD sources with
the base image's ENV, which also wins over the Containerfile's ARG of the same name).
No I/O but the DNS lookups of those checks. (`/.docker/config.json` and `/kaniko` are refused where requests
are validated, `requests_app.validation`, for every Containerfile a client sends.)
"""

from __future__ import annotations

import base64
import io
import json
import platform as host_platform
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from dockerfile_parse import DockerfileParser  # type: ignore[import-untyped]
from dockerfile_parse.util import WordSplitter  # type: ignore[import-untyped]

from credentials.policy import destination_check, url_destination_check
from registry.client import CredentialsLookup
from registry.platform import ARCH_ALIASES, DEFAULT_PLATFORM, InvalidPlatformError, Platform, parse_platform
from registry.reference import ImageReference, InvalidReferenceError, parse_image
from registry.ssrf import DestinationRefusedError

INSTRUCTIONS = frozenset(
    {
        "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
        "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
    }
)  # fmt: skip
SCRATCH = "scratch"
# `$NAME`, `${NAME}`, `${NAME:-word}`, `${NAME:+word}`; a backslash keeps a `$` literal.
VARIABLE = re.compile(
    r"\\\$|\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<op>[-+])(?P<word>[^}]*))?\}|(?P<name>[A-Za-z_][A-Za-z0-9_]*))"
)
URL_SOURCE = re.compile(r"https?://", re.IGNORECASE)
# `$` forms buildah expands too that `expand` does not: `${NAME?..}`, `${NAME#..}`, `${NAME%..}`, `${NAME/..}`, `$0`.
OTHER_SUBSTITUTION = r"|(?P<other>\$\{(?P<other_name>[A-Za-z0-9_]*)[^}]*\}?|\$(?P<digit>[0-9]))"
SUBSTITUTION = re.compile(VARIABLE.pattern + OTHER_SUBSTITUTION)
UNRESOLVED = "\0"  # `\0NAME\0` stands for the value of NAME, unknown to the parser
# What buildah fetches itself (http, https; git in newer versions), as ADD sources start.
REMOTE_PREFIXES = ("http://", "https://", "git://", "ssh://", "git@")
# Other machines' names for the architectures registry.platform knows.
MACHINE_ALIASES = {"armv7l": "arm", "armv6l": "arm", "armhf": "arm"}


class ContainerfileError(ValueError):
    """A Containerfile this service will not build; `message` is one line for people."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Stage:
    """One `FROM` and what follows it. `image` is None for `scratch` and for a stage built on an earlier one."""

    index: int
    name: str | None
    image: ImageReference | None
    parent: int | None  # the earlier stage this one starts from
    platform: Platform
    has_run: bool = False
    uses: set[int] = field(default_factory=set)  # earlier stages read by COPY --from / RUN --mount from=


@dataclass(frozen=True)
class Containerfile:
    stages: tuple[Stage, ...]
    images: tuple[ImageReference, ...]  # FROM, COPY --from, RUN --mount from=: each once, in order
    urls: tuple[str, ...]  # ADD sources fetched by the builder itself
    unresolved: tuple[str, ...] = ()  # why ADD sources whose host the base image's ENV may choose are refused

    def needed_stages(self) -> list[Stage]:
        """The last stage and every stage it depends on: the ones a build runs (buildah skips the others)."""
        needed: set[int] = set()
        todo = [len(self.stages) - 1]
        while todo:
            index = todo.pop()
            if index in needed:
                continue
            needed.add(index)
            stage = self.stages[index]
            todo += [*stage.uses, *([stage.parent] if stage.parent is not None else [])]
        return [stage for stage in self.stages if stage.index in needed]

    def images_with_platforms(self, target: Platform) -> list[tuple[str, Platform]]:
        """Each image with the platform it is used for: its stage's for a FROM image, else the target's."""
        pulls = {str(stage.image): stage.platform for stage in self.stages if stage.image is not None}
        for image in self.images:
            pulls.setdefault(str(image), target)
        return list(pulls.items())

    def run_architectures(self) -> set[str]:
        """Architectures whose binaries a build executes (`RUN` steps of the stages it runs)."""
        return {stage.platform.arch for stage in self.needed_stages() if stage.has_run}


def host_architecture() -> str:
    """This machine's architecture as registry.platform names it (`amd64`, `arm64`, `arm`), or as the kernel does."""
    machine = host_platform.machine().lower()
    return ARCH_ALIASES.get(machine) or MACHINE_ALIASES.get(machine) or machine


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Docker's variable substitution in a word: unknown variables are empty."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "\\$":
            return "$"
        name = match.group("braced") or match.group("name")
        value = variables.get(name, "")
        if match.group("op") == "-":
            return value or match.group("word")
        if match.group("op") == "+":
            return match.group("word") if value else ""
        return value

    return VARIABLE.sub(substitute, text)


def expand_known(text: str, known: Mapping[str, str]) -> str:
    """`expand` for what buildah expands with the base image's ENV too: each variable not in `known` (and each
    form the parser does not evaluate) becomes `\\0NAME\\0`, so that the text before it is what is known."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "\\$":
            return "$"
        if match.group("other") is not None:
            return f"{UNRESOLVED}{match.group('other_name') or match.group('digit') or ''}{UNRESOLVED}"
        name = match.group("braced") or match.group("name")
        if name not in known or "$" in (match.group("word") or ""):  # buildah expands the word too
            return f"{UNRESOLVED}{name}{UNRESOLVED}"
        value = known[name]
        if match.group("op") == "-":
            return value or match.group("word")
        if match.group("op") == "+":
            return match.group("word") if value else ""
        return value

    return SUBSTITUTION.sub(substitute, text)


def _names_remote_host(prefix: str) -> bool:
    """Whether a source starting with `prefix` may still be fetched from a host that `prefix` does not spell out:
    `prefix` may grow into a URL or git address, or ends before its host part does."""
    lowered = prefix.lower()
    if any(remote.startswith(lowered) for remote in REMOTE_PREFIXES):
        return True
    for remote in REMOTE_PREFIXES:
        if lowered.startswith(remote):
            end = ":/" if remote == "git@" else "/?#"
            return not any(character in end for character in prefix[len(remote) :])
    return False


def _unresolved_source(source: str, known: Mapping[str, str], *, args: set[str], line: int) -> str:
    """Why an ADD source cannot be checked (its scheme or host may come from the base image's ENV), or ""."""
    marked = expand_known(source, known)
    prefix, _, rest = marked.partition(UNRESOLVED)
    if not rest or not _names_remote_host(prefix):
        return ""
    name = rest.partition(UNRESOLVED)[0]
    fix = "a URL must be spelled out or built from ENV set in the Containerfile"
    if name in args:
        return (
            f"ADD source '{source}' on line {line} takes its scheme or host from ARG '{name}', which the base image's"
            f" ENV overrides: {fix}"
        )
    return f"ADD source '{source}' on line {line} uses a variable the Containerfile does not define ('{name}'): {fix}"


def _automatic_args(target: Platform, host: Platform) -> dict[str, str]:
    """The platform arguments builders define in the global scope."""
    args: dict[str, str] = {}
    for prefix, value in (("TARGET", target), ("BUILD", host)):
        args |= {f"{prefix}PLATFORM": str(value), f"{prefix}OS": value.os, f"{prefix}ARCH": value.arch}
        args[f"{prefix}VARIANT"] = value.variant or ""
    return args


def _declarations(
    value: str,
    variables: Mapping[str, str],
    *,
    inherited: Mapping[str, str],
    substitute: Callable[[str, Mapping[str, str]], str] = expand,
) -> dict[str, str]:
    """`ARG a=1 b` / `ENV a=1 b=2` / `ENV a 1`: names and values, expanded with the variables from before the
    instruction (as buildah does: `ENV a=2 b=$a` gives b the earlier a). A bare `ARG b` inherits."""
    words = list(WordSplitter(value).split(dequote=True))
    if words and "=" not in words[0] and len(words) > 1:  # the old `ENV name value with spaces` form
        return {words[0]: substitute(value.split(None, 1)[1], variables)}
    declared: dict[str, str] = {}
    for word in words:
        name, sep, default = word.partition("=")
        declared[name] = substitute(default, variables) if sep else inherited.get(name, "")
    return declared


def _flags(value: str) -> tuple[list[tuple[str, str]], str]:
    """Leading `--name=value` flags of an instruction (a name may repeat: `--mount`) and the rest of its text."""
    flags: list[tuple[str, str]] = []
    rest = value.strip()
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        name, _, flag_value = word[2:].partition("=")
        flags.append((name.lower(), flag_value))
        rest = rest.lstrip()
    return flags, rest


def _mount_sources(flags: list[tuple[str, str]]) -> list[str]:
    """`from=` of each `RUN --mount=type=...,from=x,...`."""
    sources = []
    for name, value in flags:
        if name == "mount":
            for option in value.split(","):
                key, _, source = option.partition("=")
                if key.strip().lower() == "from" and source:
                    sources.append(source)
    return sources


def _sources(rest: str) -> list[str]:
    """COPY/ADD sources: every argument but the destination (JSON or shell form)."""
    if rest.startswith("["):
        try:
            items = json.loads(rest)
        except ValueError:
            items = None
        if isinstance(items, list):
            return [str(item) for item in items[:-1]]
    return rest.split()[:-1]


def _image(name: str, *, what: str, line: int) -> ImageReference:
    try:
        return parse_image(name)
    except InvalidReferenceError as exc:
        raise ContainerfileError(f"{what} on line {line}: {exc.message}") from None


def containerfile_parse(
    container_file: str, *, target: Platform = DEFAULT_PLATFORM, host: Platform | None = None
) -> Containerfile:
    """The stages, images and fetched URLs of a Containerfile; ContainerfileError when it cannot be built."""
    host = host or Platform(DEFAULT_PLATFORM.os, host_architecture())
    parser = DockerfileParser(fileobj=io.BytesIO(container_file.encode("utf-8")))
    global_args = _automatic_args(target, host)
    stages: list[Stage] = []
    names: dict[str, int] = {}
    images: dict[str, ImageReference] = {}
    urls: list[str] = []
    unresolved: list[str] = []
    variables: dict[str, str] = {}
    known: dict[str, str] = {}  # the stage's ENV, which wins over the base image's (`expand_known`)
    stage_args: set[str] = set()
    heredoc = False

    def stage_of(name: str) -> int | None:
        """An earlier stage named (or numbered) `name`, else None: an image."""
        if name.isdigit() and int(name) < len(stages):
            return int(name)
        return names.get(name.lower())

    for instruction in parser.structure:
        keyword, value, line = instruction["instruction"], instruction["value"] or "", instruction["startline"] + 1
        if keyword == "COMMENT":
            continue
        if keyword not in INSTRUCTIONS:
            hint = " (heredocs `<<EOF` are not supported by this builder)" if heredoc else ""
            raise ContainerfileError(f"Unknown instruction '{keyword}' on line {line}{hint}")
        heredoc = heredoc or "<<" in value
        if keyword == "ARG" and not stages:
            global_args |= _declarations(value, global_args, inherited=global_args)
            continue
        if keyword != "FROM" and not stages:
            raise ContainerfileError(f"The Containerfile must start with FROM (line {line} is {keyword})")

        if keyword == "FROM":
            flag_list, rest = _flags(value)
            flags = dict(flag_list)
            words = rest.split()
            if set(flags) - {"platform"} or not (len(words) == 1 or (len(words) == 3 and words[1].lower() == "as")):
                raise ContainerfileError(
                    f"Invalid FROM on line {line}: expected FROM [--platform=<p>] <image> [AS <name>]"
                )
            base = expand(words[0], global_args)
            if not base:
                raise ContainerfileError(f"FROM on line {line} names no image: '{words[0]}' is empty")
            parent = names.get(base.lower())
            image = None
            if parent is None and base.lower() != SCRATCH:
                image = _image(base, what="FROM", line=line)
            if "platform" in flags:
                try:
                    stage_platform = parse_platform(expand(flags["platform"], global_args))
                except InvalidPlatformError as exc:
                    raise ContainerfileError(f"FROM on line {line}: {exc.message}") from None
            else:
                stage_platform = stages[parent].platform if parent is not None else target
            name = words[2] if len(words) == 3 else None
            stages.append(Stage(index=len(stages), name=name, image=image, parent=parent, platform=stage_platform))
            if name:
                names[name.lower()] = len(stages) - 1
            variables, known, stage_args = {}, {}, set()
            referenced = [image] if image else []
        else:
            stage = stages[-1]
            referenced = []
            if keyword in {"ARG", "ENV"}:
                declared = _declarations(value, variables, inherited=global_args if keyword == "ARG" else {})
                variables |= declared
                if keyword == "ENV":
                    known |= _declarations(value, known, inherited={}, substitute=expand_known)
                else:
                    stage_args |= set(declared)
            elif keyword in {"COPY", "ADD"}:
                flag_list, rest = _flags(value)
                copy_from = dict(flag_list).get("from")
                if copy_from:
                    source = expand(copy_from, variables)
                    used = stage_of(source)
                    if used is not None:
                        stage.uses.add(used)
                    else:
                        referenced.append(_image(source, what=f"{keyword} --from", line=line))
                if keyword == "ADD":
                    urls += [url for url in (expand(s, variables) for s in _sources(rest)) if URL_SOURCE.match(url)]
                    unresolved += filter(None, (_unresolved_source(s, known, args=stage_args, line=line)
                                                for s in _sources(rest)))  # fmt: skip
            elif keyword == "RUN":
                stage.has_run = True
                for source in (expand(s, variables) for s in _mount_sources(_flags(value)[0])):
                    used = stage_of(source)
                    if used is not None:
                        stage.uses.add(used)
                    else:
                        referenced.append(_image(source, what="RUN --mount from", line=line))
        for reference in referenced:
            images.setdefault(str(reference), reference)
    if not stages:
        raise ContainerfileError("The Containerfile has no FROM instruction")
    return Containerfile(
        stages=tuple(stages), images=tuple(images.values()), urls=tuple(urls), unresolved=tuple(unresolved)
    )


def from_images(container_file: str) -> list[ImageReference]:
    """The images a Containerfile builds from (FROM, COPY --from, RUN --mount from=), each once."""
    return list(containerfile_parse(container_file).images)


def containerfile_checked(container_file: str, *, platform: Platform = DEFAULT_PLATFORM) -> Containerfile:
    """The parsed Containerfile, once every registry its images live in and every URL `ADD` fetches passed
    the SSRF rules (ContainerfileError naming the refused host and how to allow it, or the ADD source whose host
    the base image's ENV may choose, otherwise)."""
    parsed = containerfile_parse(container_file, target=platform)
    for image in parsed.images:
        try:
            destination_check(image.registry)
        except DestinationRefusedError as exc:
            raise ContainerfileError(f"Image '{image}' in the Containerfile refused: {exc.message}") from None
    if parsed.unresolved:
        raise ContainerfileError(parsed.unresolved[0])
    for url in parsed.urls:
        try:
            url_destination_check(url)
        except DestinationRefusedError as exc:
            raise ContainerfileError(f"ADD source in the Containerfile refused: {exc.message}") from None
    return parsed


def containerfile_check(container_file: str, *, platform: Platform = DEFAULT_PLATFORM) -> list[ImageReference]:
    """The images a Containerfile builds from, each registry host having passed the SSRF rules."""
    return list(containerfile_checked(container_file, platform=platform).images)


def auth_file(hosts: Iterable[str], credentials: CredentialsLookup) -> dict[str, dict[str, dict[str, str]]]:
    """containers-auth.json content: `{"auths": {host: {"auth": base64("user:password")}}}` for each host with
    credentials. containers/image (buildah, skopeo, podman) reads a `docker.io` key for Docker Hub images as it
    reads `https://index.docker.io/v1/`, so Hub is written once, as `docker.io`, like every other host."""
    auths: dict[str, dict[str, str]] = {}
    for host in dict.fromkeys(host.lower() for host in hosts):
        found = credentials(host)
        if found is not None:
            auths[host] = {"auth": base64.b64encode(f"{found.username}:{found.password}".encode()).decode()}
    return {"auths": auths}
