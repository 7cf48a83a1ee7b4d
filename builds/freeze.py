"""Freeze, the build side: the Containerfile of a frozen image and the verified layers its context holds.

A frozen image is built like any other and pushed to the caller's repository. Its Containerfile is the base
(`FROM <image>`, or the caller's Containerfile) with the request's config applied: `ADD` of each layer (the
tar.gz from the blob store, put into the build context, which buildah unpacks), `WORKDIR`, `ENV`,
`ENTRYPOINT`, `CMD`. Only layers this service named get into a context: the Containerfile carries a seal
(an HMAC, with the secret key, of the layer digests and the repository pushed to), so that a Containerfile sent
by a client, or copied from another's build page into a build pushed elsewhere, cannot read blobs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from django.conf import settings
from django.db.models import Q
from django.template import Context, Engine

from builds.recipes.common import LINE_BREAKING, RecipeError
from wave_site.blobstore import blob_exists, blob_key, blob_open

LAYERS_DIR = "wave-layers"
LAYER_LINE = re.compile(rf"^ADD {LAYERS_DIR}/sha256-(?P<hex>[0-9a-f]{{64}})\.tar\.gz /$", re.MULTILINE)
SEAL_LINE = re.compile(r"^# Layers verified by digest, sealed by this service: (?P<seal>[0-9a-f]{64})$", re.MULTILINE)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def layer_file(gzip_digest: str) -> str:
    """Where a layer lies in the build context, relative to it."""
    return f"{LAYERS_DIR}/{gzip_digest.replace(':', '-')}.tar.gz"


def _seal(digests: Sequence[str], repository: str, text: str) -> str:
    """Of the layers, the repository and the whole Containerfile but its seal line: edited, it adds no blob."""
    message = f"wave-freeze-layers:{repository}:" + ",".join(digests) + "\n" + text
    return hmac.new(settings.SECRET_KEY.encode(), message.encode(), hashlib.sha256).hexdigest()


def _quoted(value: str) -> str:
    """A double-quoted Containerfile word: `\\`, `"` and `$` taken literally."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def _one_line(label: str, values: Sequence[str]) -> None:
    if any(LINE_BREAKING.search(value) for value in values):
        raise RecipeError(f"A value of `containerConfig.{label}` is not a single line: it cannot be frozen")


def _env_entries(env: Sequence[str]) -> list[tuple[str, str]]:
    entries = []
    for entry in env:
        name, _, value = entry.partition("=")
        if not ENV_NAME.fullmatch(name):
            raise RecipeError(f"Invalid `containerConfig.env` entry for freeze - use `NAME=value`: '{name[:64]}'")
        entries.append((name, _quoted(value)))
    return entries


@cache
def _engine() -> Engine:
    folder = Path(settings.BASE_DIR) / "templates" / "builds" / "freeze"
    loader = ("django.template.loaders.cached.Loader", [("builds.recipes.common.TrimmedLoader", [str(folder)])])
    return Engine(dirs=[str(folder)], loaders=[loader], autoescape=False)


def freeze_containerfile(
    *,
    base: str,
    repository: str,
    layer_digests: Sequence[str] = (),
    working_dir: str | None = None,
    env: Sequence[str] | None = None,
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
) -> str:
    """The Containerfile of a frozen image pushed to `repository` (RecipeError for a value that cannot go on one
    line)."""
    _one_line("env", env or ())
    _one_line("workingDir", [working_dir or ""])
    context = {
        "base": base.rstrip("\n"),
        "layers": [layer_file(digest) for digest in layer_digests],
        "working_dir": _quoted(working_dir) if working_dir else "",
        "env": _env_entries(env or ()),
        "entrypoint": json.dumps(list(entrypoint)) if entrypoint else "",
        "cmd": json.dumps(list(cmd)) if cmd else "",
        "seal": "",
    }
    template = _engine().get_template("freeze.Containerfile")
    unsealed = template.render(Context(context, autoescape=False))
    if not layer_digests:
        return unsealed
    # Rendered again with the seal of the text without it: its line is all the two renderings differ by.
    context["seal"] = _seal(layer_digests, repository, unsealed)
    return template.render(Context(context, autoescape=False))


def freeze_layers(container_file: str, *, repository: str) -> list[str]:
    """The gzip digests of the layers a freeze Containerfile sealed for `repository` adds; none for any other."""
    digests = [f"sha256:{match.group('hex')}" for match in LAYER_LINE.finditer(container_file)]
    seal = SEAL_LINE.search(container_file)
    if not digests or seal is None:
        return []
    unsealed = container_file[: seal.start()] + container_file[seal.end() + 1 :]  # the line and its newline
    if not hmac.compare_digest(seal.group("seal"), _seal(digests, repository, unsealed)):
        return []
    return digests


def freeze_layer_missing(container_file: str, *, repository: str) -> str:
    """The digest of a layer the build still waits for ("" when every one is in the blob store)."""
    digests = freeze_layers(container_file, repository=repository)
    return next((digest for digest in digests if not blob_exists(blob_key(digest))), "")


def freeze_waiting(gzip_digest: str) -> Q:
    """Builds whose freeze Containerfile adds that layer (what a settled layer download sends on)."""
    return Q(container_file__contains=f"ADD {layer_file(gzip_digest)} /")


@contextmanager
def freeze_context(
    container_file: str, context: Path | None, *, repository: str, scratch: Path
) -> Iterator[Path | None]:
    """The build context with the sealed layers copied in (into `context`, or a folder of its own in `scratch`,
    removed afterwards); `context` as it is when there are none."""
    digests = freeze_layers(container_file, repository=repository)
    if not digests:
        yield context
        return
    with tempfile.TemporaryDirectory(prefix="freeze-context-", dir=scratch) as own:
        folder = context if context is not None else Path(own)
        (folder / LAYERS_DIR).mkdir(exist_ok=True)
        for digest in digests:
            with blob_open(blob_key(digest)) as source, (folder / layer_file(digest)).open("wb") as target:
                shutil.copyfileobj(source, target)
        yield folder
