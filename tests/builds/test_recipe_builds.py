"""Recipe builds through the API: a v2 `packages` CONDA request built by a real worker from a local stand-in of the
micromamba image (named through WAVE_CONDA_MAMBA_IMAGE), its Conda lock kept and served; each bad recipe a 400
that stores nothing; the lock endpoint's 404s."""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from django.test import Client
from pytest_django.fixtures import Settings

from builds.models import Build
from builds.naming import container_id
from builds.recipes import recipe_containerfile
from builds.runs import build_context
from requests_app.models import ContainerRequest
from requests_app.services import RECIPE_IMAGES
from tests.builds.test_build_pulls import build_worker, share_blob_store, unpack, wait_finished
from tests.conftest import PushedImage
from tests.support.asgi_server import AsgiServer
from tests.support.images import Builder, skopeo_inspect
from tests.support.worker import Worker

FAKE_LOCK = (
    "# platform: linux-64\n"
    "@EXPLICIT\n"
    "https://conda.anaconda.org/bioconda/linux-64/samtools-1.17-h00cdaf9_0.tar.bz2#3d5d2b6e0e2ff6b4b0d0ae3e4c39fb57\n"
)
# What the stand-in does for each micromamba call the template makes: records it, keeps the environment file it
# installs from (so that the test sees which file reached the build), prints a lock for `env export --explicit`.
MICROMAMBA = f"""#!/bin/sh
echo "micromamba $*" >> "$MAMBA_ROOT_PREFIX/calls.log"
if [ "$1 $2" = "env export" ]; then
    printf '%s' '{FAKE_LOCK}'
elif [ "$1" = install ] && [ "$5" = -f ]; then
    busybox cp "$6" "$MAMBA_ROOT_PREFIX/installed-from.yml"
fi
"""
PASSWD = "root:x:0:0:root:/root:/bin/sh\nmambauser:x:1000:1000::/home/mambauser:/bin/sh\n"
GROUP = "root:x:0:\nmambauser:x:1000:\n"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --- the end-to-end build ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def micromamba_stand_in(builder: Builder, busybox_image_id: str, anonymous_image: PushedImage) -> str:
    """busybox with a `micromamba` script on the PATH, the image's MAMBA_USER in /etc/passwd and its variables
    set as the real image sets them (it runs as that user); pushed to the anonymous registry."""
    files = Path(tempfile.mkdtemp(prefix="wave-mamba-", dir=builder.root))
    (files / "usr" / "bin").mkdir(parents=True)
    (files / "usr" / "bin" / "micromamba").write_text(MICROMAMBA)
    (files / "usr" / "bin" / "micromamba").chmod(0o755)
    (files / "etc").mkdir()
    (files / "etc" / "passwd").write_text(PASSWD)
    (files / "etc" / "group").write_text(GROUP)
    (files / "tmp").mkdir()
    os.chmod(files / "tmp", 0o1777)  # noqa: S103 - the image's /tmp, as every image has it
    (files / "opt" / "conda").mkdir(parents=True)
    # Written by the image's user: the copy keeps modes, not owners.
    os.chmod(files / "opt" / "conda", 0o777)  # noqa: S103 - a directory inside a test image
    container = builder.buildah("from", busybox_image_id)
    try:
        builder.buildah("copy", container, f"{files}/", "/")
        builder.buildah(
            "config", "--env", "MAMBA_USER=mambauser", "--env", "MAMBA_ROOT_PREFIX=/opt/conda",
            "--env", "PATH=/usr/bin:/bin", "--user", "mambauser", container,
        )  # fmt: skip
        image = builder.buildah("commit", "--format", "docker", "--quiet", container)
    finally:
        builder.buildah("rm", container)
        shutil.rmtree(files, ignore_errors=True)
    reference = f"{anonymous_image.registry.host}/mambaorg/micromamba-stand-in:1"
    builder.push(image, reference, creds=anonymous_image.registry.creds)
    return reference


@pytest.fixture(scope="module")
def build_repo(anonymous_image: PushedImage) -> str:
    return f"{anonymous_image.registry.host}/wave/recipes"


@pytest.fixture(scope="module")
def builds_worker(django_db_setup: None, django_db_blocker, build_repo: str, layer_worker: Worker) -> Iterator[Worker]:
    with django_db_blocker.unblock():
        worker = build_worker(layer_worker.data_dir, build_repo)
    yield worker
    worker.stop()


@pytest.fixture
def service(
    proxy: AsgiServer, builds_worker: Worker, build_repo: str, micromamba_stand_in: str, settings: Settings
) -> AsgiServer:
    settings.WAVE_BUILD_REPO = build_repo
    settings.WAVE_CACHE_REPO = None
    settings.WAVE_CONDA_MAMBA_IMAGE = micromamba_stand_in  # read where the Containerfile is generated: here
    share_blob_store(settings, builds_worker)
    return proxy


@pytest.mark.slow
def test_a_conda_packages_request_is_built_by_the_builder_and_its_lock_kept(
    service: AsgiServer, build_repo: str, micromamba_stand_in: str, tmp_path: Path
) -> None:
    packages = {"type": "CONDA", "entries": ["samtools=1.17", "bwa"], "channels": ["bioconda", "conda-forge"]}
    answer = httpx.post(f"{service.url}/v1alpha2/container", json={"packages": packages}, timeout=60)
    assert answer.status_code == 200, answer.text
    created = answer.json()
    build = Build.objects.get(build_id=created["buildId"])
    generated = recipe_containerfile(packages=packages)
    assert build.container_file == generated.container_file
    assert build.container_file.startswith(f"FROM {micromamba_stand_in}\n")
    assert build.conda_file == generated.recipe_file
    assert build.conda_file == "channels:\n  - bioconda\n  - conda-forge\ndependencies:\n  - samtools=1.17\n  - bwa\n"
    assert build.container_id == container_id(
        container_file=generated.container_file, conda_file=generated.recipe_file, platform="linux/amd64",
        repository=build_repo,
    )  # fmt: skip
    assert build.target_image == f"{build_repo}:samtools-1.17_bwa--{build.container_id}"
    assert created["targetImage"] == (
        f"{service.host}/wt/{created['containerToken']}/wave/recipes:samtools-1.17_bwa--{build.container_id}"
    )

    # The pull waits for the build, then serves what the stand-in made from the environment file sent along.
    rootfs = unpack(created["targetImage"], tmp_path)
    assert (rootfs / "opt" / "conda" / "installed-from.yml").read_text() == build.conda_file
    calls = (rootfs / "opt" / "conda" / "calls.log").read_text().splitlines()
    assert calls == [
        "micromamba install -y -n base -f /tmp/conda.yml",
        "micromamba install -y -n base conda-forge::procps-ng",
        "micromamba env export --name base --explicit",
        "micromamba clean -a -y",
    ]
    build = wait_finished(build.build_id)
    assert (build.state, build.exit_status) == ("succeeded", 0)
    assert build.digest == skopeo_inspect(build.target_image)["Digest"]
    assert build.conda_lock == FAKE_LOCK

    lock = httpx.get(f"{service.url}/v1alpha1/builds/{build.build_id}/condalock")
    assert lock.status_code == 200
    assert lock.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert lock.text == FAKE_LOCK
    page = httpx.get(created["detailsUri"])
    assert page.status_code == 200
    assert "<h2>Conda lock</h2>" in page.text
    assert f'<pre id="conda-lock">\n{FAKE_LOCK}</pre>' in page.text

    # The same packages again: the image exists, nothing is built.
    again = httpx.post(f"{service.url}/v1alpha2/container", json={"packages": packages}, timeout=60).json()
    assert (again["buildId"], again["cached"]) == (build.build_id, True)
    assert Build.objects.filter(container_id=build.container_id).count() == 1


# --- bad recipes: 400, nothing stored ------------------------------------------------------------------------


def post(client: Client, path: str, body: dict[str, Any]) -> Any:
    return client.post(path, body, content_type="application/json")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (
            "/container-token",
            {"condaFile": b64("dependencies: [samtools\n")},
            "Malformed Conda environment in 'condaFile': expected ',' or ']', but got '<stream end>' at line 2, "
            "column 1",
        ),
        (
            "/container-token",
            {"condaFile": b64("name: empty\nchannels: [conda-forge]\n")},
            "The Conda environment in 'condaFile' has no dependencies: add a 'dependencies' list",
        ),
        (
            "/v1alpha2/container",
            {"packages": {"type": "CONDA", "entries": []}},
            "Attribute 'packages.entries' is empty: list the packages, or give 'packages.environment'",
        ),
        (
            "/v1alpha2/container",
            {"packages": {"type": "PIP", "entries": ["requests"]}},
            "Unsupported packages type 'PIP': use one of CONDA, CRAN",
        ),
        (
            "/v1alpha2/container",
            {"packages": {"entries": ["samtools"]}},
            "Attribute 'packages.type' is missing: use CONDA or CRAN",
        ),
        (
            "/v1alpha2/container",
            {"packages": ["samtools"]},
            "Attribute 'packages' must be an object with a 'type' (CONDA or CRAN) and 'entries'",
        ),
        (
            "/v1alpha2/container",
            {"packages": {"type": "CONDA", "entries": ["pip::requests"]}},
            "Invalid package entry 'pip::requests': write 'pip:requests' (one colon) for a pip package",
        ),
        (
            "/v1alpha2/container",
            {"spackFile": b64("spack:\n  specs: [bwa]\n"), "containerPlatform": "linux/arm/v7"},
            "Spack builds support the platforms linux/amd64 and linux/arm64 only, not 'linux/arm/v7'",
        ),
        (
            "/container-token",
            {"spackFile": b64("spack:\n  view: true\n")},
            "The Spack environment in 'spackFile' has no specs: add a 'spack.specs' list",
        ),
        (
            "/v1alpha2/container",
            {"packages": {"type": "CONDA", "entries": ["http://169.254.169.254/latest/conda-lock.txt"]}},
            "Conda lock file URL refused: Destination '169.254.169.254' is not allowed: it resolves to a private or "
            "local address (set WAVE_SSRF_ALLOW=169.254.169.254 to allow it)",
        ),
    ],
    ids=[
        "malformed-yaml", "no-dependencies", "no-entries", "unsupported-type", "no-type", "not-an-object",
        "pip-double-colon", "spack-platform", "spack-no-specs", "refused-lock-url",
    ],
)  # fmt: skip
def test_a_bad_recipe_is_a_400_that_stores_nothing(
    client: Client, django_capture_on_commit_callbacks: Any, path: str, body: dict[str, Any], message: str
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        response = post(client, path, body)
    assert (response.status_code, response.json()) == (400, {"message": message})
    assert (Build.objects.count(), ContainerRequest.objects.count(), callbacks) == (0, 0, [])


@pytest.mark.django_db
def test_a_recipe_whose_mamba_image_is_on_a_refused_host_is_a_400(client: Client, settings: Settings) -> None:
    packages = {"type": "CONDA", "entries": ["bwa"], "condaOpts": {"mambaImage": "169.254.169.254/mamba:1"}}
    response = post(client, "/v1alpha2/container", {"packages": packages})
    assert response.status_code == 400
    message = response.json()["message"]
    assert message.startswith("Image '169.254.169.254/mamba:1' in the generated Containerfile refused: ")
    assert message.endswith(" - " + RECIPE_IMAGES)  # where the caller (who wrote no Containerfile) sets it
    assert (Build.objects.count(), ContainerRequest.objects.count()) == (0, 0)


# --- the lock endpoint ---------------------------------------------------------------------------------------


def recipe_build(**fields: Any) -> Build:
    cid = "0123456789abcdef"
    values: dict[str, Any] = {
        "build_id": f"bd-{cid}_1", "container_id": cid, "number": 1, "target_image": f"127.0.0.1:9/wave/build:{cid}",
        "repository": "127.0.0.1:9/wave/build", "container_file": "FROM busybox\n", "state": "succeeded",
    }  # fmt: skip
    values.update(fields)
    return Build.objects.create(**values)


@pytest.mark.django_db
def test_the_conda_lock_of_an_unknown_build_is_a_404(client: Client) -> None:
    response = client.get("/v1alpha1/builds/bd-0123456789abcdef_9/condalock", HTTP_ACCEPT="text/plain")
    assert (response.status_code, response.json()) == (404, {"message": "Unknown build id 'bd-0123456789abcdef_9'"})


@pytest.mark.django_db
def test_a_build_without_a_conda_lock_answers_404(client: Client) -> None:
    build = recipe_build()
    response = client.get(f"/v1alpha1/builds/{build.build_id}/condalock")
    assert (response.status_code, response.json()) == (404, {"message": f"No Conda lock for build '{build.build_id}'"})
    page = client.get(f"/view/builds/{build.build_id}")
    assert '<section id="conda-lock-section" hidden>' in page.content.decode()


@pytest.mark.django_db
def test_a_kept_conda_lock_is_served_and_shown(client: Client) -> None:
    build = recipe_build(conda_file="dependencies:\n  - samtools=1.17\n", conda_lock=FAKE_LOCK)
    response = client.get(f"/v1alpha1/builds/{build.build_id}/condalock")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == f'inline; filename="conda-env-{build.build_id}.lock"'
    assert response.content.decode() == FAKE_LOCK
    page = client.get(f"/view/builds/{build.build_id}").content.decode()
    assert '<section id="conda-lock-section" >' in page
    assert f'<pre id="conda-lock">\n{FAKE_LOCK}</pre>' in page


# --- the worker's context -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_worker_writes_the_recipe_files_into_the_build_context() -> None:
    conda = recipe_build(conda_file="dependencies:\n  - bwa\n")
    with build_context(conda) as folder:
        assert folder is not None
        assert {path.name: path.read_text() for path in folder.iterdir()} == {"conda.yml": conda.conda_file}
    assert not folder.exists()
    spack_file = "spack:\n  specs: [bwa]\n"
    spack = recipe_build(build_id="bd-0123456789abcdef_2", number=2, state="failed", spack_file=spack_file)
    with build_context(spack) as folder:
        assert folder is not None
        assert {path.name: path.read_text() for path in folder.iterdir()} == {"spack.yaml": spack.spack_file}
    with build_context(recipe_build(build_id="bd-0123456789abcdef_3", number=3, state="failed")) as folder:
        assert folder is None  # a plain containerFile build without a context


# --- naming and what each recipe stores (no worker: the builds stay pending) ---------------------------------

LOCAL = "127.0.0.1:9"  # the tests' build repository host: allowed by the SSRF rules, nothing listens


@pytest.fixture
def local_recipe_images(settings: Settings) -> None:
    settings.WAVE_CONDA_MAMBA_IMAGE = f"{LOCAL}/mambaorg/micromamba:1"
    settings.WAVE_SPACK_BUILDER_IMAGE = f"{LOCAL}/spack/builder:1"
    settings.WAVE_SPACK_RUNNER_IMAGE = f"{LOCAL}/spack/runner:1"
    settings.WAVE_CRAN_R_IMAGE = f"{LOCAL}/rocker/r-ver:1"


@pytest.mark.django_db
@pytest.mark.usefixtures("local_recipe_images")
@pytest.mark.parametrize(
    ("strategy", "target"),
    [
        (None, "{repo}:samtools-1.17_bwa--{cid}"),
        ("tagPrefix", "{repo}:samtools-1.17_bwa--{cid}"),
        ("imageSuffix", "{repo}/samtools-1.17_bwa:{cid}"),
        ("none", "{repo}:{cid}"),
    ],
)
def test_a_conda_build_is_named_by_the_name_strategy(
    client: Client, settings: Settings, strategy: str | None, target: str
) -> None:
    body: dict[str, Any] = {"packages": {"type": "CONDA", "entries": ["samtools=1.17", "bwa"]}}
    if strategy is not None:
        body["nameStrategy"] = strategy
    answer = post(client, "/v1alpha2/container", body)
    assert answer.status_code == 200, answer.content
    build = Build.objects.get(build_id=answer.json()["buildId"])
    repository = f"{LOCAL}/wave/build"
    assert build.target_image == target.format(repo=repository, cid=build.container_id)
    token = answer.json()["containerToken"]
    authority = urlsplit(settings.WAVE_SERVER_URL).netloc
    assert answer.json()["targetImage"] == f"{authority}/wt/{token}/{build.target_image.removeprefix(LOCAL + '/')}"
    assert build.conda_file == "channels:\n  - conda-forge\n  - bioconda\ndependencies:\n  - samtools=1.17\n  - bwa\n"
    assert (build.spack_file, build.state) == ("", "pending")


@pytest.mark.django_db
@pytest.mark.usefixtures("local_recipe_images")
def test_each_recipe_text_names_its_own_container_id(client: Client) -> None:
    first = post(client, "/container-token", {"condaFile": b64("dependencies:\n  - bwa=0.7.17\n")}).json()
    second = post(client, "/container-token", {"condaFile": b64("dependencies:\n  - bwa=0.7.18\n")}).json()
    conda_one, conda_two = (Build.objects.get(build_id=answer["buildId"]) for answer in (first, second))
    assert conda_one.container_file == conda_two.container_file  # both COPY conda.yml: the recipe tells them apart
    assert conda_one.container_id != conda_two.container_id
    assert conda_one.target_image.endswith(f":bwa-0.7.17--{conda_one.container_id}")
    assert conda_one.container_id == container_id(
        container_file=conda_one.container_file, conda_file=conda_one.conda_file, platform="linux/amd64",
        repository=f"{LOCAL}/wave/build",
    )  # fmt: skip

    spack_file = "spack:\n  specs: [bwa@0.7.17]\n"
    spack_answer = post(client, "/container-token", {"spackFile": b64(spack_file)}).json()
    other_answer = post(client, "/container-token", {"spackFile": b64("spack:\n  specs: [bwa@0.7.18]\n")}).json()
    spack, other = (Build.objects.get(build_id=answer["buildId"]) for answer in (spack_answer, other_answer))
    assert (spack.spack_file, spack.conda_file) == (spack_file, "")
    assert spack.container_file == other.container_file
    assert spack.container_id != other.container_id
    assert spack.target_image == f"{LOCAL}/wave/build:{spack.container_id}"  # no tools in a Spack build's name
    assert spack.container_id == container_id(
        container_file=spack.container_file, conda_file=spack_file, platform="linux/amd64",
        repository=f"{LOCAL}/wave/build",
    )  # fmt: skip


@pytest.mark.django_db
@pytest.mark.usefixtures("local_recipe_images")
def test_a_cran_build_is_all_in_its_containerfile(client: Client) -> None:
    packages = {"type": "CRAN", "entries": ["dplyr", "bioc::limma"]}
    answer = post(client, "/v1alpha2/container", {"packages": packages})
    assert answer.status_code == 200, answer.content
    build = Build.objects.get(build_id=answer.json()["buildId"])
    assert build.container_file == recipe_containerfile(packages=packages).container_file
    assert build.container_file.startswith(f"FROM {LOCAL}/rocker/r-ver:1\n")
    assert (build.conda_file, build.spack_file) == ("", "")
    with build_context(build) as folder:
        assert folder is None  # nothing to copy from a context


@pytest.mark.django_db
@pytest.mark.usefixtures("local_recipe_images")
def test_a_conda_lock_file_url_is_fetched_by_the_builder_and_names_no_tools(client: Client) -> None:
    url = f"http://{LOCAL}/locks/samtools.txt"
    answer = post(client, "/v1alpha2/container", {"packages": {"type": "CONDA", "entries": [url]}})
    assert answer.status_code == 200, answer.content
    build = Build.objects.get(build_id=answer.json()["buildId"])
    assert f"ADD --chown=$MAMBA_USER:$MAMBA_USER {url} /tmp/conda-lock.txt\n" in build.container_file
    assert (build.conda_file, build.target_image) == ("", f"{LOCAL}/wave/build:{build.container_id}")
