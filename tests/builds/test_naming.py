from __future__ import annotations

from builds.naming import build_id, container_id, target_image


def test_container_id_known_values() -> None:
    common = {"container_file": "FROM foo", "conda_file": None, "repository": "wave/build"}
    assert container_id(platform="linux/amd64", **common) == "7efaa2ed59c58a16"
    assert container_id(platform="linux/arm64", **common) == "be9ee6ac1eeff4b5"


def test_container_id_depends_on_every_input() -> None:
    base = {"container_file": "FROM foo", "conda_file": None, "platform": "linux/amd64", "repository": "wave/build"}
    ids = {
        container_id(**base),
        container_id(**{**base, "container_file": "FROM bar"}),
        container_id(**{**base, "conda_file": "dependencies: [x]"}),
        container_id(**{**base, "repository": "other/build"}),
        container_id(**base, build_context="sha256:" + "a" * 64),
    }
    assert len(ids) == 5
    assert container_id(**base) == container_id(**base)  # deterministic
    assert container_id(**{**base, "conda_file": ""}) == container_id(**base)  # absent and empty alike


def test_target_and_build_id() -> None:
    assert target_image(repository="127.0.0.1:5000/wave/build", container_id="7efaa2ed59c58a16") == (
        "127.0.0.1:5000/wave/build:7efaa2ed59c58a16"
    )
    assert build_id(container_id="7efaa2ed59c58a16", number=1) == "bd-7efaa2ed59c58a16_1"
