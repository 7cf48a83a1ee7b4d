from __future__ import annotations

import re

import pytest

from registry.reference import ImageReference, InvalidReferenceError, parse_image, parse_repository

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("value", "normalised"),
    [
        ("ubuntu", "docker.io/library/ubuntu:latest"),
        ("ubuntu:22.04", "docker.io/library/ubuntu:22.04"),
        ("library/ubuntu", "docker.io/library/ubuntu:latest"),
        ("docker.io/ubuntu", "docker.io/library/ubuntu:latest"),
        ("index.docker.io/library/ubuntu:20.04", "docker.io/library/ubuntu:20.04"),
        ("biocontainers/samtools:1.9", "docker.io/biocontainers/samtools:1.9"),
        ("quay.io/a/b/c:v1.1", "quay.io/a/b/c:v1.1"),
        ("quay.io/biocontainers/fastqc", "quay.io/biocontainers/fastqc:latest"),
        (f"localhost:5000/x/y@{DIGEST}", f"localhost:5000/x/y@{DIGEST}"),
        (f"ubuntu@{DIGEST}", f"docker.io/library/ubuntu@{DIGEST}"),
        ("localhost/foo", "localhost/foo:latest"),
        ("127.0.0.1:5000/foo/bar:1.0-rc_1", "127.0.0.1:5000/foo/bar:1.0-rc_1"),
        ("Registry.Example.COM/a__b/c-d.e:TAG", "registry.example.com/a__b/c-d.e:TAG"),
        ("[::1]:5000/foo:1", "[::1]:5000/foo:1"),
        ("[::1]/foo", "[::1]/foo:latest"),
        ("[2001:DB8::1]:5000/foo", "[2001:db8::1]:5000/foo:latest"),
    ],
)
def test_normalises(value: str, normalised: str) -> None:
    assert str(parse_image(value)) == normalised


def test_parts_of_a_reference() -> None:
    assert parse_image("quay.io/a/b/c:v1.1") == ImageReference("quay.io", "a/b/c", "v1.1", None)
    ref = parse_image(f"localhost:5000/x/y:1@{DIGEST}")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == ("localhost:5000", "x/y", "1", DIGEST)
    assert ref.path_and_version == f"x/y@{DIGEST}"
    assert ref.version == DIGEST
    assert parse_image("ubuntu").path_and_version == "library/ubuntu:latest"
    assert parse_image("ubuntu").version == "latest"


def test_protocol_prefix_is_an_invalid_repository_name() -> None:
    with pytest.raises(InvalidReferenceError) as error:
        parse_image("http://docker.io/foo:latest")
    assert error.value.message == "Invalid container repository name — offending value: 'http://docker.io/foo:latest'"


@pytest.mark.parametrize(
    "value",
    [
        "http:docker.io/foo",
        "docker:quay.io/foo:latest",
        "ubuntu: latest",
        "ubuntu ",
        " ubuntu",
        "",
        "   ",
        "localhost:abc/foo",
        "UPPER/case",
        "foo//bar",
        "foo/",
        "foo:bad/tag",
        "ubuntu@sha256:abc",
        f"ubuntu@sha256:{'A' * 64}",
        "ubuntu:" + "t" * 129,
        "-leading/dash",
        "quay.io:99999/foo",
        "[::1/a",  # the bracket never closes: not the registry `[::1`
        "[:::]/foo",
        "[:::]:5000/foo",
        "[1.2.3.4]/foo",
        "[fe80::1%eth0]/foo",
        "[::1]x/foo",
    ],
)
def test_malformed_names_are_invalid_image_names(value: str) -> None:
    with pytest.raises(InvalidReferenceError) as error:
        parse_image(value)
    assert error.value.message == f"Invalid container image name — offending value: '{value}'"


def test_parse_repository() -> None:
    assert parse_repository("docker.io/user/my-image") == ("docker.io", "user/my-image")
    assert parse_repository("localhost:5000/wave/build") == ("localhost:5000", "wave/build")
    for bad in ("quay.io", "user/my-image", "quay.io/UPPER", "quay.io/a//b", "[::1/a/b", "[:::]/a"):
        with pytest.raises(ValueError, match=re.escape(bad)):
            parse_repository(bad)
