"""Each registry and image fixture, pulled through with skopeo."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import PushedImage
from tests.support.images import Builder, run, skopeo_copy, skopeo_inspect
from tests.support.registry import ANONYMOUS, BASIC, TOKEN, start_registry

pytestmark = pytest.mark.slow


def test_anonymous_registry_serves_busybox_to_skopeo(anonymous_image: PushedImage, tmp_path: Path) -> None:
    info = skopeo_inspect(anonymous_image.reference)
    assert info["Digest"] == anonymous_image.digest
    assert info["Architecture"] == "amd64"
    assert info["Os"] == "linux"
    skopeo_copy(anonymous_image.reference, tmp_path / "layout")
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert len(index["manifests"]) == 1


def test_anonymous_image_unpacks_with_busybox_inside(anonymous_image: PushedImage, tmp_path: Path) -> None:
    skopeo_copy(anonymous_image.reference, tmp_path / "layout")
    run(["umoci", "unpack", "--rootless", "--image", f"{tmp_path / 'layout'}:latest", str(tmp_path / "bundle")])
    rootfs = tmp_path / "bundle" / "rootfs"
    assert (rootfs / "bin" / "busybox").is_file()
    assert (rootfs / "etc" / "wave-test").read_text() == "amd64\n"
    assert (rootfs / "bin" / "sh").readlink() == Path("busybox")


@pytest.mark.parametrize("fixture_name", ["basic_image", "token_image"])
def test_authenticated_registry_serves_with_credentials_only(fixture_name: str, request: pytest.FixtureRequest) -> None:
    image: PushedImage = request.getfixturevalue(fixture_name)
    info = skopeo_inspect(image.reference, creds=image.registry.creds)
    assert info["Digest"] == image.digest

    with pytest.raises(RuntimeError, match=r"unauthorized|authentication required|denied"):
        skopeo_inspect(image.reference)
    with pytest.raises(RuntimeError, match=r"unauthorized|authentication required|denied"):
        skopeo_inspect(image.reference, creds=f"{image.registry.username}:wrong-password")


def test_basic_registry_challenges_with_basic(basic_image: PushedImage) -> None:
    response = httpx.get(f"{basic_image.registry.url}/v2/")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")


def test_token_registry_challenges_with_bearer_and_verifies_issued_jwts(token_image: PushedImage) -> None:
    registry = token_image.registry
    assert registry.token_server is not None
    challenge = httpx.get(f"{registry.url}/v2/").headers["WWW-Authenticate"]
    assert challenge.startswith(f'Bearer realm="{registry.token_server.realm}"')

    manifest_url = f"{registry.url}/v2/library/busybox/manifests/latest"
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    token_url = f"{registry.token_server.realm}?service=wave-test-registry&scope=repository:library/busybox:pull"
    token = httpx.get(token_url, auth=(registry.username, registry.password)).json()["token"]
    granted = httpx.get(manifest_url, headers={**accept, "Authorization": f"Bearer {token}"})
    assert granted.status_code == 200
    assert granted.headers["Docker-Content-Digest"] == token_image.digest

    anonymous_token = httpx.get(token_url).json()["token"]
    refused = httpx.get(manifest_url, headers={**accept, "Authorization": f"Bearer {anonymous_token}"})
    assert refused.status_code == 401
    assert any(r.username == registry.username for r in registry.token_server.requests)


def test_multiplatform_index_has_amd64_and_arm64(multiplatform_image: PushedImage) -> None:
    index = skopeo_inspect(multiplatform_image.reference, raw=True)
    platforms = sorted((m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"])
    assert platforms == [("linux", "amd64"), ("linux", "arm64")]
    digests = {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}
    assert digests["amd64"] != digests["arm64"]

    for arch in ("amd64", "arm64"):
        result = subprocess.run(
            ["skopeo", "--override-arch", arch, "inspect", "--tls-verify=false",
             f"docker://{multiplatform_image.reference}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        info = json.loads(result.stdout)
        assert info["Architecture"] == arch
        assert info["Digest"] == multiplatform_image.digest  # skopeo reports the index digest
        entry = skopeo_inspect(f"{multiplatform_image.registry.host}/{multiplatform_image.repository}@{digests[arch]}")
        assert entry["Architecture"] == arch


def test_registry_fixture_stops_its_process_and_removes_its_files() -> None:
    for flavour in (ANONYMOUS, BASIC, TOKEN):
        registry = start_registry(flavour)
        assert registry.root.is_dir()
        registry.stop()
        assert registry.process.poll() is not None
        assert not registry.root.exists()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{registry.url}/v2/", timeout=2)


def test_builder_cleanup_removes_its_storage() -> None:
    builder = Builder()
    builder.busybox_image()
    assert any((builder.root / "storage").iterdir())
    builder.cleanup()
    assert not builder.root.exists()
