"""Container platforms (`[os/]arch[/variant]`): parsing, normalisation and index entry matching."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_OS = "linux"
# The architectures the service serves and builds (amd64 and arm64, plus 32-bit arm), by every name
# clients and index entries use for them; any other architecture is unsupported.
ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "arm": "arm",
}
SUPPORTED_OS = frozenset({"linux"})
ARM_VARIANTS = frozenset({"v5", "v6", "v7"})


class InvalidPlatformError(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Platform:
    os: str
    arch: str
    variant: str | None = None

    def __str__(self) -> str:
        return f"{self.os}/{self.arch}/{self.variant}" if self.variant else f"{self.os}/{self.arch}"

    def matches(self, entry: Mapping[str, object]) -> bool:
        """Does an index entry's `platform` object (`os`, `architecture`, `variant`) match this platform?"""
        entry_os = str(entry.get("os") or "").lower()
        entry_arch = ARCH_ALIASES.get(str(entry.get("architecture") or "").lower())
        entry_variant = _normalise_variant(entry_arch, entry.get("variant"))
        if entry_os != self.os or entry_arch != self.arch:
            return False
        if self.arch == "arm64":
            return entry_variant in (None, "v8")
        if self.arch == "arm":
            return (entry_variant or "v7") == (self.variant or "v7")
        return entry_variant == self.variant or entry_variant is None


def _normalise_variant(arch: str | None, variant: object) -> str | None:
    if not variant:
        return None
    text = str(variant).lower()
    if arch in {"arm", "arm64"} and text.isdigit():
        text = f"v{text}"
    return text


DEFAULT_PLATFORM = Platform(DEFAULT_OS, "amd64")


def parse_platform(value: str | None) -> Platform:
    """`x86_64` -> linux/amd64, `linux/arm64/v8` -> linux/arm64, `arm` -> linux/arm/v7; None -> linux/amd64."""
    if value is None or value == "":
        return DEFAULT_PLATFORM
    parts = value.strip().lower().split("/")
    if any(not part for part in parts) or len(parts) > 3 or value != value.strip():
        raise InvalidPlatformError(f"Invalid container platform: {value}")
    if len(parts) == 1:
        os_name, arch_name, variant = DEFAULT_OS, parts[0], None
    elif len(parts) == 2:
        os_name, arch_name, variant = parts[0], parts[1], None
    else:
        os_name, arch_name, variant = parts
    arch = ARCH_ALIASES.get(arch_name)
    if os_name not in SUPPORTED_OS or arch is None:
        raise InvalidPlatformError(f"Unsupported container platform: {value}")
    variant = _normalise_variant(arch, variant)
    if arch == "arm64":
        if variant not in (None, "v8"):
            raise InvalidPlatformError(f"Unsupported container platform: {value}")
        variant = None
    elif arch == "arm":
        variant = variant or "v7"
        if variant not in ARM_VARIANTS:
            raise InvalidPlatformError(f"Unsupported container platform: {value}")
    elif variant is not None:
        raise InvalidPlatformError(f"Unsupported container platform: {value}")
    return Platform(os_name, arch, variant)
