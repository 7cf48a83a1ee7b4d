"""The data dir: importing the settings runs no git and creates no folder; `manage.py` makes it private."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.service import REPO, service_environment, start_service
from wave_site.keys import MASTER_KEY_FILE


def python(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=service_environment(**env), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def fake_git(tmp_path: Path) -> Iterator[Path]:
    """A `git` first on PATH that records being run; the marker file it writes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "git-was-run"
    (bin_dir / "git").write_text(f"#!/bin/sh\ntouch {marker}\necho fakecommit1\n")
    (bin_dir / "git").chmod(0o755)
    yield bin_dir
    assert bin_dir.is_dir()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_private_tree(root: Path) -> list[str]:
    """Every folder and file under `root` (and `root` itself) closed to group and others; their names."""
    assert mode(root) == 0o700
    names = []
    for path in sorted(root.rglob("*")):
        assert mode(path) & 0o077 == 0, f"{path} is {oct(mode(path))}"
        names.append(str(path.relative_to(root)))
    return names


def test_importing_settings_runs_no_git_and_creates_no_folder(tmp_path: Path, fake_git: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"
    env = {"WAVE_DATA_DIR": str(data_dir), "WAVE_SECRET_KEY": "configured", "PATH": f"{fake_git}:/usr/bin:/bin"}
    shown = python("import wave_site.settings as s; print(s.DATA_DIR, s.WAVE_COMMIT_ID)", **env)
    assert shown == f"{data_dir} None"
    assert not (tmp_path / "fresh").exists()  # embedded mode: no data dir, no broker folders
    assert not (tmp_path / "git-was-run").exists()

    # The commit id is asked of git when first shown, once.
    code = (
        "import os; os.environ['DJANGO_SETTINGS_MODULE'] = 'wave_site.settings'\n"
        "from wave_site.config import commit_id; print(commit_id(), commit_id())"
    )
    assert python(code, **env) == "fakecommit1 fakecommit1"
    assert (tmp_path / "git-was-run").exists()
    assert python(code, **env, WAVE_COMMIT_ID="configured1") == "configured1 configured1"


def test_first_import_without_a_secret_writes_only_the_private_secret(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    code = "import hashlib, wave_site.settings as s; print(hashlib.sha256(s.SECRET_KEY.encode()).hexdigest())"
    with ThreadPoolExecutor(4) as pool:  # several processes starting at once agree on one secret
        digests = set(pool.map(lambda _: python(code, WAVE_DATA_DIR=str(data_dir)), range(4)))
    assert len(digests) == 1
    assert assert_private_tree(data_dir) == [MASTER_KEY_FILE]
    assert mode(data_dir / MASTER_KEY_FILE) == 0o600


def test_manage_py_makes_an_existing_data_dir_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    for name in ("wave.sqlite3", MASTER_KEY_FILE):  # as an earlier version left them
        (data_dir / name).write_bytes(b"" if name == "wave.sqlite3" else b"an-old-secret\n")
        (data_dir / name).chmod(0o644)
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
        cwd=REPO, env=service_environment(WAVE_DATA_DIR=str(data_dir)), capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    names = assert_private_tree(data_dir)
    assert {"wave.sqlite3", MASTER_KEY_FILE, "broker/queue", "broker/processed", "broker/control"} <= set(names)
    assert mode(data_dir / "wave.sqlite3") == 0o600
    assert mode(data_dir / MASTER_KEY_FILE) == 0o600
    assert (data_dir / MASTER_KEY_FILE).read_text() == "an-old-secret\n"


def test_manage_py_names_a_data_dir_it_cannot_create(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO, env=service_environment(WAVE_DATA_DIR=str(blocker / "data"), WAVE_SECRET_KEY="x"),
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        f"wave: configuration error: WAVE_DATA_DIR '{blocker / 'data'}' cannot be prepared: Not a directory\n"
    )


@pytest.mark.slow
def test_running_service_keeps_every_file_of_the_data_dir_private(tmp_path: Path) -> None:
    service = start_service(tmp_path / "data", WAVE_BUILD_REPO="127.0.0.1:9/wave/build", WAVE_ADMIN_PASSWORD="op-pw")
    try:
        service.wait_ready(timeout=60)
        httpx.get(f"{service.url}/health", timeout=30)  # writes to the cache, the broker's folders and blobs
        with httpx.Client(base_url=service.url) as client:  # a session in the database
            assert client.get("/admin/login/").status_code == 200
        names = assert_private_tree(service.data_dir)
    finally:
        service.terminate()
    assert {"wave.sqlite3", MASTER_KEY_FILE, "cache", "blobs", "broker/queue"} <= set(names)
    assert_private_tree(service.data_dir)
