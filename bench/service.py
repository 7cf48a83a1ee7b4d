"""The whole service on Postgres + Redis for benchmarks (a throwaway database, dropped afterwards)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.network import free_port
from tests.support.service import RunningService, start_service, throwaway_database


@contextmanager
def running_service(tmp: Path, **env: str) -> Iterator[RunningService]:
    with throwaway_database("wave_bench") as database_url:
        service = start_service(
            tmp / "data",
            DATABASE_URL=database_url,
            REDIS_URL="redis://127.0.0.1:6379/13",
            **{"WAVE_REGISTRY_PORT": str(free_port()), "WAVE_LOG_LEVEL": "WARNING", "WAVE_WEB_WORKERS": "2", **env},
        )
        try:
            service.wait_ready(timeout=90)
            yield service
        finally:
            service.terminate()
