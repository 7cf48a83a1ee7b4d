"""Start the whole service as `make run` does (`manage.py run`) and stop it like an operator would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from tests.support.network import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
# Variables tests/settings.py puts into this process's environment: a started service must not inherit them.
TEST_ONLY_VARIABLES = ("DATABASE_URL", "REDIS_URL", "WAVE_DATA_DIR", "WAVE_BUILD_REPO", "WAVE_COMMIT_ID",
                       "DJANGO_SETTINGS_MODULE", "WAVE_REGISTRY_PORT", "WAVE_PORT")  # fmt: skip


def service_environment(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TEST_ONLY_VARIABLES}
    env.update(overrides)
    return env


@dataclass
class RunningService:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> float:
        """Seconds until /service-info answers 200."""
        started = time.monotonic()

        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited early ({self.process.returncode}):\n{self.log()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/service-info", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=timeout, what=f"the service on port {self.port}", interval=0.25)
        return time.monotonic() - started

    def pids(self) -> list[int]:
        """Processes (this run's tree) whose environment names this run's data dir."""
        marker = f"WAVE_DATA_DIR={self.data_dir}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def terminate(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def start_service(data_dir: Path, **env: str) -> RunningService:
    """`manage.py run` in its own process group; output in `<data_dir>.log`."""
    port = int(env.pop("WAVE_PORT", free_port()))
    log_path = data_dir.with_suffix(".log")
    defaults = {"WAVE_SERVER_URL": f"http://127.0.0.1:{port}", "WAVE_WEB_WORKERS": "1", "WAVE_WORKER_CONCURRENCY": "1"}
    environment = service_environment(**{**defaults, **env, "WAVE_DATA_DIR": str(data_dir), "WAVE_PORT": str(port)})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "run"],
            cwd=REPO,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return RunningService(process=process, port=port, data_dir=data_dir, log_path=log_path)


POSTGRES_ADMIN_URL = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"


@contextmanager
def throwaway_database(prefix: str) -> Iterator[str]:
    """A new Postgres database for a started service; its URL, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgres://postgres:postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
