"""The private Postgres and Redis fixtures: stop, kill, start again with the data, clean up."""

from __future__ import annotations

import psycopg
import pytest
import redis

from tests.support.servers import start_private_postgres, start_private_redis

pytestmark = pytest.mark.slow


def test_private_postgres_survives_stop_and_kill_with_its_data() -> None:
    with start_private_postgres() as postgres:
        assert postgres.port != 5432
        url = postgres.create_database("kept")
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("CREATE TABLE t (n int)")
            connection.execute("INSERT INTO t VALUES (7)")
        idle = psycopg.connect(url, autocommit=True)  # a client still connected must not block a stop

        postgres.stop()
        assert not postgres.is_running
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=2)
        idle.close()

        postgres.start()
        connection = psycopg.connect(url, autocommit=True)
        assert connection.execute("SELECT n FROM t").fetchall() == [(7,)]
        postgres.kill()
        with pytest.raises(psycopg.OperationalError):
            connection.execute("SELECT 1")
        connection.close()
        assert not postgres.is_running
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=2)

        postgres.start()  # crash recovery
        with psycopg.connect(url) as connection:
            assert connection.execute("SELECT n FROM t").fetchall() == [(7,)]
        root = postgres.root
    assert not root.exists()


def test_private_redis_stops_kills_and_starts_again_on_its_port() -> None:
    with start_private_redis() as server:
        assert server.port != 6379
        client = redis.Redis.from_url(server.database_url(3), socket_connect_timeout=1, socket_timeout=1)
        client.set("k", "v")
        assert client.get("k") == b"v"

        server.stop()
        with pytest.raises(redis.ConnectionError):
            client.ping()
        server.start()
        assert client.ping() is True
        assert client.get("k") is None  # no persistence: a restart is an empty Redis

        server.kill()
        assert server.process is not None
        assert server.process.returncode == -9
        with pytest.raises(redis.ConnectionError):
            client.ping()
        server.start()
        assert client.ping() is True
        client.close()
        root = server.root
    assert not root.exists()
