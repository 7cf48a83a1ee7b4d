"""A lean asyncio Redis client for the hot paths: one pipelined connection per event loop.

redis-py's asyncio client takes a pool lock, a health check, observability hooks and several suspensions per
command; under Django's deep coroutine stack (each suspension resumes every frame) that measured ~70 us of CPU
per manifest pull more than a blocking call. Here a command is one write and one await: Redis answers in order
on the one connection, and each reply resolves its caller's future in that order.

Only what the hot paths need: RESP2 replies as bytes, integers, lists and None; errors raise redis-py's own
exception classes (`ConnectionError`, `TimeoutError`, `OutOfMemoryError`...) so outages map as for the sync
cache (`wave_site.errors.outage_of`). A timeout or a lost connection fails every pending command and the next
command connects again.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
from redis._parsers.base import BaseParser


class _Incomplete(Exception):
    """The buffer ends before the reply does."""


def _parse(buffer: bytearray, pos: int) -> tuple[Any, int]:
    """One RESP2 reply from `buffer` at `pos`, and the position after it; an error reply is returned (not raised)
    as redis-py's exception for it."""
    end = buffer.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind, line, pos = buffer[pos], bytes(buffer[pos + 1 : end]), end + 2
    if kind == 0x24:  # $ bulk string
        length = int(line)
        if length < 0:
            return None, pos
        if len(buffer) < pos + length + 2:
            raise _Incomplete
        return bytes(buffer[pos : pos + length]), pos + length + 2
    if kind == 0x3A:  # : integer
        return int(line), pos
    if kind == 0x2A:  # * array
        count = int(line)
        if count < 0:
            return None, pos
        items = []
        for _ in range(count):
            item, pos = _parse(buffer, pos)
            items.append(item)
        return items, pos
    if kind == 0x2B:  # + simple string
        return line.decode(errors="replace"), pos
    if kind == 0x2D:  # - error
        return BaseParser.parse_error(line.decode(errors="replace")), pos  # type: ignore[no-untyped-call]
    raise redis.InvalidResponse(f"Protocol error: unknown reply type {bytes([kind])!r}")


def _pack(args: tuple[bytes | str | int, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Connection(asyncio.Protocol):
    """One connection: commands written as they come, their futures resolved by the replies in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.broken: redis.RedisError | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        pos = 0
        try:
            while pos < len(self.buffer):
                reply, pos = _parse(self.buffer, pos)
                if not self.waiting:
                    raise redis.InvalidResponse("Protocol error: a reply nobody asked for")
                future = self.waiting.popleft()
                if future.done():  # its caller gave up (cancelled): the reply is skipped, in order
                    continue
                if isinstance(reply, redis.RedisError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except _Incomplete:
            pass
        except (redis.InvalidResponse, ValueError) as exc:
            self.close(exc if isinstance(exc, redis.RedisError) else redis.InvalidResponse(str(exc)))
            return
        del self.buffer[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(redis.ConnectionError(f"Connection to Redis lost: {exc or 'closed by the server'}"))

    def close(self, error: redis.RedisError) -> None:
        """Fail every pending command with `error`; the connection is not used again."""
        if self.broken is None:
            self.broken = error
        if self.transport is not None:
            self.transport.abort()
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def send(self, args: tuple[bytes | str | int, ...]) -> asyncio.Future[Any]:
        if self.broken is not None:
            raise self.broken
        assert self.transport is not None
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        self.transport.write(_pack(args))
        return future


class AsyncRedis:
    """A Redis server named by a `redis://` or `rediss://` URL (user, password and db number from the URL),
    used from one event loop."""

    def __init__(self, url: str, *, connect_timeout: float | None, timeout: float | None) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 6379
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        path = unquote(parts.path).strip("/")
        self.db = int(path) if path else 0
        self.ssl = ssl.create_default_context() if parts.scheme == "rediss" else None
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._connection: _Connection | None = None
        self._connecting = asyncio.Lock()

    async def _connected(self) -> _Connection:
        connection = self._connection
        if connection is not None and connection.broken is None:
            return connection
        async with self._connecting:
            if self._connection is None or self._connection.broken is not None:
                self._connection = await self._connect()
            return self._connection

    async def _connect(self) -> _Connection:
        where = f"{self.host}:{self.port}"
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(_Connection, self.host, self.port, ssl=self.ssl)
                try:
                    for future in [connection.send(command) for command in self._setup()]:
                        await future
                except BaseException:
                    connection.close(redis.ConnectionError(f"Could not set up the connection to Redis at {where}"))
                    raise
        except TimeoutError:
            raise redis.TimeoutError(f"Timeout connecting to Redis at {where}") from None
        except OSError as exc:
            raise redis.ConnectionError(f"Error connecting to Redis at {where}: {exc}") from None
        return connection

    def close(self) -> None:
        """Drop the connection (pending commands fail); a later command connects again."""
        if self._connection is not None:
            self._connection.close(redis.ConnectionError("Connection to Redis closed by the client"))

    def _setup(self) -> list[tuple[bytes | str | int, ...]]:
        """The commands that start a connection: AUTH and SELECT, as the URL asks."""
        commands: list[tuple[bytes | str | int, ...]] = []
        if self.password is not None:
            commands.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        return commands

    async def execute(self, *args: bytes | str | int) -> Any:
        """Send one command; its reply (RESP2 types), or redis-py's exception for an error or an outage."""
        connection = await self._connected()
        future = connection.send(args)
        try:
            async with asyncio.timeout(self.timeout):
                return await future
        except TimeoutError:
            error = redis.TimeoutError("Timeout reading from Redis")
            connection.close(error)  # the replies still due would answer the wrong callers
            raise error from None
