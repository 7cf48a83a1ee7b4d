"""Containerfiles: the images they name, the checks before a build, the auth file (read back by buildah)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from builds.containerfiles import (
    ContainerfileError,
    auth_file,
    containerfile_check,
    containerfile_parse,
    expand,
    expand_known,
    from_images,
)
from registry.client import Credentials
from registry.platform import Platform, parse_platform

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")


def names(container_file: str) -> list[str]:
    return [str(image) for image in from_images(container_file)]


def test_from_images_resolve_global_arg_defaults_and_skip_stages_and_scratch() -> None:
    container_file = """\
# syntax=docker/dockerfile:1
ARG REGISTRY=quay.io
ARG TAG
ARG BASE=${REGISTRY}/org/base
FROM --platform=linux/amd64 ${BASE}:${TAG:-1.0} AS build
RUN make \\
    all
FROM build AS test
FROM Build
FROM scratch
COPY --from=build /out /out
COPY --from=0 /out /out2
COPY --from=ghcr.io/org/tools:2 /bin/tool /bin/tool
RUN --mount=type=bind,from=registry.example.com:5000/cache/deps,target=/deps true
FROM busybox
"""
    assert names(container_file) == [
        "quay.io/org/base:1.0",
        "ghcr.io/org/tools:2",
        "registry.example.com:5000/cache/deps:latest",
        "docker.io/library/busybox:latest",
    ]


def test_from_images_each_once_and_digests_kept() -> None:
    digest = "sha256:" + "a" * 64
    assert names(f"FROM ubuntu@{digest}\nFROM ubuntu@{digest}\nCOPY --from=ubuntu:22.04 /a /a\n") == [
        f"docker.io/library/ubuntu@{digest}",
        "docker.io/library/ubuntu:22.04",
    ]


def test_arg_declared_inside_a_stage_does_not_reach_a_later_from() -> None:
    with pytest.raises(ContainerfileError) as raised:
        from_images("FROM busybox AS one\nARG BASE=alpine\nFROM $BASE\n")
    assert raised.value.message == "FROM on line 3 names no image: '$BASE' is empty"


def test_stage_args_expand_copy_from() -> None:
    assert names("FROM busybox\nARG TOOLS=quay.io/x/tools\nCOPY --from=${TOOLS}:1 /t /t\n") == [
        "docker.io/library/busybox:latest",
        "quay.io/x/tools:1",
    ]


@pytest.mark.parametrize(
    ("container_file", "message"),
    [
        ("FROM Busy_Box!\n", "FROM on line 1: Invalid container image name — offending value: 'Busy_Box!'"),
        ("FROM busybox\nCOPY --from=UPPER/Case /a /a\n",
         "COPY --from on line 2: Invalid container image name — offending value: 'UPPER/Case'"),
        ("RUN true\nFROM busybox\n", "The Containerfile must start with FROM (line 1 is RUN)"),
        ("ARG A=1\n# only a comment\n", "The Containerfile has no FROM instruction"),
        ("", "The Containerfile has no FROM instruction"),
        ("FROM busybox\nRUNN true\n", "Unknown instruction 'RUNN' on line 2"),
        ("FROM busybox\nRUN <<EOF\necho hi\nEOF\n",
         "Unknown instruction 'ECHO' on line 3 (heredocs `<<EOF` are not supported by this builder)"),
        ("FROM busybox AS\n", "Invalid FROM on line 1: expected FROM [--platform=<p>] <image> [AS <name>]"),
        ("FROM --pull=always busybox\n", "Invalid FROM on line 1: expected FROM [--platform=<p>] <image> [AS <name>]"),
        ("FROM --platform=windows/amd64 busybox\n", "FROM on line 1: Unsupported container platform: windows/amd64"),
    ],
)  # fmt: skip
def test_containerfile_that_cannot_be_built_names_the_problem_in_one_line(container_file: str, message: str) -> None:
    with pytest.raises(ContainerfileError) as raised:
        from_images(container_file)
    assert raised.value.message == message
    assert "\n" not in raised.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$A", "1"),
        ("${A}x", "1x"),
        ("${MISSING}x", "x"),
        ("${MISSING:-word}", "word"),
        ("${A:-word}", "1"),
        ("${A:+set}", "set"),
        ("${MISSING:+set}", ""),
        ("\\$A", "$A"),
    ],
)
def test_expand_follows_dockers_substitution(text: str, expected: str) -> None:
    assert expand(text, {"A": "1"}) == expected


def test_run_architectures_are_those_of_stages_the_build_runs() -> None:
    cross_compiled = """\
FROM --platform=$BUILDPLATFORM golang AS build
RUN go build
FROM busybox AS unused
RUN never-built
FROM scratch
COPY --from=build /app /app
"""
    parsed = containerfile_parse(cross_compiled, target=ARM64, host=AMD64)
    assert [stage.index for stage in parsed.needed_stages()] == [0, 2]
    assert parsed.run_architectures() == {"amd64"}
    assert [(stage.name, str(stage.platform)) for stage in parsed.stages] == [
        ("build", "linux/amd64"),
        ("unused", "linux/arm64"),
        (None, "linux/arm64"),
    ]
    assert containerfile_parse("FROM busybox\nRUN true\n", target=ARM64, host=AMD64).run_architectures() == {"arm64"}
    assert containerfile_parse("FROM busybox\nENV A=1\n", target=ARM64, host=AMD64).run_architectures() == set()
    # A stage built on another runs on that one's platform.
    on_build = "FROM --platform=$BUILDPLATFORM busybox AS tools\nFROM tools\nRUN true\n"
    assert containerfile_parse(on_build, target=ARM64, host=AMD64).run_architectures() == {"amd64"}


def test_containerfile_check_passes_allowed_hosts(settings) -> None:
    settings.WAVE_SSRF_ALLOW = ["127.0.0.1"]
    assert [str(i) for i in containerfile_check("FROM 127.0.0.1:5000/library/busybox\n")] == [
        "127.0.0.1:5000/library/busybox:latest"
    ]


def test_containerfile_check_refuses_a_private_from_host_naming_how_to_allow_it(settings) -> None:
    settings.WAVE_SSRF_ALLOW = []
    with pytest.raises(ContainerfileError) as raised:
        containerfile_check("FROM scratch AS empty\nFROM 127.0.0.1:5000/library/busybox\n")
    assert raised.value.message == (
        "Image '127.0.0.1:5000/library/busybox:latest' in the Containerfile refused: Destination '127.0.0.1' is not "
        "allowed: it resolves to a private or local address (set WAVE_SSRF_ALLOW=127.0.0.1 to allow it)"
    )


@pytest.mark.parametrize(
    ("container_file", "message"),
    [
        ("FROM scratch\nCOPY --from=metadata.google.internal/x /a /a\n",
         "Image 'metadata.google.internal/x:latest' in the Containerfile refused: Destination "
         "'metadata.google.internal' is not allowed: cloud metadata service "
         "(set WAVE_SSRF_ALLOW=metadata.google.internal to allow it)"),
        ("FROM 10.0.0.8/x\n",
         "Image '10.0.0.8/x:latest' in the Containerfile refused: Destination '10.0.0.8' is not allowed: "
         "it resolves to a private or local address (set WAVE_SSRF_ALLOW=10.0.0.8 to allow it)"),
        ("FROM registry.example.invalid/x\n",
         "Image 'registry.example.invalid/x:latest' in the Containerfile refused: Destination "
         "'registry.example.invalid' is not allowed: the host name does not resolve (check its spelling)"),
        ("FROM scratch\nADD http://169.254.169.254/latest/meta-data/ /meta\n",
         "ADD source in the Containerfile refused: Destination '169.254.169.254' is not allowed: "
         "it resolves to a private or local address (set WAVE_SSRF_ALLOW=169.254.169.254 to allow it)"),
        ("FROM scratch\nENV URL=http://10.1.2.3:8080/secret\nADD [\"${URL}\", \"/s\"]\n",
         "ADD source in the Containerfile refused: Destination '10.1.2.3' is not allowed: "
         "it resolves to a private or local address (set WAVE_SSRF_ALLOW=10.1.2.3 to allow it)"),
    ],
)  # fmt: skip
def test_containerfile_check_refuses_every_image_and_fetch_destination(settings, container_file, message) -> None:
    settings.WAVE_SSRF_ALLOW = []
    with pytest.raises(ContainerfileError) as raised:
        containerfile_check(container_file)
    assert raised.value.message == message


UNDEFINED = "a URL must be spelled out or built from ENV set in the Containerfile"


@pytest.mark.parametrize(
    ("add", "message"),
    [
        ("ADD $U /m",
         f"ADD source '$U' on line 2 uses a variable the Containerfile does not define ('U'): {UNDEFINED}"),
        ('ADD ["${U}", "/m"]',
         f"ADD source '${{U}}' on line 2 uses a variable the Containerfile does not define ('U'): {UNDEFINED}"),
        ("ADD ${U:-http://example.com/x} /m",
         "ADD source '${U:-http://example.com/x}' on line 2 uses a variable the Containerfile does not define ('U'): "
         f"{UNDEFINED}"),
        ("ADD ${U#x} /m", f"ADD source '${{U#x}}' on line 2 uses a variable the Containerfile does not define ('U'): "
         f"{UNDEFINED}"),
        ("ADD h$TTP /m", f"ADD source 'h$TTP' on line 2 uses a variable the Containerfile does not define ('TTP'): "
         f"{UNDEFINED}"),
        ("ADD http://$HOST/x /m",
         "ADD source 'http://$HOST/x' on line 2 uses a variable the Containerfile does not define ('HOST'): "
         f"{UNDEFINED}"),
        ("ADD HTTPS://x.${DOMAIN}/x /m",
         "ADD source 'HTTPS://x.${DOMAIN}/x' on line 2 uses a variable the Containerfile does not define ('DOMAIN'): "
         f"{UNDEFINED}"),
        ("ADD https://example.com$PORT/x /m",
         "ADD source 'https://example.com$PORT/x' on line 2 uses a variable the Containerfile does not define "
         f"('PORT'): {UNDEFINED}"),
        ("ADD git@$GIT:org/repo.git /src",
         f"ADD source 'git@$GIT:org/repo.git' on line 2 uses a variable the Containerfile does not define ('GIT'): "
         f"{UNDEFINED}"),
        ("ENV BASE=$MIRROR/files\nADD $BASE/x /m",
         f"ADD source '$BASE/x' on line 3 uses a variable the Containerfile does not define ('MIRROR'): {UNDEFINED}"),
        ("ARG URL=https://example.com/file\nADD $URL /m",
         "ADD source '$URL' on line 3 takes its scheme or host from ARG 'URL', which the base image's ENV "
         f"overrides: {UNDEFINED}"),
        ("ARG HOST=example.com\nENV URL=https://$HOST/file\nADD $URL /m",
         "ADD source '$URL' on line 4 takes its scheme or host from ARG 'HOST', which the base image's ENV "
         f"overrides: {UNDEFINED}"),
        ("ENV URL=https://example.com/\nFROM scratch\nADD $URL /m",  # another stage's ENV is not this one's
         f"ADD source '$URL' on line 4 uses a variable the Containerfile does not define ('URL'): {UNDEFINED}"),
    ],
)  # fmt: skip
def test_add_source_whose_scheme_or_host_the_base_images_env_may_set_is_refused(
    settings, add: str, message: str
) -> None:
    """buildah expands ADD sources with the base image's ENV too (which wins over the Containerfile's ARG): the
    check cannot know such a URL's host, so it refuses it, before any lookup."""
    settings.WAVE_SSRF_ALLOW = []
    with pytest.raises(ContainerfileError) as raised:
        containerfile_check(f"FROM scratch\n{add}\n")
    assert raised.value.message == message
    assert "\n" not in raised.value.message


@pytest.mark.parametrize(
    "add",
    [
        "ADD https://example.com/releases/v${VERSION}/tool-$ARCH.tgz /t",  # a variable in the URL's path
        "ADD https://example.com?$QUERY /t",
        "ADD git@github.com:$ORG/repo.git /src",
        "ADD files/$NAME /f",  # a context path
        "ADD ./$NAME /f",
        "ADD app-$VERSION.tgz /f",
        "ENV URL=https://example.com/files\nADD $URL/$NAME /f",  # the stage's own ENV wins over the base image's
        "ENV HOST=example.com\nARG HOST=10.0.0.1\nADD https://$HOST/x /f",
        "ADD \\$U /f",  # no variable: a file named `$U`
    ],
)
def test_add_source_with_a_spelled_out_scheme_and_host_is_left_to_the_ssrf_check(add: str) -> None:
    parsed = containerfile_parse(f"FROM scratch\n{add}\n")
    assert parsed.unresolved == ()


def test_env_and_arg_values_use_the_variables_from_before_the_instruction() -> None:
    """As buildah expands them: `ENV A=new B=$A` gives B the earlier A, so the URL checked is the one fetched."""
    container_file = (
        "FROM scratch\nENV A=http://10.0.0.1/ \nENV A=http://example.com/ B=$A\nADD $B /m\n"
        "ARG C=http://example.org/ D=${C}x\nADD https://example.net/$D /n\n"
    )
    parsed = containerfile_parse(container_file)
    assert parsed.urls == ("http://10.0.0.1/", "https://example.net/x")
    assert parsed.unresolved == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$A", "1"),
        ("${A:-w}${E:-w}${E:+w}${A:+w}", "1ww"),
        ("$U/x", "\0U\0/x"),
        ("${U:-word}", "\0U\0"),
        ("${A:-$U}", "\0A\0"),  # buildah expands the word too
        ("${U%x}$9", "\0U\0\09\0"),
        ("\\$U", "$U"),
    ],
)
def test_expand_known_marks_what_the_base_image_may_set(text: str, expected: str) -> None:
    assert expand_known(text, {"A": "1", "E": ""}) == expected


def test_containerfile_check_trusts_the_services_own_registries(settings) -> None:
    settings.WAVE_SSRF_ALLOW = []
    settings.WAVE_BUILD_REPO = "localhost:5999/wave/build"
    assert [str(i) for i in containerfile_check("FROM 127.0.0.1:5999/wave/build:abc\n")] == [
        "127.0.0.1:5999/wave/build:abc"
    ]
    with pytest.raises(ContainerfileError):
        containerfile_check("FROM 127.0.0.1:5998/wave/build:abc\n")  # another local port stays refused


def test_auth_file_has_each_host_with_credentials_once() -> None:
    known = {"docker.io": Credentials("hub-user", "hub-pass"), "127.0.0.1:5000": Credentials("wave", "p:ss")}
    asked: list[str] = []

    def lookup(host: str) -> Credentials | None:
        asked.append(host)
        return known.get(host)

    content = auth_file(["docker.io", "127.0.0.1:5000", "quay.io", "DOCKER.IO", "127.0.0.1:5000"], lookup)
    assert content == {
        "auths": {
            "docker.io": {"auth": base64.b64encode(b"hub-user:hub-pass").decode()},
            "127.0.0.1:5000": {"auth": base64.b64encode(b"wave:p:ss").decode()},
        }
    }
    assert asked == ["docker.io", "127.0.0.1:5000", "quay.io"]
    assert auth_file([], lookup) == {"auths": {}}


def test_auth_file_is_what_buildah_reads_for_docker_hub_and_a_registry_with_a_port(tmp_path: Path) -> None:
    known = {"docker.io": Credentials("hub-user", "hub-pass"), "127.0.0.1:5000": Credentials("wave", "secret")}
    path = tmp_path / "auth.json"
    path.write_text(json.dumps(auth_file(known, known.get)))

    def login_for(reference: str) -> str:
        command = ["buildah", "login", "--authfile", str(path), "--get-login", reference]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        return result.stdout.strip() if result.returncode == 0 else f"none ({result.stderr.strip()})"

    assert login_for("docker.io") == "hub-user"
    assert login_for("docker.io/library/busybox") == "hub-user"
    assert login_for("127.0.0.1:5000") == "wave"
    assert login_for("127.0.0.1:5001").startswith("none")


def test_platform_argument_is_the_targets() -> None:
    parsed = containerfile_parse("FROM --platform=$TARGETPLATFORM busybox\nRUN true\n", target=parse_platform("arm64"))
    assert str(parsed.stages[0].platform) == "linux/arm64"
