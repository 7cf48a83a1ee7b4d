"""The shared cache's async reads and counters: the same values as the sync cache (Redis and the file cache),
no thread hop on Redis, and Redis outages raised as redis-py's errors (a 503, see wave_site.errors)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pytest_django.fixtures import Settings

from registry.augment import ContainerConfig, InjectedLayerRef
from requests_app.oci.tokens import ProxyTarget
from tests.requests_app.test_services import refuse_writes
from tests.support.servers import PrivateRedis, start_private_redis
from wave_site.cache import COUNT_SCRIPT, cache_acount, cache_aget_many, cache_count, shared_cache
from wave_site.errors import outage_of
from wave_site.redis_async import AsyncRedis, _Connection

TARGET = ProxyTarget(
    pk=7, token="0123456789ab", registry="127.0.0.1:5000", repository="library/busybox", source_version="latest",
    platform="linux/amd64", expires_at=1_900_000_000.5,
    config=ContainerConfig(entrypoint=["/bin/sh"], cmd=None, env=("A=1",), working_dir="/w",
                           layers=(InjectedLayerRef("sha256:" + "a" * 64, 10, "sha256:" + "b" * 64),)),
    layer_digests=frozenset({"sha256:" + "a" * 64}),
)  # fmt: skip
VALUES: dict[str, Any] = {
    "wave:token:0123456789ab": TARGET,
    "wave:revoked:0123456789ab": 1,  # a raw integer in Redis
    "wave:served:0123456789ab:library/busybox:latest": ("application/vnd.oci.image.manifest.v1+json", b"{\x00\xff}"),
    "int:negative": -42,
    "int:big": 2**62,
    "bool": True,  # pickled by django-redis, not an integer
    "str": "sha256:" + "c" * 64,
    "frozenset": frozenset({"sha256:" + "d" * 64}),
    "none": None,
}


def file_cache(settings: Settings, tmp_path: Path) -> None:
    backend = "django.core.cache.backends.filebased.FileBasedCache"
    settings.CACHES = {"default": {"BACKEND": backend, "LOCATION": str(tmp_path / "cache")}}


def hops_of(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The thread hops `wave_site.cache` takes from now on."""
    from asgiref.sync import sync_to_async

    hops: list[str] = []

    def counting(function: Any, **kwargs: Any) -> Any:
        hops.append(getattr(function, "__name__", repr(function)))
        return sync_to_async(function, **kwargs)

    monkeypatch.setattr("wave_site.cache.sync_to_async", counting)
    return hops


@pytest.mark.parametrize("backend", ["redis", "file"])
def test_async_reads_equal_what_the_sync_cache_wrote(
    backend: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "file":
        file_cache(settings, tmp_path)
    for key, value in VALUES.items():
        shared_cache().set(key, value, 60)
    keys = [*VALUES, "missing"]
    hops = hops_of(monkeypatch)
    found = asyncio.run(cache_aget_many(keys))
    assert found == shared_cache().get_many(keys) == VALUES
    assert asyncio.run(cache_aget_many([])) == {}
    assert hops == ([] if backend == "redis" else ["get_many", "get_many"])


@pytest.mark.parametrize("backend", ["redis", "file"])
def test_async_and_sync_counters_count_the_same_counter_within_its_window(
    backend: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "file":
        file_cache(settings, tmp_path)
    hops = hops_of(monkeypatch)
    assert cache_count("counter", timeout=65) == 1
    assert asyncio.run(cache_acount("counter", timeout=65)) == 2
    assert cache_count("counter", timeout=65) == 3
    assert asyncio.run(cache_acount("other", timeout=65)) == 1
    assert shared_cache().get_many(["counter", "other"]) == {"counter": 3, "other": 1}
    if backend == "redis":
        assert hops == []
        assert 60 < shared_cache().ttl("counter") <= 65  # set once, by the first count
        assert 60 < shared_cache().ttl("other") <= 65
    else:
        assert hops == ["cache_count", "cache_count"]


def test_concurrent_commands_get_their_own_replies_even_when_some_callers_give_up() -> None:
    for index in range(200):
        shared_cache().set(f"k{index}", index, 60)

    async def main() -> list[Any]:
        async def read(index: int) -> Any:
            return await cache_aget_many([f"k{index}", f"k{index + 1}"])

        tasks = [asyncio.create_task(read(index)) for index in range(199)]
        await asyncio.sleep(0)
        for task in tasks[::7]:  # cancelled after their command was sent
            task.cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    for index, result in enumerate(results):
        if index % 7 == 0:
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert result == {f"k{index}": index, f"k{index + 1}": index + 1}


class RecordingTransport:
    def __init__(self) -> None:
        self.written = b""
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True


def test_replies_split_anywhere_resolve_their_commands_in_order() -> None:
    async def scenario() -> None:
        connection = _Connection()
        transport = RecordingTransport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        futures = [connection.send(command) for command in [("MGET", "a", "b"), ("INCR", "c"), ("SET", "x", b"\r\n"),
                                                            ("GET", "y"), ("PING",)]]  # fmt: skip
        assert transport.written == (b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n*2\r\n$4\r\nINCR\r\n$1\r\nc\r\n"
                                     b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$2\r\n\r\n\r\n*2\r\n$3\r\nGET\r\n$1\r\ny\r\n"
                                     b"*1\r\n$4\r\nPING\r\n")  # fmt: skip
        wire = b"*2\r\n$4\r\na\r\nb\r\n$-1\r\n:7\r\n-OOM command not allowed\r\n$0\r\n\r\n+PONG\r\n"
        for index in range(len(wire)):
            connection.data_received(wire[index : index + 1])
        assert [future.result() for future in (futures[0], futures[1], futures[3], futures[4])] == [
            [b"a\r\nb", None],
            7,
            b"",
            "PONG",
        ]
        assert isinstance(futures[2].exception(), redis.exceptions.OutOfMemoryError)
        connection.data_received(b":1\r\n")  # a reply nobody asked for: the connection is not trusted again
        assert transport.aborted
        with pytest.raises(redis.InvalidResponse):
            connection.send(("PING",))

    asyncio.run(scenario())


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    with start_private_redis() as server:
        yield server


def test_outages_raise_redis_errors_and_the_next_command_connects_again(private_redis: PrivateRedis) -> None:
    client_of: dict[str, AsyncRedis] = {}

    async def run(*command: str | int) -> Any:
        client = client_of.setdefault("one", AsyncRedis(private_redis.database_url(3), connect_timeout=1, timeout=0.5))
        return await client.execute(*command)

    async def scenario() -> None:
        assert await run("SET", "a", "1") == "OK"
        assert await run("MGET", "a", "b") == [b"1", None]
        private_redis.kill()
        with pytest.raises(redis.ConnectionError) as lost:
            await run("GET", "a")
        assert outage_of(lost.value) == "redis"
        with pytest.raises(redis.ConnectionError) as refused:  # connecting again is refused too
            await run("GET", "a")
        assert str(refused.value).startswith(f"Error connecting to Redis at 127.0.0.1:{private_redis.port}")
        private_redis.start()
        assert await run("GET", "a") is None  # back, empty (no persistence), on database 3
        assert await run("SET", "a", "2") == "OK"
        assert private_redis.process is not None
        os.kill(private_redis.process.pid, signal.SIGSTOP)  # hung: replies never come
        try:
            started = time.monotonic()
            with pytest.raises(redis.TimeoutError) as hung:
                await run("GET", "a")
            assert 0.4 < time.monotonic() - started < 2
            assert outage_of(hung.value) == "redis"
        finally:
            os.kill(private_redis.process.pid, signal.SIGCONT)
        assert await run("GET", "a") == b"2"  # a fresh connection: no reply of the timed-out command is misread

    asyncio.run(scenario())
    assert redis.Redis.from_url(private_redis.database_url(3)).get("a") == b"2"


@pytest.mark.parametrize("refusal", ["oom", "read-only"])
def test_writes_refused_by_redis_raise_redis_refusals_that_are_outages(
    refusal: str, private_redis: PrivateRedis
) -> None:
    refuse_writes(private_redis, refusal)
    expected = redis.exceptions.OutOfMemoryError if refusal == "oom" else redis.exceptions.ReadOnlyError

    async def scenario() -> None:
        client = AsyncRedis(private_redis.url, connect_timeout=1, timeout=1)
        for command in [("SET", "a", "1"), ("EVAL", COUNT_SCRIPT, 1, "a", 60)]:
            with pytest.raises(expected) as refused:
                await client.execute(*command)
            assert outage_of(refused.value) == "redis"
        assert await client.execute("GET", "a") is None  # the connection goes on serving reads

    asyncio.run(scenario())
