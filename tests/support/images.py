"""Test images built without network: busybox-static in `buildah from scratch`, pushed to a registry.

All buildah state lives in a private storage root, removed by `Builder.cleanup()`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ls", "cat", "echo", "env", "pwd", "true", "test")


def run(command: list[str], *, timeout: float = 300) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} {' '.join(command[1:4])} failed: {result.stderr.strip()[-2000:]}")
    return result.stdout


@dataclass
class Builder:
    """buildah with its own storage root and run root (vfs driver, chroot isolation)."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wave-buildah-")))

    def buildah(self, *args: str, timeout: float = 300) -> str:
        return run(
            [
                "buildah",
                "--root",
                str(self.root / "storage"),
                "--runroot",
                str(self.root / "run"),
                "--storage-driver",
                "vfs",
                *args,
            ],
            timeout=timeout,
        ).strip()

    def busybox_image(self, *, arch: str = "amd64", marker: str | None = None) -> str:
        """Build a busybox image labelled `linux/<arch>`; returns its image ID.

        `marker` is written to /etc/wave-test so that images of different platforms differ in content.
        """
        rootfs = Path(tempfile.mkdtemp(prefix="wave-rootfs-", dir=self.root))
        (rootfs / "bin").mkdir()
        (rootfs / "etc").mkdir()
        shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
        for applet in APPLETS:
            os.symlink("busybox", rootfs / "bin" / applet)
        (rootfs / "etc" / "wave-test").write_text(f"{marker or arch}\n")
        container = self.buildah("from", "scratch")
        try:
            self.buildah("copy", container, f"{rootfs}/", "/")
            self.buildah(
                "config",
                "--os",
                "linux",
                "--arch",
                arch,
                "--env",
                "PATH=/bin",
                "--cmd",
                "/bin/sh",
                "--workingdir",
                "/",
                container,
            )
            return self.buildah("commit", "--format", "docker", "--quiet", container)
        finally:
            self.buildah("rm", container)
            shutil.rmtree(rootfs, ignore_errors=True)

    def push(self, image: str, destination: str, *, creds: str | None = None, manifest_format: str = "v2s2") -> str:
        """Push an image ID to `docker://<destination>` (`v2s2` Docker or `oci`); the pushed manifest digest."""
        digest_file = self.root / "digest"
        args = ["push", "--tls-verify=false", "--format", manifest_format, "--digestfile", str(digest_file)]
        if creds:
            args += ["--creds", creds]
        self.buildah(*args, image, f"docker://{destination}")
        return digest_file.read_text().strip()

    def push_index(self, images: dict[str, str], destination: str, *, creds: str | None = None) -> str:
        """Push a multi-platform index of `{arch: image ID}`; returns the index digest."""
        name = f"wave-index-{os.urandom(4).hex()}"
        self.buildah("manifest", "create", name)
        try:
            for arch, image in images.items():
                self.buildah("manifest", "add", "--os", "linux", "--arch", arch, name, image)
            digest_file = self.root / "index-digest"
            args = ["manifest", "push", "--all", "--tls-verify=false", "--digestfile", str(digest_file)]
            if creds:
                args += ["--creds", creds]
            self.buildah(*args, name, f"docker://{destination}")
            return digest_file.read_text().strip()
        finally:
            self.buildah("manifest", "rm", name)

    def cleanup(self) -> None:
        subprocess.run(
            ["buildah", "--root", str(self.root / "storage"), "--runroot", str(self.root / "run"),
             "--storage-driver", "vfs", "rm", "--all"],
            capture_output=True, check=False, timeout=60,
        )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


def skopeo_inspect(reference: str, *, creds: str | None = None, raw: bool = False, config: bool = False) -> dict:
    """`skopeo inspect` of `docker://<reference>` over plain http; the parsed JSON."""
    args = ["skopeo", "inspect", "--tls-verify=false"]
    if creds:
        args += ["--creds", creds]
    if raw:
        args.append("--raw")
    if config:
        args.append("--config")
    return json.loads(run([*args, f"docker://{reference}"], timeout=120))


def skopeo_copy(
    reference: str,
    destination: Path,
    *,
    creds: str | None = None,
    platform_arch: str | None = None,
    transport: str = "oci",
) -> None:
    """`skopeo copy` of `docker://<reference>` into an OCI layout (or a `dir:`, bytes unchanged) at `destination`."""
    args = ["skopeo"]
    if platform_arch:
        args += ["--override-arch", platform_arch]
    args += ["copy", "--src-tls-verify=false"]
    if creds:
        args += ["--src-creds", creds]
    target = f"oci:{destination}:latest" if transport == "oci" else f"dir:{destination}"
    run([*args, f"docker://{reference}", target], timeout=300)
