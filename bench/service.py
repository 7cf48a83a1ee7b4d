"""The whole service on Postgres + Redis for benchmarks (a throwaway database, dropped afterwards)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tests.support.network import free_port
from tests.support.service import RunningService, start_service

ADMIN_URL = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"


@contextmanager
def running_service(tmp: Path, **env: str) -> Iterator[RunningService]:
    database = f"wave_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    service = start_service(
        tmp / "data",
        DATABASE_URL=f"postgres://postgres:postgres@127.0.0.1:5432/{database}",
        REDIS_URL="redis://127.0.0.1:6379/13",
        **{"WAVE_REGISTRY_PORT": str(free_port()), "WAVE_LOG_LEVEL": "WARNING", "WAVE_WEB_WORKERS": "2", **env},
    )
    try:
        service.wait_ready(timeout=90)
        yield service
    finally:
        service.terminate()
        with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
