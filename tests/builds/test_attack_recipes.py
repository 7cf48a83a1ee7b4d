"""Attacks on recipe builds, freeze and mirror (issue 13): each test fails while its fault is there; the open ones
are strict xfails naming the finding."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from pytest_django.fixtures import Settings

from builds.freeze import freeze_containerfile, freeze_layer_missing, freeze_layers
from builds.models import Build
from builds.recipes import RecipeError, recipe_containerfile
from builds.runs import ContextRefused, build_context
from builds.services import build_context_settled
from requests_app.models import ContainerRequest, LayerDownload
from tests.conftest import PushedImage
from tests.support.http_files import FileServer
from tests.support.layers import make_layer
from wave_site.blobstore import blob_store_put


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def alias_bomb(levels: int) -> str:
    """A Conda environment whose one `pip:` entry is 10**(levels + 1) strings by YAML aliases (a few hundred bytes)."""
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [" + ",".join([f"*a{level - 1}"] * 10) + "]")
    return "\n".join(lines) + f"\ndependencies:\n  - samtools=1.17\n  - pip: [*a{levels}]\n"


# --- recipes: hostile YAML -------------------------------------------------------------------------------------


def test_a_yaml_alias_bomb_in_pip_is_not_expanded_by_the_web_process() -> None:
    """builds/recipes/conda.py `_tools`: `str(item)` of every `pip:` item expanded aliased nested lists (10**8
    strings here: seconds of CPU and gigabytes of memory per request at 10**9)."""
    started = time.monotonic()
    generated = recipe_containerfile(conda_file=alias_bomb(7))
    assert time.monotonic() - started < 3
    assert generated.tools == "samtools-1.17"


@pytest.mark.parametrize("pip", ["5", "{a: 1}", "null", "[[1, 2], {b: c}]", "true"])
def test_a_pip_entry_of_another_type_is_no_500(pip: str) -> None:
    """`dependencies: [{pip: 5}]` raised TypeError (a 500) while the tag's tools were computed."""
    try:
        generated = recipe_containerfile(conda_file=f"dependencies:\n  - samtools\n  - pip: {pip}\n")
    except RecipeError:
        return  # a 400 saying what to fix is as good
    assert generated.tools == "samtools"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "packages",
    [
        {"type": "CONDA", "environment": b64("dependencies:\n  - pip: 5\n")},
        {"type": "CONDA", "entries": [["samtools"]]},
        {"type": "CONDA", "entries": ["samtools"], "condaOpts": {"commands": "echo hi"}},
        {"type": "CONDA", "entries": ["samtools"], "condaOpts": {"mambaImage": {"a": 1}}},
        {"type": "CONDA", "entries": ["samtools"], "condaOpts": {"basePackages": 7}},
        {"type": "CONDA", "entries": ["samtools"], "channels": "conda-forge"},
        {"type": "CONDA", "entries": ["samtools\u2028RUN evil"]},
        {"type": "CONDA", "entries": ["samtools"], "condaOpts": {"commands": ["echo \\"]}},
        {"type": "CRAN", "entries": ["dplyr"], "cranOpts": {"basePackages": ["libx; rm -rf /"]}},
        {"type": "CRAN", "entries": ["bioc::x'); system('id"]},
        {"type": ["CONDA"], "entries": ["samtools"]},
        {"type": "CONDA", "entries": "samtools"},
        {"type": "CONDA", "environment": 12},
    ],
)
def test_hostile_packages_are_a_400_and_store_nothing(packages: dict[str, Any]) -> None:
    client = Client(raise_request_exception=False)
    answer = client.post("/v1alpha2/container", {"packages": packages}, content_type="application/json")
    assert answer.status_code < 500, answer.content
    if answer.status_code == 400:
        assert "Traceback" not in answer.json()["message"]
    assert not Build.objects.exists()
    assert not ContainerRequest.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["<script>alert(1)</script>", {"a": [1] * 10}, ["CONDA"], "x" * 200])
def test_an_unsupported_packages_type_is_not_echoed(kind: object) -> None:
    """builds/recipes/__init__.py echoed any `packages.type` (markup, or a Python repr of nested JSON)."""
    body = {"packages": {"type": kind, "entries": ["samtools"]}}
    answer = Client().post("/v1alpha2/container", body, content_type="application/json")
    assert answer.status_code == 400
    assert answer.json() == {"message": "Unsupported packages type: use one of CONDA, CRAN"}
    assert not Build.objects.exists()


# --- recipe files written into a hostile build context ------------------------------------------------------------


def context_layer(members: list[tarfile.TarInfo]) -> str:
    """A build context layer: `inside.txt`, then `members` (links); stored, its gzip digest."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        inside = tarfile.TarInfo("inside.txt")
        inside.size = 6
        archive.addfile(inside, io.BytesIO(b"inside"))
        for member in members:
            archive.addfile(member)
    data = gzip.compress(buffer.getvalue(), mtime=0)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blob_store_put(digest, data)
    return digest


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, target
    return member


@pytest.mark.django_db
@pytest.mark.parametrize("absolute", [True, False])
def test_a_context_link_named_like_a_recipe_file_out_of_the_context_is_refused(absolute: bool, tmp_path: Path) -> None:
    """A link out of the context would make the worker write the recipe over a file of its own."""
    outside = tmp_path / "outside.txt"
    outside.write_text("untouched")
    digest = context_layer([link("conda.yml", str(outside) if absolute else "../../../../" + str(outside))])
    build = Build.objects.create(
        build_id="bd-0123456789abcdef_1", container_id="0123456789abcdef", number=1,
        target_image="127.0.0.1:9/wave/build:0123456789abcdef", repository="127.0.0.1:9/wave/build",
        container_file="FROM busybox\n", conda_file="dependencies:\n  - bwa\n", context_digest=digest,
    )  # fmt: skip
    with pytest.raises((ContextRefused, tarfile.TarError)), build_context(build):
        pass
    assert outside.read_text() == "untouched"


@pytest.mark.django_db
@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_a_context_link_named_like_a_recipe_file_is_replaced_not_followed(kind: bytes) -> None:
    digest = context_layer([link("conda.yml", "inside.txt", kind)])
    build = Build.objects.create(
        build_id="bd-0123456789abcdef_1", container_id="0123456789abcdef", number=1,
        target_image="127.0.0.1:9/wave/build:0123456789abcdef", repository="127.0.0.1:9/wave/build",
        container_file="FROM busybox\n", conda_file="dependencies:\n  - bwa\n", context_digest=digest,
    )  # fmt: skip
    with build_context(build) as folder:
        assert folder is not None
        assert not (folder / "conda.yml").is_symlink()
        assert (folder / "conda.yml").read_text() == build.conda_file
        assert (folder / "inside.txt").read_text() == "inside"  # the file the link named is left as it was


# --- mirror: the service's own repository ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db
def test_an_anonymous_mirror_into_the_services_build_repository_is_refused(
    multiplatform_image: PushedImage, anonymous_image: PushedImage, settings: Settings
) -> None:
    """requests_app/mirror.py: a mirror's target is `<buildRepository>/<source path>:<tag>`, and the service's own
    repository was allowed to anyone, pushed with the service's login. Builds are named inside it
    (`imageSuffix`: `<repo>/<tools>:<containerId>`; a `buildRepository` under it), and a target that exists is
    answered as cached: a copy of `evil/samtools-1.17:<containerId>` planted (or replaced) the image every later
    caller of that recipe gets."""
    settings.WAVE_BUILD_REPO = f"{anonymous_image.registry.host}/wave/build"
    settings.WAVE_CACHE_REPO = None
    body = {"containerImage": multiplatform_image.reference, "mirror": True,
            "buildRepository": settings.WAVE_BUILD_REPO}  # fmt: skip

    answer = Client().post("/v1alpha2/container", body, content_type="application/json", REMOTE_ADDR="192.0.2.9")

    assert answer.status_code == 400, answer.content
    assert "is not allowed for a mirror" in answer.json()["message"]
    assert not Build.objects.exists()


# --- freeze: a digest is no capability -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db
@pytest.mark.xfail(
    strict=True,
    reason="open finding: a freeze build runs as soon as a blob of the layer's digest is in the blob store "
    "(builds/runs.py _freeze_layer_missing, builds/services.py build_context_settled), not once the caller's own "
    "download of it is verified: naming another caller's layer digest with any URL gets its bytes ADDed",
)
def test_a_freeze_naming_another_callers_layer_digest_does_not_get_its_blob(
    anonymous_image: PushedImage, file_server: FileServer, settings: Settings
) -> None:
    settings.WAVE_BUILD_REPO = f"{anonymous_image.registry.host}/wave/build"
    settings.WAVE_CACHE_REPO = None
    secret = make_layer({"etc/victim-secret": b"token=hunter2\n"})
    blob_store_put(secret.gzip_digest, secret.gzip_bytes)  # stored for another caller's request
    # The thief knows the digest only; their URL serves nothing.
    layer = secret.as_request(location=f"{file_server.url}/nothing-here.tar.gz")
    body = {"containerImage": anonymous_image.reference, "freeze": True, "buildRepository": settings.WAVE_BUILD_REPO,
            "containerConfig": {"layers": [layer]}}  # fmt: skip

    answer = Client().post("/v1alpha2/container", body, content_type="application/json", REMOTE_ADDR="192.0.2.10")

    assert answer.status_code == 200, answer.content
    build = Build.objects.get(build_id=answer.json()["buildId"])
    assert LayerDownload.objects.filter(gzip_digest=secret.gzip_digest).exists()  # their own download is started
    # The build must wait for that download, and fail with it.
    assert freeze_layer_missing(build.container_file, repository=build.repository) == secret.gzip_digest
    build_context_settled(gzip_digest=secret.gzip_digest, failure_reason="HTTP 404")
    build.refresh_from_db()
    assert build.state == Build.State.FAILED


def test_a_sealed_freeze_containerfile_edited_around_its_layers_gets_no_blobs(settings: Settings) -> None:
    """builds/freeze.py sealed (layer digests, repository) only: a sealed file seen on a build page, edited
    (another FROM, a RUN) and sent as a plain containerFile build into the same repository (the service's own:
    anyone may), still got the sealed blobs copied into its context."""
    digest = "sha256:" + "c" * 64
    sealed = freeze_containerfile(base="FROM busybox", repository=settings.WAVE_BUILD_REPO, layer_digests=[digest])
    edited = sealed.replace("FROM busybox", "FROM alpine\nRUN echo thief")
    assert freeze_layers(sealed, repository=settings.WAVE_BUILD_REPO) == [digest]
    assert freeze_layers(edited, repository=settings.WAVE_BUILD_REPO) == []
