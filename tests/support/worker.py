"""A real Celery worker for tests whose tasks must really run: on the test database and broker, or embedded
(SQLite and the filesystem broker in its own data dir); in a pool of processes, or of threads as `manage.py
run`'s downloads worker; killed whole or by pool child, started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.network import wait_until
from tests.support.service import REPO

# Set for the test process by tests/settings.py: a worker gets only what it is given.
INHERITED_NOT = ("DATABASE_URL", "REDIS_URL", "WAVE_DATA_DIR", "DJANGO_SETTINGS_MODULE")


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    data_dir: Path
    log: Path
    command: list[str]
    env: dict[str, str] = field(repr=False)

    @property
    def blobs(self) -> Path:
        return self.data_dir / "blobs"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL to the whole worker (main process, pool children, embedded beat), as a crash would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def kill_pool_child(self, pid: int) -> None:
        """SIGKILL to one pool child of this worker; the main process lives on and starts another."""
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert parent == self.process.pid, f"process {pid} is not a child of the worker {self.process.pid}"
        os.kill(pid, signal.SIGKILL)

    def restart(self) -> Worker:
        """The same worker (command, environment, data dir) started again; this one must be stopped or killed."""
        assert self.process.poll() is not None, "the worker is still running"
        return _launch(self.command, self.env, self.data_dir)


def worker_environment(
    *,
    database_url: str | None,
    redis_url: str | None,
    data_dir: Path,
    ssrf_allow: str,
    env: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a worker (or of `manage.py` run beside it); with both URLs None, embedded mode:
    SQLite and the filesystem broker in `data_dir`."""
    environment = {key: value for key, value in os.environ.items() if key not in INHERITED_NOT}
    environment.update({"DJANGO_SETTINGS_MODULE": "wave_site.settings", "WAVE_DATA_DIR": str(data_dir),
                        "WAVE_SSRF_ALLOW": ssrf_allow, "WAVE_LOG_LEVEL": "INFO"})  # fmt: skip
    if database_url is not None:
        environment["DATABASE_URL"] = database_url
    if redis_url is not None:
        environment["REDIS_URL"] = redis_url
    environment.update(env or {})
    return environment


def start_worker(
    *,
    database_url: str | None,
    redis_url: str | None,
    data_dir: Path,
    ssrf_allow: str,
    pool: str = "solo",
    beat: bool = False,
    concurrency: int = 1,
    queues: str = "layers,default",
    env: dict[str, str] | None = None,
) -> Worker:
    """A worker on `database_url` and `redis_url`, or embedded (see `worker_environment`; its database must
    be migrated already). `beat` runs Celery beat inside it (the reaper); `pool="threads"` with
    `queues="layers"` is `manage.py run`'s downloads worker."""
    environment = worker_environment(
        database_url=database_url, redis_url=redis_url, data_dir=data_dir, ssrf_allow=ssrf_allow, env=env
    )
    command = [sys.executable, "-m", "celery", "-A", "wave_site", "worker", "--queues", queues,
               "--pool", pool, "--concurrency", str(concurrency), "--loglevel", "INFO", "--without-mingle",
               "--without-gossip", "--hostname", f"test-{os.getpid()}-{queues.replace(',', '-')}@%h"]  # fmt: skip
    if beat:
        command.append("--beat")
    return _launch(command, environment, data_dir)


def _launch(command: list[str], env: dict[str, str], data_dir: Path) -> Worker:
    queues = command[command.index("--queues") + 1]
    log = data_dir / ("worker.log" if queues == "layers,default" else f"worker-{queues.replace(',', '-')}.log")
    with open(log, "ab") as output:
        start = output.tell()
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    worker = Worker(process=process, data_dir=data_dir, log=log, command=command, env=env)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"celery worker exited:\n{worker.output()[-3000:]}")
        return " ready." in worker.output()[start:]

    try:
        wait_until(ready, timeout=60, what="the Celery worker", interval=0.25)
    except BaseException:
        worker.stop()
        raise
    return worker
