"""`manage.py run` (what `make run` calls): migrate, then run every process of the service together.

Processes: the local build registry (only when WAVE_BUILD_REPO is unset), the ASGI web server, three
Celery workers (`worker`: builds in WAVE_WORKER_CONCURRENCY processes; `downloads`: layer downloads in
WAVE_DOWNLOAD_CONCURRENCY threads; `maintenance`: the periodic tasks, one at a time) and Celery beat.
Output is prefixed per process; SIGINT or SIGTERM stops them all, and when one of them exits the others
are stopped too.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from wave_site.celery import MAINTENANCE_QUEUES, PROCESS_POOL_QUEUES, THREAD_POOL_QUEUES
from wave_site.config import commit_id
from wave_site.process_manager import ServiceManager


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_registry_port(data_dir: Path, configured: str | None) -> int:
    """WAVE_REGISTRY_PORT when set; else the port this data dir used before; else 5000, or any free port.

    Remembering the port per data dir keeps the build repository's name stable across restarts, and
    lets two checkouts' `make run` (different WAVE_DATA_DIR) run side by side.
    """
    if configured:
        return int(configured)
    remembered = data_dir / "registry" / "port"
    if remembered.is_file():
        port = int(remembered.read_text().strip())
        if port_is_free(port):
            return port
    port = 5000 if port_is_free(5000) else free_port()
    remembered.parent.mkdir(parents=True, exist_ok=True)
    remembered.write_text(f"{port}\n")
    return port


def write_registry_config(data_dir: Path, port: int) -> Path:
    root = data_dir / "registry"
    (root / "data").mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: {secrets.token_hex(16)}\n"
    )
    return config


def proxy_header_options(trusted: list[str]) -> list[str]:
    """uvicorn's options for X-Forwarded-* headers: believed from the configured proxies only (none by default)."""
    return ["--forwarded-allow-ips", ",".join(trusted)] if trusted else ["--no-proxy-headers"]


def celery_worker_command(
    python: str, *, name: str, queues: tuple[str, ...], pool: str, concurrency: int, port: int, log_level: str
) -> list[str]:
    """A Celery worker of the service; `name` and the port make its node name unique on this host."""
    return [
        python, "-m", "celery", "-A", "wave_site", "worker",
        "--queues", ",".join(queues),
        "--pool", pool,
        "--concurrency", str(concurrency),
        "--hostname", f"wave-{name}-{port}@%h",
        "--loglevel", log_level,
    ]  # fmt: skip


def banner(*, data_dir: Path, registry_address: str | None) -> str:
    """What a user needs first: the URL images are named after, where to push test images, where data is."""
    authority = urlsplit(settings.WAVE_SERVER_URL).netloc
    lines = [
        f"Wave {settings.WAVE_VERSION} on {settings.WAVE_SERVER_URL} (listening on port {settings.WAVE_PORT})",
        f"  images are named {authority}/wt/<token>/...; admin at {settings.WAVE_SERVER_URL}/admin/",
    ]
    if registry_address is not None:
        lines.append(
            f"  local registry: {registry_address} (push test images here; builds go to {registry_address}/wave)"
        )
    lines.append(f"  data in {data_dir}")
    return "\n".join(lines)


class Command(BaseCommand):
    help = "Migrate, then start the local registry (if needed), web server, Celery workers and beat."
    requires_system_checks = []  # the checks run once in the web process; start-up stays fast

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--no-migrate", action="store_true", help="Skip migrations.")

    def handle(self, *args: Any, **options: Any) -> None:
        data_dir: Path = settings.DATA_DIR
        env = dict(os.environ)
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "wave_site.settings",
                "WAVE_DATA_DIR": str(data_dir),
                "WAVE_COMMIT_ID": commit_id(),  # asked of git once, here, for every process
                "PYTHONUNBUFFERED": "1",
                # Few malloc arenas: streaming threads otherwise each grow their own, inflating RSS.
                "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"),
            }
        )
        if not port_is_free(settings.WAVE_PORT, settings.WAVE_BIND or "0.0.0.0"):
            raise CommandError(f"WAVE_PORT {settings.WAVE_PORT} is already in use")

        # A worker's pool stops through a warm shutdown of its main process (process_manager).
        manager = ServiceManager(warm_shutdown=frozenset({"worker", "downloads", "maintenance"}))
        registry_address = None
        if settings.WAVE_LOCAL_REGISTRY:
            binary = shutil.which("docker-registry")
            if binary is None:
                raise CommandError(
                    "docker-registry is not installed (apt-get install docker-registry), or set WAVE_BUILD_REPO"
                )
            port = local_registry_port(data_dir, os.environ.get("WAVE_REGISTRY_PORT"))
            if not port_is_free(port):
                raise CommandError(f"WAVE_REGISTRY_PORT {port} is already in use")
            env["WAVE_REGISTRY_PORT"] = str(port)
            registry_address = f"localhost:{port}"
            config = write_registry_config(data_dir, port)
            manager.add_process("registry", "exec " + shlex.join([binary, "serve", str(config)]), env=env)

        if not options["no_migrate"]:
            call_command("migrate", interactive=False, verbosity=1)
        call_command("ensure_admin")

        python = sys.executable
        web = [
            python, "-m", "uvicorn", "wave_site.asgi:application",
            "--host", settings.WAVE_BIND or "0.0.0.0",
            "--port", str(settings.WAVE_PORT),
            "--workers", str(settings.WAVE_WEB_WORKERS),
            "--no-server-header",
            "--lifespan", "off",
            "--timeout-graceful-shutdown", "5",
            *proxy_header_options(settings.WAVE_TRUSTED_PROXIES),
        ]  # fmt: skip
        worker = celery_worker_command(
            python, name="worker", queues=PROCESS_POOL_QUEUES, pool="prefork",
            concurrency=settings.WAVE_WORKER_CONCURRENCY, port=settings.WAVE_PORT, log_level=settings.WAVE_LOG_LEVEL,
        )  # fmt: skip
        # Downloads wait on the network: threads, many of them.
        downloads = celery_worker_command(
            python, name="downloads", queues=THREAD_POOL_QUEUES, pool="threads",
            concurrency=settings.WAVE_DOWNLOAD_CONCURRENCY, port=settings.WAVE_PORT, log_level=settings.WAVE_LOG_LEVEL,
        )  # fmt: skip
        # The reapers and purges, never behind the builds and downloads they watch.
        maintenance = celery_worker_command(
            python, name="maintenance", queues=MAINTENANCE_QUEUES, pool="solo", concurrency=1,
            port=settings.WAVE_PORT, log_level=settings.WAVE_LOG_LEVEL,
        )  # fmt: skip
        beat = [
            python, "-m", "celery", "-A", "wave_site", "beat",
            "--schedule", settings.CELERY_BEAT_SCHEDULE_FILENAME,
            "--loglevel", settings.WAVE_LOG_LEVEL,
        ]  # fmt: skip
        processes = (("web", web), ("worker", worker), ("downloads", downloads), ("maintenance", maintenance),
                     ("beat", beat))  # fmt: skip
        for name, command in processes:
            # `exec`: honcho starts each command through a shell; the process itself must be the one signalled.
            manager.add_process(name, "exec " + shlex.join(command), env=env, cwd=str(settings.BASE_DIR))

        self.stdout.write(banner(data_dir=data_dir, registry_address=registry_address))
        manager.loop()
        manager.sweep()
        sys.exit(manager.returncode or 0)
