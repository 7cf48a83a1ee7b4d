"""Recipe builds: generated Containerfiles (line by line against `tests/builds/recipes/`), their names, the
refusals of bad recipes, and the Conda lock taken from a build log."""

from __future__ import annotations

import base64
import difflib
from pathlib import Path
from typing import Any

import pytest

from builds.containerfiles import containerfile_parse
from builds.naming import (
    image_component,
    package_tool,
    recipe_target_image,
    recipe_tools,
)
from builds.recipes import GeneratedBuild, RecipeError, conda_lock_extract, recipe_containerfile
from builds.recipes.common import render
from registry.platform import Platform, parse_platform
from registry.reference import COMPONENT

EXPECTED = Path(__file__).parent / "recipes"
AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")
ENVIRONMENT = """\
name: rnaseq
channels:
  - conda-forge
  - bioconda
dependencies:
  - bioconda::salmon=1.10.2
  - samtools=1.17
"""
SPACK_FILE = """\
spack:
  specs: [bwa@0.7.17, samtools@1.17]
  concretizer: {unify: true}
"""


@pytest.fixture(autouse=True)
def _recipe_settings(settings) -> None:
    """The spec's defaults, whatever the environment of the test run says."""
    settings.WAVE_CONDA_MAMBA_IMAGE = "mambaorg/micromamba:1.5.10-noble"
    settings.WAVE_CONDA_BASE_IMAGE = "ubuntu:24.04"
    settings.WAVE_CONDA_BASE_PACKAGES = "conda-forge::procps-ng"
    settings.WAVE_CONDA_CHANNELS = ["conda-forge", "bioconda"]
    settings.WAVE_SPACK_BUILDER_IMAGE = "spack/ubuntu-jammy:v0.20.0"
    settings.WAVE_SPACK_RUNNER_IMAGE = "ubuntu:22.04"
    settings.WAVE_SPACK_CACHE_MIRROR = ""
    settings.WAVE_CRAN_R_IMAGE = "rocker/r-ver:4.4.1"
    settings.WAVE_CRAN_BASE_PACKAGES = "procps"


def assert_lines(actual: str, expected_file: str) -> None:
    """`actual` equals the expected file line by line; the message is a diff when it does not."""
    expected = (EXPECTED / expected_file).read_text()
    diff = "\n".join(
        difflib.unified_diff(
            expected.splitlines(), actual.splitlines(), f"expected {expected_file}", "generated", lineterm=""
        )
    )
    assert actual.splitlines() == expected.splitlines(), f"\n{diff}"
    assert actual.endswith("\n")


def assert_builds(build: GeneratedBuild, expected_file: str, *, platform: Platform = AMD64) -> list[str]:
    """The Containerfile as expected, and one the builder's own parser reads: the images it names."""
    assert_lines(build.container_file, expected_file)
    return [str(image) for image in containerfile_parse(build.container_file, target=platform).images]


def conda(**packages: Any) -> GeneratedBuild:
    return recipe_containerfile(packages={"type": "CONDA", **packages})


def cran(**packages: Any) -> GeneratedBuild:
    return recipe_containerfile(packages={"type": "CRAN", **packages})


def refused(**recipe: Any) -> str:
    with pytest.raises(RecipeError) as caught:
        recipe_containerfile(**recipe)
    return caught.value.message


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --- Conda ---------------------------------------------------------------------------------------------------


def test_conda_file_installs_the_environment_with_micromamba() -> None:
    build = recipe_containerfile(conda_file=ENVIRONMENT)
    assert assert_builds(build, "conda-file.Containerfile") == ["docker.io/mambaorg/micromamba:1.5.10-noble"]
    assert build.context_files == {"conda.yml": ENVIRONMENT.encode()}
    assert build.recipe_file == ENVIRONMENT
    assert build.tools == "rnaseq"


def test_conda_entries_become_an_environment_with_channels_and_a_pip_list() -> None:
    build = conda(entries=["bioconda::samtools=1.17", "numpy>=1.2,<2", "pip:requests==2.31.0", "pip:rich"])
    assert_builds(build, "conda-file.Containerfile")  # the same steps: the entries are in conda.yml
    assert_lines(build.context_files["conda.yml"].decode(), "conda-entries.yml")
    assert build.recipe_file == build.context_files["conda.yml"].decode()
    assert build.tools == "samtools-1.17_numpy-1.2_requests-2.31.0_rich"


def test_conda_entries_take_the_channels_given_and_keep_an_explicit_pip() -> None:
    build = conda(entries=["pip=23.3", "pip:multiqc==1.21"], channels=["my-channel"])
    assert build.context_files["conda.yml"].decode() == (
        "channels:\n  - my-channel\ndependencies:\n  - pip=23.3\n  - pip:\n      - multiqc==1.21\n"
    )
    assert build.tools == "pip-23.3_multiqc-1.21"  # a pinned pip was asked for: it is a tool


def test_conda_environment_is_used_as_sent_when_it_names_channels() -> None:
    build = conda(environment=b64(ENVIRONMENT), channels=["ignored"])
    assert build.context_files == {"conda.yml": ENVIRONMENT.encode()}
    assert build.tools == "rnaseq"


def test_conda_environment_without_channels_gets_the_default_channels(settings) -> None:
    settings.WAVE_CONDA_CHANNELS = ["conda-forge"]
    environment = "dependencies:\n  - fastqc=0.12.1\n  - pip:\n      - pandas\n"
    build = conda(environment=b64(environment))
    assert_lines(build.context_files["conda.yml"].decode(), "conda-environment-channels.yml")
    assert build.tools == "fastqc-0.12.1_pandas"


def test_conda_options_set_image_base_packages_and_commands() -> None:
    build = conda(
        entries=["samtools=1.17"],
        condaOpts={
            "mambaImage": "quay.io/org/micromamba:2.0",
            "basePackages": "conda-forge::procps-ng conda-forge::numpy>=1.2",
            "commands": ["apt-get update && apt-get install -y curl", "echo 'done' > /done"],
        },
    )
    assert assert_builds(build, "conda-options.Containerfile") == ["quay.io/org/micromamba:2.0"]


def test_conda_base_packages_as_a_list_or_none_at_all() -> None:
    as_list = conda(entries=["samtools"], condaOpts={"basePackages": ["conda-forge::procps-ng", "tini"]})
    assert "    && micromamba install -y -n base conda-forge::procps-ng tini \\" in as_list.container_file.splitlines()
    assert_builds(conda(entries=["samtools"], condaOpts={"basePackages": ""}), "conda-no-base-packages.Containerfile")


def test_conda_null_options_are_the_defaults() -> None:
    build = conda(entries=["samtools=1.17"], channels=None, condaOpts={"mambaImage": None, "basePackages": None})
    assert_builds(build, "conda-file.Containerfile")


def test_conda_base_image_builds_in_micromamba_and_copies_the_prefix() -> None:
    build = conda(entries=["samtools=1.17"], condaOpts={"baseImage": "ubuntu:24.04", "commands": ["samtools help"]})
    assert assert_builds(build, "conda-multistage.Containerfile") == [
        "docker.io/mambaorg/micromamba:1.5.10-noble",
        "docker.io/library/ubuntu:24.04",
    ]


def test_conda_build_template_v2_copies_into_the_default_base_image(settings) -> None:
    build = recipe_containerfile(
        packages={"type": "CONDA", "entries": ["samtools=1.17"], "condaOpts": {"commands": ["samtools help"]}},
        build_template="conda/micromamba:v2",
    )
    assert_builds(build, "conda-multistage.Containerfile")
    settings.WAVE_CONDA_BASE_IMAGE = "debian:12-slim"
    from_file = recipe_containerfile(conda_file=ENVIRONMENT, build_template="conda/micromamba:v2")
    assert [line for line in from_file.container_file.splitlines() if line.startswith("FROM")] == [
        "FROM mambaorg/micromamba:1.5.10-noble AS build",
        "FROM debian:12-slim",
    ]


def test_conda_build_template_v1_keeps_one_stage_whatever_the_base_image() -> None:
    build = recipe_containerfile(
        packages={"type": "CONDA", "entries": ["samtools=1.17"], "condaOpts": {"baseImage": "ubuntu:24.04"}},
        build_template="conda/micromamba:v1",
    )
    assert_builds(build, "conda-file.Containerfile")


def test_conda_lock_file_url_is_added_and_installed_as_it_is(settings) -> None:
    settings.WAVE_SSRF_ALLOW = ["conda.example.org"]
    build = conda(entries=["https://conda.example.org/locks/env-lock.txt?version=2"])
    parsed = containerfile_parse(build.container_file)
    assert_builds(build, "conda-lock.Containerfile")
    assert parsed.urls == ("https://conda.example.org/locks/env-lock.txt?version=2",)  # checked again at build
    assert build.context_files == {}
    assert build.recipe_file is None
    assert build.tools == ""


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "http://169.254.169.254/latest/lock.txt",
            "Conda lock file URL refused: Destination '169.254.169.254' is not allowed: it resolves to a private or "
            "local address (set WAVE_SSRF_ALLOW=169.254.169.254 to allow it)",
        ),
        (
            "http://metadata.google.internal/lock.txt",
            "Conda lock file URL refused: Destination 'metadata.google.internal' is not allowed: cloud metadata "
            "service (set WAVE_SSRF_ALLOW=metadata.google.internal to allow it)",
        ),
        (
            "https://conda.example.org/$HOME/lock.txt",
            "Conda lock file URL has characters an ADD line cannot carry (spaces, quotes, '$', '\\'): "
            "percent-encode them",
        ),
        (
            "https://conda.example.org/my lock.txt",
            "Conda lock file URL has characters an ADD line cannot carry (spaces, quotes, '$', '\\'): "
            "percent-encode them",
        ),
    ],
)
def test_conda_lock_file_url_refused(settings, url: str, message: str) -> None:
    settings.WAVE_SSRF_ALLOW = []
    assert refused(packages={"type": "CONDA", "entries": [url]}) == message


@pytest.mark.parametrize(
    ("packages", "message"),
    [
        (
            {"entries": ["pip::numpy"]},
            "Invalid package entry 'pip::numpy': write 'pip:numpy' (one colon) for a pip package",
        ),
        ({"entries": ["pip:"]}, "Invalid package entry 'pip:': name the pip package after 'pip:'"),
        ({"entries": []}, "Attribute 'packages.entries' is empty: list the packages, or give 'packages.environment'"),
        ({}, "Attribute 'packages.entries' is empty: list the packages, or give 'packages.environment'"),
        ({"entries": ["samtools", " "]}, "Attribute 'packages.entries' must not contain blank entries"),
        ({"entries": "samtools"}, "Attribute 'packages.entries' must be a list of strings"),
        ({"entries": [1]}, "Attribute 'packages.entries' must be a string"),
        ({"entries": ["samtools"], "channels": "bioconda"}, "Attribute 'packages.channels' must be a list of strings"),
        (
            {"entries": ["https://conda.example.org/lock.txt", "samtools"]},
            "A Conda lock file URL must be the only entry of 'packages.entries'",
        ),
        (
            {"entries": ["samtools"], "environment": b64(ENVIRONMENT)},
            "Attributes 'packages.entries' and 'packages.environment' cannot be used together",
        ),
        (
            {"environment": "not base64!"},
            "Invalid 'packages.environment' attribute - make sure it encoded as a base64 string",
        ),
        (
            {"environment": base64.b64encode(b"\xff\xfe").decode()},
            "Invalid 'packages.environment' attribute - make sure it encoded as a base64 string",
        ),
        (
            {"environment": b64("dependencies: [a\n")},
            "Malformed Conda environment in 'packages.environment': expected ',' or ']', but got '<stream end>' "
            "at line 2, column 1",
        ),
        (
            {"environment": b64("name: empty\ndependencies: []\n")},
            "The Conda environment in 'packages.environment' has no dependencies: add a 'dependencies' list",
        ),
        ({"entries": ["samtools"], "condaOpts": "x"}, "Attribute 'packages.condaOpts' must be an object"),
        (
            {"entries": ["samtools"], "condaOpts": {"commands": "echo hi"}},
            "Attribute 'packages.condaOpts.commands' must be a list of strings",
        ),
        (
            {"entries": ["samtools"], "condaOpts": {"mambaImage": "http://docker.io/x:1"}},
            "Attribute 'packages.condaOpts.mambaImage': Invalid container repository name — offending value: "
            "'http://docker.io/x:1'",
        ),
        (
            {"entries": ["samtools"], "condaOpts": {"baseImage": "ubuntu: 24.04"}},
            "Attribute 'packages.condaOpts.baseImage': Invalid container image name — offending value: 'ubuntu: 24.04'",
        ),
    ],
)
def test_conda_packages_refused(packages: dict[str, Any], message: str) -> None:
    assert refused(packages={"type": "CONDA", **packages}) == message


@pytest.mark.parametrize(
    ("conda_file", "message"),
    [
        (
            "dependencies:\n  - samtools\n - bwa\n",
            "Malformed Conda environment in 'condaFile': expected <block end>, but found '<block sequence start>' "
            "at line 3, column 2",
        ),
        ("just text", "The Conda environment in 'condaFile' must be a YAML mapping with a 'dependencies' list"),
        ("", "The Conda environment in 'condaFile' must be a YAML mapping with a 'dependencies' list"),
        ("name: x\n", "The Conda environment in 'condaFile' has no dependencies: add a 'dependencies' list"),
        (
            "dependencies: samtools\n",
            "The Conda environment in 'condaFile' has no dependencies: add a 'dependencies' list",
        ),
    ],
)
def test_conda_file_refused(conda_file: str, message: str) -> None:
    assert refused(conda_file=conda_file) == message


# --- Values that would add lines -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"commands": ["echo hi\nUSER root"]},
            "Attribute 'packages.condaOpts.commands' must be a single line without control characters",
        ),
        (
            {"commands": ["echo hi\rUSER root"]},
            "Attribute 'packages.condaOpts.commands' must be a single line without control characters",
        ),
        (
            {"commands": ["echo hi\u2028USER root"]},
            "Attribute 'packages.condaOpts.commands' must be a single line without control characters",
        ),
        (
            {"commands": ["echo hi \\"]},
            "Attribute 'packages.condaOpts.commands' must not end with a backslash (a line continuation)",
        ),
        (
            {"mambaImage": "ubuntu\nRUN curl evil"},
            "Attribute 'packages.condaOpts.mambaImage' must be a single line without control characters",
        ),
        (
            {"basePackages": "procps\nRUN x"},
            "Attribute 'packages.condaOpts.basePackages' must be a single line without control characters",
        ),
        (
            {"basePackages": ["procps\nRUN x"]},
            "Attribute 'packages.condaOpts.basePackages' must be a single line without control characters",
        ),
    ],
)
def test_values_cannot_add_containerfile_lines(options: dict[str, Any], message: str) -> None:
    assert refused(packages={"type": "CONDA", "entries": ["samtools"], "condaOpts": options}) == message


def test_base_packages_are_quoted_words_never_commands() -> None:
    build = conda(entries=["samtools"], condaOpts={"basePackages": ["procps", "tini;", "$(id)"]})
    lines = build.container_file.splitlines()
    assert "    && micromamba install -y -n base procps 'tini;' '$(id)' \\" in lines
    assert [line for line in lines if line.startswith("RUN")] == [
        "RUN micromamba install -y -n base -f /tmp/conda.yml \\"
    ]


def test_render_refuses_a_value_of_several_lines_that_skipped_its_check() -> None:
    with pytest.raises(RecipeError) as caught:
        render("conda.Containerfile", {"mamba_image": "x", "commands": ["ok", "two\nlines"]})
    assert caught.value.message == "A value for the generated Containerfile is not a single line (commands)"


def test_a_cache_mirror_setting_of_two_lines_is_refused(settings) -> None:
    settings.WAVE_SPACK_CACHE_MIRROR = "s3://cache\nRUN curl evil"
    assert (
        refused(spack_file=SPACK_FILE) == "A value for the generated Containerfile is not a single line (cache_mirror)"
    )


def test_entries_with_line_breaks_stay_inside_the_yaml_file() -> None:
    assert (
        refused(packages={"type": "CONDA", "entries": ["samtools\n  - evil"]})
        == "Attribute 'packages.entries' must be a single line without control characters"
    )


# --- Spack ---------------------------------------------------------------------------------------------------


def test_spack_file_builds_in_the_spack_image_and_runs_in_a_small_one() -> None:
    build = recipe_containerfile(spack_file=SPACK_FILE, platform=AMD64)
    assert assert_builds(build, "spack.Containerfile") == [
        "docker.io/spack/ubuntu-jammy:v0.20.0",
        "docker.io/library/ubuntu:22.04",
    ]
    assert build.context_files == {"spack.yaml": SPACK_FILE.encode()}
    assert build.recipe_file == SPACK_FILE
    assert build.tools == ""


def test_spack_target_follows_the_platform() -> None:
    build = recipe_containerfile(spack_file=SPACK_FILE, platform=parse_platform("linux/arm64/v8"))
    assert_builds(build, "spack-arm64.Containerfile", platform=ARM64)


def test_spack_cache_mirror_from_the_settings(settings) -> None:
    settings.WAVE_SPACK_CACHE_MIRROR = "s3://spack-cache/v0.20"
    settings.WAVE_SPACK_BUILDER_IMAGE = "registry.example.org/spack/builder:1"
    settings.WAVE_SPACK_RUNNER_IMAGE = "registry.example.org/base/runner:1"
    assert assert_builds(recipe_containerfile(spack_file=SPACK_FILE), "spack-mirror.Containerfile") == [
        "registry.example.org/spack/builder:1",
        "registry.example.org/base/runner:1",
    ]


def test_spack_file_with_a_containerfile_supplies_the_final_stage() -> None:
    container_file = """\
# syntax=docker/dockerfile:1
# The user's own final stage.
ARG BASE=ubuntu:22.04
FROM ${BASE}
COPY --from=builder /opt/spack-env /opt/spack-env
COPY --from=builder /opt/software /opt/software
COPY --from=builder /opt/view /opt/view
ENTRYPOINT ["/bin/bash", "-c", ". /opt/spack-env/activate.sh && exec \\"$@\\"", "--"]"""
    build = recipe_containerfile(spack_file=SPACK_FILE, container_file=container_file)
    assert assert_builds(build, "spack-containerfile.Containerfile") == [
        "docker.io/spack/ubuntu-jammy:v0.20.0",
        "docker.io/library/ubuntu:22.04",  # the global ARG still reaches the user's FROM
    ]
    assert build.context_files == {"spack.yaml": SPACK_FILE.encode()}


def test_spack_file_with_a_containerfile_without_head() -> None:
    build = recipe_containerfile(spack_file=SPACK_FILE, container_file="from alpine:3\nCOPY --from=builder /opt /opt\n")
    lines = build.container_file.splitlines()
    assert lines[0] == "FROM spack/ubuntu-jammy:v0.20.0 AS builder"
    assert lines[-3:] == ["", "from alpine:3", "COPY --from=builder /opt /opt"]


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        (
            {"spack_file": SPACK_FILE, "platform": parse_platform("linux/arm/v7")},
            "Spack builds support the platforms linux/amd64 and linux/arm64 only, not 'linux/arm/v7'",
        ),
        (
            {"spack_file": "spack:\n  specs: [bwa\n"},
            "Malformed Spack environment in 'spackFile': expected ',' or ']', but got '<stream end>' at line 3, "
            "column 1",
        ),
        (
            {"spack_file": "specs: [bwa]\n"},
            "The Spack environment in 'spackFile' must be a YAML mapping under a 'spack' key",
        ),
        (
            {"spack_file": "- spack\n"},
            "The Spack environment in 'spackFile' must be a YAML mapping under a 'spack' key",
        ),
        (
            {"spack_file": "spack:\n  specs: []\n"},
            "The Spack environment in 'spackFile' has no specs: add a 'spack.specs' list",
        ),
        (
            {"spack_file": SPACK_FILE, "container_file": "# escape=`\nFROM ubuntu\nRUN echo `\n  hi\n"},
            "The 'containerFile' given with 'spackFile' must use the default escape character '\\'",
        ),
        (
            {"spack_file": SPACK_FILE, "container_file": "ARG X=1 \\\n  FROM=2\n# FROM ubuntu\n"},
            "The 'containerFile' given with 'spackFile' has no FROM instruction",
        ),
    ],
)
def test_spack_refused(recipe: dict[str, Any], message: str) -> None:
    assert refused(**recipe) == message


# --- CRAN ----------------------------------------------------------------------------------------------------


def test_cran_installs_cran_and_bioconductor_packages() -> None:
    build = cran(entries=["dplyr", "data.table", "bioc::DESeq2", "bioc::limma"])
    assert assert_builds(build, "cran.Containerfile") == ["docker.io/rocker/r-ver:4.4.1"]
    assert build.context_files == {}
    assert build.recipe_file is None
    assert build.tools == "dplyr_data.table_DESeq2_limma"


def test_cran_options_and_repositories() -> None:
    build = cran(
        entries=["ggplot2"],
        channels=["https://cloud.r-project.org", "https://r.example.org/cran?x=1&y=2"],
        cranOpts={
            "rImage": "rocker/r-ver:4.3.3",
            "basePackages": ["libxml2-dev", "libssl-dev=3.0.2-0ubuntu1"],
            "commands": ["Rscript -e 'library(ggplot2)'"],
        },
    )
    assert_builds(build, "cran-options.Containerfile")


def test_cran_bioconductor_only_without_base_packages() -> None:
    build = cran(entries=["bioc::GenomicRanges"], cranOpts={"basePackages": ""})
    assert_builds(build, "cran-bioc.Containerfile")
    assert build.tools == "GenomicRanges"


@pytest.mark.parametrize(
    ("packages", "message"),
    [
        ({"entries": []}, "Attribute 'packages.entries' is empty: list the R packages to install"),
        (
            {"entries": ["dplyr=1.1.4"]},
            "Invalid CRAN package entry 'dplyr=1.1.4': give an R package name (letters, digits and dots, starting "
            "with a letter), or 'bioc::<name>' for Bioconductor",
        ),
        (
            {"entries": ['bioc::x"); system("id']},
            "Invalid CRAN package entry 'bioc::x\"); system(\"id': give an R package name (letters, digits and dots, "
            "starting with a letter), or 'bioc::<name>' for Bioconductor",
        ),
        (
            {"entries": ["dplyr"], "channels": ["cran"]},
            "Invalid CRAN channel 'cran': 'packages.channels' lists repository URLs (https://...)",
        ),
        (
            {"entries": ["dplyr"], "cranOpts": {"basePackages": "libxml2-dev; curl evil"}},
            "Invalid apt package 'libxml2-dev;' in 'packages.cranOpts.basePackages': give Debian package names",
        ),
        (
            {"entries": ["dplyr"], "cranOpts": {"commands": ["echo\nUSER root"]}},
            "Attribute 'packages.cranOpts.commands' must be a single line without control characters",
        ),
        (
            {"entries": ["dplyr"], "cranOpts": {"rImage": "rocker/r-ver:4.4.1 AS x"}},
            "Attribute 'packages.cranOpts.rImage': Invalid container image name — offending value: "
            "'rocker/r-ver:4.4.1 AS x'",
        ),
    ],
)
def test_cran_packages_refused(packages: dict[str, Any], message: str) -> None:
    assert refused(packages={"type": "CRAN", **packages}) == message


# --- The entry point -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        (
            {"packages": {"type": "SPACK", "entries": ["bwa"]}},
            "Unsupported packages type 'SPACK': use one of CONDA, CRAN",
        ),
        ({"packages": {"entries": ["bwa"]}}, "Unsupported packages type 'None': use one of CONDA, CRAN"),
        ({"packages": ["bwa"]}, "Attribute 'packages' must be an object"),
        ({}, "Give exactly one of 'condaFile', 'spackFile' or 'packages', not none"),
        (
            {"conda_file": ENVIRONMENT, "spack_file": SPACK_FILE},
            "Give exactly one of 'condaFile', 'spackFile' or 'packages', not condaFile and spackFile",
        ),
        (
            {"conda_file": ENVIRONMENT, "container_file": "FROM ubuntu"},
            "Attribute 'containerFile' cannot be combined with 'condaFile'",
        ),
        (
            {"packages": {"type": "CONDA", "entries": ["x"]}, "container_file": "FROM ubuntu"},
            "Attribute 'containerFile' cannot be combined with 'packages'",
        ),
        (
            {"packages": {"type": "CONDA", "entries": ["x"]}, "build_template": "conda/pixi:v1"},
            "Unsupported build template 'conda/pixi:v1': use one of conda/micromamba:v1, conda/micromamba:v2",
        ),
        (
            {"packages": {"type": "CRAN", "entries": ["dplyr"]}, "build_template": "conda/micromamba:v2"},
            "Attribute 'buildTemplate' applies to Conda recipes only",
        ),
        (
            {"spack_file": SPACK_FILE, "build_template": "conda/micromamba:v1"},
            "Attribute 'buildTemplate' applies to Conda recipes only",
        ),
    ],
)
def test_recipe_refused(recipe: dict[str, Any], message: str) -> None:
    assert refused(**recipe) == message


# --- Names ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "tool"),
    [
        ("bioconda::samtools=1.17", "samtools-1.17"),
        ("samtools==1.17", "samtools-1.17"),
        ("samtools=1.17=h00cdaf9_0", "samtools-1.17"),
        ("samtools 1.17 h00cdaf9_0", "samtools-1.17"),
        ("numpy>=1.2,<2", "numpy-1.2"),
        ("python=3.11.*", "python-3.11"),
        ("requests[socks]~=2.31", "requests-2.31"),
        ("conda-forge/linux-64::zlib", "zlib"),
        ("bioc::DESeq2", "DESeq2"),
    ],
)
def test_package_tool(spec: str, tool: str) -> None:
    assert package_tool(spec) == tool


def test_recipe_tools_name_first_five_and_pruned() -> None:
    five = ["a=1", "b=2", "c", "d", "e"]
    assert recipe_tools(name=None, packages=five) == "a-1_b-2_c_d_e"
    assert recipe_tools(name=None, packages=[*five, "f"]) == "a-1_b-2_c_d_e_pruned"
    assert recipe_tools(name="My env/v2", packages=five) == "My-env-v2"  # the name wins; odd characters become -
    assert recipe_tools(name="  ", packages=["x"]) == "x"
    assert recipe_tools(name=".hidden", packages=[]) == "hidden"  # a tag starts with a letter, digit or _
    assert recipe_tools(name=None, packages=[]) == ""


def test_recipe_tools_limited_to_80_characters() -> None:
    tools = recipe_tools(name=None, packages=[f"{'x' * 30}{n}=1.0" for n in range(6)])
    assert len(tools) == 80
    assert tools == f"{'x' * 30}0-1.0_{'x' * 30}1-1.0_{'x' * 8}"


def test_conda_tools_leave_out_pip_itself_and_pip_options() -> None:
    environment = "dependencies:\n  - python=3.12\n  - pip\n  - {pip: [multiqc==1.21]}\n"
    assert recipe_containerfile(conda_file=environment).tools == "python-3.12_multiqc-1.21"


@pytest.mark.parametrize(
    ("strategy", "target"),
    [
        (None, "reg.io/wave/build:samtools-1.17_bwa-0.7--7efaa2ed59c58a16"),
        ("tagPrefix", "reg.io/wave/build:samtools-1.17_bwa-0.7--7efaa2ed59c58a16"),
        ("none", "reg.io/wave/build:7efaa2ed59c58a16"),
        ("imageSuffix", "reg.io/wave/build/samtools-1.17_bwa-0.7:7efaa2ed59c58a16"),
    ],
)
def test_recipe_target_image_by_name_strategy(strategy: str | None, target: str) -> None:
    common = {"repository": "reg.io/wave/build", "container_id": "7efaa2ed59c58a16"}
    assert recipe_target_image(tools="samtools-1.17_bwa-0.7", name_strategy=strategy, **common) == target
    assert recipe_target_image(tools="", name_strategy=strategy, **common) == "reg.io/wave/build:7efaa2ed59c58a16"


def test_image_suffix_is_a_valid_repository_component() -> None:
    assert image_component("My_Env.-v2__x--y_") == "my_env-v2__x--y"
    assert COMPONENT.fullmatch(image_component("My_Env.-v2__x--y_"))
    assert recipe_target_image(
        repository="r/b", container_id="0123456789abcdef", tools="RNA-Seq_.x", name_strategy="imageSuffix"
    ) == ("r/b/rna-seq-x:0123456789abcdef")


def test_unknown_name_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="Unknown name strategy 'suffix': use one of none, tagPrefix, imageSuffix"):
        recipe_target_image(repository="r/b", container_id="0" * 16, tools="x", name_strategy="suffix")


# --- Conda lock ----------------------------------------------------------------------------------------------


def test_conda_lock_extracted_from_a_build_log() -> None:
    log = (EXPECTED / "conda-build.log").read_text()
    assert_lines(conda_lock_extract(log), "conda-build.lock")


def test_conda_lock_markers_count_only_at_the_end_of_a_line() -> None:
    step = 'STEP 3/5: RUN micromamba install && echo ">> CONDA_LOCK_START" && cat lock && echo "<< CONDA_LOCK_END"'
    assert conda_lock_extract(f"{step}\nTransaction finished\n") == ""
    glued = "Transaction finished>> CONDA_LOCK_START\r\n@EXPLICIT\r\nhttps://c.org/a.conda#1<< CONDA_LOCK_END\r\n"
    assert conda_lock_extract(glued) == "@EXPLICIT\nhttps://c.org/a.conda#1\n"
    progress = "downloading 10%\rdone   >> CONDA_LOCK_START\n@EXPLICIT\n<< CONDA_LOCK_END  \n"
    assert conda_lock_extract(progress) == "@EXPLICIT\n"


def test_conda_lock_absent_or_unterminated_is_empty() -> None:
    assert conda_lock_extract("") == ""
    assert conda_lock_extract("STEP 1/2: FROM ubuntu\nSTEP 2/2: RUN true\n") == ""
    assert conda_lock_extract(">> CONDA_LOCK_START\n@EXPLICIT\n[log truncated: it passed the 1024 bytes]\n") == ""
    assert conda_lock_extract("<< CONDA_LOCK_END\n@EXPLICIT\n") == ""


def test_conda_lock_the_last_complete_block_wins() -> None:
    log = ">> CONDA_LOCK_START\nfirst\n<< CONDA_LOCK_END\n>> CONDA_LOCK_START\nsecond\n<< CONDA_LOCK_END\n"
    assert conda_lock_extract(log) == "second\n"
    assert conda_lock_extract(">> CONDA_LOCK_START\nstale\n>> CONDA_LOCK_START\nnew\n<< CONDA_LOCK_END\n") == "new\n"
