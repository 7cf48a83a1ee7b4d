from __future__ import annotations

import pytest

from registry.platform import InvalidPlatformError, Platform, parse_platform


@pytest.mark.parametrize(
    ("value", "normalised"),
    [
        (None, "linux/amd64"),
        ("", "linux/amd64"),
        ("amd64", "linux/amd64"),
        ("x86_64", "linux/amd64"),
        ("x86-64", "linux/amd64"),
        ("linux/amd64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("aarch64", "linux/arm64"),
        ("arm64", "linux/arm64"),
        ("linux/arm64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"),
        ("arm", "linux/arm/v7"),
        ("linux/arm/7", "linux/arm/v7"),
        ("linux/arm/v6", "linux/arm/v6"),
        ("LINUX/AMD64", "linux/amd64"),
    ],
)
def test_normalises(value: str | None, normalised: str) -> None:
    assert str(parse_platform(value)) == normalised


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("foo", "Unsupported container platform: foo"),
        ("windows/amd64", "Unsupported container platform: windows/amd64"),
        ("linux/arm64/v7", "Unsupported container platform: linux/arm64/v7"),
        ("linux/amd64/v9", "Unsupported container platform: linux/amd64/v9"),
        ("linux/arm/v9", "Unsupported container platform: linux/arm/v9"),
        ("linux/386", "Unsupported container platform: linux/386"),
        ("s390x", "Unsupported container platform: s390x"),
        ("linux/ppc64le", "Unsupported container platform: linux/ppc64le"),
        ("riscv64", "Unsupported container platform: riscv64"),
        ("armhf", "Unsupported container platform: armhf"),
        ("linux//amd64", "Invalid container platform: linux//amd64"),
        ("a/b/c/d", "Invalid container platform: a/b/c/d"),
        ("linux/", "Invalid container platform: linux/"),
        (" linux/amd64", "Invalid container platform:  linux/amd64"),
    ],
)
def test_rejects(value: str, message: str) -> None:
    with pytest.raises(InvalidPlatformError) as error:
        parse_platform(value)
    assert error.value.message == message


def test_amd64_matches_x86_64_entries() -> None:
    amd64 = parse_platform("linux/amd64")
    assert amd64.matches({"os": "linux", "architecture": "amd64"})
    assert amd64.matches({"os": "linux", "architecture": "x86_64"})
    assert not amd64.matches({"os": "windows", "architecture": "amd64"})
    assert not amd64.matches({"os": "linux", "architecture": "arm64"})


def test_arm64_matches_with_or_without_v8() -> None:
    arm64 = parse_platform("arm64")
    assert arm64.matches({"os": "linux", "architecture": "arm64"})
    assert arm64.matches({"os": "linux", "architecture": "arm64", "variant": "v8"})
    assert arm64.matches({"os": "linux", "architecture": "aarch64", "variant": "8"})
    assert not arm64.matches({"os": "linux", "architecture": "arm", "variant": "v7"})


def test_arm_variants_match_exactly_defaulting_to_v7() -> None:
    assert parse_platform("linux/arm/v7").matches({"os": "linux", "architecture": "arm", "variant": "v7"})
    assert parse_platform("linux/arm/v7").matches({"os": "linux", "architecture": "arm"})
    assert not parse_platform("linux/arm/v6").matches({"os": "linux", "architecture": "arm", "variant": "v7"})
    assert Platform("linux", "arm", "v6").matches({"os": "linux", "architecture": "arm", "variant": "6"})
