"""A real Celery worker on the test database and broker, for tests whose tasks must really run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.network import wait_until
from tests.support.service import REPO


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    data_dir: Path
    log: Path

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


def start_worker(*, database_url: str, redis_url: str, data_dir: Path, ssrf_allow: str) -> Worker:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "wave_site.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "WAVE_DATA_DIR": str(data_dir),
        "WAVE_SSRF_ALLOW": ssrf_allow,
        "WAVE_LOG_LEVEL": "INFO",
    }
    log = data_dir / "worker.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "wave_site", "worker", "--queues", "layers,default",
             "--pool", "solo", "--loglevel", "INFO", "--without-mingle", "--without-gossip",
             "--hostname", f"test-{os.getpid()}@%h"],
            cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    worker = Worker(process=process, data_dir=data_dir, log=log)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"celery worker exited:\n{worker.output()[-3000:]}")
        return " ready." in worker.output()

    try:
        wait_until(ready, timeout=60, what="the Celery worker", interval=0.25)
    except BaseException:
        worker.stop()
        raise
    return worker
