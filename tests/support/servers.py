"""Private PostgreSQL clusters and Redis servers on free loopback ports, for tests that stop or kill them.

The shared Postgres (5432) and Redis (6379) are never touched: each object here owns its own process and
files in a temporary directory. `stop()` shuts down cleanly, `kill()` sends SIGKILL (a crash), `start()`
runs it again on the same port with the same data; used as a context manager it is removed afterwards.
`WebProcess` serves the web application alone in a process of its own, on whichever stores it is given.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
import redis

from tests.support.network import free_port, wait_until

POSTGRES_USER = "postgres"  # the OS user that runs the cluster: postgres refuses to run as root


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"no PostgreSQL {name} binary under /usr/lib/postgresql/*/bin")
    return found[-1]


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", POSTGRES_USER, "--", *command] if os.geteuid() == 0 else command


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (Postgres backends of a postmaster)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(_is_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes {pids} still running after {timeout:.0f}s")
        time.sleep(0.05)


class _Server:
    """Shared lifecycle: a temporary root, one process, start/stop/kill, context-manager cleanup."""

    name = "server"

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"wave-test-{self.name}-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.root / f"{self.name}.log"

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _server_pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Self:
        if self.is_running:
            return self
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}):\n{self.log()[-3000:]}")
            return self._ready()

        try:
            wait_until(ready, timeout=30, what=f"{self.name} on port {self.port}", interval=0.1)
        except BaseException:
            self.kill()
            raise
        return self

    def _signal_all(self, sig: signal.Signals) -> list[int]:
        raise NotImplementedError

    def stop(self) -> None:
        """Clean shutdown; the data stays for `start()`."""
        if not self.is_running:
            return
        assert self.process is not None
        pids = self._signal_all(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
            _wait_gone(pids, timeout=30)
        except (subprocess.TimeoutExpired, TimeoutError):
            self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash would; the data stays for `start()`."""
        if self.process is None:
            return
        pids = self._signal_all(signal.SIGKILL)
        self.process.wait()
        _wait_gone(pids, timeout=30)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class PrivatePostgres(_Server):
    """A PostgreSQL cluster with trust auth on 127.0.0.1:<port>; `url` names its `postgres` database."""

    name = "postgres"

    def __init__(self) -> None:
        super().__init__()
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, POSTGRES_USER)
            shutil.chown(self.socket_dir, POSTGRES_USER)
            self.log_path.touch()
            shutil.chown(self.log_path, POSTGRES_USER)
        subprocess.run(
            _as_postgres([_postgres_bin("initdb"), "--auth=trust", "--username=postgres", "--encoding=UTF8",
                          "--no-sync", "-D", str(self.data_dir)]),
            check=True, capture_output=True,
        )  # fmt: skip

    def database_url(self, name: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    @property
    def url(self) -> str:
        return self.database_url()

    def create_database(self, name: str) -> str:
        """A new database in this cluster; its URL."""
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def _command(self) -> list[str]:
        return _as_postgres([
            _postgres_bin("postgres"), "-D", str(self.data_dir), "-p", str(self.port), "-k", str(self.socket_dir),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
            "-c", "synchronous_commit=off", "-c", "logging_collector=off",
        ])  # fmt: skip

    def _ready(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=2) as connection:
                connection.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _signal_all(self, sig: signal.Signals) -> list[int]:
        # `runuser` stays as the parent of the postmaster: signal the postmaster itself (SIGTERM there is a
        # "smart" shutdown that waits for clients, so a clean stop is SIGINT, "fast"), and on SIGKILL its
        # backends too, which would otherwise keep the shared memory busy and block a restart. `runuser` itself
        # is left to reap the postmaster and exit: killed first, it would leave a zombie whose pid still
        # holds postmaster.pid.
        postmaster = self._postmaster_pid()
        pids = [pid for pid in [postmaster] if pid is not None and _is_alive(pid)]
        if sig == signal.SIGKILL and postmaster is not None:
            pids += _children(postmaster)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT if sig == signal.SIGTERM else sig)
        return pids


class PrivateRedis(_Server):
    """A Redis server without persistence on 127.0.0.1:<port>; `url` names database 0."""

    name = "redis"

    def database_url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def url(self) -> str:
        return self.database_url()

    def _command(self) -> list[str]:
        return ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.root)]  # fmt: skip

    def _ready(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _signal_all(self, sig: signal.Signals) -> list[int]:
        assert self.process is not None
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
        return [self.process.pid]


def start_private_postgres() -> PrivatePostgres:
    """A new cluster, started; use it as a context manager (or call `close()`) to remove it."""
    server = PrivatePostgres()
    try:
        return server.start()
    except BaseException:
        server.close()
        raise


def start_private_redis() -> PrivateRedis:
    """A new Redis, started; use it as a context manager (or call `close()`) to remove it."""
    server = PrivateRedis()
    try:
        return server.start()
    except BaseException:
        server.close()
        raise


class WebProcess:
    """The ASGI web server alone (`uvicorn wave_site.asgi:application`) in a process of its own, on the stores
    its environment names: for tests that stop those stores under it. Output goes to `log_path`."""

    def __init__(self, *, data_dir: Path, env: dict[str, str]) -> None:
        from tests.support.service import REPO, service_environment

        self.port = free_port()
        self.data_dir = data_dir
        self.log_path = data_dir.with_suffix(".web.log")
        self.env = service_environment(
            DJANGO_SETTINGS_MODULE="wave_site.settings", WAVE_DATA_DIR=str(data_dir),
            WAVE_SERVER_URL=f"http://127.0.0.1:{self.port}", WAVE_BUILD_REPO="127.0.0.1:9/wave/build",
            WAVE_COMMIT_ID="testcommit", PYTHONUNBUFFERED="1", **env,
        )  # fmt: skip
        self.repo = REPO
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
            cwd=self.repo, env=self.env, check=True, capture_output=True,
        )  # fmt: skip

    def start(self) -> Self:
        import httpx

        command = [sys.executable, "-m", "uvicorn", "wave_site.asgi:application", "--host", "127.0.0.1",
                   "--port", str(self.port), "--lifespan", "off", "--no-access-log"]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.repo, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"web exited ({self.process.returncode}):\n{self.log()[-3000:]}")
            return httpx.get(f"{self.url}/service-info", timeout=2).status_code == 200

        try:
            wait_until(ready, timeout=60, what=f"the web server on port {self.port}", interval=0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
